"""The failure ledger: exposures that failed after the pool, and the report's quarantine table."""

import os

from romanpipe.failures import error_line, read_ledger, record_failures

import pandas as pd

import quarantine_table

ROW = {"exposure": "r1_WFI01", "path": "uncal/r1_WFI01_uncal.asdf", "step": "photom",
       "reason": "photom failed: x.asdf: PHOTOM table has no row for optical element F158"}


def test_the_reason_is_the_last_error_line_of_the_step_log(tmp_path):
    log = tmp_path / "photom.log"
    log.write_text("2026-12-07T14:21:35.542Z romanpipe.steprun INFO photom parameters: {}\n"
                   "2026-12-07T14:21:36.836Z romanpipe.cli ERROR x.asdf: no row for F158\n")
    assert error_line(log) == "x.asdf: no row for F158"
    # killed from outside: a traceback or nothing, no error line of ours
    log.write_text("Traceback (most recent call last):\nKeyboardInterrupt\n")
    assert error_line(log) is None
    assert error_line(tmp_path / "absent.log") is None


def test_entries_hold_until_the_pool_runs_again(tmp_path):
    pool, ledger = tmp_path / "pool.csv", tmp_path / "failed.csv"
    pool.write_text("exposure\n")
    os.utime(pool, (1000, 1000))
    assert record_failures(ledger, pool, [ROW]) == ["r1_WFI01"]
    assert record_failures(ledger, pool, [ROW]) == []  # recorded once
    assert read_ledger(ledger, pool) == {"r1_WFI01": ROW}
    os.utime(pool, None)  # the pool reran after the failure: the exposure is tried again
    os.utime(ledger, (2000, 2000))
    assert read_ledger(ledger, pool) == {}


def test_the_report_table_holds_the_pool_rejections_and_the_failures(tmp_path):
    pool, ledger = tmp_path / "pool.csv", tmp_path / "failed.csv"
    pool.write_text("exposure\n")
    os.utime(pool, (1000, 1000))
    record_failures(ledger, pool, [ROW])
    rejected = tmp_path / "quarantine.csv"
    pd.DataFrame([{"exposure": "r2_WFI01", "path": "uncal/r2_WFI01_uncal.asdf",
                   "reason": "uncal/r2_WFI01_uncal.asdf: truncated inside data block 0"}]).to_csv(
        rejected, index=False)
    output = tmp_path / "quarantine_report.csv"
    assert quarantine_table.cli.run(quarantine_table.main, [str(rejected), "--pool", str(pool), "--ledger",
                                                            str(ledger), "--output", str(output)]) == 0
    table = pd.read_csv(output, index_col="exposure")
    assert table.loc["r2_WFI01", "stage"] == "pool" and table.loc["r1_WFI01", "stage"] == "photom"
    assert table.loc["r1_WFI01", "reason"] == ROW["reason"]
