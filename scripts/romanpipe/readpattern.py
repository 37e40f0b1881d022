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
