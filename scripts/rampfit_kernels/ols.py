"""ols: optimally weighted least-squares fit of evenly sampled ramps (Fixsen et al. 2000).

The romancal documentation, section "Description: Optimized Least-squares with Even
Ramps" (the JWST algorithm, formulas from the romancal/JWST ramp-fitting documentation),
with N reads per group and group time dt (the spacing of the resultants' mean times):

* segments: runs of usable groups; DO_NOT_USE, SATURATED, DROPOUT, AD_FLOOR or NaN
  make a group unusable; a usable group flagged JUMP_DET starts a new segment (the
  jump happened before it), but alone it is no measurement (its value holds the jump)
  and is dropped, as stcal does. If any segment has two or more groups the one-group
  segments are dropped, otherwise only the first one is kept;
* weighting power P (Fixsen et al. 2000, PASP 112, 1350: their table of P against S)
  from S = s / sqrt(sigma_e^2 + s) with s the segment's signal in electrons (see below);
  weights w_k = |(k - k_mid) / k_mid|^P for the k-th group of the segment (Fixsen's
  |k - k_mid|^P, scaled to [0, 1], which leaves the fit unchanged);
* segment slope and intercept by weighted least squares on the groups' mean times;
  one-group segment: value / mean time (the signal since the reset; stcal divides a
  lone group k > 0 by the group time, which overstates its rate by t_k / dt);
* var_R = 12 sigma_g^2 / ((m^3 - m) dt^2) for m groups, sigma_g = read noise / sqrt(N)
  the noise of one group (the documentation's R; stcal turns JWST's CDS noise into it);
  2 sigma_g^2 / t^2 for a one-group segment (JWST's convention);
* var_P = (slope_est + dark) / (dt * gain * (m - 1)) (dt replaced by t for one group),
  slope_est = median of the first differences of usable, jump-free group pairs, or
  the first group / its mean time when there are none; a negative median counts as 0;
* exposure level: var_R = 1 / sum(1/var_R,s), var_P = 1 / sum(1/var_P,s),
  slope = sum(slope_s / var_R,s) / sum(1 / var_R,s): segments are weighted by their
  read noise alone, as stcal 1.20 does (its JP-4318: weights holding the Poisson
  noise favour low rates, and carry one integration's rate into another's weights);
* DQ: PIXELDQ and every GROUPDQ bit but DO_NOT_USE, so a JUMP_DET group counts even
  when it is DO_NOT_USE (as stcal and romancal); DO_NOT_USE only without a slope.

The documented special cases follow from these rules: one group (value / its time), two
groups (their difference / dt), saturated from the second group (first group / its
time), first group the only good one (its rate is also the slope estimate).

The optional product (``save_opt``) holds per segment slope, sigslope = sqrt(var_C,s)
with var_C,s = var_R,s + var_P,s, yint (fit at t = 0), sigyint (read-noise-only
intercept error of the unweighted fit, as var_R is the unweighted one), weights
1 / var_R,s (stcal's), var_poisson, var_rnoise, plus the
pedestal (first group extrapolated to t = 0 with the exposure slope; 0 when the first
group is saturated or there is no slope) and crmag (group minus previous group at each
JUMP_DET group), all in electrons as the RampFitOutputModel schema documents.

As in ols_cas22, P is chosen by default from the segment's unweighted-fit slope times
its duration rather than from its last minus first group: the end points' noise then
no longer decides the weights (see cas22's docstring for the bias this removes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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

EXCLUDING_FLAGS = ("DO_NOT_USE", "SATURATED", "DROPOUT", "AD_FLOOR")
# Relative tolerance on equal spacing of the groups' mean times.
EVEN_SPACING_TOLERANCE = 1e-6


@dataclass(frozen=True)
class SegmentFits:
    """The optional ``_fitopt`` content, electrons-based; per-segment arrays (nsegments, ny, nx)."""

    slope: np.ndarray  # e/s
    sigslope: np.ndarray  # e/s
    yint: np.ndarray  # e
    sigyint: np.ndarray  # e
    weights: np.ndarray  # 1 / var_R in (e/s)^-2: the segment's weight in the slope
    var_poisson: np.ndarray  # (e/s)^2
    var_rnoise: np.ndarray  # (e/s)^2
    pedestal: np.ndarray  # (ny, nx) e
    crmag: np.ndarray  # (ncr, ny, nx) e


def even_group_time(read_pattern, frame_time: float) -> float:
    """The group time of an even read pattern; ValueError for an uneven one."""
    times = resultant_times(read_pattern, frame_time)
    if np.any(times.read_count != times.read_count[0]):
        raise ValueError("algorithm ols needs the same number of reads in every resultant; "
                         "use ols_cas22 for uneven ramps")
    if times.nresultants == 1:
        return float(frame_time * times.read_count[0])
    spacing = np.diff(times.mean_time)
    if np.any(np.abs(spacing - spacing[0]) > EVEN_SPACING_TOLERANCE * spacing[0]):
        raise ValueError("algorithm ols needs evenly spaced resultants; use ols_cas22 for uneven ramps")
    return float(spacing[0])


def fit_ramps_ols(resultants, groupdq, pixeldq, gain, read_noise, dark_rate, read_pattern,
                  frame_time: float, *, save_opt: bool = False, power_signal: str = "uniform_slope",
                  flags=dqflags.pixel, workers: int = 1) -> tuple[RampFit, SegmentFits | None]:
    """Fit every pixel's even ramp; inputs are never modified. Arguments as ``fit_ramps_cas22``.

    Returns the rate image and, with ``save_opt``, the per-segment fits.
    """
    if power_signal not in POWER_SIGNALS:
        raise ValueError(f"power_signal {power_signal!r}: expected one of {', '.join(POWER_SIGNALS)}")
    check_inputs(resultants, groupdq, {"pixeldq": pixeldq, "gain": gain, "read_noise": read_noise,
                                       "dark_rate": dark_rate}, read_pattern)
    group_time = even_group_time(read_pattern, frame_time)
    times = resultant_times(read_pattern, frame_time)
    excluding = flag_mask(flags, EXCLUDING_FLAGS)
    masks = np.array([excluding, int(flags["JUMP_DET"]), int(flags["SATURATED"]), carried_group_flags(flags),
                      int(flags["DO_NOT_USE"]), int(flags["NO_GAIN_VALUE"])], dtype=np.int64)
    constants = (times.mean_time, uniform_weights(times), group_time, float(times.read_count[0]))

    nresultants, nrows, ncols = resultants.shape
    nsegments = ncrs = 0
    if save_opt:
        nsegments, ncrs = _largest_counts(resultants, groupdq, masks, workers)
    slope = np.empty((nrows, ncols), dtype=np.float32)
    var_poisson, var_rnoise, dumo = (np.empty_like(slope) for _ in range(3))
    dq = np.empty((nrows, ncols), dtype=np.uint32)
    segment_arrays = np.zeros((7, nsegments, nrows, ncols), dtype=np.float32)
    pedestal = np.zeros((nrows, ncols), dtype=np.float32)
    crmag = np.zeros((ncrs, nrows, ncols), dtype=np.float32)

    def fit_rows(rows: slice) -> None:
        height = rows.stop - rows.start
        segments_out = np.zeros((height, ncols, 7, nsegments), dtype=np.float32)
        pedestal_out = np.zeros((height, ncols), dtype=np.float32)
        crmag_out = np.zeros((height, ncols, ncrs), dtype=np.float32)
        _fit_rows(pixel_major(resultants, rows, np.float32), pixel_major(groupdq, rows, np.uint8),
                  plane_rows(pixeldq, rows, np.uint32, ncols), plane_rows(gain, rows, np.float32, ncols),
                  plane_rows(read_noise, rows, np.float32, ncols),
                  plane_rows(dark_rate, rows, np.float32, ncols), *constants, power_signal == "endpoints",
                  masks, save_opt, *_work_space(nresultants),
                  slope[rows], var_poisson[rows], var_rnoise[rows], dq[rows], dumo[rows],
                  segments_out, pedestal_out, crmag_out)
        if save_opt:
            segment_arrays[:, :, rows] = np.moveaxis(segments_out, (2, 3), (0, 1))
            pedestal[rows] = pedestal_out
            crmag[:, rows] = np.moveaxis(crmag_out, 2, 0)

    run_row_chunks(fit_rows, nrows, workers)
    fit = RampFit(slope, var_poisson, var_rnoise, dq, dumo)
    if not save_opt:
        return fit, None
    return fit, SegmentFits(*segment_arrays, pedestal=pedestal, crmag=crmag)


def _work_space(nresultants: int) -> tuple[np.ndarray, ...]:
    """Per-pixel work arrays of the kernels: values, usable, jump_start, starts, ends, differences."""
    flags = (np.empty(nresultants, dtype=np.bool_) for _ in range(2))
    bounds = (np.empty(nresultants, dtype=np.int64) for _ in range(2))
    return (np.empty(nresultants), *flags, *bounds, np.empty(nresultants))


def _largest_counts(resultants, groupdq, masks, workers) -> tuple[int, int]:
    """Most segments and most JUMP_DET groups of any pixel: the depth of the optional arrays."""
    nrows, ncols = resultants.shape[1:]
    segments = np.zeros((nrows, ncols), dtype=np.int64)
    jumps = np.zeros((nrows, ncols), dtype=np.int64)

    def count_rows(rows: slice) -> None:
        _count_rows(pixel_major(resultants, rows, np.float32), pixel_major(groupdq, rows, np.uint8), masks,
                    *_work_space(resultants.shape[0])[1:5], segments[rows], jumps[rows])

    run_row_chunks(count_rows, nrows, workers)
    return max(1, int(segments.max())), max(1, int(jumps.max()))


@numba.njit(**INLINED)
def _usable_groups(values, flags, excluding, jump_flag, usable, jump_start):
    """Which groups can be fitted, and which start a segment after a jump, into the work arrays."""
    for k in range(values.size):
        usable[k] = (flags[k] & excluding) == 0 and math.isfinite(values[k])
        jump_start[k] = (flags[k] & jump_flag) != 0


@numba.njit(**INLINED)
def _segments(usable, jump_start, starts, ends):
    """Pruned segments of usable groups into ``starts``/``ends``; returns how many."""
    count = 0
    inside = False
    for k in range(usable.size):
        if not usable[k]:
            inside = False
        elif inside and not jump_start[k]:
            ends[count - 1] = k
        else:
            starts[count] = ends[count] = k
            count += 1
            inside = True
    kept = 0
    for j in range(count):
        if ends[j] > starts[j] or not jump_start[starts[j]]:
            starts[kept], ends[kept] = starts[j], ends[j]
            kept += 1
    count = kept
    longest = 0
    for j in range(count):
        longest = max(longest, ends[j] - starts[j] + 1)
    if longest < 2:
        return min(count, 1)  # only one-group segments: keep the first
    kept = 0
    for j in range(count):
        if ends[j] > starts[j]:
            starts[kept], ends[kept] = starts[j], ends[j]
            kept += 1
    return kept


@numba.njit(**PER_PIXEL)
def _count_rows(resultants, groupdq, masks, usable, jump_start, starts, ends, segments_out, jumps_out):
    """Segments and JUMP_DET groups of every pixel of a block of pixel-major rows."""
    nrows, ncols, n = resultants.shape
    for y in range(nrows):
        for x in range(ncols):
            _usable_groups(resultants[y, x], groupdq[y, x], masks[0], masks[1], usable, jump_start)
            segments_out[y, x] = _segments(usable, jump_start, starts, ends)
            jumps = 0
            for k in range(1, n):
                jumps += jump_start[k]
            jumps_out[y, x] = jumps


@numba.njit(**INLINED)
def _slope_estimate(values, usable, jump_start, mean_time, group_time, differences):
    """Median first difference per second of usable, jump-free pairs (the documentation's slope_est)."""
    count = 0
    for k in range(values.size - 1):
        if usable[k] and usable[k + 1] and not jump_start[k + 1]:
            # Insertion sort as they come: a handful of values, and no allocation per pixel.
            difference = (values[k + 1] - values[k]) / group_time
            j = count
            while j > 0 and differences[j - 1] > difference:
                differences[j] = differences[j - 1]
                j -= 1
            differences[j] = difference
            count += 1
    if count > 0:
        middle = count // 2
        return differences[middle] if count % 2 else 0.5 * (differences[middle - 1] + differences[middle])
    if usable[0]:
        return values[0] / mean_time[0]
    return 0.0


@numba.njit(**INLINED)
def _weighted_line(values, mean_time, first, last, power):
    """Fixsen-weighted least squares over groups first..last: (slope, intercept at t = 0)."""
    middle = 0.5 * (last - first)
    t_centre = 0.5 * (mean_time[first] + mean_time[last])
    sw = swt = swtt = swy = swty = 0.0
    for k in range(first, last + 1):
        weight = abs((k - first - middle) / middle) ** power
        t = mean_time[k] - t_centre
        sw += weight
        swt += weight * t
        swtt += weight * t * t
        swy += weight * values[k]
        swty += weight * t * values[k]
    determinant = sw * swtt - swt * swt
    slope = (sw * swty - swt * swy) / determinant
    return slope, (swy - slope * swt) / sw - slope * t_centre


@numba.njit(**PER_PIXEL)
def _fit_rows(resultants, groupdq, pixeldq, gain, read_noise, dark_rate, mean_time, uniform, group_time,
              reads_per_group, power_from_endpoints, masks, save_opt,
              values, usable, jump_start, starts, ends, differences,
              slope_out, var_poisson_out, var_rnoise_out, dq_out, dumo_out,
              segments_out, pedestal_out, crmag_out):
    """Fit a block of pixel-major rows; optional outputs pixel-major (rows, cols, [7,] depth).

    ``values`` to ``differences`` are work space (see ``_work_space``).
    """
    excluding, jump_flag, saturated, carried, do_not_use, no_gain_value = (
        masks[0], masks[1], masks[2], masks[3], masks[4], masks[5])
    nrows, ncols, n = resultants.shape
    for y in range(nrows):
        for x in range(ncols):
            collapsed = np.int64(0)
            dumo = 0.0
            for k in range(n):
                values[k] = resultants[y, x, k]
                collapsed |= np.int64(groupdq[y, x, k])
                dumo += uniform[k] * values[k]
            _usable_groups(values, groupdq[y, x], excluding, jump_flag, usable, jump_start)
            dq = np.int64(pixeldq[y, x]) | (collapsed & carried)
            if save_opt:
                jumps = 0
                for k in range(1, n):
                    if jump_start[k]:
                        crmag_out[y, x, jumps] = (values[k] - values[k - 1]) * gain[y, x]
                        jumps += 1
            g = np.float64(gain[y, x])
            sigma = np.float64(read_noise[y, x]) / math.sqrt(reads_per_group)
            dark = np.float64(dark_rate[y, x])
            if not math.isfinite(dark):
                dark = 0.0
            count = _segments(usable, jump_start, starts, ends)
            slope = var_poisson = var_rnoise = np.nan
            if not (g > 0.0 and math.isfinite(g)):
                dq |= no_gain_value | do_not_use
            elif not (sigma > 0.0 and math.isfinite(sigma)) or count == 0:
                dq |= do_not_use
            else:
                noise_rate = max(_slope_estimate(values, usable, jump_start, mean_time, group_time,
                                                 differences), 0.0) + dark
                weighted = inverse_read = inverse_poisson = 0.0
                for j in range(count):
                    first, last = starts[j], ends[j]
                    groups = last - first + 1
                    if groups == 1:
                        t = mean_time[first]
                        segment_slope, intercept = values[first] / t, 0.0
                        segment_read = 2.0 * sigma * sigma / (t * t)
                        segment_poisson = noise_rate / (t * g)
                        intercept_error = 0.0
                    else:
                        if power_from_endpoints:
                            signal = (values[last] - values[first]) * g
                        else:
                            signal = _weighted_line(values, mean_time, first, last, 0.0)[0] * g * (
                                mean_time[last] - mean_time[first])
                        power = WEIGHT_POWERS[power_index(signal, (sigma * g) ** 2)]
                        segment_slope, intercept = _weighted_line(values, mean_time, first, last, power)
                        segment_read = 12.0 * sigma * sigma / ((groups**3 - groups) * group_time**2)
                        segment_poisson = noise_rate / (group_time * g * (groups - 1))
                        sum_t = sum_tt = 0.0
                        for k in range(first, last + 1):
                            sum_t += mean_time[k]
                            sum_tt += mean_time[k] ** 2
                        intercept_error = sigma * math.sqrt(sum_tt / (groups * sum_tt - sum_t * sum_t))
                    weighted += segment_slope / segment_read
                    inverse_read += 1.0 / segment_read
                    if segment_poisson > 0.0:
                        inverse_poisson += 1.0 / segment_poisson
                    if save_opt:
                        for index, value in enumerate((
                                segment_slope * g, math.sqrt(segment_read + segment_poisson) * g,
                                intercept * g, intercept_error * g, 1.0 / (segment_read * g * g),
                                segment_poisson * g * g, segment_read * g * g)):
                            segments_out[y, x, index, j] = value
                var_rnoise = 1.0 / inverse_read
                slope = weighted * var_rnoise
                var_poisson = 1.0 / inverse_poisson if inverse_poisson > 0.0 else 0.0
                if save_opt and (groupdq[y, x, 0] & saturated) == 0:
                    pedestal_out[y, x] = (values[0] - slope * mean_time[0]) * g
            slope_out[y, x] = slope
            var_poisson_out[y, x] = var_poisson
            var_rnoise_out[y, x] = var_rnoise
            dq_out[y, x] = dq
            dumo_out[y, x] = dumo - slope
