"""Drizzling Level 2 images onto a common sky grid and blotting a mosaic back.

Shared by the resample and outlier_detection steps (the romancal documentation,
sections "Resample" and "Outlier Detection"): the pixel map from each input to the
output grid (input GWCS forward, output inverse, evaluated a block of rows at a
time), drizzle weights, the co-add of data, weight, context and variances with
``drizzle.resample.Drizzle``, and blotting back with ``drizzle.resample.blot_image``.
The ``tophat`` kernel, which drizzle 2.2's C code no longer has, is done here in
numpy (a circle of diameter ``pixfrac`` input pixels around each input pixel's centre).
The grid itself is romanpipe.output_grid's; the Roman models in and out are
romanpipe.drizzle_models'.

Variances follow romancal 1.1: each variance array is drizzled as its square
root with the data's weights, squared, and combined across inputs with the
square of a per-input weight (the inverse of the resampled variance that weighs
the pixels for the ivm types, the exposure time for ``exptime``); ``err`` is the
square root of the summed variances.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from astropy.stats import sigma_clip
from drizzle.resample import Drizzle, blot_image
from gwcs import wcs as gwcs_wcs

from . import dqflags
from .errors import ParameterError
from .output_grid import bounding_box_center, local_frame
from .resample_setup import CONTEXT_BITS, VARIANCES, Scratch, parse_fillval

log = logging.getLogger(__name__)

KERNELS = ("square", "gaussian", "point", "tophat", "turbo", "lanczos2", "lanczos3")
# Pixels of an input evaluated through its GWCS at once: bounds the temporaries
# of the transform chain (~1 M pixels, tens of MB) whatever the image size.
PIXMAP_BLOCK = 1 << 20


@dataclass(frozen=True)
class Exposure:
    """One Level 2 image as the resampler needs it; arrays may be memory-mapped (read lazily)."""

    name: str
    data: np.ndarray
    dq: np.ndarray
    wcs: gwcs_wcs.WCS
    err: np.ndarray | None = None
    variances: dict[str, np.ndarray] = field(default_factory=dict)
    exposure_time: float = 1.0
    sky_level: float = 0.0      # background recorded but not subtracted: removed before drizzling
    group: str = ""             # images of one exposure (all detectors) share a group

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(np.shape(self.data))

    def read_noise_variance(self) -> np.ndarray | None:
        """VAR_RNOISE, or err^2 minus the other variances when it was not stored (rad 1.1 allows that)."""
        if "var_rnoise" in self.variances:
            return np.asarray(self.variances["var_rnoise"], dtype=np.float32)
        if self.err is None:
            return None
        variance = np.square(np.asarray(self.err, dtype=np.float32))
        for name in ("var_poisson", "var_flat"):
            if name in self.variances:
                variance -= np.asarray(self.variances[name], dtype=np.float32)
        return variance


@dataclass
class Mosaic:
    """Arrays and WCS of a resampled product (NaN where no input contributed unless filled)."""

    data: np.ndarray
    weight: np.ndarray
    wcs: gwcs_wcs.WCS
    context: np.ndarray | None = None
    err: np.ndarray | None = None
    variances: dict[str, np.ndarray] = field(default_factory=dict)
    members: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    exposure_time: float = 0.0       # mean over pixels with data of the summed exposure times
    max_exposure_time: float = 0.0
    pixel_scale_ratio: float = 1.0


def cropped(mosaic: Mosaic, margin: int, wcs) -> Mosaic:
    """The mosaic without ``margin`` pixels on every side, on ``wcs`` (the grid without them)."""
    if margin == 0:
        return mosaic
    inner = (slice(margin, -margin), slice(margin, -margin))
    return replace(
        mosaic, data=mosaic.data[inner], weight=mosaic.weight[inner], wcs=wcs,
        context=None if mosaic.context is None else mosaic.context[(slice(None), *inner)],
        err=None if mosaic.err is None else mosaic.err[inner],
        variances={name: array[inner] for name, array in mosaic.variances.items()})


def exposure_indices(groups: Iterable[str]) -> list[list[int]]:
    """The indices of the images of each exposure group, groups in order of first appearance."""
    indices: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        indices.setdefault(group, []).append(index)
    return list(indices.values())


# --------------------------------------------------------------------------- pixel mapping

def pixel_map(wcs_from, shape: tuple[int, int], wcs_to, block: int = PIXMAP_BLOCK) -> np.ndarray:
    """(ny, nx, 2) float64 positions of the pixels of an image (``wcs_from``) in ``wcs_to``'s pixels.

    The input GWCS forward and the output's inverse (analytic when it has one)
    are evaluated on whole blocks of rows, so the temporaries of the transform
    chain stay bounded. Pixels that do not map are NaN.
    """
    ny, nx = shape
    pixmap = np.empty((ny, nx, 2), dtype=np.float64)
    rows = max(1, block // max(nx, 1))
    x = np.arange(nx, dtype=np.float64)
    try:
        inverse = wcs_to.backward_transform
    except NotImplementedError:
        inverse = None
    for start in range(0, ny, rows):
        stop = min(ny, start + rows)
        xx, yy = np.meshgrid(x, np.arange(start, stop, dtype=np.float64))
        ra, dec = wcs_from(xx, yy, with_bounding_box=False)
        if inverse is not None:
            out_x, out_y = inverse(ra, dec)
        else:
            out_x, out_y = wcs_to.invert(ra, dec, with_bounding_box=False)
        pixmap[start:stop, :, 0] = out_x
        pixmap[start:stop, :, 1] = out_y
    return pixmap


# --------------------------------------------------------------------------- weights

# weight_type values: per-pixel inverse variances (ivm*), the exposure time, or the DQ mask alone.
WEIGHT_TYPES = ("ivm", "ivm-sky", "ivm-smed", "exptime", None)
# Side (pixels) of the blocks whose median is the local sky variance of ivm-smed: many times a
# star's core (FWHM ~2 px), so a block's median is its sky wherever stars cover under half of it.
SKY_BLOCK = 32


def sky_variance(exposure: Exposure) -> np.ndarray | None:
    """VAR_SKY, romancal's (the romancal documentation, section "Resample", ``weight_type``):
    VAR_RNOISE + VAR_POISSON / DATA * MEDIAN(DATA), the Poisson term scaled from the pixel's
    signal to the image's median (VAR_RNOISE alone where DATA <= 0); None without VAR_RNOISE.

    The median is over the pixels without DO_NOT_USE. VAR_RNOISE itself still depends on the
    pixel's signal where ramp fitting weights resultants by it (ols_cas22).
    """
    read_noise = exposure.read_noise_variance()
    if read_noise is None:
        return None
    poisson = exposure.variances.get("var_poisson")
    if poisson is None:
        return read_noise
    data = np.asarray(exposure.data, dtype=np.float32)
    usable = (np.asarray(exposure.dq) & np.uint32(dqflags.pixel.DO_NOT_USE)) == 0
    usable &= np.isfinite(data)
    if not usable.any():
        return read_noise
    median = np.float32(np.median(data[usable]))
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.asarray(poisson, dtype=np.float32) / data * median
    return np.where((data > 0) & np.isfinite(scaled), read_noise + scaled, read_noise).astype(np.float32)


def local_sky_variance(exposure: Exposure, good: np.ndarray, block: int = SKY_BLOCK) -> np.ndarray | None:
    """The median of VAR_SKY over the good pixels of each ``block`` x ``block`` block, interpolated
    bilinearly between block centres: a pixel gets the variance of the sky around it, whatever
    its own signal. None without VAR_RNOISE."""
    variance = sky_variance(exposure)
    if variance is None:
        return None
    ny, nx = variance.shape
    by, bx = -(-ny // block), -(-nx // block)
    padded = np.full((by * block, bx * block), np.nan, dtype=np.float32)
    padded[:ny, :nx] = np.where(good & np.isfinite(variance) & (variance > 0), variance, np.nan)
    blocks = padded.reshape(by, block, bx, block).transpose(0, 2, 1, 3).reshape(by, bx, block * block)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)      # all-NaN blocks are filled below
        medians = np.nanmedian(blocks, axis=-1)
    if not np.isfinite(medians).any():
        return variance
    medians = np.where(np.isfinite(medians), medians, np.nanmedian(medians)).astype(np.float32)
    along_rows = _linear_between_blocks(medians, nx, block, axis=1)
    return _linear_between_blocks(along_rows, ny, block, axis=0)


def _linear_between_blocks(values: np.ndarray, size: int, block: int, axis: int) -> np.ndarray:
    """``values`` on block centres (block * (i + 0.5) - 0.5) interpolated linearly to ``size``
    pixels along ``axis``; beyond the first and last centres the nearest block's value."""
    position = np.clip((np.arange(size, dtype=np.float32) + 0.5) / block - 0.5, 0, values.shape[axis] - 1)
    lower = np.floor(position).astype(np.intp)
    upper = np.minimum(lower + 1, values.shape[axis] - 1)
    fraction = (position - lower).astype(np.float32)
    shape = [1, 1]
    shape[axis] = size
    fraction = fraction.reshape(shape)
    return (np.take(values, lower, axis=axis) * (1 - fraction)
            + np.take(values, upper, axis=axis) * fraction).astype(np.float32)


