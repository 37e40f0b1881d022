"""likely: maximum-likelihood fit of the resultant differences, with iterative jump rejection.

The algorithm of romancal 1.1 / stcal 1.20 (``algorithm=likely``), after Brandt (2024a),
"Optimal fitting and debiasing for detectors read out up-the-ramp" (PASP 136, 045004)
and Brandt (2024b), "Likelihood-based jump detection and cosmic ray rejection for
detectors read out up-the-ramp" (PASP 136, 045005). Our own code and derivation:

* The data are the n - 1 differences d_i = (R_{i+1} - R_i) / (t_{i+1} - t_i) of the
  resultants (electrons; the pedestal drops out). For a rate F they all have mean F and,
  from the resultants' covariance in ``readout`` (Var R_i = F tau_i + sigma^2 / N_i,
  Cov(R_j, R_i) = F t_j for j < i), a tridiagonal covariance (Brandt 2024a, Eqs. 28-29):
  Var d_i = [sigma^2 (1/N_i + 1/N_{i+1}) + F (tau_i + tau_{i+1} - 2 t_i)] / dt_i^2,
  Cov(d_i, d_{i+1}) = [F (t_{i+1} - tau_{i+1}) - sigma^2 / N_{i+1}] / (dt_i dt_{i+1}).
* The fit is generalised least squares with that covariance Sigma, evaluated at a
  guessed rate: with G = Sigma^-1 restricted to the usable differences,
  F = 1'G d / 1'G 1, Var F = 1 / 1'G 1 (split into its read-noise and Poisson parts with
  the weights w = G 1 / 1'G 1), chi^2 = (d - F)'G(d - F). A difference is usable when both
  of its resultants carry no GROUPDQ flag (as stcal) and are finite. Left-out differences
  split the tridiagonal system into independent blocks; it is solved by an LDL'
  factorisation (forward pivots p_i), and the diagonal and first off-diagonal of G come
  from the forward and backward pivots q_i: G_ii = 1 / (p_i + q_i - Sigma_ii),
  G_{i,i+1} = -Sigma_{i,i+1} G_ii / q_{i+1} (the determinant identities of tridiagonal
  inverses; no products of determinants, so no rescaling against overflow is needed).
* Jumps (Brandt 2024b, Sects. 3.1-3.2): leaving difference j out is fitting one more
  parameter, a free offset of d_j; the chi^2 it saves is the score statistic
  (G r)_j^2 / (G_jj - (G 1)_j^2 / 1'G 1), r = d - F. Leaving out a pair j, j + 1 (a jump
  inside a multi-read resultant splits its charge between both differences next to it;
  only where R_{j+1} has more than one read) saves z' M^-1 z with z = ((G r)_j, (G r)_{j+1})
  and M the 2 x 2 block of G - G 1 1'G / 1'G 1. The best single drop is compared with
  rejection_threshold^2, the best pair with the chi^2 (two degrees of freedom) quantile of
  the same tail probability, each by its margin; the larger positive margin is dropped,
  its resultant(s) after the difference(s) flagged JUMP_DET, and the search repeats while
  more than three differences are left (at most n - 1 times). The covariance during the
  search is that of the median of the usable differences (clipped at 0); the final fit
  uses that of the rate the search ended with (clipped at 0).

Where we differ from stcal 1.20, deliberately: the rate guess is the median of the
*usable* differences (stcal takes every difference, so a pixel saturating halfway gets
a guess near 0 and a read-noise-only covariance: false jumps); of equally good drops
(within a relative 1e-9) the first is dropped (stcal drops all that are equal to the last
bit); NaN resultants are left out (stcal propagates NaN); as in ``cas22``, the DARK
rate times t is added back to the dark-subtracted resultants (romancal 1.1 ignores the
dark) and a pixel without a slope gets NaN and DO_NOT_USE (romancal: NaN slope and ERR).
``use_jump=False`` fits without the search (romancal runs it always): the jump step's
JUMP_DET flags then decide.
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

from romanpipe import dqflags

import numba
import numpy as np
from scipy import special, stats

from .pixelwise import (
    GROUP_FLAG_BITS,
    RampFit,
    carried_group_flags,
    check_inputs,
    pixel_major,
    plane_rows,
    run_row_chunks,
)
from .readout import INLINED, PER_PIXEL, resultant_times, uniform_weights
from .snowballs import SnowballParameters, flag_large_events

log = logging.getLogger(__name__)

DEFAULT_REJECTION_THRESHOLD = 4.5
# romancal's likely fit needs four resultants (three differences) or more.
MIN_RESULTANTS = 4
# The search stops once this many usable differences or fewer are left: with two, nothing
# tells which one is wrong; with three, a pair cannot be dropped safely.
MIN_DIFFERENCES_TO_SEARCH = 4
# A drop's chi^2 matrix is singular (the drop would leave no data) below this relative size.
SINGULAR = 1.0e-9
# Drops whose margins differ by less than this fraction are equally good: the first one (in the
# order single j - 1, pair j - 1 and j, single j) is taken. Ties are real: when a drop leaves a
# single difference it saves the whole chi^2, whichever it is.
TIE = 1.0e-9


class LikelyTables(NamedTuple):
    """The read pattern's share of the differences' covariance, as arrays numba can take."""

    inverse_span: np.ndarray  # (n-1,) 1 / (t_{i+1} - t_i)
    mean_time: np.ndarray  # (n,) t_bar, s
    read_diagonal: np.ndarray  # (n-1,) Var d_i / sigma^2
    signal_diagonal: np.ndarray  # (n-1,) Var d_i / F
    read_offdiagonal: np.ndarray  # (n-2,) Cov(d_i, d_{i+1}) / sigma^2
    signal_offdiagonal: np.ndarray  # (n-2,) Cov(d_i, d_{i+1}) / F
    pair_allowed: np.ndarray  # (n-2,) bool: differences i, i+1 may be dropped together
    uniform: np.ndarray  # (n,) read-noise-limited weights over all resultants (for dumo)


def build_tables(read_pattern, frame_time: float) -> LikelyTables:
    """Tables of a read pattern; ValueError for an impossible one or fewer than four resultants."""
    times = resultant_times(read_pattern, frame_time)
    if times.nresultants < MIN_RESULTANTS:
        raise ValueError(f"{times.nresultants} resultants: the likely fit needs {MIN_RESULTANTS} or more")
    t, tau, count = times.mean_time, times.poisson_factor, times.read_count
    span = np.diff(t)
    inner = slice(1, -1)
    return LikelyTables(
        inverse_span=1.0 / span,
        mean_time=t,
        read_diagonal=(1.0 / count[:-1] + 1.0 / count[1:]) / span**2,
        signal_diagonal=(tau[:-1] + tau[1:] - 2.0 * t[:-1]) / span**2,
        read_offdiagonal=-1.0 / (count[inner] * span[:-1] * span[1:]),
        signal_offdiagonal=(t[inner] - tau[inner]) / (span[:-1] * span[1:]),
        pair_allowed=count[inner] > 1,
        uniform=uniform_weights(times),
    )


def rejection_thresholds(rejection_threshold: float) -> tuple[float, float]:
    """chi^2 a single drop and a pair must save: the threshold squared, and the chi^2 (2 degrees
    of freedom) value of the same two-sided Gaussian tail probability (stcal's choice; the
    square plus 10 where that probability underflows)."""
    single = rejection_threshold**2
    pair = float(stats.chi2.isf(special.erfc(rejection_threshold / math.sqrt(2.0)), 2))
    return single, pair if math.isfinite(pair) else single + 10.0


def fit_ramps_likely(resultants, groupdq, pixeldq, gain, read_noise, dark_rate, read_pattern,
                     frame_time: float, *, use_jump: bool = True,
                     rejection_threshold: float = DEFAULT_REJECTION_THRESHOLD,
                     snowballs: SnowballParameters | None = None, flags=dqflags.pixel,
                     workers: int = 1) -> RampFit:
    """Fit every pixel's ramp by maximum likelihood; inputs are never modified.

    resultants  (nresultants, nrows, ncols) DN, dark-subtracted; groupdq the same shape
    pixeldq     (nrows, ncols) PIXELDQ, OR-ed into the result's DQ
    gain        (nrows, ncols) e/DN; read_noise (nrows, ncols) DN per read
    dark_rate   (nrows, ncols) DN/s added back for the noise model, or None for none
    read_pattern  read numbers of each resultant; frame_time  s per read
    use_jump    the iterative jump search (flags the pixels it finds JUMP_DET)
    rejection_threshold  sigma of a single dropped difference (>= 0)
    snowballs   snowball flagging after the search (``snowballs.flag_large_events`` on the
                search's jumps, GROUPDQ's JUMP_DET and SATURATED), or None for none: as in
                stcal, the difference before every resultant flagged JUMP_DET is left out of
                the final fit, which keeps the covariance of the rate its search ended with;
                a grown saturated core only adds SATURATED to the pixel's DQ
    flags       DQ flag values by name; workers  threads over row chunks (result independent of it)

    Pixels without a usable difference, or with an invalid gain (NO_GAIN_VALUE) or read
    noise, get NaN slope and variances and DO_NOT_USE. The result carries chi^2.
    """
    if not rejection_threshold >= 0.0:
        raise ValueError(f"rejection_threshold {rejection_threshold}: expected a number >= 0")
    check_inputs(resultants, groupdq, {"pixeldq": pixeldq, "gain": gain, "read_noise": read_noise,
                                       "dark_rate": dark_rate}, read_pattern)
    tables = build_tables(read_pattern, frame_time)
    nresultants, nrows, ncols = resultants.shape
    if snowballs is not None and nresultants > _MAX_BITS:
        raise ValueError(f"{nresultants} resultants: snowball flagging takes at most {_MAX_BITS}")
    single_threshold, pair_threshold = rejection_thresholds(float(rejection_threshold))
    kernel_flags = (GROUP_FLAG_BITS,  # every GROUPDQ flag takes a resultant out, as in stcal's likely fit
                    carried_group_flags(flags), int(flags["JUMP_DET"]), int(flags["DO_NOT_USE"]),
                    int(flags["NO_GAIN_VALUE"]))

    slope = np.empty((nrows, ncols), dtype=np.float32)
    var_poisson, var_rnoise, chisq, uniform_minus_optimal = (np.empty_like(slope) for _ in range(4))
    dq = np.empty((nrows, ncols), dtype=np.uint32)
    dropped = np.empty((nrows, ncols), dtype=np.uint64)
    flux = np.empty((nrows, ncols), dtype=np.float64)
    ndiff = nresultants - 1

    def fit_rows(rows: slice) -> None:
        nothing_forced = np.zeros((rows.stop - rows.start, ncols), dtype=np.uint64)
        _fit_rows(pixel_major(resultants, rows, np.float32), pixel_major(groupdq, rows, np.uint8),
                  plane_rows(pixeldq, rows, np.uint32, ncols), plane_rows(gain, rows, np.float32, ncols),
                  plane_rows(read_noise, rows, np.float32, ncols),
                  plane_rows(dark_rate, rows, np.float32, ncols), tables, use_jump, single_threshold,
                  pair_threshold, *kernel_flags, np.empty((_WORK_ROWS, ndiff)),
                  np.empty(ndiff, dtype=np.bool_), False, nothing_forced, nothing_forced.astype(np.float64),
                  slope[rows], var_poisson[rows], var_rnoise[rows], chisq[rows], dq[rows],
                  uniform_minus_optimal[rows], dropped[rows], flux[rows])

    run_row_chunks(fit_rows, nrows, workers)
    fit = RampFit(slope, var_poisson, var_rnoise, dq, uniform_minus_optimal, chisq=chisq)
    if snowballs is not None:
        _flag_snowballs(fit, dropped, flux, resultants, groupdq, pixeldq, gain, read_noise, dark_rate, tables,
                        kernel_flags, snowballs, flags)
    return fit


def _flag_snowballs(fit: RampFit, dropped, flux, resultants, groupdq, pixeldq, gain, read_noise, dark_rate,
                    tables, kernel_flags, snowballs: SnowballParameters, flags) -> None:
    """Snowball flagging on the first pass's jumps; the pixels it adds jumps to are refitted
    into ``fit``'s arrays, those of grown saturated cores get SATURATED."""
    nresultants = resultants.shape[0]
    bits = np.left_shift(np.uint64(1), np.arange(nresultants, dtype=np.uint64))[:, None, None]
    jump_det, saturated_flag = int(flags["JUMP_DET"]), int(flags["SATURATED"])
    jumps = ((dropped[None] & bits) != 0) | ((np.asarray(groupdq) & jump_det) != 0)
    saturated = (np.asarray(groupdq) & saturated_flag) != 0
    new_jumps, new_saturated, count = flag_large_events(jumps, saturated, snowballs)
    added = new_jumps & ~jumps
    rows, cols = np.nonzero(added.any(axis=0))
    fit.dq[(new_saturated & ~saturated).any(axis=0)] |= saturated_flag
    log.info("snowballs: %d found, %d pixels with new jumps refitted", count, rows.size)
    if rows.size == 0:
        return
    # The refit's forced drops: the search's and every resultant flagged JUMP_DET after the
    # flagging (a jump a grown core erased still leaves its difference out, as in stcal).
    forced = (dropped[rows, cols] | np.bitwise_or.reduce(added[:, rows, cols] * bits[:, :, 0], axis=0))[None]

    def pixels(plane, dtype):
        if plane is None:
            return np.zeros((1, rows.size), dtype)
        return np.asarray(plane)[rows, cols][None].astype(dtype)

    slope, var_poisson, var_rnoise, chisq, dumo = (np.empty((1, rows.size), np.float32) for _ in range(5))
    dq, refit_dropped, refit_flux = (np.empty((1, rows.size), dtype)
                                     for dtype in (np.uint32, np.uint64, np.float64))
    ndiff = nresultants - 1
    _fit_rows(np.ascontiguousarray(np.asarray(resultants)[:, rows, cols].T[None], dtype=np.float32),
              np.ascontiguousarray(np.asarray(groupdq)[:, rows, cols].T[None], dtype=np.uint8),
              pixels(pixeldq, np.uint32), pixels(gain, np.float32), pixels(read_noise, np.float32),
              pixels(dark_rate, np.float32), tables, False, 0.0, 0.0, *kernel_flags,
              np.empty((_WORK_ROWS, ndiff)), np.empty(ndiff, dtype=np.bool_), True, forced,
              flux[rows, cols][None].copy(), slope, var_poisson, var_rnoise, chisq, dq, dumo,
              refit_dropped, refit_flux)
    fit.slope[rows, cols] = slope[0]
    fit.var_poisson[rows, cols] = var_poisson[0]
    fit.var_rnoise[rows, cols] = var_rnoise[0]
    fit.chisq[rows, cols] = chisq[0]
    fit.uniform_minus_optimal[rows, cols] = dumo[0]
    fit.dq[rows, cols] |= dq[0]


