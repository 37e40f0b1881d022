"""skymatch: compute, equalize and optionally subtract the sky background of overlapping images.

Seed, "SkyMatch": "local" measures each image's sky alone, "global" gives every image
the smallest of those, "match" solves in the least-squares sense for the offsets that
equalize the sky of every overlapping pair (overlaps found on the sky, with spherical
polygons of the images' WCS footprints; statistics from each image's own pixels
inside the overlap), and "global+match" adds to the matched offsets the smallest sky
left after removing them. The level goes into ``meta.background`` (level, method,
subtracted) and, with ``subtract``, is subtracted from the data.

    python scripts/skymatch.py r..._asn.json r..._skymatch_asn.json [--skymethod global+match]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple

from romanpipe import cli, dqflags
from romanpipe.errors import InputFileError, ParameterError
from romanpipe.naming import STEP_SUFFIX
from romanpipe.products import COMPLETE, SKIPPED, open_model
from romanpipe.steprun import run_association_script, write_association_products

import numpy as np
from roman_datamodels import datamodels
from spherical_geometry.polygon import MalformedPolygonError, SphericalPolygon

log = logging.getLogger("skymatch")

STEP = "skymatch"
SKYMETHODS = ("local", "global", "match", "global+match")
SKYSTATS = ("mean", "median", "midpt", "mode")


# ---------------------------------------------------------------- sky statistics

@dataclass(frozen=True)
class SkyStatistic:
    """The sky of a set of pixel values: range cut, sigma clipping, then ``skystat``.

    The romancal documentation (section "SkyMatch") gives ``mean``, ``mode`` and ``midpt``
    the meaning of IRAF's gstatistics/imstatistics. Pixels outside [lower, upper] are never used. Each of
    the ``nclip`` iterations keeps, among those, the values within
    [mean - lsigma*std, mean + usigma*std] of the previous selection (std with N-1).
    ``mode`` and ``midpt`` come from a histogram of the final selection, resolution
    ``binwidth`` * std, laid out as IRAF does: the mode is the peak bin refined by a
    parabola through it and its neighbours, midpt the value where the cumulative
    histogram, interpolated linearly inside its bin, reaches one half. Unlike IRAF
    (and stsci.imagestats), positions are read with the histogram's actual bin width,
    not the nominal resolution, which would shift them by up to half a bin.
    """

    skystat: str = "mode"
    lower: float | None = None
    upper: float | None = None
    nclip: int = 5
    lsigma: float = 4.0
    usigma: float = 4.0
    binwidth: float = 0.1

    def __post_init__(self):
        if self.skystat not in SKYSTATS:
            raise ValueError(f"skystat must be one of {', '.join(SKYSTATS)}, not {self.skystat!r}")

    def clipped(self, values: np.ndarray) -> np.ndarray:
        """The values the statistic is computed from."""
        values = np.asarray(values, dtype=np.float64).ravel()
        low = -np.inf if self.lower is None else self.lower
        high = np.inf if self.upper is None else self.upper
        selected = values[(values >= low) & (values <= high)]
        for _ in range(self.nclip):
            if selected.size == 0:
                break
            mean, std = selected.mean(), _std(selected)
            clip_low = max(low, mean - self.lsigma * std)
            clip_high = min(high, mean + self.usigma * std)
            selected = values[(values >= clip_low) & (values <= clip_high)]
        return selected

    def __call__(self, values: np.ndarray) -> tuple[float | None, int]:
        """(sky, number of pixels used); sky is None when no pixel is left."""
        selected = self.clipped(values)
        if selected.size == 0:
            return None, 0
        if self.skystat == "mean":
            sky = selected.mean()
        elif self.skystat == "median":
            sky = np.median(selected)
        else:
            sky = _histogram_statistic(selected, self.binwidth * _std(selected), self.skystat)
        return (float(sky), int(selected.size)) if np.isfinite(sky) else (None, 0)


def _std(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if values.size > 1 else 0.0


def _histogram_statistic(values: np.ndarray, resolution: float, skystat: str) -> float:
    low, high = values.min(), values.max()
    if resolution <= 0 or high == low:
        return float(low)  # one distinct value: it is the mode and the median
    # IRAF's layout (imstatistics, kept by stsci.imagestats): (high - low) / resolution + 1
    # bins from the minimum, stretched so that the maximum starts the last one.
    nbins = int((high - low) / resolution) + 1
    if nbins == 1:
        return float(0.5 * (low + high))
    bin_width = (high - low) / (nbins - 1)
    counts, _ = np.histogram(values, bins=nbins, range=(low, low + nbins * bin_width))
    if skystat == "mode":
        peak = int(np.argmax(counts))
        centre = low + (peak + 0.5) * bin_width
        if peak == 0 or peak == nbins - 1:
            return float(centre)
        rise, fall = counts[peak] - counts[peak - 1], counts[peak] - counts[peak + 1]
        return float(centre + 0.5 * bin_width * (rise - fall) / (rise + fall))
    cumulative = np.cumsum(counts) / counts.sum()
    half = int(np.searchsorted(cumulative, 0.5))  # first bin where the cumulative reaches 0.5
    below = cumulative[half - 1] if half else 0.0
    return float(low + (half + (0.5 - below) / (cumulative[half] - below)) * bin_width)


# ---------------------------------------------------------------- footprints and overlaps

@dataclass(frozen=True)
class SkyImage:
    """One image as sky matching sees it: data, usable pixels, WCS and footprint on the sky."""

    data: np.ndarray
    good: np.ndarray
    wcs: object
    footprint: SphericalPolygon
    name: str = ""


def pixel_bounds(wcs, shape: tuple[int, int]) -> tuple[tuple[float, float], tuple[float, float]]:
    """((x_low, x_high), (y_low, y_high)): the WCS bounding box within the image, edges at -0.5."""
    nrows, ncols = shape
    bounds = ((-0.5, ncols - 0.5), (-0.5, nrows - 0.5))
    try:
        box = wcs.bounding_box
    except NotImplementedError:  # gwcs raises when no bounding box was set
        box = None
    if box is None:
        return bounds
    x_box, y_box = box.bounding_box(order="F")
    return ((max(bounds[0][0], float(min(x_box))), min(bounds[0][1], float(max(x_box)))),
            (max(bounds[1][0], float(min(y_box))), min(bounds[1][1], float(max(y_box)))))


def footprint_polygon(wcs, shape: tuple[int, int], stepsize: int | None = None) -> SphericalPolygon:
    """The spherical polygon through the bounding box's edges, vertices at most ``stepsize`` px apart.

    ``stepsize`` None: the four corners only (seed). Edges between vertices are great
    circles, so distortion shows in the footprint only as finely as ``stepsize``.
    """
    (x_low, x_high), (y_low, y_high) = pixel_bounds(wcs, shape)

    def side(start: float, stop: float) -> np.ndarray:
        count = 2 if stepsize is None else max(2, int(np.ceil(abs(stop - start) / stepsize)) + 1)
        return np.linspace(start, stop, count)[:-1]  # the next side starts at this side's end

    xs, ys = side(x_low, x_high), side(y_low, y_high)
    # Counter-clockwise in pixels: bottom, right, top, left.
    x = np.concatenate([xs, np.full(ys.size, x_high), side(x_high, x_low), np.full(ys.size, x_low)])
    y = np.concatenate([np.full(xs.size, y_low), ys, np.full(xs.size, y_high), side(y_high, y_low)])
    ra, dec = wcs(x, y, with_bounding_box=False)
    ra, dec = np.append(ra, ra[0]), np.append(dec, dec[0])
    return SphericalPolygon.from_radec(ra, dec)


def polygon_pixel_mask(x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """True for the pixels whose centres lie inside the polygon (x, y) (even-odd rule).

    A centre on a left or bottom edge is inside, on a right or top edge outside, so
    that polygons sharing an edge never share a pixel. Scan lines through the rows'
    centres (integer y) cross each edge at most once; the crossings, sorted, pair up
    into filled spans.
    """
    nrows, ncols = shape
    mask = np.zeros(shape, dtype=bool)
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size < 3 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return mask
    first_row, last_row = max(0, int(np.ceil(y.min()))), min(nrows - 1, int(np.floor(y.max())))
    # Rows in blocks: a crossing table of rows x edges stays near 32 MB for any stepsize.
    block = max(1, 4_000_000 // x.size)
    for start in range(first_row, last_row + 1, block):
        rows = np.arange(start, min(start + block, last_row + 1))
        mask[rows] = _scan_rows(x, y, rows, ncols)
    return mask


def _scan_rows(x: np.ndarray, y: np.ndarray, rows: np.ndarray, ncols: int) -> np.ndarray:
    x1, y1 = np.roll(x, -1), np.roll(y, -1)
    scan = rows[:, None].astype(np.float64)
    crosses = (y <= scan) != (y1 <= scan)  # half-open in y: no edge counted twice at a vertex
    with np.errstate(divide="ignore", invalid="ignore"):
        at = np.where(crosses, x + (scan - y) * (x1 - x) / (y1 - y), np.inf)
    at.sort(axis=1)
    if at.shape[1] % 2:
        at = np.hstack([at, np.full((rows.size, 1), np.inf)])
    starts, stops = at[:, 0::2], at[:, 1::2]
    spans = np.isfinite(stops)
    row_index = np.broadcast_to(np.arange(rows.size)[:, None], starts.shape)[spans]
    # First centre at or after the start; first centre at or after the stop (excluded).
    first = np.clip(np.ceil(starts[spans]), 0, ncols).astype(np.intp)
    end = np.clip(np.ceil(stops[spans]), 0, ncols).astype(np.intp)
    depth = np.zeros((rows.size, ncols + 1), dtype=np.int32)
    np.add.at(depth, (row_index, first), 1)
    np.add.at(depth, (row_index, end), -1)
    return np.cumsum(depth, axis=1)[:, :ncols] > 0


def region_pixel_mask(image: SkyImage, region: SphericalPolygon) -> np.ndarray:
    """Usable pixels of ``image`` whose centres fall in ``region``, through the image's WCS."""
    inside = np.zeros(image.data.shape, dtype=bool)
    for ra, dec in region.to_radec():
        x, y = image.wcs.invert(np.asarray(ra), np.asarray(dec), with_bounding_box=False)
        inside |= polygon_pixel_mask(x[:-1], y[:-1], image.data.shape)  # last vertex closes the ring
    return inside & image.good