def weight_variance(exposure: Exposure, weight_type: str | None, good: np.ndarray) -> np.ndarray | None:
    """The variance whose inverse is an ivm-type weight (None for other types, or without VAR_RNOISE)."""
    if weight_type == "ivm":
        return exposure.read_noise_variance()
    if weight_type == "ivm-sky":
        return sky_variance(exposure)
    if weight_type == "ivm-smed":
        return local_sky_variance(exposure, good)
    return None


def drizzle_weight(exposure: Exposure, weight_type: str | None, good_bits) -> np.ndarray:
    """Per-pixel drizzle weight times the DQ mask.

    ``ivm``: 1/VAR_RNOISE; ``ivm-sky``: 1/VAR_SKY (romancal's, see sky_variance);
    ``ivm-smed``: 1/(VAR_SKY's local median, see local_sky_variance), which does not depend
    on the sources; ``exptime``: the exposure time; None: 1. Pixels whose DQ holds a bit
    outside ``good_bits``, or whose data or variance is not finite, weigh 0. Without any
    read-noise variance, the ivm types weigh every good pixel 1 (romancal's fallback).
    """
    if weight_type not in WEIGHT_TYPES:
        raise ParameterError(f"weight_type: unknown value {weight_type!r} "
                             f"({', '.join(str(t) for t in WEIGHT_TYPES)})")
    good = dqflags.good_pixel_mask(np.asarray(exposure.dq), good_bits)
    good &= np.isfinite(np.asarray(exposure.data))
    if weight_type == "exptime":
        return np.where(good, np.float32(exposure.exposure_time), np.float32(0))
    if weight_type is None:
        return good.astype(np.float32)
    variance = weight_variance(exposure, weight_type, good)
    if variance is None:
        log.warning("%s: no read-noise variance, %s weights of 1", exposure.name, weight_type)
        return good.astype(np.float32)
    return _inverse(variance, good)


