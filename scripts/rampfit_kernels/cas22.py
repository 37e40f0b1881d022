"""ols_cas22: optimal fit of unevenly sampled ramps with integrated jump detection.

Fit (Casertano et al. 2022, "Determination of the count rate from unevenly spaced
resultants", Sect. 5; equation numbers as stcal's ols_cas22 cites them):

* segments are runs of usable resultants; a resultant flagged DO_NOT_USE, SATURATED,
  JUMP_DET, DROPOUT or AD_FLOOR, or holding NaN, ends a segment; a one-resultant
  segment gets no fit and no weight;
* weighting power P from S = s / sqrt(sigma^2 + s) with Table 2 (Fixsen's powers),
  s the segment's signal in electrons (Eq. 44, pedestal removed; see below);
* weights W_i = (1 + P) N_i / (1 + P N_i) |(t_i - t_mid) / t_half|^P (Eq. 45), t_mid and
  t_half the middle and half-length in time of the segment;
* F0 = sum W, F1 = sum W t, F2 = sum W t^2, D = F2 F0 - F1^2 (Eqs. 35-36),
  K_i = (F0 t_i - F1) W_i / D (Eq. 37), slope = sum K_i R_i (Eq. 38);
* read-noise variance V_R = sigma^2 sum K_i^2 / N_i (Eq. 39), signal variance
  V_S = F (sum K_i^2 tau_i + 2 sum_{j<i} K_i K_j t_j) (Eq. 40);
* segments are combined with weights w = 1/V_R (romancal's "Exposure-level
  computations"): slope = sum w F_s / sum w, V_R = 1 / sum w, and
  V_S = max(slope, 0) sum w^2 (V_S/F)_s / (sum w)^2 with the combined slope as F.

Times are centred on t_mid inside the sums (K and D do not change, the sums keep their
precision). K, V_R / sigma^2 and V_S / F depend only on the segment and P, so they are
tabulated once per read pattern for every (P, first, last): a pixel costs dot products.

The signal s that picks P: Casertano's Eq. 44 (and stcal) take the last minus the first
resultant. Its noise then decides the weights, and because the weights change with P
this correlates the weights with the noise of the fit: at S near a table edge the slope
is biased high, by +0.095 sigma for a 1 e/s sky on IMG_UNEVEN_6 and +0.03-0.05 sigma
at 0.1-1 e/s on IMG_UNEVEN_16 (tests/test_ramp_fit.py measures this). By default s is
the segment's read-noise-weighted (P = 0) slope times its duration instead: the same
quantity, estimated with less noise and nearly uncorrelated with the optimal fit's error;
the bias falls below 0.01 sigma and the scatter does not grow. ``power_signal="endpoints"``
gives the documented choice (and stcal's results, for the parity test).

Dark current (the romancal documentation, section "Ramp Fitting", "Dark current"): the DARK
rate times t_i is added back to the dark-subtracted resultants before the fit, so the
weights, the Poisson variance and the jump statistic see the charge the pixel collected; the
dark rate is subtracted from the fitted slope again.

Jump detection (Sharma et al., as described in romancal's "Jump Detection" and coded in
stcal's ols_cas22 ``_jump``): each fitted ramp [R_a..R_b] with slope alpha is tested at
every resultant i with the local slopes l_{i,i+d} = (R_{i+d} - R_i) / (t_{i+d} - t_i),
d = 1 and 2 (d = 1 only for i = b - 1); S is the largest s_i, at i*;

* a jump when S >= intercept - constant * log10(alpha), alpha clipped to [1, 1e4] e/s
  (5.5 sigma at 1 e/s and 4.5 sigma at 1000 e/s by default);
* R_i* and R_i*+1 are dropped and [R_a..R_i*-1] and [R_i*+2..R_b] go back on the queue;
  a side with fewer than two resultants cannot be fitted and drops out (the documentation's
  note on jumps at the first, second, second-to-last or last resultant). A pixel with a jump
  gets JUMP_DET in its DQ.

The documented statistic (``jump_statistic="documented"``, stcal's):
s_i = max_d (l_{i,i+d} - alpha) / sqrt(Var) with
Var = [sigma^2 (1/N_i + 1/N_{i+d}) + alpha (tau_i + tau_{i+d} - 2 t_i)] / (t_{i+d} - t_i)^2
- alpha / (t_b - t_a), the last term standing for the covariance of a local slope with
alpha (the documentation's formula lacks the square on sigma and the 2 before t_i; the
code and the covariance of two resultants have them). It has two weaknesses. Its variance
is an approximation that is far off for short bright sub-ramps (the last term approaches
the others): after a first jump, a bright pixel can lose its remaining resultants to false
ones (on IMG_UNEVEN_6, 0.5 % of jump-hit pixels at 10-100 e/s and 1.2-1.5 % above 10^3 e/s
ended without a slope).
And alpha absorbs part of the jump: on 6 resultants a jump in the middle of the 4- or
8-read resultants looks partly like a steeper slope (61 % of 10-sigma jumps found at
0.1-1 e/s, 79 % at 1-10; stcal flags the same pixels).

The default statistic (``"exact"``) keeps the candidates, the threshold and the queue, and
computes each test's variance exactly from the covariance of the resultants (readout:
Var R_i = F tau_i + sigma^2 / N_i, Cov(R_j, R_i) = F t_j for j < i, with F = max(alpha, 0)).
Every statistic is a contrast delta = c . R with c = u - k, u the local slope's two
coefficients +-1 / (t_{i+d} - t_i) and k the coefficients of the slope it is compared with,
so Var delta = c' C c = Var l - 2 Cov(l, slope) + Var slope:

* against the segment's fit (k = K, Casertano's coefficients): Var slope = V_R + V_S from
  the tables (Eqs. 39-40) and Cov(l, alpha) = [(CK)_{i+d} - (CK)_i] / (t_{i+d} - t_i) with
  (CK)_j = sigma^2 K_j / N_j + F (K_j tau_j + sum_{l<j} K_l t_l - t_j sum_{l<=j} K_l);
* at i* also against the common slope alpha' of the resultants on either side,
  [R_a..R_i*] and [R_i*+d..R_b] (d = 2 leaves R_i*+1 out): their read-noise-weighted
  (P = 0) fits K^L and K^R combined with weights w = 1 / (V_R / sigma^2) = sum N (t - t_bar)^2,
  the fit of the ramp if the jump is there. alpha' does not contain the jump, so it cannot
  absorb it; with d = 2 a jump inside the multi-read R_i*+1, which shares its charge
  between both adjacent single differences, is seen whole. F' = max(alpha', 0);
  Var alpha' = [sigma^2 (w_L + w_R) + F' (w_L^2 v_L + w_R^2 v_R)] / (w_L + w_R)^2, v = V_S / F
  of each side's fit (the two sides' slopes are uncorrelated because sum K^R = 0), and
  Cov(l, alpha') = [w_R K^R_{i+d} (sigma^2 / N_{i+d} + F' (tau_{i+d} - t_{i+d}))
  - w_L K^L_i (sigma^2 / N_i + F' (tau_i - t_i))] / ((w_L + w_R)(t_{i+d} - t_i)).

s_i* is the larger of the two. Checking the side slope at every resultant finds hardly more
jumps than at i* alone (75.55 against 75.51 % at 0.1-1 e/s) at a much higher cost. The
result on IMG_UNEVEN_6 at 10 sigma (sigma: the noise of R_{k+1} - R_{k-1} around the
resultant k the jump lands in; tests/test_ramp_fit.py): 76 / 86 / 98.0 / 99.9 / 100 % flagged
at 0.1-1 / 1-10 / 10-100 / 10^2-10^3 / 10^3-10^4 e/s, against 78 / 87 / 98.7 / 99.95 / 99.99 %
for the best test that knows the read of the jump and the rate; no pixel is left without
a slope by a cascade of false jumps (the few that still end without one, 2 in 10^5 above
10^3 e/s, lose their last sub-ramp to a genuine threshold-level fluctuation), and false
jumps on clean ramps stay below 5e-4 of the pixels in every flux decade (as documented).
The fit with it takes about twice as long (0.08 -> 0.17 us per pixel at 6 resultants,
0.16 -> 0.30 at 16, one core: ~1.4 s and ~2.4 s more for a 4088^2 detector), for the O(n)
covariance terms of every segment and the two side fits at i*.

Other deliberate differences from romancal/stcal: the statistic's noise terms use
max(alpha, 0) (a negative fitted rate has no Poisson variance; stcal can take the root
of a negative variance), all sums are float64, the dark current is added back as the
documentation says (romancal 1.1 ignores it), and a pixel without a slope gets NaN (romancal:
slope 0 and ERR 0) with DO_NOT_USE in both.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from romanpipe import dqflags

import numba
import numpy as np

from .pixelwise import (
    RampFit,
    carried_group_flags,
    check_inputs,
    flag_mask,
    pixel_major,
    plane_rows,
    run_row_chunks,
)
from .readout import (
    INLINED,
    PER_PIXEL,
    POWER_SIGNALS,
    WEIGHT_POWERS,
    power_index,
    resultant_times,
    uniform_weights,
)

DEFAULT_THRESHOLD_INTERCEPT = 5.5
DEFAULT_THRESHOLD_CONSTANT = 1.0 / 3.0
# The threshold function is only calibrated between these rates (e/s).
THRESHOLD_RATE_RANGE = (1.0, 1.0e4)
# Flags that take a resultant out of the fit.
EXCLUDING_FLAGS = ("DO_NOT_USE", "SATURATED", "JUMP_DET", "DROPOUT", "AD_FLOOR")
# How each jump candidate's significance is computed (see the module docstring).
JUMP_STATISTICS = ("exact", "documented")
# A contrast whose variance is below this fraction of its local slope's is rounding noise.
NOISELESS_CONTRAST = 1.0e-6
# The coefficient table grows as n^3 (17 MB at 128 resultants, 134 MB at 256).
MAX_RESULTANTS = 256


class Cas22Tables(NamedTuple):
    """Everything the kernel needs from the read pattern, as arrays numba can take."""

    mean_time: np.ndarray  # (n,) t_bar, s
    poisson_factor: np.ndarray  # (n,) tau, s
    read_count: np.ndarray  # (n,) N
    segment_offset: np.ndarray  # (n, n) where the K_i of segment [a, b] start in ``coefficients``
    coefficients: np.ndarray  # (npowers, sum of segment lengths) K_i of every segment
    read_factor: np.ndarray  # (npowers, n, n) V_R / sigma^2 of segment [a, b]
    signal_factor: np.ndarray  # (npowers, n, n) V_S / F of segment [a, b]
    uniform: np.ndarray  # (n,) read-noise-limited weights over the whole ramp (for dumo)
    span_inverse_time: np.ndarray  # (2, n) 1 / (t_{i+d} - t_i) for d = 1, 2 (NaN past the end)
    span_read_factor: np.ndarray  # (2, n) 1/N_i + 1/N_{i+d}
    span_poisson_factor: np.ndarray  # (2, n) tau_i + tau_{i+d} - 2 t_i
    # Of the read-noise-weighted (P = 0) fit of [a, b], zero where b <= a (no fit):
    side_weight: np.ndarray  # (n, n) 1 / (V_R / sigma^2) = sum N (t - t_bar)^2
    side_signal: np.ndarray  # (n, n) side_weight^2 V_S / F
    side_start_leverage: np.ndarray  # (n, n) side_weight K_a = N_a (t_a - t_bar)
    side_end_leverage: np.ndarray  # (n, n) side_weight K_b = N_b (t_b - t_bar)
    inverse_count: np.ndarray  # (n,) 1 / N


def build_tables(read_pattern, frame_time: float) -> Cas22Tables:
    """Tables of a read pattern (ValueError for an impossible or too long pattern)."""
    times = resultant_times(read_pattern, frame_time)
    t, tau, count = times.mean_time, times.poisson_factor, times.read_count
    n = times.nresultants
    if n > MAX_RESULTANTS:
        raise ValueError(f"{n} resultants: ols_cas22 fits at most {MAX_RESULTANTS}")
    npowers = WEIGHT_POWERS.size
    segment_offset = np.zeros((n, n), dtype=np.int64)
    total = 0
    for first in range(n):
        for last in range(first + 1, n):
            segment_offset[first, last] = total
            total += last - first + 1
    # A one-resultant segment has no slope: its one coefficient, after all the others, is 0.
    segment_offset[np.arange(n), np.arange(n)] = total
    coefficients = np.zeros((npowers, total + 1))
    read_factor = np.full((npowers, n, n), np.nan)
    signal_factor = np.full((npowers, n, n), np.nan)
    _fill_tables(t, tau, count, segment_offset, coefficients, read_factor, signal_factor)

    span_inverse_time = np.full((2, n), np.nan)
    span_read_factor = np.full((2, n), np.nan)
    span_poisson_factor = np.full((2, n), np.nan)
    for span in (1, 2):
        i = np.arange(n - span)
        span_inverse_time[span - 1, i] = 1.0 / (t[i + span] - t[i])
        span_read_factor[span - 1, i] = 1.0 / count[i] + 1.0 / count[i + span]
        span_poisson_factor[span - 1, i] = tau[i] + tau[i + span] - 2.0 * t[i]
    first, last = np.triu_indices(n, 1)
    weight = 1.0 / read_factor[0, first, last]
    side_weight, side_signal, side_start_leverage, side_end_leverage = np.zeros((4, n, n))
    side_weight[first, last] = weight
    side_signal[first, last] = weight * weight * signal_factor[0, first, last]
    side_start_leverage[first, last] = weight * coefficients[0, segment_offset[first, last]]
    side_end_leverage[first, last] = weight * coefficients[0, segment_offset[first, last] + last - first]
    return Cas22Tables(t, tau, count, segment_offset, coefficients, read_factor, signal_factor,
                       uniform_weights(times), span_inverse_time, span_read_factor, span_poisson_factor,
                       side_weight, side_signal, side_start_leverage, side_end_leverage, 1.0 / count)


def fit_ramps_cas22(resultants, groupdq, pixeldq, gain, read_noise, dark_rate, read_pattern,
                    frame_time: float, *, use_jump: bool = True,
                    threshold_intercept: float | None = None, threshold_constant: float | None = None,
                    power_signal: str = "uniform_slope", jump_statistic: str = "exact", flags=dqflags.pixel,
                    workers: int = 1) -> RampFit:
    """Fit every pixel's ramp; inputs are never modified.

    resultants  (nresultants, nrows, ncols) DN, dark-subtracted
    groupdq     (nresultants, nrows, ncols) GROUPDQ flags
    pixeldq     (nrows, ncols) PIXELDQ, OR-ed into the result's DQ
    gain        (nrows, ncols) e/DN; read_noise (nrows, ncols) DN per read
    dark_rate   (nrows, ncols) DN/s added back for the noise model, or None for none
    read_pattern  read numbers of each resultant; frame_time  s per read
    use_jump    integrated jump detection (flags found jumps JUMP_DET)
    threshold_intercept / threshold_constant  of the jump threshold (None: 5.5 and 1/3)
    power_signal  what picks the weighting power: "uniform_slope" or the documented
                "endpoints" (see the module docstring)
    jump_statistic  "exact" or the "documented" one of Sharma et al. (module docstring)
    flags       DQ flag values by name (roman_datamodels' by default)
    workers     threads over row chunks; the result does not depend on it

    Pixels without two usable resultants in a row, or with an invalid gain (NO_GAIN_VALUE)
    or read noise, get NaN slope and variances and DO_NOT_USE.
    """
    if power_signal not in POWER_SIGNALS:
        raise ValueError(f"power_signal {power_signal!r}: expected one of {', '.join(POWER_SIGNALS)}")
    if jump_statistic not in JUMP_STATISTICS:
        raise ValueError(f"jump_statistic {jump_statistic!r}: expected one of {', '.join(JUMP_STATISTICS)}")
    power_from_endpoints = power_signal == "endpoints"
    documented_statistic = jump_statistic == "documented"
    check_inputs(resultants, groupdq, {"pixeldq": pixeldq, "gain": gain, "read_noise": read_noise,
                                       "dark_rate": dark_rate}, read_pattern)
    tables = build_tables(read_pattern, frame_time)
    intercept = DEFAULT_THRESHOLD_INTERCEPT if threshold_intercept is None else float(threshold_intercept)
    constant = DEFAULT_THRESHOLD_CONSTANT if threshold_constant is None else float(threshold_constant)
    excluding = flag_mask(flags, EXCLUDING_FLAGS)
    carried = carried_group_flags(flags)
    jump_flag, do_not_use = int(flags["JUMP_DET"]), int(flags["DO_NOT_USE"])
    no_gain_value = int(flags["NO_GAIN_VALUE"])

    nresultants, nrows, ncols = resultants.shape
    slope = np.empty((nrows, ncols), dtype=np.float32)
    var_poisson = np.empty_like(slope)
    var_rnoise = np.empty_like(slope)
    uniform_minus_optimal = np.empty_like(slope)
    dq = np.empty((nrows, ncols), dtype=np.uint32)

    def fit_rows(rows: slice) -> None:
        _fit_rows(pixel_major(resultants, rows, np.float32), pixel_major(groupdq, rows, np.uint8),
                  plane_rows(pixeldq, rows, np.uint32, ncols), plane_rows(gain, rows, np.float32, ncols),
                  plane_rows(read_noise, rows, np.float32, ncols),
                  plane_rows(dark_rate, rows, np.float32, ncols),
                  tables, power_from_endpoints, use_jump, documented_statistic, intercept, constant,
                  excluding, carried, jump_flag, do_not_use, no_gain_value,
                  np.empty(nresultants), np.empty(nresultants, dtype=np.bool_),
                  np.empty((nresultants, 2), dtype=np.int64), np.empty((2, nresultants)),
                  slope[rows], var_poisson[rows], var_rnoise[rows], dq[rows], uniform_minus_optimal[rows])

    run_row_chunks(fit_rows, nrows, workers)
    return RampFit(slope, var_poisson, var_rnoise, dq, uniform_minus_optimal)


@numba.njit(**PER_PIXEL)
def _segment_coefficients(t, tau, count, first, last, power, out):
    """K_i of segment [first, last] into ``out[:last-first+1]``; returns (V_R/sigma^2, V_S/F)."""
    t_mid = 0.5 * (t[first] + t[last])
    t_half = 0.5 * (t[last] - t[first])
    f0 = f1 = f2 = 0.0
    for i in range(first, last + 1):
        centred = t[i] - t_mid
        weight = (1.0 + power) * count[i] / (1.0 + power * count[i]) * abs(centred / t_half) ** power
        out[i - first] = weight
        f0 += weight
        f1 += weight * centred
        f2 += weight * centred * centred
    determinant = f2 * f0 - f1 * f1
    read = signal = earlier = 0.0  # earlier: sum over j < i of K_j t_j
    for i in range(first, last + 1):
        k = (f0 * (t[i] - t_mid) - f1) * out[i - first] / determinant
        out[i - first] = k
        read += k * k / count[i]
        signal += k * k * tau[i] + 2.0 * k * earlier
        earlier += k * t[i]
    return read, signal


@numba.njit(**PER_PIXEL)
def _fill_tables(t, tau, count, segment_offset, coefficients, read_factor, signal_factor):
    """K_i, V_R / sigma^2 and V_S / F of every segment and power, into the tables."""
    n = t.size
    for p in range(WEIGHT_POWERS.size):
        for first in range(n):
            for last in range(first + 1, n):
                offset = segment_offset[first, last]
                out = coefficients[p, offset:offset + last - first + 1]
                read, signal = _segment_coefficients(t, tau, count, first, last, WEIGHT_POWERS[p], out)
                read_factor[p, first, last] = read
                signal_factor[p, first, last] = signal


@numba.njit(**INLINED)
def _fit_segment(electrons, first, last, power, tables):
    """(slope, V_R/sigma^2, V_S/F) of segment [first, last] with the weighting power index."""
    offset = tables.segment_offset[first, last]
    slope = 0.0
    for i in range(first, last + 1):
        slope += tables.coefficients[power, offset + i - first] * electrons[i]
    return slope, tables.read_factor[power, first, last], tables.signal_factor[power, first, last]


@numba.njit(**INLINED)
def _signed_square_excess(difference, span, i, slope, flux, correction, read_variance, tables):
    """s |s| for s = delta / sqrt(Var) of the local slope over resultants i and i + span + 1.

    s |s| orders like s and needs no square root: the statistic is compared, not shown.
    """
    inverse_time = tables.span_inverse_time[span, i]
    variance = (read_variance * tables.span_read_factor[span, i]
                + flux * tables.span_poisson_factor[span, i]) * inverse_time * inverse_time + correction
    if not variance > 0.0:
        return -np.inf
    delta = difference * inverse_time - slope
    return delta * abs(delta) / variance


@numba.njit(**INLINED)
def _largest_documented_excess(electrons, first, last, slope, read_variance, tables):
    """(i*, S |S|): where the documented single/double-difference statistic of [first, last] peaks."""
    flux = max(slope, 0.0)
    correction = -flux / (tables.mean_time[last] - tables.mean_time[first])
    best, best_at = -np.inf, first
    for i in range(first, last):
        statistic = _signed_square_excess(electrons[i + 1] - electrons[i], 0, i, slope, flux, correction,
                                          read_variance, tables)
        if i + 2 <= last:
            statistic = max(statistic, _signed_square_excess(electrons[i + 2] - electrons[i], 1, i, slope,
                                                             flux, correction, read_variance, tables))
        if statistic > best:
            best, best_at = statistic, i
    return best_at, best


@numba.njit(**INLINED)
def _ratio(signed_square_excess, variance, local_variance):
    """The statistic's s |s| = delta |delta| / Var; -inf for a contrast that is zero up to rounding.

    Below NOISELESS_CONTRAST of the local slope's variance the contrast is rounding noise:
    a two-resultant segment's slope is its only local slope.
    """
    if variance > NOISELESS_CONTRAST * local_variance:
        return signed_square_excess / variance
    return -np.inf


@numba.njit(**INLINED)
def _side_statistic(electrons, first, last, i, read_variance, tables, best):
    """max(best, s |s| of the local slopes from resultant i to i + 1 and i + 2 against the sides' slope).

    For the local slope over i and j the sides are [first, i] and [j, last], fitted with
    P = 0 and combined with weights w = 1 / (V_R / sigma^2); a one-resultant side has no
    fit and no weight (its tabulated coefficient and weight are 0).

    With W = w_left + w_right, everything is scaled by W^3 so that no division is needed
    unless the statistic beats ``best``: delta W = local W - sum w slope, F W = max(sum w slope, 0).
    """
    t, tau, inverse_count = tables.mean_time, tables.poisson_factor, tables.inverse_count
    left = tables.side_weight[first, i]
    left_weighted = left * _fit_segment(electrons, first, i, 0, tables)[0]
    left_signal = tables.side_signal[first, i]
    left_read_cross = tables.side_end_leverage[first, i] * inverse_count[i]
    left_flux_cross = tables.side_end_leverage[first, i] * (tau[i] - t[i])
    for span in range(min(2, last - i)):
        j = i + span + 1
        right = tables.side_weight[j, last]
        total = left + right
        weighted = left_weighted + right * _fit_segment(electrons, j, last, 0, tables)[0]
        flux_total = max(weighted, 0.0)
        inverse_time = tables.span_inverse_time[span, i]
        local_read = tables.span_read_factor[span, i] * inverse_time * inverse_time
        local_signal = tables.span_poisson_factor[span, i] * inverse_time * inverse_time
        start_leverage = tables.side_start_leverage[j, last]
        # W^2 Var(local), W^2 (t_j - t_i) Cov(local, side slope), W^3 Var(side slope)
        local_variance = total * (read_variance * local_read * total + flux_total * local_signal)
        cross = (read_variance * total * (start_leverage * inverse_count[j] - left_read_cross)
                 + flux_total * (start_leverage * (tau[j] - t[j]) - left_flux_cross))
        side_variance = (read_variance * total * total
                         + flux_total * (left_signal + tables.side_signal[j, last]))
        variance = total * (local_variance - 2.0 * inverse_time * cross) + side_variance
        excess = (electrons[j] - electrons[i]) * inverse_time * total - weighted
        signed_square = excess * abs(excess) * total
        if variance > NOISELESS_CONTRAST * total * local_variance and signed_square > best * variance:
            best = signed_square / variance
    return best


@numba.njit(**INLINED)
def _largest_exact_excess(electrons, first, last, slope, power, read_variance, tables, covariance):
    """(i*, S |S|): where the exact-variance statistic of segment [first, last] peaks (module docstring).

    ``covariance`` (2, n) is work space for the read and Poisson parts of each resultant's
    covariance with the fitted slope.
    """
    t, tau, inverse_count = tables.mean_time, tables.poisson_factor, tables.inverse_count
    flux = max(slope, 0.0)
    offset = tables.segment_offset[first, last]
    earlier = through = 0.0  # sum_{l<j} K_l t_l and sum_{l<=j} K_l
    for j in range(first, last + 1):
        k = tables.coefficients[power, offset + j - first]
        through += k
        covariance[0, j] = k * inverse_count[j]
        covariance[1, j] = k * tau[j] + earlier - t[j] * through
        earlier += k * t[j]
    slope_variance = (read_variance * tables.read_factor[power, first, last]
                      + flux * tables.signal_factor[power, first, last])

    best, best_at = -np.inf, first
    for i in range(first, last):
        statistic = -np.inf
        for span in range(min(2, last - i)):
            j = i + span + 1
            inverse_time = tables.span_inverse_time[span, i]
            local_variance = (read_variance * tables.span_read_factor[span, i]
                              + flux * tables.span_poisson_factor[span, i]) * inverse_time * inverse_time
            variance = (local_variance + slope_variance
                        - 2.0 * inverse_time * (read_variance * (covariance[0, j] - covariance[0, i])
                                                + flux * (covariance[1, j] - covariance[1, i])))
            excess = (electrons[j] - electrons[i]) * inverse_time - slope
            statistic = max(statistic, _ratio(excess * abs(excess), variance, local_variance))
        if statistic > best:
            best, best_at = statistic, i
    # Where a jump is most likely, the slope of the resultants around it has not absorbed it.
    return best_at, _side_statistic(electrons, first, last, best_at, read_variance, tables, best)


@numba.njit(**INLINED)
def _jump_threshold(slope, intercept, constant):
    """intercept - constant * log10(slope), the slope (e/s) clipped to the calibrated range."""
    rate = min(max(slope, THRESHOLD_RATE_RANGE[0]), THRESHOLD_RATE_RANGE[1])
    return intercept - constant * math.log10(rate)


@numba.njit(**INLINED)
def _fit_pixel(electrons, usable, read_variance, tables, power_from_endpoints, use_jump, documented_statistic,
               intercept, constant, queue, covariance):
    """Fit one pixel (electrons, dark included); returns (slope, V_R, V_S / slope, jump found).

    The slope is NaN when no segment of two or more usable resultants is left.
    """
    n = electrons.size
    # Queue the runs of usable resultants; they are disjoint and separated by at least one
    # resultant, as are the sub-ramps a jump leaves, so n entries always suffice.
    queued = 0
    i = 0
    while i < n:
        if usable[i]:
            first = i
            while i + 1 < n and usable[i + 1]:
                i += 1
            queue[queued, 0], queue[queued, 1] = first, i
            queued += 1
        i += 1

    weight_sum = weighted_slope = weighted_signal = 0.0
    jump_found = False
    while queued > 0:
        queued -= 1
        first, last = queue[queued, 0], queue[queued, 1]
        if last == first:
            continue  # one resultant: no slope, no weight
        uniform_slope, read, signal = _fit_segment(electrons, first, last, 0, tables)
        if power_from_endpoints:
            segment_signal = electrons[last] - electrons[first]
        else:
            segment_signal = uniform_slope * (tables.mean_time[last] - tables.mean_time[first])
        power = power_index(segment_signal, read_variance)
        slope = uniform_slope
        if power > 0:
            slope, read, signal = _fit_segment(electrons, first, last, power, tables)
        if use_jump:
            if documented_statistic:
                jump_at, statistic = _largest_documented_excess(electrons, first, last, slope, read_variance,
                                                                tables)
            else:
                jump_at, statistic = _largest_exact_excess(electrons, first, last, slope, power,
                                                           read_variance, tables, covariance)
            threshold = _jump_threshold(slope, intercept, constant)
            if statistic >= threshold * abs(threshold):
                jump_found = True
                if jump_at > first:
                    queue[queued, 0], queue[queued, 1] = first, jump_at - 1
                    queued += 1
                if jump_at + 1 < last:
                    queue[queued, 0], queue[queued, 1] = jump_at + 2, last
                    queued += 1
                continue
        weight = 1.0 / (read_variance * read)
        weight_sum += weight
        weighted_slope += weight * slope
        weighted_signal += weight * weight * signal
    if weight_sum == 0.0:
        return np.nan, np.nan, np.nan, jump_found
    return (weighted_slope / weight_sum, 1.0 / weight_sum, weighted_signal / (weight_sum * weight_sum),
            jump_found)


@numba.njit(**PER_PIXEL)
def _fit_rows(resultants, groupdq, pixeldq, gain, read_noise, dark_rate, tables, power_from_endpoints,
              use_jump, documented_statistic, intercept, constant, excluding, carried, jump_flag, do_not_use,
              no_gain_value, electrons, usable, queue, covariance, slope_out, var_poisson_out, var_rnoise_out,
              dq_out, dumo_out):
    """Fit a block of pixel-major rows (rows, cols, nresultants) into the 2-D outputs.

    ``electrons`` (n,), ``usable`` (n,), ``queue`` (n, 2) and ``covariance`` (2, n) are work space.
    """
    nrows, ncols, n = resultants.shape
    for y in range(nrows):
        for x in range(ncols):
            g = np.float64(gain[y, x])
            sigma = np.float64(read_noise[y, x])
            dark = np.float64(dark_rate[y, x])
            if not math.isfinite(dark):
                dark = 0.0
            collapsed = np.int64(0)
            uniform = 0.0
            for k in range(n):
                value = np.float64(resultants[y, x, k])
                flags = np.int64(groupdq[y, x, k])
                collapsed |= flags
                uniform += tables.uniform[k] * value
                electrons[k] = (value + dark * tables.mean_time[k]) * g
                usable[k] = (flags & excluding) == 0 and math.isfinite(value)
            dq = np.int64(pixeldq[y, x]) | (collapsed & carried)
            slope = var_poisson = var_rnoise = np.nan
            if not (g > 0.0 and math.isfinite(g)):
                dq |= no_gain_value | do_not_use
            elif not (sigma > 0.0 and math.isfinite(sigma)):
                dq |= do_not_use
            else:
                rate, read_var, signal, jump_found = _fit_pixel(
                    electrons, usable, (sigma * g) ** 2, tables, power_from_endpoints, use_jump,
                    documented_statistic, intercept, constant, queue, covariance)
                if jump_found:
                    dq |= jump_flag
                if math.isnan(rate):
                    dq |= do_not_use
                else:
                    slope = rate / g - dark
                    var_rnoise = read_var / (g * g)
                    var_poisson = signal * max(rate, 0.0) / (g * g)
            slope_out[y, x] = slope
            var_poisson_out[y, x] = var_poisson
            var_rnoise_out[y, x] = var_rnoise
            dq_out[y, x] = dq
            dumo_out[y, x] = uniform - slope