# Rows of the per-thread work array ``work`` (n-1 values each).
_DIFF, _DIAG, _OFF, _PIVOT, _BACK, _G1, _GD, _SCRATCH = range(8)
_WORK_ROWS = 8
# Resultants whose dropped differences are recorded, as bits of a uint64 (snowball flagging).
_MAX_BITS = 64


@numba.njit(**INLINED)
def _covariance(work, usable, tables, read_variance, flux):
    """Sigma at ``flux`` into work[_DIAG] and work[_OFF] (Cov(d_i, d_{i+1}) at i), left-out
    differences decoupled (unit diagonal, zero off-diagonal)."""
    m = usable.size
    for i in range(m):
        if usable[i]:
            work[_DIAG, i] = read_variance * tables.read_diagonal[i] + flux * tables.signal_diagonal[i]
        else:
            work[_DIAG, i] = 1.0
    for i in range(m - 1):
        if usable[i] and usable[i + 1]:
            work[_OFF, i] = read_variance * tables.read_offdiagonal[i] + flux * tables.signal_offdiagonal[i]
        else:
            work[_OFF, i] = 0.0
    work[_OFF, m - 1] = 0.0


@numba.njit(**INLINED)
def _solve(work, usable):
    """Factorise Sigma and solve G 1 (into work[_G1]) and G d (into work[_GD]), G 1 and G d zero
    at left-out differences; returns (1'G 1, 1'G d, d'G d).

    LDL': forward pivots p_i = Sigma_ii - Sigma_{i-1,i}^2 / p_{i-1} in work[_PIVOT].
    """
    m = usable.size
    diag, off, pivot, g1, gd, diff = work[_DIAG], work[_OFF], work[_PIVOT], work[_G1], work[_GD], work[_DIFF]
    z1 = zd = 0.0
    for i in range(m):
        one = 1.0 if usable[i] else 0.0
        data = diff[i] if usable[i] else 0.0
        if i == 0:
            pivot[i] = diag[i]
            z1, zd = one, data
        else:
            factor = off[i - 1] / pivot[i - 1]
            pivot[i] = diag[i] - factor * off[i - 1]
            z1 = one - factor * z1
            zd = data - factor * zd
        g1[i], gd[i] = z1, zd  # L^-1 b, divided by the pivots below
    x1 = xd = 0.0
    for i in range(m - 1, -1, -1):
        if i == m - 1:
            x1, xd = g1[i] / pivot[i], gd[i] / pivot[i]
        else:
            factor = off[i] / pivot[i]
            x1 = g1[i] / pivot[i] - factor * x1
            xd = gd[i] / pivot[i] - factor * xd
        g1[i], gd[i] = x1, xd
    c = b = a = 0.0
    for i in range(m):
        if usable[i]:
            c += g1[i]
            b += gd[i]
            a += diff[i] * gd[i]
    return c, b, a


