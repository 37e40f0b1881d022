"""What a resampling step settles before it drizzles: parameters, memory, scratch space.

Shared by resample and outlier_detection: the command-line forms of their pair and
``fillval`` parameters, the bytes a mosaic and its accumulators take, checked against
``allowed_memory`` (the romancal documentation, sections "Resample" and "Outlier
Detection"), and where large work arrays live: in RAM (``in_memory``) or in
memory-mapped files.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import ParameterError, PipelineError

# The arrays of a Level 2 image and of a mosaic that hold a variance, in the order they are combined.
VARIANCES = ("var_rnoise", "var_poisson", "var_flat")
# Inputs recorded per plane of a context image (one bit each in an int32).
CONTEXT_BITS = 32


class OutputTooLargeError(PipelineError):
    """The resampled output would take more than ``allowed_memory`` of the available memory."""


class Scratch:
    """Where large work arrays live: RAM (``in_memory``) or memory-mapped files in a folder."""

    def __init__(self, directory: Path | None):
        self.directory = directory
        self._count = 0

    def array(self, shape, dtype, fill) -> np.ndarray:
        if self.directory is None:
            return np.full(shape, fill, dtype=dtype)
        self._count += 1
        array = np.lib.format.open_memmap(self.directory / f"work{self._count}.npy", mode="w+",
                                          dtype=dtype, shape=tuple(shape))
        array[...] = fill
        return array


@contextmanager
def scratch_space(in_memory: bool, near: Path | None = None):
    """A Scratch in RAM, or in a private folder beside ``near`` removed afterwards."""
    if in_memory:
        yield Scratch(None)
        return
    with tempfile.TemporaryDirectory(prefix=".drizzle.", dir=near) as folder:
        yield Scratch(Path(folder))


def parse_pair(value, kind=float, name="value") -> tuple | None:
    """``None``, a 2-list, or the command-line form ``"a, b"`` as a tuple of ``kind``.

    The comma-separated form is the romancal documentation's, section "Resample" (``crpix``,
    ``crval``, ``output_shape``).
    """
    if value is None:
        return None
    parts = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    try:
        pair = tuple(kind(part) for part in parts)
    except (TypeError, ValueError):
        raise ParameterError(f"{name}: expected two comma-separated numbers, got {value!r}") from None
    if len(pair) != 2:
        raise ParameterError(f"{name}: expected two values, got {value!r}")
    return pair


def parse_fillval(fillval: str | float | None) -> float | None:
    """None for ``INDEF`` (leave pixels without input as NaN), else the number."""
    if fillval is None or (isinstance(fillval, str) and fillval.strip().upper() in ("", "INDEF")):
        return None
    try:
        return float(fillval)
    except ValueError:
        raise ParameterError(f"fillval: expected INDEF or a number, got {fillval!r}") from None


def mosaic_bytes(shape: tuple[int, int], n_inputs: int, with_variances: bool = True) -> int:
    """Bytes of a resampled product and its accumulators (what ``allowed_memory`` is checked against)."""
    planes = (max(n_inputs, 1) - 1) // CONTEXT_BITS + 1
    per_pixel = 4 + 4 + 4 * planes                   # data, weight, context
    if with_variances:
        per_pixel += 4 + 4 * len(VARIANCES)          # err and the variances
        per_pixel += 8 * len(VARIANCES) + 8 + 4      # sums and weights, one drizzled variance, W_i
    return int(np.prod(shape)) * per_pixel


def check_memory(nbytes: int, allowed_memory: float | None, what: str) -> None:
    """Raise OutputTooLargeError when ``nbytes`` exceeds the allowed fraction of available memory.

    ``allowed_memory`` None falls back to the environment variable
    DMODEL_ALLOWED_MEMORY; when neither is set no check is made (the romancal
    documentation, section "Resample", ``allowed_memory``).
    """
    if allowed_memory is None:
        setting = os.environ.get("DMODEL_ALLOWED_MEMORY", "").strip()
        if not setting:
            return
        try:
            allowed_memory = float(setting)
        except ValueError:
            raise ParameterError(f"DMODEL_ALLOWED_MEMORY={setting!r} is not a number") from None
    import psutil

    available = psutil.virtual_memory().available + psutil.swap_memory().free
    if nbytes > allowed_memory * available:
        raise OutputTooLargeError(
            f"{what} needs {nbytes / 2**20:.1f} MiB, more than allowed_memory={allowed_memory:g} "
            f"of the {available / 2**20:.0f} MiB available")
