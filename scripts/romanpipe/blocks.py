"""Working through a ramp a block of rows at a time, so memory does not grow with it.

A full detector ramp is gigabytes; steps read their memory-mapped input and
write their output one block of rows at a time, with float64 work arrays of a
bounded size whatever the number of resultants and columns.
"""

from __future__ import annotations

import numpy as np

# Values per work block: 32 MB of float64.
BLOCK_VALUES = 1 << 22


def rows_per_block(shape: tuple[int, ...]) -> int:
    """Rows of a (nresultants, nrows, ncols) ramp that fit in one work block (at least one)."""
    nresultants, _, ncols = shape
    return max(1, BLOCK_VALUES // max(1, nresultants * ncols))


def reusable_buffer(data: np.ndarray) -> np.ndarray | None:
    """``data`` when a step may overwrite it with its result, else None (use a new array).

    Products are read-only memory maps when stored uncompressed (ours) and
    private decompressed buffers when lz4-compressed (romancal's). Only the
    latter is writeable, and overwriting it saves a full copy of the ramp.
    """
    return data if data.flags.writeable and data.dtype == np.float32 else None


def output_array(data: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    """A float32 array of ``data``'s shape for a step's result: ``out`` when given, checked."""
    if out is None:
        return np.empty(data.shape, dtype=np.float32)
    if out.shape != data.shape or out.dtype != np.float32:
        raise ValueError(f"out is a {out.dtype} array of shape {out.shape}, expected float32 {data.shape}")
    return out