def overlap(first: SkyImage, second: SkyImage) -> SphericalPolygon | None:
    """The region of sky both images cover, None when they do not overlap."""
    if not first.footprint.intersects_poly(second.footprint):
        return None
    try:
        region = first.footprint.intersection(second.footprint)
    except MalformedPolygonError:
        # spherical_geometry fails on nearly identical polygons: then either is the overlap.
        log.warning("%s and %s have nearly identical footprints: the first is used as their overlap",
                    first.name, second.name)
        region = first.footprint
    return region if region.area() > 0 else None


def sky_image(data: np.ndarray, dq: np.ndarray, wcs, *, dqbits: str | None = "~DO_NOT_USE",
              stepsize: int | None = None, name: str = "") -> SkyImage:
    """A SkyImage: pixels are usable when finite, good by ``dqbits`` and inside the bounding box."""
    data = np.asarray(data)
    good = dqflags.good_pixel_mask(np.asarray(dq), dqbits) & np.isfinite(data)
    (x_low, x_high), (y_low, y_high) = pixel_bounds(wcs, data.shape)
    rows, cols = np.arange(data.shape[0]), np.arange(data.shape[1])
    good &= ((rows >= y_low) & (rows <= y_high))[:, None] & ((cols >= x_low) & (cols <= x_high))[None, :]
    return SkyImage(data, good, wcs, footprint_polygon(wcs, data.shape, stepsize), name)


