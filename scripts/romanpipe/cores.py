"""Threads for a step's ``maximum_cores`` setting: none / quarter / half / all (the romancal
documentation, section "Jump Detection")."""

from __future__ import annotations

import os

CORE_FRACTIONS = {"none": None, "quarter": 0.25, "half": 0.5, "all": 1.0}


def available_cores() -> int:
    """CPUs this process may run on: os.cpu_count() unless a batch scheduler (SLURM) or
    taskset confined it to fewer, when more threads than CPUs would only compete, or
    OMP_NUM_THREADS asks for fewer (Snakemake sets it to each job's threads)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    requested = os.environ.get("OMP_NUM_THREADS", "")
    return min(cores, int(requested)) if requested.isdigit() and int(requested) > 0 else cores


def worker_count(maximum_cores: str, available: int | None = None) -> int:
    """Workers for ``maximum_cores`` out of ``available`` cores (default: this process's), at least 1."""
    try:
        fraction = CORE_FRACTIONS[maximum_cores]
    except KeyError:
        raise ValueError(f"maximum_cores {maximum_cores!r}: expected one of "
                         f"{', '.join(CORE_FRACTIONS)}") from None
    if fraction is None:
        return 1
    return max(1, int((available or available_cores()) * fraction))