@numba.njit(**INLINED)
def _inverse_band(work, i, m):
    """(G_ii, G_{i,i+1}) from the forward pivots and the backward ones in work[_BACK]."""
    diag, off = work[_DIAG], work[_OFF]
    g_ii = 1.0 / (work[_PIVOT, i] + work[_BACK, i] - diag[i])
    g_next = -off[i] * g_ii / work[_BACK, i + 1] if i + 1 < m else 0.0
    return g_ii, g_next


@numba.njit(**INLINED)
def _best_drop(work, usable, left, tables, c, rate, single_threshold, pair_threshold):
    """(first difference, 1 or 2 differences, rate without them) of the drop that saves the most
    chi^2 over its threshold; (-1, 0, rate) when none reaches it. ``left`` usable differences:
    a drop must leave one (then M, below, is singular in exact arithmetic; rounding would
    make a huge chi^2 of it)."""
    m = usable.size
    diag, off, back, g1, gd = work[_DIAG], work[_OFF], work[_BACK], work[_G1], work[_GD]
    back[m - 1] = diag[m - 1]
    for i in range(m - 2, -1, -1):
        back[i] = diag[i] - off[i] * off[i] / back[i + 1]
    best_margin, best_at, best_count, best_rate = 0.0, -1, 0, rate
    previous_ok = False
    previous_score = previous_m = previous_g1 = 0.0
    for j in range(m):
        if not usable[j]:
            previous_ok = False
            continue
        g_jj, g_next = _inverse_band(work, j, m)
        score = gd[j] - rate * g1[j]  # (G r)_j
        m_jj = g_jj - g1[j] * g1[j] / c
        if previous_ok and left > 2 and tables.pair_allowed[j - 1]:
            # The pair j-1, j: z' M^-1 z with the 2 x 2 block M of G - G1 1'G / C.
            m_cross = work[_SCRATCH, j - 1] - previous_g1 * g1[j] / c
            determinant = previous_m * m_jj - m_cross * m_cross
            if determinant > SINGULAR * previous_m * m_jj:
                first = (m_jj * previous_score - m_cross * score) / determinant
                second = (previous_m * score - m_cross * previous_score) / determinant
                margin = previous_score * first + score * second - pair_threshold
                if margin > best_margin * (1.0 + TIE):
                    best_margin, best_at, best_count = margin, j - 1, 2
                    best_rate = rate - (previous_g1 * first + g1[j] * second) / c
        if m_jj > SINGULAR * g_jj:
            margin = score * score / m_jj - single_threshold
            if margin > best_margin * (1.0 + TIE):
                best_margin, best_at, best_count = margin, j, 1
                best_rate = rate - g1[j] * (score / m_jj) / c
        work[_SCRATCH, j] = g_next  # G_{j,j+1} for the pair j, j+1
        previous_ok = True
        previous_score, previous_m, previous_g1 = score, m_jj, g1[j]
    return best_at, best_count, best_rate