def _inverse(variance: np.ndarray, use: np.ndarray | bool = True) -> np.ndarray:
    """1/variance where ``use`` and the variance is finite and positive, else 0 (float32)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(use & (variance > 0) & np.isfinite(variance), 1.0 / variance, 0.0).astype(np.float32)


def weight_threshold(weight: np.ndarray, maskpt: float) -> float:
    """maskpt times the mean of the 3-sigma-clipped non-zero weights (romancal/stcal's rule)."""
    values = weight[np.isfinite(weight) & (weight > 0)]
    if values.size == 0:
        return 0.0
    clipped = sigma_clip(values, sigma=3, maxiters=5, masked=False, copy=False)
    return float(np.mean(clipped, dtype=np.float64)) * maskpt


# --------------------------------------------------------------------------- co-adding

class _Accumulator:
    """A weighted-mean image (data, weight, optional context) that inputs are drizzled into."""

    def __init__(self, scratch: Scratch, shape, kernel: str, pixfrac: float, n_inputs: int,
                 with_context: bool):
        self.shape = tuple(shape)
        self.kernel = kernel
        self.pixfrac = pixfrac
        self.img = scratch.array(self.shape, np.float32, np.nan)
        self.wht = scratch.array(self.shape, np.float32, 0.0)
        planes = (max(n_inputs, 1) - 1) // CONTEXT_BITS + 1
        self.ctx = scratch.array((planes, *self.shape), np.int32, 0) if with_context else None
        self._drizzle = None
        if kernel != "tophat":
            # INDEF: drizzle leaves pixels without weight alone (NaN here); fillval comes at the end.
            self._drizzle = Drizzle(kernel=kernel, fillval="INDEF", out_img=self.img, out_wht=self.wht,
                                    out_ctx=self.ctx, disable_ctx=not with_context)
        self.n_added = 0

    def add(self, data, pixmap, weight, pixel_scale_ratio: float) -> None:
        if self._drizzle is not None:
            self._drizzle.add_image(data, exptime=1.0, pixmap=pixmap, weight_map=weight,
                                    pixfrac=self.pixfrac, pixel_scale_ratio=pixel_scale_ratio,
                                    in_units="cps")
        else:
            self._add_tophat(data, pixmap, weight, pixel_scale_ratio)
        self.n_added += 1

    def _add_tophat(self, data, pixmap, weight, pixel_scale_ratio: float) -> None:
        """Each input pixel adds to the output pixels whose centres lie within pixfrac/2 input pixels."""
        radius = 0.5 * self.pixfrac / pixel_scale_ratio
        reach = math.ceil(radius)
        ny, nx = self.shape
        use = (weight > 0) & np.isfinite(data) & np.all(np.isfinite(pixmap), axis=-1)
        xo, yo = pixmap[..., 0][use], pixmap[..., 1][use]
        values = np.asarray(data, dtype=np.float64)[use]
        weights = np.asarray(weight, dtype=np.float64)[use]
        x_near, y_near = np.floor(xo + 0.5).astype(np.int64), np.floor(yo + 0.5).astype(np.int64)
        sum_w = np.zeros(ny * nx)
        sum_wd = np.zeros(ny * nx)
        for dy in range(-reach, reach + 1):
            for dx in range(-reach, reach + 1):
                xi, yi = x_near + dx, y_near + dy
                inside = ((xo - xi) ** 2 + (yo - yi) ** 2 <= radius * radius) & \
                    (xi >= 0) & (xi < nx) & (yi >= 0) & (yi < ny)
                index = yi[inside] * nx + xi[inside]
                sum_w += np.bincount(index, weights=weights[inside], minlength=ny * nx)
                sum_wd += np.bincount(index, weights=weights[inside] * values[inside], minlength=ny * nx)
        sum_w = sum_w.reshape(self.shape)
        sum_wd = sum_wd.reshape(self.shape)
        hit = sum_w > 0
        previous = np.where(self.wht[hit] > 0, self.img[hit], 0.0).astype(np.float64)
        total = self.wht[hit] + sum_w[hit]
        self.img[hit] = ((previous * self.wht[hit] + sum_wd[hit]) / total).astype(np.float32)
        self.wht[hit] = total.astype(np.float32)
        if self.ctx is not None:
            plane, bit = divmod(self.n_added, CONTEXT_BITS)
            self.ctx[plane][hit] |= np.int32(np.uint32(1 << bit).view(np.int32))


class _VarianceSum:
    """Σ W_i² var_i and Σ W_i over inputs, on the output grid (romancal's variance combination)."""

    def __init__(self, scratch: Scratch, shape):
        self.weighted = scratch.array(shape, np.float32, 0.0)
        self.weight = scratch.array(shape, np.float32, 0.0)
        self.seen = False

    def add(self, variance: np.ndarray, weight: np.ndarray) -> None:
        use = np.isfinite(variance) & (variance >= 0) & (weight > 0)
        with np.errstate(invalid="ignore", over="ignore"):
            np.add(self.weighted, variance * weight * weight, out=self.weighted, where=use)
        np.add(self.weight, weight, out=self.weight, where=use)
        self.seen = True

    def result(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            variance = np.where(self.weight > 0, self.weighted / np.square(self.weight), np.nan)
        return variance.astype(np.float32)


def resample(exposures: Iterable[Exposure], output_wcs, *, n_inputs: int, kernel: str = "square",
             pixfrac: float = 1.0, fillval: str | float | None = "INDEF", weight_type: str | None = "ivm",
             good_bits="~DO_NOT_USE+NON_SCIENCE", with_variances: bool = True,
             with_context: bool = True, scratch: Scratch | None = None) -> Mosaic:
    """Drizzle ``exposures`` (read one at a time) onto ``output_wcs``'s grid; inputs are not modified.

    Data are surface brightness (MJy/sr), so they are averaged with iscale 1.
    ``n_inputs`` sizes the context image. A sky level recorded but not
    subtracted is removed first. Output pixels without weight get ``fillval``
    (INDEF leaves NaN).
    """
    if kernel not in KERNELS:
        raise ParameterError(f"kernel: {kernel!r} is not one of {', '.join(KERNELS)}")
    if not 0.0 <= pixfrac <= 1.0:
        raise ParameterError(f"pixfrac: {pixfrac} is not in [0, 1]")
    if pixfrac < 0.001 and kernel != "point":
        log.info("pixfrac %g < 0.001: using the point kernel", pixfrac)
        kernel = "point"
    fill = parse_fillval(fillval)
    scratch = scratch or Scratch(None)
    shape = tuple(output_wcs.array_shape)
    _, _, output_scale = local_frame(output_wcs, *bounding_box_center(output_wcs, shape))
    science = _Accumulator(scratch, shape, kernel, pixfrac, n_inputs, with_context)
    sums = {name: _VarianceSum(scratch, shape) for name in VARIANCES} if with_variances else {}
    one_variance = _Accumulator(scratch, shape, kernel, pixfrac, 1, False) if with_variances else None
    members, groups, times, first_ratio = [], [], [], None

    for exposure in exposures:
        if science.n_added >= n_inputs:
            raise ValueError(f"more than n_inputs={n_inputs} exposures")
        pixmap = pixel_map(exposure.wcs, exposure.shape, output_wcs)
        _, _, input_scale = local_frame(exposure.wcs, *bounding_box_center(exposure.wcs, exposure.shape))
        ratio = output_scale / input_scale
        first_ratio = ratio if first_ratio is None else first_ratio
        weight = drizzle_weight(exposure, weight_type, good_bits)
        data = np.asarray(exposure.data, dtype=np.float32)
        data = np.where(np.isfinite(data), data - np.float32(exposure.sky_level), np.float32(0))
        log.info("drizzling %s (%d x %d) onto %d x %d, sky %g removed", exposure.name,
                 exposure.shape[1], exposure.shape[0], shape[1], shape[0], exposure.sky_level)
        science.add(data, pixmap, weight, ratio)
        if with_variances:
            _add_variances(exposure, pixmap, weight, ratio, weight_type, one_variance, sums)
        members.append(exposure.name)
        if exposure.group not in groups:
            groups.append(exposure.group)
        times.append(exposure.exposure_time)

    if science.n_added == 0:
        raise ValueError("no input images")
    if fill is not None:
        science.img[science.wht == 0] = fill
    mosaic = Mosaic(data=science.img, weight=science.wht, wcs=output_wcs, context=science.ctx,
                    members=members, groups=groups, pixel_scale_ratio=first_ratio)
    if with_variances:
        mosaic.variances = {name: total.result() for name, total in sums.items() if total.seen}
        stack = np.stack(list(mosaic.variances.values())) if mosaic.variances else None
        if stack is not None:
            with np.errstate(invalid="ignore"):
                err = np.sqrt(np.nansum(stack, axis=0)).astype(np.float32)
            err[np.all(np.isnan(stack), axis=0)] = np.nan
            mosaic.err = err
    if science.ctx is not None:
        mosaic.exposure_time, mosaic.max_exposure_time = _exposure_time_statistics(science.ctx, times)
    return mosaic


def _add_variances(exposure, pixmap, weight, ratio, weight_type, accumulator, sums) -> None:
    """Drizzle each variance as its square root, square it, and add it with the input's weight squared.

    The input's weight on the output grid is the inverse of its resampled weight variance
    (the ivm types: VAR_RNOISE, VAR_SKY or its local median) or its exposure time.
    """

    def resampled(variance) -> np.ndarray:
        accumulator.img[...] = np.nan
        accumulator.wht[...] = 0.0
        sigma = np.sqrt(np.clip(np.asarray(variance, dtype=np.float32), 0, None))
        accumulator.add(np.nan_to_num(sigma), pixmap, weight, ratio)
        return np.square(accumulator.img)

    good = weight > 0
    weighting = weight_variance(exposure, weight_type, good) if weight_type in WEIGHT_TYPES else None
    if weighting is not None:
        output_weight = _inverse(resampled(weighting))
    else:
        per_input = exposure.exposure_time if weight_type == "exptime" else 1.0
        output_weight = np.full(accumulator.shape, per_input, dtype=np.float32)
    for name in VARIANCES:
        variance = exposure.read_noise_variance() if name == "var_rnoise" else exposure.variances.get(name)
        if variance is not None:
            sums[name].add(resampled(variance), output_weight)


def _exposure_time_statistics(context: np.ndarray, times: Sequence[float]) -> tuple[float, float]:
    """Mean (over pixels with data) and maximum of the summed exposure time of contributing inputs."""
    total = np.zeros(context.shape[1:], dtype=np.float64)
    unsigned = context.view(np.uint32)
    for index, exposure_time in enumerate(times):
        plane, bit = divmod(index, CONTEXT_BITS)
        total += exposure_time * ((unsigned[plane] >> np.uint32(bit)) & np.uint32(1))
    covered = total > 0
    if not covered.any():
        return 0.0, 0.0
    return float(total[covered].mean()), float(total.max())


# --------------------------------------------------------------------------- blot

def inside_grid(pixmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Which input pixels (``pixmap``: input -> grid positions) land on a grid of ``shape`` (ny, nx)."""
    ny, nx = shape
    return (np.isfinite(pixmap).all(axis=-1)
            & (pixmap[..., 0] >= -0.5) & (pixmap[..., 0] <= nx - 0.5)
            & (pixmap[..., 1] >= -0.5) & (pixmap[..., 1] <= ny - 0.5))


def blot(median: np.ndarray, pixmap: np.ndarray, fillval: float = 0.0, interp: str = "poly5") -> np.ndarray:
    """The mosaic ``median`` interpolated back onto an input's pixels (``pixmap``: input -> mosaic).

    Quintic interpolation (drizzlepac's and JWST's default; romancal 1.1 uses
    linear) keeps the peaks of sharp stars, which linear interpolation lowers
    enough for the default ``scale`` 0.5 (the romancal documentation, section
    "Outlier Detection") to flag their cores. Input pixels that do not map onto
    the mosaic get ``fillval``.
    """
    inside = inside_grid(pixmap, median.shape)
    # tblot cannot take NaN positions: send them far outside the mosaic.
    safe = np.where(np.isfinite(pixmap), pixmap, -1e6)
    out = np.full(pixmap.shape[:2], fillval, dtype=np.float32)
    blot_image(np.ascontiguousarray(median, dtype=np.float32), safe, out_img=out, fillval=fillval,
               iscale=1.0, interp=interp)
    out[~inside] = fillval
    return out
