"""What both ramp-fitting algorithms take from a read pattern.

A resultant is the mean of ``N_i`` reads taken at ``read_number * frame_time`` after the
reset. For a ramp collecting ``F`` electrons per second (Casertano et al. 2022, Sect. 3):

* its mean time is ``t_bar_i = frame_time * mean(reads_i)``;
* its Poisson variance is ``F * tau_i`` with ``tau_i = (1/N_i^2) sum_{k,l} min(t_k, t_l)``,
  which for sorted reads is ``(frame_time/N_i^2) sum_k (2 (N_i - k) - 1) read_k`` (k from 0);
* its read-noise variance is ``sigma^2 / N_i`` (sigma: the noise of one read);
* an earlier resultant ``j < i`` shares ``F * t_bar_j`` of covariance with it.

Both algorithms choose their weights from the segment's signal-to-noise ratio with the
power table of Fixsen et al. (2000), also Table 2 of Casertano et al. (2022).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from romanpipe.readpattern import mean_read_times

import numba
import numpy as np

# numba options of the kernels' row loops and of the helpers they call for every pixel.
# None of them allocates, so they run without numba's reference counting: with it every
# array argument of every call costs an atomic increment and decrement, and those alone
# made a pixel several times slower than its whole fit.
PER_PIXEL = {"cache": True, "nogil": True, "_nrt": False}
# Small helpers are also inlined by numba itself: LLVM leaves some calls in place, and each
# such call copies the read-pattern tables (a tuple of a dozen arrays) by value.
INLINED = {**PER_PIXEL, "inline": "always"}

# Fixsen et al. 2000 / Casertano et al. 2022 Table 2: S in [0, 5) -> P = 0, [5, 10) -> 0.4, ...
WEIGHT_SNR_EDGES = np.array([5.0, 10.0, 20.0, 50.0, 100.0])
WEIGHT_POWERS = np.array([0.0, 0.4, 1.0, 3.0, 6.0, 10.0])
# What a segment's signal S is estimated from to pick P (see rampfit_kernels.cas22): its
# read-noise-weighted slope times its duration (default), or its last minus first resultant.
POWER_SIGNALS = ("uniform_slope", "endpoints")


@dataclass(frozen=True)
class ResultantTimes:
    """Per-resultant quantities of a read pattern (float64 arrays of length nresultants)."""

    mean_time: np.ndarray  # t_bar, s after the reset
    poisson_factor: np.ndarray  # tau, s: Var(R_i) = F * tau_i + sigma^2 / N_i
    read_count: np.ndarray  # N_i

    @property
    def nresultants(self) -> int:
        return self.mean_time.size


def resultant_times(read_pattern: Sequence[Sequence[int]], frame_time: float) -> ResultantTimes:
    """t_bar, tau and N of every resultant; ValueError for a pattern no ramp can have."""
    mean_time = mean_read_times(read_pattern, frame_time)
    reads = [np.asarray(resultant, dtype=np.float64) for resultant in read_pattern]
    flat = np.concatenate(reads)
    if flat[0] < 1 or np.any(np.diff(flat) <= 0):
        raise ValueError("read numbers must start at 1 or later and increase")
    poisson_factor = np.array([
        frame_time * np.sum((2 * (r.size - np.arange(r.size)) - 1) * r) / r.size**2 for r in reads
    ])
    read_count = np.array([float(r.size) for r in reads])
    return ResultantTimes(mean_time, poisson_factor, read_count)


def uniform_weights(times: ResultantTimes) -> np.ndarray:
    """Weights w_i of the read-noise-limited least-squares slope ``sum_i w_i R_i`` over all resultants.

    Each resultant counts with its number of reads (its read-noise variance is sigma^2/N_i);
    this is the P = 0 case of the optimal weights, used for the ``dumo`` array.
    """
    n, t = times.read_count, times.mean_time
    if t.size < 2:
        return np.full(t.size, np.nan)
    centred = t - np.sum(n * t) / np.sum(n)
    return n * centred / np.sum(n * centred**2)


@numba.njit(**PER_PIXEL)
def power_index(signal: float, read_variance: float) -> int:
    """Index in WEIGHT_POWERS of the weighting power for a segment.

    ``signal``: the charge the segment collected (electrons; negative counts as 0);
    ``read_variance``: sigma^2 in electrons^2. S = signal / sqrt(sigma^2 + signal).
    """
    signal = max(signal, 0.0)
    total = read_variance + signal
    snr = signal / math.sqrt(total) if total > 0.0 else 0.0
    index = 0
    while index < WEIGHT_SNR_EDGES.size and snr >= WEIGHT_SNR_EDGES[index]:
        index += 1
    return index
