"""Times of the resultants of an MA table's read pattern (read j happens j frame times after the reset)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def mean_read_times(read_pattern: Sequence[Sequence[int]], frame_time: float) -> np.ndarray:
    """Mean time (s after the reset) of the reads averaged into each resultant.

    ValueError for a pattern with a resultant without reads or a frame time that is not
    a positive number (the -999999 placeholder of unfilled metadata included).
    """
    if not read_pattern or any(len(reads) == 0 for reads in read_pattern):
        raise ValueError("meta.exposure.read_pattern has no reads for some resultant")
    if not (math.isfinite(frame_time) and frame_time > 0):
        raise ValueError(f"meta.exposure.frame_time is {frame_time}, expected a positive time")
    return np.array([frame_time * np.mean(reads) for reads in read_pattern], dtype=np.float64)


# The H4RG readout (romancal 1.1, romancal.lib.basic_utils.frame_read_times): 32 channels of
# 128 columns read in alternating directions, 14 clock cycles of padding between rows, one
# clock cycle per pixel, and a guide-window excursion every 256 rows whose time counts 1.5
# times (the WFI18 transient decays faster while the guide window is read).
FULL_FRAME_ROWS = 4096
CHANNEL_COLUMNS = 128
ROW_PADDING_CYCLES = 14
PIXEL_CLOCK_S = 4.915263e-06
GUIDE_WINDOW_STRIDE_ROWS = 256
GUIDE_WINDOW_PSEUDOTIME_FACTOR = 1.5


def pixel_read_times(shape: tuple[int, int], frame_time: float, sca: int) -> np.ndarray:
    """When each pixel of one frame is read (s after the frame starts), float64 (nrows, ncols).

    romancal 1.1's model of a full 4096 x 4096 frame read through 32 channels, with the
    science -> detector flip of detector ``sca`` (1-18): detectors whose number is a
    multiple of 3 flip columns, the others rows. An array of another shape is taken as
    the pixels at the same row and column indices of a full frame (the corner at the
    origin: our simulated readouts), which is romancal's map for a full frame.

    The time is a sum of a row term and a column term, so it is built from two vectors
    instead of romancal's three full-frame arrays.
    """
    nrows, ncols = shape
    if nrows > FULL_FRAME_ROWS or ncols > FULL_FRAME_ROWS:
        raise ValueError(f"a frame of {shape} pixels is larger than the detector")
    row_cycles = CHANNEL_COLUMNS + ROW_PADDING_CYCLES
    science_cycles = (CHANNEL_COLUMNS - 1) + (FULL_FRAME_ROWS - 1) * row_cycles
    excursions = FULL_FRAME_ROWS // GUIDE_WINDOW_STRIDE_ROWS
    cycles_per_excursion = ((frame_time / PIXEL_CLOCK_S - science_cycles) / excursions
                            * GUIDE_WINDOW_PSEUDOTIME_FACTOR)
    # The frame ends with one more excursion after the last science pixel.
    frame_cycles = science_cycles + excursions * cycles_per_excursion

    rows = np.arange(FULL_FRAME_ROWS)
    row_clock = rows * float(row_cycles) + (rows // GUIDE_WINDOW_STRIDE_ROWS) * cycles_per_excursion
    columns = np.arange(FULL_FRAME_ROWS)
    in_pair = columns % (2 * CHANNEL_COLUMNS)
    column_clock = np.where(in_pair < CHANNEL_COLUMNS, in_pair, 2 * CHANNEL_COLUMNS - 1 - in_pair)
    if sca % 3 == 0:
        column_clock = column_clock[::-1]
    else:
        row_clock = row_clock[::-1]
    clock = row_clock[:nrows, None] + column_clock[None, :ncols]
    return frame_time * clock / frame_cycles