@numba.njit(**INLINED)
def _median(values):
    """The median of ``values``, which it sorts in place (insertion sort: a ramp has few differences)."""
    for i in range(1, values.size):
        value = values[i]
        j = i - 1
        while j >= 0 and values[j] > value:
            values[j + 1] = values[j]
            j -= 1
        values[j + 1] = value
    middle = values.size // 2
    return values[middle] if values.size % 2 else 0.5 * (values[middle - 1] + values[middle])


@numba.njit(**INLINED)
def _final_fit(work, usable, tables, read_variance, flux):
    """(rate, var_rnoise, var_poisson, chi^2) of the fit of the usable differences with the
    covariance at ``flux`` (>= 0); NaN without a usable difference."""
    m = usable.size
    _covariance(work, usable, tables, read_variance, flux)
    c, b, a = _solve(work, usable)
    if not c > 0.0:
        return np.nan, np.nan, np.nan, np.nan
    rate = b / c
    # Var F = w' Sigma w with w = G 1 / C, its read-noise and Poisson parts.
    g1 = work[_G1]
    read_part = signal_part = 0.0
    for i in range(m):
        if usable[i]:
            w = g1[i] / c
            read_part += w * w * tables.read_diagonal[i]
            signal_part += w * w * tables.signal_diagonal[i]
            if i + 1 < m and usable[i + 1]:
                cross = 2.0 * w * g1[i + 1] / c
                read_part += cross * tables.read_offdiagonal[i]
                signal_part += cross * tables.signal_offdiagonal[i]
    return rate, read_variance * read_part, flux * signal_part, a - b * b / c


