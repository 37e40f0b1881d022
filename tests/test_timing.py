"""romanpipe.timing: every step's process logs where its time went, in a line make bench reads."""

import json
import logging
import time

from romanpipe.timing import PHASES, TAG, PhaseTimer, read_timings, seconds_since_process_start

import pytest

import photom
from conftest import EXPO
from test_photom import image_file, photom_reference


def test_phases_accumulate_and_the_line_reads_back(caplog):
    caplog.set_level(logging.INFO)
    timer = PhaseTimer()
    for _ in range(2):
        with timer.phase("step"):
            time.sleep(0.01)
    timer.log("demo")
    (record,) = read_timings(caplog.text)
    assert record["step"] == "demo"
    # Two passes of at least 10 ms each are added up, not overwritten.
    assert record["wall"]["step"] >= 0.02
    # The process started before the timer, and the total covers every phase.
    assert record["wall"]["start"] > 0
    assert record["wall"]["total"] >= record["wall"]["start"] + record["wall"]["step"]
    assert record["cpu"]["total"] >= record["cpu"]["start"]


def test_read_timings_skips_other_lines():
    text = (f"2026-12-07T10:00:00.000Z romanpipe.steprun INFO using FLAT reference f.asdf\n"
            f"2026-12-07T10:00:01.000Z romanpipe.timing INFO {TAG} "
            + json.dumps({"step": "flat_field", "wall": {"start": 1.5}, "cpu": {"start": 1.0}}) + "\n")
    assert read_timings(text) == [{"step": "flat_field", "wall": {"start": 1.5}, "cpu": {"start": 1.0}}]


def test_process_age_is_measured_on_linux():
    age = seconds_since_process_start()
    if age is None:
        pytest.skip("no /proc on this system")
    assert age > 0


def test_a_step_script_logs_every_phase(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    reference = photom_reference(tmp_path / "roman_wfi_photom_0001.asdf")
    source = image_file(tmp_path / f"{EXPO}_flat.asdf")
    output = tmp_path / f"{EXPO}_photom.asdf"
    assert photom.cli.run(photom.main, [str(source), str(output), "--override-photom", str(reference)]) == 0
    (record,) = read_timings(caplog.text)
    assert record["step"] == "photom"
    assert set(record["wall"]) == set(record["cpu"]) == {*PHASES, "total"}
    # The phases follow one another within the total (each figure is rounded to 1 ms).
    assert record["wall"]["total"] + 0.0005 * len(PHASES) >= sum(record["wall"][phase] for phase in PHASES)