# ---------------------------------------------------------------- the methods

class SkyLevels(NamedTuple):
    levels: np.ndarray  # sky level of each image (0 where none could be computed)
    valid: np.ndarray  # whether a level was computed


def match_offsets(images: list[SkyImage], statistic: SkyStatistic) -> np.ndarray:
    """Least-squares sky offsets equalizing every overlapping pair; NaN for an image with no pair.

    Each overlapping pair (i, j) gives one equation w (d_i - d_j) = w (s_i - s_j), s the
    sky of each image in its own pixels of the overlap and w the mean of their pixel
    counts (Drizzlepac's skymatch). Offsets of a connected group of images are known
    only up to a constant: the minimum-norm solution puts each group's mean offset at
    zero, which is what the documentation's second example shows for two disjoint mosaics.
    """
    rows, rhs = [], []
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            region = overlap(images[i], images[j])
            if region is None:
                continue
            sky_i, npix_i = statistic(images[i].data[region_pixel_mask(images[i], region)])
            sky_j, npix_j = statistic(images[j].data[region_pixel_mask(images[j], region)])
            if sky_i is None or sky_j is None:
                log.info("%s / %s: no usable pixels in their overlap", images[i].name, images[j].name)
                continue
            log.info("%s / %s overlap: skies %.6g (%d px), %.6g (%d px)", images[i].name,
                     images[j].name, sky_i, npix_i, sky_j, npix_j)
            weight = 0.5 * (npix_i + npix_j)
            row = np.zeros(len(images))
            row[i], row[j] = weight, -weight
            rows.append(row)
            rhs.append(weight * (sky_i - sky_j))
    offsets = np.full(len(images), np.nan)
    if not rows:
        return offsets
    system = np.array(rows)
    solution, _, rank, _ = np.linalg.lstsq(system, np.array(rhs), rcond=None)
    paired = np.any(system != 0, axis=0)
    if rank < paired.sum() - 1:
        log.warning("the overlapping images form %d disconnected groups: sky is matched within each "
                    "group only", paired.sum() - rank)
    offsets[paired] = solution[paired]
    return offsets