@numba.njit(**INLINED)
def _search(work, usable, tables, read_variance, use_jump, single_threshold, pair_threshold):
    """The jump search of one pixel (work[_DIFF] holds its differences, usable which count):
    returns (flux of the final fit, bits of the resultants after dropped differences), flux
    NaN without a usable difference. ``usable`` is updated with the drops."""
    m = usable.size
    # Rate guess for the search: the median of the usable differences, clipped at 0.
    left = 0
    for i in range(m):
        if usable[i] and math.isfinite(work[_DIFF, i]):
            work[_SCRATCH, left] = work[_DIFF, i]
            left += 1
        else:
            usable[i] = False
    if left == 0:
        return np.nan, np.uint64(0)
    guess = _median(work[_SCRATCH, :left])
    _covariance(work, usable, tables, read_variance, max(guess, 0.0))
    c, b, _ = _solve(work, usable)
    rate = b / c
    dropped = np.uint64(0)
    if use_jump:
        for _ in range(m):
            if left < 2:
                break
            first, count, dropped_rate = _best_drop(work, usable, left, tables, c, rate, single_threshold,
                                                    pair_threshold)
            if count == 0:
                break
            for i in range(first, first + count):
                usable[i] = False
                if i + 1 < _MAX_BITS:
                    dropped |= np.uint64(1) << np.uint64(i + 1)
            left -= count
            rate = dropped_rate
            if left < MIN_DIFFERENCES_TO_SEARCH:
                break
            _covariance(work, usable, tables, read_variance, max(guess, 0.0))
            c, b, _ = _solve(work, usable)
            rate = b / c
    # The final fit takes the covariance of the rate the search ended with.
    return max(rate, 0.0), dropped


