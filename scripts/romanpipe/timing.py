"""Where a step's process spends its time, measured and logged in one parseable line.

Every step script that goes through :func:`romanpipe.steprun.run_on_file` logs, at INFO::

    romanpipe-timing {"step": "saturation", "wall": {...}, "cpu": {...}}

with wall-clock and CPU seconds for each phase: ``start`` (from the process's creation to
the step's first line: the interpreter's start and the imports), ``read`` (opening the
input; arrays are memory-mapped, so pages first touched by the step count in ``step``),
``step`` (the step's own work), ``provenance`` (cal_step and provenance, with the reference
checksums), ``write`` (writing the product) and ``total`` (from the process's creation to
the log line). ``make bench`` reads these lines back (:func:`read_timings`); what a job costs
besides them (the shell, the interpreter's exit) is its benchmark's wall minus ``total``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

TAG = "romanpipe-timing"
PHASES = ("start", "read", "step", "provenance", "write")


def seconds_since_process_start() -> float | None:
    """Wall seconds since this process was created (Linux: /proc; elsewhere None).

    /proc/self/stat's 22nd field is the start in clock ticks since boot, the clock that
    CLOCK_BOOTTIME reads in seconds (a tick is 10 ms: the resolution of this figure).
    """
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return max(time.clock_gettime(time.CLOCK_BOOTTIME) - started, 0.0)
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class PhaseTimer:
    """Wall and CPU seconds per named phase of one process, from its creation on."""

    def __init__(self) -> None:
        self._created = time.perf_counter() - (seconds_since_process_start() or 0.0)
        self.wall: dict[str, float] = {"start": time.perf_counter() - self._created}
        self.cpu: dict[str, float] = {"start": time.process_time()}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - wall
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu

    def log(self, step: str) -> None:
        """The ``romanpipe-timing`` line, totals since the process's creation included."""
        wall = {**self.wall, "total": time.perf_counter() - self._created}
        cpu = {**self.cpu, "total": time.process_time()}
        log.info("%s %s", TAG, json.dumps({
            "step": step,
            "wall": {name: round(value, 3) for name, value in wall.items()},
            "cpu": {name: round(value, 3) for name, value in cpu.items()}}))


def read_timings(text: str) -> list[dict]:
    """The timing records of a log's ``romanpipe-timing`` lines, in order."""
    records = []
    for line in text.splitlines():
        _, tag, record = line.partition(TAG + " ")
        if tag:
            records.append(json.loads(record))
    return records
