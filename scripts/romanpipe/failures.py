"""Exposures whose calibration failed after the pool: the campaign's failure ledger.

The pool quarantines what it can see in the files. A job can still fail later on an
exposure's data (a step's one-line error in its log); under Snakemake's ``--keep-going``
the other exposures go on, but everything downstream of the failure waits for it,
mosaics included. The workflow therefore records each such exposure here when a run
ends with failed jobs, and leaves it out of the campaign's targets and associations from
then on: the associations are built from the members that reached ``_cal``. An entry
holds until the pool runs again (new inputs or a new CRDS context) or the ledger is
deleted; a job that was killed (no error line in its log) is not recorded and reruns.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path

from .files import atomic_path

LEDGER_COLUMNS = ["exposure", "path", "step", "reason"]
# The level name in a line of romanpipe.cli's log format: "<time> <logger> ERROR <message>".
_ERROR_FIELD = " ERROR "


def error_line(log: str | Path) -> str | None:
    """The last error a step script logged (its one-line reason), or None."""
    try:
        lines = Path(log).read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if _ERROR_FIELD in line:
            return line.split(_ERROR_FIELD, 1)[1].strip()
    return None


def read_ledger(path: str | Path, pool_table: str | Path) -> dict[str, dict[str, str]]:
    """Exposure -> its ledger row; empty when there is none or the pool is newer (it reran)."""
    path = Path(path)
    if not path.is_file() or (Path(pool_table).is_file()
                              and os.path.getmtime(pool_table) > os.path.getmtime(path)):
        return {}
    with open(path, newline="") as stream:
        return {row["exposure"]: row for row in csv.DictReader(stream)}


def record_failures(path: str | Path, pool_table: str | Path,
                    failures: Iterable[dict[str, str]]) -> list[str]:
    """Add ``failures`` (rows of LEDGER_COLUMNS) to the ledger; the exposures newly recorded."""
    ledger = read_ledger(path, pool_table)
    new = [row for row in failures if row["exposure"] not in ledger]
    ledger.update({row["exposure"]: row for row in new})
    with atomic_path(path) as staging, open(staging, "w", newline="") as stream:
        writer = csv.DictWriter(stream, LEDGER_COLUMNS)
        writer.writeheader()
        writer.writerows(sorted(ledger.values(), key=lambda row: row["exposure"]))
    return [row["exposure"] for row in new]