def sky_levels(images: list[SkyImage], skymethod: str = "match", match_down: bool = True,
               statistic: SkyStatistic | None = None) -> SkyLevels:
    """Each image's sky level by ``skymethod`` (the romancal documentation, section "SkyMatch");
    the images are not modified."""
    if skymethod not in SKYMETHODS:
        raise ValueError(f"skymethod must be one of {', '.join(SKYMETHODS)}, not {skymethod!r}")
    if not images:
        raise ValueError("no images")
    statistic = statistic or SkyStatistic()
    levels = np.zeros(len(images))
    valid = np.zeros(len(images), dtype=bool)
    if "match" in skymethod:
        offsets = match_offsets(images, statistic)
        valid = np.isfinite(offsets)
        if valid.any():
            reference = offsets[valid].min() if match_down else offsets[valid].max()
            levels = np.where(valid, offsets - reference, 0.0)
    if skymethod == "match":
        return SkyLevels(levels, valid)
    # The sky each image still has once its match offset (0 without matching) is removed.
    remaining = np.array([np.nan if sky is None else sky - level for sky, level in
                          zip((statistic(im.data[im.good])[0] for im in images), levels, strict=True)])
    if skymethod == "local":
        found = np.isfinite(remaining)
        return SkyLevels(np.where(found, remaining, 0.0), found)
    if np.isfinite(remaining).any():
        return SkyLevels(levels + np.nanmin(remaining), np.ones(len(images), dtype=bool))
    log.warning("no image has a measurable sky: no global sky level")
    return SkyLevels(levels, valid)


# ---------------------------------------------------------------- command line

def record_background(model, level: float, valid: bool, skymethod: str, subtract: bool):
    """``meta.background`` as rad's sky_background schema wants it; data minus level with ``subtract``."""
    if subtract and valid:
        model.data = (np.asarray(model.data) - np.float32(level)).astype(np.float32)
    model.meta["background"] = {"level": float(level), "method": skymethod, "subtracted": bool(subtract)}
    return model


def match_association(association, members, args, parameters: dict) -> None:
    """The members' sky levels recorded (subtracted with ``subtract``) in products beside
    ``args.output``, which lists them."""
    try:
        dqflags.interpret_bit_spec(parameters["dqbits"])  # a bad bit spec fails before any image is read
        statistic = SkyStatistic(parameters["skystat"], parameters["lower"], parameters["upper"],
                                 parameters["nclip"], parameters["lsigma"], parameters["usigma"],
                                 parameters["binwidth"])
    except ValueError as err:
        raise ParameterError(f"{STEP}: {err}") from None
    models, images = [], []
    for path in members:
        model = open_model(path, (datamodels.ImageModel,))
        if model.meta.get("wcs") is None:
            raise InputFileError(path, "no WCS in meta.wcs: run assign_wcs first")
        background = model.meta.get("background") or {}
        if background.get("subtracted") and parameters["subtract"]:
            raise InputFileError(path, "its sky was already subtracted (meta.background.subtracted): "
                                       "run with --subtract false")
        models.append(model)
        images.append(sky_image(model.data, model.dq, model.meta.wcs, dqbits=parameters["dqbits"],
                                stepsize=parameters["stepsize"], name=path.name))
    result = sky_levels(images, parameters["skymethod"], parameters["match_down"], statistic)
    for path, level, valid in zip(members, *result, strict=True):
        if valid:
            log.info("%s: sky level %.6g", path.name, level)
        else:
            log.warning("%s: no sky level could be computed (recorded as 0)", path.name)
    outputs = [record_background(model, level, valid, parameters["skymethod"], parameters["subtract"])
               for model, level, valid in zip(models, *result, strict=True)]
    # As romancal: an image whose sky could not be measured records the step as SKIPPED.
    write_association_products(outputs, association, args.output, STEP, STEP_SUFFIX[STEP], args,
                               parameters,
                               statuses=[COMPLETE if valid else SKIPPED for valid in result.valid])


def main(argv=None) -> None:
    run_association_script(STEP, __doc__, match_association, argv=argv)


if __name__ == "__main__":
    cli.run_and_exit(main)