@numba.njit(**PER_PIXEL)
def _fit_rows(resultants, groupdq, pixeldq, gain, read_noise, dark_rate, tables, use_jump, single_threshold,
              pair_threshold, excluding, carried, jump_flag, do_not_use, no_gain_value, work, usable,
              refit, forced, given_flux, slope_out, var_poisson_out, var_rnoise_out, chisq_out, dq_out,
              dumo_out, dropped_out, flux_out):
    """Fit a block of pixel-major rows (rows, cols, nresultants) into the 2-D outputs.

    ``work`` (_WORK_ROWS, n-1) and ``usable`` (n-1,) are work space. dropped_out and flux_out
    receive the search's dropped resultants (bit k: the difference before resultant k) and
    the flux of the final fit. With ``refit`` there is no search: the differences before the
    resultants of ``forced`` (bits) are left out, the fit takes the covariance at
    ``given_flux`` and the pixel is flagged JUMP_DET.
    """
    nrows, ncols, n = resultants.shape
    t = tables.mean_time
    for y in range(nrows):
        for x in range(ncols):
            g = np.float64(gain[y, x])
            sigma = np.float64(read_noise[y, x])
            dark = np.float64(dark_rate[y, x])
            if not math.isfinite(dark):
                dark = 0.0
            collapsed = np.int64(0)
            uniform = 0.0
            previous = 0.0
            previous_ok = False
            for k in range(n):
                value = np.float64(resultants[y, x, k])
                flags = np.int64(groupdq[y, x, k])
                collapsed |= flags
                uniform += tables.uniform[k] * value
                electrons = (value + dark * t[k]) * g
                ok = (flags & excluding) == 0 and math.isfinite(value)
                if k > 0:
                    work[_DIFF, k - 1] = (electrons - previous) * tables.inverse_span[k - 1]
                    usable[k - 1] = ok and previous_ok
                previous, previous_ok = electrons, ok
            dq = np.int64(pixeldq[y, x]) | (collapsed & carried)
            slope = var_poisson = var_rnoise = chisq = np.nan
            dropped_out[y, x] = 0
            flux_out[y, x] = np.nan
            if not (g > 0.0 and math.isfinite(g)):
                dq |= no_gain_value | do_not_use
            elif not (sigma > 0.0 and math.isfinite(sigma)):
                dq |= do_not_use
            else:
                read_variance = (sigma * g) ** 2
                if refit:
                    dropped = forced[y, x]
                    for i in range(n - 1):
                        if i + 1 < _MAX_BITS and (dropped >> np.uint64(i + 1)) & np.uint64(1):
                            usable[i] = False
                    flux = given_flux[y, x]
                else:
                    flux, dropped = _search(work, usable, tables, read_variance, use_jump, single_threshold,
                                            pair_threshold)
                dropped_out[y, x] = dropped
                flux_out[y, x] = flux
                rate = read_var = signal_var = chi2 = np.nan
                if math.isfinite(flux):
                    rate, read_var, signal_var, chi2 = _final_fit(work, usable, tables, read_variance, flux)
                if dropped != 0:
                    dq |= jump_flag
                if math.isnan(rate):
                    dq |= do_not_use
                else:
                    slope = rate / g - dark
                    var_rnoise = read_var / (g * g)
                    var_poisson = signal_var / (g * g)
                    chisq = chi2
            slope_out[y, x] = slope
            var_poisson_out[y, x] = var_poisson
            var_rnoise_out[y, x] = var_rnoise
            chisq_out[y, x] = chisq
            dq_out[y, x] = dq
            dumo_out[y, x] = uniform - slope
