"""Running a per-pixel kernel over an image: checks, result arrays, DQ masks, rows on threads.

The numba kernels see one block of rows at a time, copied into C-contiguous,
pixel-major arrays ``(rows, cols, nresultants)``: every pixel's ramp is then one run of
memory, and the kernels are compiled for a single layout whatever the caller passes
(memory-mapped, read-only, strided views of a trimmed detector, another dtype).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

# Rows each worker takes at a time: small enough to balance the load and keep the
# pixel-major copies in cache, large enough that the per-call overhead never shows.
ROWS_PER_CHUNK = 32


# The GROUPDQ bits, all in the low byte; DO_NOT_USE marks a single resultant and is not
# carried into the pixel's DQ (the pixel gets it only when no slope could be measured).
GROUP_FLAG_BITS = 0xFF


@dataclass(frozen=True)
class RampFit:
    """The rate image of a ramp fit, in DN/s; NaN slope and variances where no fit exists."""

    slope: np.ndarray  # float32 DN/s
    var_poisson: np.ndarray  # float32 (DN/s)^2
    var_rnoise: np.ndarray  # float32 (DN/s)^2
    dq: np.ndarray  # uint32: PIXELDQ | collapsed GROUPDQ | what the fit found
    uniform_minus_optimal: np.ndarray  # float32 DN/s: read-noise-weighted slope minus ``slope``
    chisq: np.ndarray | None = None  # float32 chi^2 of the fit, where the algorithm computes one

    @property
    def err(self) -> np.ndarray:
        """sqrt(VAR_POISSON + VAR_RNOISE), float32."""
        return np.sqrt(self.var_poisson + self.var_rnoise)


def flag_mask(flags: Mapping[str, int], names) -> int:
    """Bitwise OR of the named flags."""
    mask = 0
    for name in names:
        mask |= int(flags[name])
    return mask


def carried_group_flags(flags: Mapping[str, int]) -> int:
    """GROUPDQ bits OR-ed into the pixel's DQ: all but DO_NOT_USE."""
    return GROUP_FLAG_BITS & ~int(flags["DO_NOT_USE"])


def check_inputs(resultants, groupdq, planes: Mapping[str, np.ndarray | None], read_pattern) -> None:
    """ValueError naming the array whose shape does not fit the ramp."""
    if resultants.ndim != 3 or 0 in resultants.shape:
        raise ValueError(f"resultants have shape {resultants.shape}, expected (nresultants, nrows, ncols)")
    if groupdq.shape != resultants.shape:
        raise ValueError(f"groupdq has shape {groupdq.shape}, the resultants {resultants.shape}")
    for name, plane in planes.items():
        if plane is not None and plane.shape != resultants.shape[1:]:
            raise ValueError(f"{name} has shape {plane.shape}, the image {resultants.shape[1:]}")
    if len(read_pattern) != resultants.shape[0]:
        raise ValueError(f"read pattern has {len(read_pattern)} resultants, the data {resultants.shape[0]}")


def pixel_major(cube: np.ndarray, rows: slice, dtype) -> np.ndarray:
    """``cube[:, rows]`` as a C-contiguous (rows, cols, nresultants) copy of ``dtype``."""
    block = np.empty((rows.stop - rows.start, cube.shape[2], cube.shape[0]), dtype=dtype)
    # One plane at a time reads memory in order: four times faster than a transposing copy.
    for k in range(cube.shape[0]):
        block[:, :, k] = cube[k, rows]
    return block


def plane_rows(plane: np.ndarray | None, rows: slice, dtype, ncols: int) -> np.ndarray:
    """``plane[rows]`` as a C-contiguous copy of ``dtype``; zeros for a missing plane."""
    if plane is None:
        return np.zeros((rows.stop - rows.start, ncols), dtype=dtype)
    return np.ascontiguousarray(plane[rows], dtype=dtype)


def run_row_chunks(fit_rows: Callable[[slice], None], nrows: int, workers: int) -> None:
    """Call ``fit_rows(rows)`` on consecutive row slices, on ``workers`` threads.

    The kernels release the GIL and fit every pixel on its own, so the result does not
    depend on the number of workers.
    """
    chunks = [slice(start, min(start + ROWS_PER_CHUNK, nrows)) for start in range(0, nrows, ROWS_PER_CHUNK)]
    workers = max(1, min(workers, len(chunks)))
    log.debug("fitting %d rows in %d chunks on %d thread(s)", nrows, len(chunks), workers)
    if workers == 1:
        for rows in chunks:
            fit_rows(rows)
        return
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(fit_rows, chunks))  # list() re-raises a worker's exception
