"""The source catalog's kernels: detection, measurement, columns and products of a catalog.

Shared by scripts/source_catalog.py (the catalog of an image or a mosaic, whose docstring
describes steps 1-8) and scripts/multiband_catalog.py (a sky cell's catalog across its
filters, on the same functions).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from astropy.stats import SigmaClip
from astropy.table import Table
from photutils.aperture import CircularAnnulus, CircularAperture, aperture_photometry
from photutils.segmentation import SourceCatalog, SourceFinder, make_2dgaussian_kernel
from photutils.utils.exceptions import NoDetectionsWarning
from roman_datamodels import datamodels
from scipy import ndimage
from scipy.spatial import cKDTree

from . import dqflags
from .background import estimate_background
from .files import atomic_path
from .naming import product_name
from .products import plain_array
from .roman_psf import (
    PIXEL_SCALE_ARCSEC,
    epsf_reference_model,
    fit_psf_photometry,
    kernel_and_psf,
    mosaic_psf_model,
)

log = logging.getLogger("source_catalog")

BKG_FILTER_SIZE = 3
BKG_SIGMA = 3.0
BKG_ESTIMATOR = "median"
DEBLEND_LEVELS = 32
# Pixels around each segment left out of the second background estimate: the Roman PSF's wings
# would raise it (by 2.5 % of the sky on a field of 100 stars in 320 x 320 pixels; 1 % masked so).
SOURCE_MASK_SIZE = 11
DEBLEND_CONTRAST = 1e-4  # romancal's
APERTURE_RADII_ARCSEC = (0.1, 0.2, 0.4, 0.8, 1.6)
ANNULUS_RADII_ARCSEC = (2.4, 2.8)
FLAG_APERTURE_RADIUS_ARCSEC = 0.4  # the aperture whose pixels set the bad-pixel and edge flags
MJY_TO_NJY = 1e15
ARCSEC_RAD = math.pi / (180.0 * 3600.0)
AB_ZERO_POINT_NJY = 3631e9

WARNING_BITS = {"centroid_unusable": int(dqflags.pixel.DO_NOT_USE), "saturated": 2,
                "bad_pixel_in_aperture": 4, "near_edge": 8}

# photutils' PSF_FLAGS bits of a fit whose position is not to be trusted: a non-positive flux,
# no convergence, a position at its bound.
PSF_FAILED_BITS = 4 | 8 | 32

# romancal 1.1's column order of the prompt (Level 2) catalog; PSF columns only with fit_psf.
PSF_XY_COLUMNS = ("x_psf", "x_psf_err", "y_psf", "y_psf_err")
PSF_SKY_COLUMNS = ("ra_psf", "dec_psf", "ra_psf_err", "dec_psf_err")
PSF_FLAG_COLUMNS = ("psf_flags", "psf_gof")


def aperture_column_names() -> list[str]:
    return [f"aper{round(radius / 0.1):02d}_flux" for radius in APERTURE_RADII_ARCSEC]


def catalog_columns(fit_psf: bool) -> list[str]:
    """The catalog's columns in romancal's order (its CatalogSchema, type "prompt")."""
    aperture = ["aper_bkg_flux", "aper_bkg_flux_err"]
    for name in aperture_column_names():
        aperture += [name, f"{name}_err"]
    return [
        "label", "flagged_spatial_id", "x_centroid", "y_centroid", "x_centroid_err", "y_centroid_err",
        "x_centroid_win", "y_centroid_win", "x_centroid_win_err", "y_centroid_win_err",
        *(PSF_XY_COLUMNS if fit_psf else ()),
        "ra", "dec", "ra_centroid", "dec_centroid", "ra_centroid_err", "dec_centroid_err",
        "ra_centroid_win", "dec_centroid_win", "ra_centroid_win_err", "dec_centroid_win_err",
        *(PSF_SKY_COLUMNS if fit_psf else ()),
        "bbox_xmin", "bbox_xmax", "bbox_ymin", "bbox_ymax", "segment_area",
        "semimajor", "semiminor", "fwhm", "ellipticity", "orientation_pix", "orientation_sky",
        "cxx", "cxy", "cyy", "kron_radius", "nn_label", "nn_distance",
        "sharpness", "roundness1", "is_extended", "fluxfrac_radius_50",
        *aperture,
        *(("psf_flux", "psf_flux_err") if fit_psf else ()),
        "segment_flux", "segment_flux_err", "kron_flux", "kron_flux_err", "kron_abmag", "kron_abmag_err",
        "warning_flags", "image_flags",
        *(PSF_FLAG_COLUMNS if fit_psf else ()),
        "dust_ebv",
    ]


@dataclass(frozen=True)
class Background:
    """Step 1's result: the data less its background and the background's RMS, both float32 (the
    background itself is not kept: one more full-size array through the measurements)."""

    subtracted: np.ndarray  # unusable pixels 0
    rms: np.ndarray


@dataclass(frozen=True)
class Detection:
    """What detection makes: the background-subtracted and detection images (float32) and the segments
    (the background's RMS is not kept past the segmentation, for the same reason)."""

    subtracted: np.ndarray
    detection_image: np.ndarray
    segments: object  # photutils SegmentationImage, or None when nothing was found


@dataclass(frozen=True)
class ImageScale:
    """The image's geometry at its centre: pixel scale (arcsec), pixel area (sr), north's angle."""

    pixel_scale_arcsec: float
    pixel_area_sr: float
    north_angle_deg: float  # counter-clockwise from +x to north
    east_is_left: bool  # east 90 degrees counter-clockwise from north (sky seen from inside)


def unusable_pixels(data, err, dq) -> np.ndarray:
    """True where a pixel cannot be measured: DO_NOT_USE, or a value or error that is not finite or <= 0."""
    with np.errstate(invalid="ignore"):
        return (~np.isfinite(data) | ~np.isfinite(err) | (err <= 0)
                | ~dqflags.good_pixel_mask(dq, "~DO_NOT_USE"))


def detect(data, mask, *, kernel_fwhm: float, snr_threshold: float, npixels: int, deblend: bool,
           bkg_boxsize: int) -> Detection:
    """Steps 1-3 of the module docstring on a 2-D image; ``mask`` True where a pixel is unusable."""
    log.info("detection kernel FWHM %.3f pixels", kernel_fwhm)
    settings = dict(kernel_fwhm=kernel_fwhm, snr_threshold=snr_threshold, npixels=npixels, deblend=deblend)
    background = subtract_background(data, mask, bkg_boxsize=bkg_boxsize, **settings)
    detection_image, segments = segment(background, mask, **settings)
    return Detection(background.subtracted, detection_image, segments)


def subtract_background(data, mask, *, kernel_fwhm: float, snr_threshold: float, npixels: int, deblend: bool,
                        bkg_boxsize: int) -> Background:
    """Step 1 of the module docstring: the background estimated twice, the second time without the
    sources that the first estimate's segmentation (steps 2-3) found, dilated."""
    # One full-size float32 copy (the data's own precision), its unusable pixels zeroed.
    data = np.array(data, dtype=np.float32)
    data[mask] = 0.0
    first = background_pass(data, mask, bkg_boxsize)
    _, segments = segment(first, mask, kernel_fwhm=kernel_fwhm, snr_threshold=snr_threshold,
                          npixels=npixels, deblend=deblend)
    if segments is None:
        return first
    sources = segments.make_source_mask(size=SOURCE_MASK_SIZE)
    # The first pass's arrays go before the second makes its own (kept, they raised the peak memory
    # of a full detector by half).
    del first, segments
    return background_pass(data, mask, bkg_boxsize, sources)


def background_pass(data, mask, bkg_boxsize: int, sources=None) -> Background:
    """The background estimated without the unusable pixels (``mask``) and ``sources``, subtracted."""
    excluded = mask if sources is None else mask | sources
    background = estimate_background(data, excluded, bkg_boxsize=bkg_boxsize, bkg_filter_size=BKG_FILTER_SIZE,
                                     bkg_sigma=BKG_SIGMA, bkg_estimator=BKG_ESTIMATOR)
    subtracted = np.subtract(data, background.background, dtype=np.float32)
    subtracted[mask] = 0.0
    log.info("background median %.4g, RMS %.4g", float(background.background_median),
             float(background.background_rms_median))
    return Background(subtracted, np.asarray(background.background_rms, dtype=np.float32))


def segment(background: Background, mask, *, kernel_fwhm: float, snr_threshold: float, npixels: int,
            deblend: bool) -> tuple[np.ndarray, object]:
    """Steps 2-3 of the module docstring: the detection image (float32, 0 on unusable pixels) and its
    segments (photutils SegmentationImage; None when nothing was found)."""
    size = math.ceil(3 * kernel_fwhm)
    kernel = make_2dgaussian_kernel(kernel_fwhm, size=size + 1 - size % 2).array
    detection_image = convolve_masked(background.subtracted, mask, kernel)
    finder = SourceFinder(npixels, deblend=deblend, n_levels=DEBLEND_LEVELS, contrast=DEBLEND_CONTRAST,
                          progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDetectionsWarning)
        segments = finder(detection_image, snr_threshold * background.rms, mask=mask)
    log.info("%d sources", 0 if segments is None else segments.n_labels)
    return detection_image, segments


def convolve_masked(image, mask, kernel) -> np.ndarray:
    """``image`` (0 where ``mask``) convolved with ``kernel`` normalised, the masked pixels left out
    and the kernel's weight renormalised over the rest; float32, 0 where ``mask``.

    astropy's ``convolve(image, kernel, mask=mask, normalize_kernel=True)`` (its boundary filled
    with 0, which counts as data; tested against it), with scipy's float32 filter: astropy's
    makes three full-size float64 arrays, a third of a full detector's peak memory.
    """
    kernel = np.asarray(kernel, dtype=np.float64) / np.sum(kernel)
    convolved = ndimage.convolve(image, kernel, output=np.float32, mode="constant", cval=0.0)
    if mask.any():
        # The kernel's weight on usable pixels and beyond the edge (astropy's fill value is data).
        weight = ndimage.convolve((~mask).astype(np.float32), kernel, output=np.float32, mode="constant",
                                  cval=1.0)
        np.divide(convolved, weight, out=convolved, where=~mask)
        del weight
        convolved[mask] = 0.0
    return convolved


def measure(detection: Detection, err, dq, mask, *, scale: ImageScale, flux_to_njy: float,
            ee_fractions, psf_model=None) -> Table:
    """Steps 4-8 of the module docstring: the catalog (pixel positions 0-based, no sky coordinates).

    ``mask`` holds at least unusable_pixels(data, err, dq).
    """
    segments = detection.segments
    pixels_per_arcsec = 1.0 / scale.pixel_scale_arcsec
    area_arcsec2 = scale.pixel_scale_arcsec**2
    # One copy of the errors with the unusable pixels zeroed, for the segments, the PSF fits and the
    # apertures (the subtracted image has them zeroed already). float64: photutils sums a segment's
    # squared errors in their dtype one after the other (1e-4 off in float32 over a large segment);
    # the measurements' peak memory stays below the segmentation's with it.
    error = np.where(mask, np.float64(0.0), err)
    sources = SourceCatalog(detection.subtracted, segments, convolved_data=detection.detection_image,
                            error=error, mask=mask)
    out = Table()
    out["label"] = sources.label.astype(np.int32)
    for name, attribute in (("x_centroid", "x_centroid"), ("y_centroid", "y_centroid"),
                            ("x_centroid_win", "x_centroid_win"), ("y_centroid_win", "y_centroid_win")):
        out[name] = np.asarray(getattr(sources, attribute), dtype=np.float64)
    for name in ("bbox_xmin", "bbox_xmax", "bbox_ymin", "bbox_ymax"):
        out[name] = np.asarray(getattr(sources, name), dtype=np.int32)
    out["segment_area"] = np.asarray(sources.area.value, dtype=np.float64) * area_arcsec2
    out["semimajor"] = sources.semimajor_axis.value * scale.pixel_scale_arcsec
    out["semiminor"] = sources.semiminor_axis.value * scale.pixel_scale_arcsec
    out["fwhm"] = sources.fwhm.value * scale.pixel_scale_arcsec
    out["ellipticity"] = np.asarray(sources.ellipticity.value, dtype=np.float64)
    out["orientation_pix"] = sources.orientation.value
    sky_angle = (sources.orientation.value - scale.north_angle_deg) * (1 if scale.east_is_left else -1)
    out["orientation_sky"] = np.mod(sky_angle, 360.0)
    for name in ("cxx", "cxy", "cyy"):
        out[name] = getattr(sources, f"ellipse_{name}").value / area_arcsec2
    out["kron_radius"] = sources.kron_radius.value * scale.pixel_scale_arcsec
    out["fluxfrac_radius_50"] = sources.flux_radius(0.5).value * scale.pixel_scale_arcsec
    out["segment_flux"] = sources.segment_flux * flux_to_njy
    out["segment_flux_err"] = sources.segment_flux_err * flux_to_njy
    out["kron_flux"] = sources.kron_flux * flux_to_njy
    out["kron_flux_err"] = sources.kron_flux_err * flux_to_njy
    out["kron_abmag"], out["kron_abmag_err"] = ab_magnitude(out["kron_flux"], out["kron_flux_err"])

    centroids = np.c_[out["x_centroid"], out["y_centroid"]]
    out["nn_label"], out["nn_distance"] = nearest_neighbours(
        out["label"], np.where(np.isfinite(centroids), centroids, -1000.0), scale)
    if psf_model is not None:
        add_psf_photometry(out, detection.subtracted, error, mask, psf_model, flux_to_njy)
    positions = photometry_positions(out)
    finite = np.isfinite(positions).all(axis=1)
    positions = np.where(finite[:, None], positions, -1000.0)  # an aperture there measures nothing

    radii = [r * pixels_per_arcsec for r in APERTURE_RADII_ARCSEC]
    apertures = [CircularAperture(positions, r) for r in radii]
    photometry = aperture_photometry(detection.subtracted, apertures, error=error)
    annulus = [r * pixels_per_arcsec for r in ANNULUS_RADII_ARCSEC]
    local, local_err = annulus_background(detection.subtracted, mask, positions, annulus)
    out["aper_bkg_flux"] = local * flux_to_njy / area_arcsec2
    out["aper_bkg_flux_err"] = local_err * flux_to_njy / area_arcsec2
    for i, name in enumerate(aperture_column_names()):
        out[name] = np.asarray(photometry[f"aperture_sum_{i}"]) * flux_to_njy
        out[f"{name}_err"] = np.asarray(photometry[f"aperture_sum_err_{i}"]) * flux_to_njy
    ee = dict(zip(aperture_column_names(), ee_fractions, strict=True))
    out["is_extended"] = out["aper04_flux"] > out["aper02_flux"] * 1.2 * ee["aper04_flux"] / ee["aper02_flux"]

    dq = np.asarray(dq)
    out["image_flags"] = np.array([np.bitwise_or.reduce(dq[s.slices][~s.data_masked.mask], initial=0)
                                   for s in segments.segments], dtype=np.int64).astype(np.int32)
    out["warning_flags"] = warning_flags(positions, finite, out["image_flags"], mask,
                                         FLAG_APERTURE_RADIUS_ARCSEC * pixels_per_arcsec)
    return out


def photometry_positions(out: Table) -> np.ndarray:
    """Where the apertures go: the PSF position where a fit converged, else the windowed centroid,
    else the centroid (romancal centres them on the centroid, which is 0.1-0.2 pixel off for
    a faint star: 1-2 % of a 0.4" aperture's flux)."""
    positions = np.c_[out["x_centroid_win"], out["y_centroid_win"]]
    positions = np.where(np.isfinite(positions), positions, np.c_[out["x_centroid"], out["y_centroid"]])
    if "x_psf" in out.colnames:
        fitted = (np.asarray(out["psf_flags"]) & PSF_FAILED_BITS) == 0
        positions = np.where(fitted[:, None], np.c_[out["x_psf"], out["y_psf"]], positions)
    return positions


def ab_magnitude(flux_njy, flux_err_njy) -> tuple[np.ndarray, np.ndarray]:
    """AB magnitude and its error (romancal's 2.5 log10(1 + err/flux)); NaN where the flux is <= 0."""
    flux = np.asarray(flux_njy, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        magnitude = np.where(flux > 0, -2.5 * np.log10(flux / AB_ZERO_POINT_NJY), np.nan)
        error = np.where(flux > 0, 2.5 * np.log10(1.0 + np.asarray(flux_err_njy) / flux), np.nan)
    return magnitude, error


def nearest_neighbours(labels, positions, scale: ImageScale) -> tuple[np.ndarray, np.ndarray]:
    """The label of each source's nearest other source and its distance (arcsec); -1 and NaN alone."""
    if len(labels) < 2:
        return np.full(len(labels), -1, np.int32), np.full(len(labels), np.nan)
    distance, index = cKDTree(positions).query(positions, k=2)
    return np.asarray(labels)[index[:, 1]].astype(np.int32), distance[:, 1] * scale.pixel_scale_arcsec


def annulus_background(data, mask, positions, radii) -> tuple[np.ndarray, np.ndarray]:
    """3-sigma-clipped median of each annulus (pixels where ``mask`` left out) and its standard error."""
    clip = SigmaClip(sigma=3.0)
    levels, errors = [], []
    for annulus in CircularAnnulus(positions, *radii).to_mask(method="center"):
        values = clip(annulus.get_values(data, mask=mask), masked=False)
        if values.size == 0:
            levels.append(np.nan)
            errors.append(np.nan)
            continue
        levels.append(np.median(values))
        errors.append(np.sqrt(np.pi / (2.0 * values.size)) * np.std(values))
    return np.array(levels), np.array(errors)


def warning_flags(positions, finite, image_flags, mask, radius) -> np.ndarray:
    """``warning_flags`` of the module docstring (step 8); ``image_flags``: the DQ bits OR-ed over each
    source's segment."""
    flags = np.zeros(len(positions), np.int32)
    ny, nx = mask.shape
    cols = np.clip(np.rint(positions[:, 0]).astype(int), 0, nx - 1)
    rows = np.clip(np.rint(positions[:, 1]).astype(int), 0, ny - 1)
    flags |= np.where(~finite | mask[rows, cols], WARNING_BITS["centroid_unusable"], 0).astype(np.int32)
    in_saturated = (np.asarray(image_flags) & dqflags.pixel.SATURATED) != 0
    flags |= np.where(in_saturated, WARNING_BITS["saturated"], 0).astype(np.int32)
    # Each aperture's own pixels of the mask (no full-size float copy of it).
    bad = np.array([aperture.get_values(mask).any()
                    for aperture in CircularAperture(positions, radius).to_mask(method="center")], dtype=bool)
    flags |= np.where(bad, WARNING_BITS["bad_pixel_in_aperture"], 0).astype(np.int32)
    near_edge = ((positions[:, 0] - radius < -0.5) | (positions[:, 0] + radius > nx - 0.5)
                 | (positions[:, 1] - radius < -0.5) | (positions[:, 1] + radius > ny - 0.5))
    flags |= np.where(near_edge, WARNING_BITS["near_edge"], 0).astype(np.int32)
    return flags


def add_psf_photometry(out: Table, subtracted, error, mask, psf_model, flux_to_njy: float) -> None:
    """Step 6: fit the PSF at every centroid; its columns into ``out`` (``error`` is read only where
    ``mask`` is False: finite and positive there)."""
    start = Table({"id": out["label"], "x": out["x_centroid"], "y": out["y_centroid"],
                   "flux": out["segment_flux"] / flux_to_njy})
    fitted = fit_psf_photometry(subtracted, error, mask, start, psf_model)
    out["x_psf"], out["y_psf"] = fitted["x"], fitted["y"]
    out["x_psf_err"], out["y_psf_err"] = fitted["x_err"], fitted["y_err"]
    out["psf_flux"] = fitted["flux"] * flux_to_njy
    out["psf_flux_err"] = fitted["flux_err"] * flux_to_njy
    out["psf_gof"] = fitted["qfit"]
    out["psf_flags"] = fitted["psf_flags"]


def image_scale(wcs, shape) -> ImageScale:
    """Pixel scale, area and north's direction at the image's centre, from its WCS (nominal without one)."""
    if wcs is None:
        return ImageScale(PIXEL_SCALE_ARCSEC, (PIXEL_SCALE_ARCSEC * ARCSEC_RAD) ** 2, 90.0, True)
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    yc, xc = (shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0
    ra, dec = wcs(np.array([xc, xc + 1.0, xc]), np.array([yc, yc, yc + 1.0]))
    points = SkyCoord(ra, dec, unit="deg")
    scale = math.sqrt(points[0].separation(points[1]).arcsec * points[0].separation(points[2]).arcsec)
    # Where north and east point on the pixel grid, one pixel from the centre.
    angles = []
    for position_angle in (0.0, 90.0):
        there = points[0].directional_offset_by(position_angle * u.deg, scale * u.arcsec)
        x, y = wcs.invert(there.ra.deg, there.dec.deg)
        angles.append(math.degrees(math.atan2(y - yc, x - xc)))
    north_angle, east_angle = angles
    east_is_left = math.isclose((east_angle - north_angle) % 360.0, 90.0, abs_tol=45.0)
    return ImageScale(scale, (scale * ARCSEC_RAD) ** 2, north_angle, east_is_left)


def flux_conversion(meta, scale: ImageScale, *, surface_brightness: bool = False) -> float:
    """nJy per data unit summed over pixels (step 7): photometry's MJy/sr per DN/s x pixel area x 1e15.

    A mosaic (``surface_brightness``) is in MJy/sr already (the flux step): its pixel area
    (sr) x 1e15, the area from its WCS."""
    if surface_brightness:
        return scale.pixel_area_sr * MJY_TO_NJY
    photometry = meta.get("photometry") or {}
    conversion = photometry.get("conversion_megajanskys")
    area = photometry.get("pixel_area")
    area = float(area) if area is not None and float(area) > 0 else scale.pixel_area_sr
    if conversion is None or not float(conversion) > 0:
        log.warning("no meta.photometry.conversion_megajanskys: fluxes in data units x pixel area x 1e15")
        conversion = 1.0
    return float(conversion) * area * MJY_TO_NJY


def add_sky_coordinates(catalog: Table, wcs, fit_psf: bool) -> None:
    """RA/Dec (deg) of the centroids, windowed centroids and PSF positions; NaN without a WCS."""
    pairs = [("centroid", "x_centroid", "y_centroid"), ("centroid_win", "x_centroid_win", "y_centroid_win")]
    if fit_psf:
        pairs.append(("psf", "x_psf", "y_psf"))
    for name, x, y in pairs:
        if wcs is None or not len(catalog):
            ra = dec = np.full(len(catalog), np.nan)
        else:
            ra, dec = wcs(np.asarray(catalog[x], dtype=np.float64), np.asarray(catalog[y], dtype=np.float64))
        catalog[f"ra_{name}"], catalog[f"dec_{name}"] = ra, dec
    best = "psf" if fit_psf else "centroid"
    catalog["ra"], catalog["dec"] = catalog[f"ra_{best}"], catalog[f"dec_{best}"]


def schema_table(measured: Table, columns, template) -> Table:
    """``measured`` as rad's catalog ``template``: ``columns`` in their order, the schema's dtypes,
    units and descriptions; what is not measured is NaN (floats), -1 (integers) or False."""
    table = Table()
    n = len(measured)
    for name in columns:
        definition = template.get_column_definition(name)
        dtype = np.dtype(definition["datatype"])
        if name in measured.colnames:
            values = np.asarray(measured[name]).astype(dtype)
        else:
            values = np.full(n, np.nan if dtype.kind == "f" else False if dtype.kind == "b" else -1, dtype)
        unit = None if definition["unit"] in ("none", None) else definition["unit"]
        table[name] = values
        table[name].unit = unit
        table[name].description = definition["description"]
    return table


def catalog_meta(ee_fractions, scale: ImageScale, kernel_fwhm: float) -> dict:
    """The table's metadata: romancal's keys (date, versions, aperture radii, ee_fractions)."""
    import importlib.metadata
    import platform

    from astropy.time import Time

    pixels = [r / scale.pixel_scale_arcsec for r in APERTURE_RADII_ARCSEC]
    annulus = [r / scale.pixel_scale_arcsec for r in ANNULUS_RADII_ARCSEC]
    return {
        "date": Time.now().isot,
        "versions": {"Python": platform.python_version(),
                     **{name: importlib.metadata.version(name)
                        for name in ("numpy", "scipy", "astropy", "photutils", "gwcs")}},
        "aperture_radii": {"circle_arcsec": np.array(APERTURE_RADII_ARCSEC),
                           "annulus_arcsec": np.array(ANNULUS_RADII_ARCSEC),
                           "circle_pix": np.array(pixels),
                           "annulus_pix": np.array(annulus)},
        "ee_fractions": np.asarray(ee_fractions, dtype=np.float32),
        "kernel_fwhm": float(kernel_fwhm),
    }


def image_arrays(image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """data, err and dq of an ImageModel, or of a MosaicModel (no dq: its pixels that no input
    covered, weight 0, are DO_NOT_USE)."""
    data, err = plain_array(image["data"]), plain_array(image["err"])
    if isinstance(image, datamodels.MosaicModel):
        uncovered = ~(plain_array(image["weight"]) > 0)
        return data, err, np.where(uncovered, int(dqflags.pixel.DO_NOT_USE), 0).astype(np.uint32)
    return data, err, plain_array(image["dq"])


def mosaic_detector(image) -> str:
    """The detector whose PSF a mosaic's is made from: the one most of its inputs came from."""
    instrument = image.meta.get("individual_image_meta", {}).get("instrument")
    detectors = ([str(d) for d in instrument["detector"]]
                 if instrument is not None and "detector" in instrument.colnames else [])
    return max(sorted(set(detectors)), key=detectors.count) if detectors else "WFI01"


def mosaic_psf(image, parameters, input_name, reference) -> tuple[float, object]:
    """The detection kernel's FWHM and a mosaic's effective PSF (photutils ImagePSF): the EPSF
    reference's (``override_epsf``, read by ``reference``) or the Roman PSF of the detector most
    of its inputs came from and its filter, drizzled onto its grid (romanpipe.roman_psf.mosaic_psf_model)."""
    instrument = SimpleNamespace(detector=mosaic_detector(image),
                                 optical_element=image.meta.instrument.optical_element)
    # The PSF also when not fitted: its encircled energy gives the aperture corrections.
    kernel_fwhm, psf_model = kernel_and_psf(instrument, parameters["kernel_fwhm"],
                                            not parameters["override_epsf"], input_name)
    if parameters["override_epsf"]:
        psf_model = epsf_reference_model(reference("epsf"))
    psf_model = mosaic_psf_model(psf_model, pixel_scale_arcsec=image_scale(
        image.meta.wcs, image.data.shape).pixel_scale_arcsec, pixfrac=float(image.meta.resample.pixfrac))
    return kernel_fwhm, psf_model


def output_paths(output: Path) -> tuple[Path, Path]:
    """``<base>_cat.parquet`` (OUTPUT with its extension replaced) and ``<base>_segm.asdf`` beside it."""
    return output.with_suffix(".parquet"), product_name(output.with_suffix(".asdf"), "segm")


def write_parquet(catalog_model, path: Path) -> Path:
    """Write the catalog so that ``path`` only ever holds a complete one."""
    with atomic_path(path) as staging:
        catalog_model.meta.filename = path.name
        catalog_model.to_parquet(staging)
    log.info("wrote %s", path)
    return path
