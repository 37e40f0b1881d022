"""outlier_detection: flag cosmic rays and other outliers left in a stack of dithered Level 2 images.

The romancal documentation, section "Outlier Detection": each exposure (all its detectors, a "grouped mosaic")
is drizzled onto one common grid (``weight_type``, ``pixfrac``, ``kernel``,
``fillval``, ``good_bits``); pixels weighing less than ``maskpt`` times the mean
weight are dropped and the rest combined into a median image that ignores the
``nlow`` lowest and ``nhigh`` highest values of each pixel. The median is blotted
back onto every input and a pixel is an outlier where

    |input - blot - background| > scale * derivative(blot) + snr * err

with the derivative the largest absolute difference between a blot pixel and
its four neighbours: the first (``snr``, ``scale``) pair finds the outliers and
the second, lower pair flags their neighbours within ``grow`` pixels. The
background is the sky level skymatch recorded without subtracting, else
``backg``. Outliers get DQ OUTLIER and DO_NOT_USE. With ``resample_data=false``
the median of the unresampled inputs is compared directly. ``in_memory=false``
keeps the grouped mosaics on disk and computes the median one section of rows
at a time (its section "Memory Model for Outlier Detection Algorithm"); ``allowed_memory`` (or
DMODEL_ALLOWED_MEMORY) refuses work arrays larger than that fraction of the
available memory; ``save_intermediate_results`` also writes the ``_outlier_i2d``,
``_median`` and ``_blot`` products. For an association of one sky cell (``skycell_wcs_info``)
``resample_on_skycell`` (romancal 1.1's, default true) draws the grouped mosaics and the
median on the cell's fixed grid; input pixels beyond the cell are then not judged.

Ours, not the documentation's: ``pixel_scale_ratio`` (default 1, the documented grid) sets the
common grid's pixel scale relative to the inputs'. Roman's PSF is undersampled: at the
inputs' scale each grouped mosaic smooths a star core over a second pixel and the
blotted median misses its peak by more than ``scale`` times the derivative allows,
so the documented rule flags star cores. Half the scale keeps each input pixel's
value where it fell (the workflow's configuration uses 0.5 with ``scale`` "1.0 0.8").

    python scripts/outlier_detection.py r..._asn.json r..._outlier_detection_asn.json [--snr "5 4"]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from itertools import repeat
from pathlib import Path

from romanpipe import cli, dqflags, drizzling
from romanpipe.association import Association
from romanpipe.drizzle_models import exposure_from_model, mosaic_model
from romanpipe.errors import InputFileError, ParameterError
from romanpipe.naming import STEP_SUFFIX, product_name
from romanpipe.output_grid import make_output_wcs
from romanpipe.products import SKIPPED, exposure_group, open_model
from romanpipe.resample_setup import check_memory, mosaic_bytes, parse_fillval, scratch_space
from romanpipe.skycells import DRIZZLE_MARGIN, SkyCell, association_cell
from romanpipe.steprun import run_association_script, write_association_products, write_product

import numpy as np
from roman_datamodels import datamodels
from scipy import ndimage

log = logging.getLogger("outlier_detection")

STEP = "outlier_detection"
# Values of each grouped mosaic read per section of the median (the romancal documentation,
# section "Memory Model for Outlier Detection Algorithm": "1Mb of each input").
SECTION_BYTES = 1 << 20

Intermediate = Callable[..., None]


def parse_two(text: str, name: str) -> tuple[float, float]:
    """Two numbers for the detection and the neighbour pass, in the ``"4.0 3.0"`` form of the
    romancal documentation, section "Outlier Detection"."""
    try:
        first, second = (float(v) for v in str(text).replace(",", " ").split())
    except ValueError:
        raise ParameterError(f"{name}: expected two numbers like '4.0 3.0', got {text!r}") from None
    return first, second


def clipped_median(stack: np.ndarray, nlow: int = 0, nhigh: int = 0) -> np.ndarray:
    """Median along axis 0 of the finite values left after dropping the nlow lowest and nhigh highest.

    NaN where fewer than nlow + nhigh + 1 values are finite.
    """
    ordered = np.sort(stack, axis=0)                     # NaN sorts last
    count = np.isfinite(stack).sum(axis=0)
    kept = count - nlow - nhigh
    valid = kept >= 1
    low = np.where(valid, nlow + (kept - 1) // 2, 0)[None]
    high = np.where(valid, nlow + kept // 2, 0)[None]
    median = (np.take_along_axis(ordered, low, axis=0)[0] + np.take_along_axis(ordered, high, axis=0)[0])
    median *= np.float32(0.5)
    median[~valid] = np.nan
    return median.astype(np.float32, copy=False)


def sectioned_median(images: Sequence[np.ndarray], nlow: int, nhigh: int) -> np.ndarray:
    """clipped_median of equally shaped 2-D images, reading one section of rows of each at a time.

    With memory-mapped images only the output and a section (SECTION_BYTES per
    image) are in memory; with in-memory images the result is the same.
    """
    ny, nx = images[0].shape
    rows = max(1, SECTION_BYTES // (4 * nx))
    median = np.empty((ny, nx), dtype=np.float32)
    for start in range(0, ny, rows):
        section = np.stack([np.asarray(image[start:start + rows], dtype=np.float32) for image in images])
        median[start:start + rows] = clipped_median(section, nlow, nhigh)
    return median


def abs_derivative(image: np.ndarray) -> np.ndarray:
    """Largest absolute difference between each pixel and its four neighbours (NaN neighbours skipped)."""
    derivative = np.zeros_like(image, dtype=np.float32)
    for axis in (0, 1):
        difference = np.abs(np.diff(image, axis=axis))
        difference[~np.isfinite(difference)] = 0
        before = [slice(None)] * 2
        after = [slice(None)] * 2
        before[axis], after[axis] = slice(None, -1), slice(1, None)
        np.maximum(derivative[tuple(before)], difference, out=derivative[tuple(before)])
        np.maximum(derivative[tuple(after)], difference, out=derivative[tuple(after)])
    derivative[np.isnan(image)] = np.nan
    return derivative


def outlier_mask(data, err, blot, *, snr: tuple[float, float], scale: tuple[float, float],
                 background: float = 0.0, grow: int = 1) -> np.ndarray:
    """The two-pass rule of the romancal documentation, section "Outlier Detection Algorithm":
    detections at (snr[0], scale[0]), their neighbours within ``grow``
    pixels kept where they pass (snr[1], scale[1])."""
    noise = np.nan_to_num(np.asarray(err, dtype=np.float32))
    derivative = abs_derivative(blot)
    difference = np.abs(np.asarray(data, dtype=np.float32) - blot - np.float32(background))
    with np.errstate(invalid="ignore"):
        detected = difference > scale[0] * derivative + snr[0] * noise
        neighbours = difference > scale[1] * derivative + snr[1] * noise
    if grow > 0:
        detected = ndimage.binary_dilation(detected, structure=np.ones((2 * grow + 1,) * 2, bool))
    return detected & neighbours


def flag_outliers(exposures: Sequence[drizzling.Exposure], parameters: dict, *,
                  scratch_dir: Path | None = None, intermediate: Intermediate | None = None,
                  cell: SkyCell | None = None) -> list:
    """Flat indices of the outlier pixels of each exposure (inputs are not modified).

    ``cell``: the association's sky cell; with ``resample_on_skycell`` the grouped mosaics
    and the median are drawn on its fixed grid, and pixels beyond the cell are not judged.

    ``scratch_dir`` holds the grouped mosaics when ``in_memory`` is false;
    ``intermediate(kind, index, array_or_mosaic, wcs)`` receives the grouped
    mosaics ("outlier_i2d"), the median ("median") and the blots ("blot").
    """
    snr = parse_two(parameters["snr"], "snr")
    scale = parse_two(parameters["scale"], "scale")
    with ExitStack() as stack:
        scratch = stack.enter_context(scratch_space(parameters["in_memory"], scratch_dir))
        if parameters["resample_data"]:
            median, grid = _resampled_median(exposures, parameters, scratch, intermediate,
                                             cell if parameters["resample_on_skycell"] else None)
        else:
            median, grid = _unresampled_median(exposures, parameters, scratch)
    if intermediate:
        intermediate("median", 0, median, grid)
    fill = parse_fillval(parameters["fillval"])
    outliers = []
    for index, exposure in enumerate(exposures):
        if parameters["resample_data"]:
            pixmap = drizzling.pixel_map(exposure.wcs, exposure.shape, grid)
            blotted = drizzling.blot(median, pixmap, fillval=0.0 if fill is None else fill)
            judged = drizzling.inside_grid(pixmap, median.shape)
            if intermediate:
                intermediate("blot", index, blotted, exposure.wcs)
        else:
            blotted, judged = median, True
        background = exposure.sky_level if exposure.sky_level else parameters["backg"]
        mask = outlier_mask(exposure.data, exposure.err if exposure.err is not None else 0.0, blotted,
                            snr=snr, scale=scale, background=background, grow=parameters["grow"]) & judged
        outliers.append(np.flatnonzero(mask))
        log.info("%s: %d outliers (%.3f%% of the pixels)", exposure.name, outliers[-1].size,
                 100.0 * outliers[-1].size / mask.size)
    return outliers


def _resampled_median(exposures, parameters, scratch, intermediate, cell: SkyCell | None):
    """Drizzle each exposure group onto a common grid (the sky cell's, else one around them),
    mask low weights, and take the median."""
    if cell is not None:
        log.info("median on sky cell %s (its fixed grid; pixel_scale_ratio is not used)", cell.name)
        grid = cell.wcs(DRIZZLE_MARGIN)
    else:
        grid, _ = make_output_wcs([e.wcs for e in exposures], [e.shape for e in exposures],
                                  pixel_scale_ratio=parameters["pixel_scale_ratio"])
    groups = drizzling.exposure_indices(exposure.group for exposure in exposures)
    shape = tuple(grid.array_shape)
    kept_at_once = len(groups) if parameters["in_memory"] else 1
    check_memory(mosaic_bytes(shape, 1, with_variances=False) * kept_at_once + 4 * int(np.prod(shape)),
                 parameters["allowed_memory"], f"{kept_at_once} grouped mosaic(s) of {shape}")
    log.info("median grid %d x %d pixels, %d exposure groups", shape[1], shape[0], len(groups))
    resampled = []
    for number, indices in enumerate(groups):
        mosaic = drizzling.resample(
            (exposures[i] for i in indices), grid, n_inputs=len(indices), kernel=parameters["kernel"],
            pixfrac=parameters["pixfrac"], fillval=parameters["fillval"],
            weight_type=parameters["weight_type"], good_bits=parameters["good_bits"],
            with_variances=False, with_context=intermediate is not None)
        if intermediate:
            intermediate("outlier_i2d", number, mosaic, grid)
        data = scratch.array(shape, np.float32, np.nan)
        low = mosaic.weight < drizzling.weight_threshold(mosaic.weight, parameters["maskpt"])
        data[...] = np.where(low, np.float32(np.nan), mosaic.data)
        resampled.append(data)
    return sectioned_median(resampled, parameters["nlow"], parameters["nhigh"]), grid


def _unresampled_median(exposures, parameters, scratch):
    """The median of the inputs themselves (same shape and pointing), low weights masked."""
    shapes = {e.shape for e in exposures}
    if len(shapes) != 1:
        raise ParameterError(f"resample_data=false needs inputs of one shape, got {sorted(shapes)}")
    shape = shapes.pop()
    kept_at_once = len(exposures) if parameters["in_memory"] else 1
    check_memory(4 * int(np.prod(shape)) * (kept_at_once + 1), parameters["allowed_memory"],
                 f"{kept_at_once} input copies of {shape}")
    images = []
    for exposure in exposures:
        weight = drizzling.drizzle_weight(exposure, parameters["weight_type"], parameters["good_bits"])
        data = scratch.array(shape, np.float32, np.nan)
        low = weight < drizzling.weight_threshold(weight, parameters["maskpt"])
        data[...] = np.where(low, np.float32(np.nan),
                             np.asarray(exposure.data, dtype=np.float32) - np.float32(exposure.sky_level))
        images.append(data)
    return sectioned_median(images, parameters["nlow"], parameters["nhigh"]), exposures[0].wcs


# --------------------------------------------------------------------------- products

def flagged_model(model, outliers: np.ndarray, good_bits):
    """A copy of ``model`` whose DQ has OUTLIER and DO_NOT_USE at the outlier pixels."""
    result = model.copy()
    dq = np.array(result.dq, dtype=np.uint32)
    dq.flat[outliers] |= np.uint32(dqflags.pixel.OUTLIER | dqflags.pixel.DO_NOT_USE)
    result.dq = dq
    result.meta["outlier_detection"] = {"good_bits": str(good_bits)}
    return result


class FlaggedProducts(Sequence):
    """The output models, each made only when it is written (memory holds one at a time)."""

    def __init__(self, models, outliers, good_bits):
        self._models, self._outliers, self._good_bits = models, outliers, good_bits

    def __len__(self):
        return len(self._models)

    def __getitem__(self, index):
        return flagged_model(self._models[index], self._outliers[index], self._good_bits)


def intermediate_writer(models, members: list[Path], association: Association, output: Path, args,
                        parameters: dict) -> Intermediate:
    """Write the grouped mosaics, the median and the blots beside ``output`` as Roman products."""
    groups = [exposure_group(model, member.name) for model, member in zip(models, members, strict=True)]
    group_members = drizzling.exposure_indices(groups)

    def as_mosaic_model(mosaic, inputs):
        return mosaic_model(mosaic, inputs, association_name=association.path.name,
                            good_bits=parameters["good_bits"], weight_type=parameters["weight_type"],
                            pixfrac=parameters["pixfrac"])

    def write(kind: str, index: int, content, wcs) -> None:
        if kind == "outlier_i2d":
            indices = group_members[index]
            model = as_mosaic_model(content, [models[i] for i in indices])
            path = product_name(members[indices[0]], kind, output.parent)
        elif kind == "median":
            # Its weight is 1 where the median has a value.
            mosaic = drizzling.Mosaic(data=content, weight=np.isfinite(content).astype(np.float32), wcs=wcs,
                                      members=[m.name for m in members], groups=list(dict.fromkeys(groups)))
            model = as_mosaic_model(mosaic, models)
            asn_id = association.tree.get("asn_id")
            base = Path(association.product_name).stem + (f"_{asn_id}" if asn_id else "")
            path = product_name(base, kind, output.parent)
        else:
            model = models[index].copy()
            model.data = np.asarray(content, dtype=np.float32)
            path = product_name(members[index], kind, output.parent)
        write_product(model, path, STEP, args, parameters)

    return write


def write_skipped(models, association: Association, output: Path, args, parameters: dict) -> None:
    """Fewer than two inputs: each passes on unchanged, recorded as SKIPPED, and ``output`` lists them."""
    write_association_products(models, association, output, STEP, STEP_SUFFIX[STEP], args, parameters,
                               statuses=repeat(SKIPPED))


def flag_association(association: Association, members: list[Path], args, parameters: dict) -> None:
    """The members' outliers flagged in products beside ``args.output``, which lists them."""
    with ExitStack() as stack:
        models = [stack.enter_context(open_model(path, (datamodels.ImageModel,),
                                                 memmap=not parameters["in_memory"]))
                  for path in members]
        if len(models) < 2:
            log.warning("outlier_detection skipped: at least two images are needed")
            write_skipped(models, association, args.output, args, parameters)
            return
        try:
            exposures = [exposure_from_model(m, p.name) for m, p in zip(models, members, strict=True)]
        except ValueError as err:
            raise InputFileError(args.input, f"a member cannot be resampled: {err}") from None
        writer = (intermediate_writer(models, members, association, args.output, args, parameters)
                  if parameters["save_intermediate_results"] else None)
        outliers = flag_outliers(exposures, parameters, scratch_dir=args.output.parent, intermediate=writer,
                                 cell=association_cell(association.tree))
        write_association_products(FlaggedProducts(models, outliers, parameters["good_bits"]), association,
                                   args.output, STEP, STEP_SUFFIX[STEP], args, parameters)


def main(argv=None) -> None:
    run_association_script(STEP, __doc__, flag_association, argv=argv)


if __name__ == "__main__":
    cli.run_and_exit(main)
