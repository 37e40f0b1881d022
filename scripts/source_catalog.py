"""source_catalog: the catalog of an image's sources: segments, centroids, shapes, aperture, PSF photometry.

As romancal 1.1's SourceCatalogStep (read in its source: the romancal documentation has no
section on it), built on photutils:

1. Background and its RMS: photutils Background2D in ``bkg_boxsize`` boxes (3-sigma
   clipped medians, the mesh median-filtered over 3 x 3 boxes; one box over the whole image
   when the mesh cannot be estimated), subtracted from the data. Twice: the second time
   without the pixels of the first pass's segments, dilated by an 11 x 11 box (romancal
   estimates it once, with the stars' wings in it: a bias of aperture fluxes).
2. Detection image: the background-subtracted data convolved with a normalised Gaussian
   of ``kernel_fwhm`` pixels (null: the filter's diffraction FWHM combined in quadrature
   with one pixel, the kernel of source_detection), ``ceil(3 FWHM)`` pixels wide (odd).
3. Segmentation: pixels of the detection image above ``snr_threshold`` x the background
   RMS, in groups of at least ``npixels`` connected pixels (8-connectivity); with
   ``deblend`` overlapping sources are split (photutils' multi-thresholding, 32 levels,
   contrast 1e-4, as romancal).
4. Per source (photutils SourceCatalog on the subtracted data, shapes and centroids from
   the detection image): centroids, windowed centroids, bounding box, area, moments
   (semimajor, semiminor, orientation, ellipticity, cxx/cxy/cyy, FWHM), Kron radius and
   flux, the radius holding half the Kron flux, the isophotal (segment) flux, and the
   nearest neighbour.
5. Circular aperture photometry at 0.1, 0.2, 0.4, 0.8 and 1.6 arcsec (``aperXX_flux``,
   XX in tenths of an arcsecond) and the local background as the 3-sigma-clipped median of
   a 2.4-2.8 arcsec annulus. The aperture corrections are the encircled energy of a point
   source within each radius, from the APCORR reference of the detector (its row for the
   image's optical element: ``ee_fractions`` at ``ee_radii`` pixels, through a cubic spline
   as romancal; the simulator's reference factory makes it from its EPSF reference). The
   table's ``meta.ee_fractions`` holds them, and aperXX_flux / ee_fraction is a point
   source's total flux. As romancal, the fluxes themselves are not corrected. The
   apertures are centred on the PSF position where its fit converged, else on the
   windowed centroid. ``is_extended`` is romancal's test, aper04 > 1.2 x aper02 x
   EE(0.4")/EE(0.2").
6. With ``fit_psf`` (done before 5, whose apertures it centres: see photometry_positions):
   flux and position of the EPSF reference's effective PSF (its first: in focus, first
   spectral type, first position) fitted to every source at once (5 x 5
   pixels around its centroid, weighted by 1/err^2, romanpipe.roman_psf
   .fit_psf_photometry) -> ``x_psf``, ``y_psf``, ``psf_flux`` (the total flux), their
   errors, ``psf_gof`` (sum of |residuals| / flux) and ``psf_flags`` (photutils' bits).
   Positions are those of the PSF's origin, where the simulator and romancal place a star.
7. Fluxes in nJy: DN/s x meta.photometry.conversion_megajanskys (MJy/sr per DN/s) x
   meta.photometry.pixel_area (sr) x 1e15 (as romancal; an image without photometry is
   left in its own units, then nJy is its unit times the pixel area), AB magnitudes
   ``-2.5 log10(flux / 3631 Jy)``, sky coordinates from the image's WCS (``ra``/``dec``:
   the PSF position with ``fit_psf``, else the centroid).
8. Flags: ``warning_flags`` bit 0 (DO_NOT_USE, 1) where the centroid's pixel is unusable,
   bit 1 (SATURATED, 2) where a pixel of the segment is saturated, bit 3 (4) where a pixel
   of the 0.4" aperture is unusable (NaN, DO_NOT_USE), bit 4 (8) where that aperture
   leaves the image; ``image_flags``: the DQ bits OR-ed over the segment.

Column names, units and dtypes are those of rad's ImageSourceCatalogModel (the L2
"prompt" catalog of romancal 1.1, in romancal's order); columns this step does not
measure (``dust_ebv``, ``flagged_spatial_id``, ``sharpness``, ``roundness1``, the
centroid errors) are NaN or -1. The catalog is written as ``<base>_cat.parquet`` (OUTPUT's
extension is replaced) with roman_datamodels' ``to_parquet``: the image's metadata and the
table's metadata (aperture radii, ee_fractions, versions) go into the Parquet schema's
metadata. The segmentation map goes beside it as ``<base>_segm.asdf`` (rad's
SegmentationMapModel: ``data`` the labels, ``detection_image`` the convolved image).

    python scripts/source_catalog.py r..._cal.asdf r..._cat.parquet [--fit-psf false] [--deblend true]
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

from romanpipe import cli, dqflags
from romanpipe.background import estimate_background
from romanpipe.errors import InputFileError, NoScienceDataError
from romanpipe.files import atomic_path
from romanpipe.naming import product_name
from romanpipe.products import derived_model, open_model, plain_array, write_atomic
from romanpipe.refs import element_row
from romanpipe.roman_psf import PIXEL_SCALE_ARCSEC, epsf_reference_model, fit_psf_photometry, kernel_and_psf
from romanpipe.steprun import StepRun, parse_step_args, record_provenance
from romanpipe.timing import PhaseTimer

import numpy as np
from astropy.convolution import convolve
from astropy.stats import SigmaClip
from astropy.table import Table
from photutils.aperture import CircularAnnulus, CircularAperture, aperture_photometry
from photutils.segmentation import SourceCatalog, SourceFinder, make_2dgaussian_kernel
from photutils.utils.exceptions import NoDetectionsWarning
from roman_datamodels import datamodels
from scipy.spatial import cKDTree

log = logging.getLogger("source_catalog")

STEP = "source_catalog"
INPUT_MODELS = (datamodels.ImageModel,)

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
class Detection:
    """What detection makes: the background-subtracted and detection images, the segments (the
    background and its RMS are not kept: two more full-size arrays through the measurements)."""

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
    data = np.array(data, dtype=np.float64)  # one full-size copy, its unusable pixels zeroed
    data[mask] = 0.0
    size = math.ceil(3 * kernel_fwhm)
    kernel = make_2dgaussian_kernel(kernel_fwhm, size=size + 1 - size % 2)
    finder = SourceFinder(npixels, deblend=deblend, n_levels=DEBLEND_LEVELS, contrast=DEBLEND_CONTRAST,
                          progress_bar=False)
    log.info("detection kernel FWHM %.3f pixels", kernel_fwhm)
    detection = detection_pass(data, mask, np.zeros(mask.shape, bool), kernel, finder, snr_threshold,
                               bkg_boxsize)
    if detection.segments is None:
        return detection
    # The second pass estimates the background without the first's sources; the first's arrays
    # go before it makes its own (kept, they raised the peak memory of a full detector by half).
    sources = detection.segments.make_source_mask(size=SOURCE_MASK_SIZE)
    del detection
    return detection_pass(data, mask, sources, kernel, finder, snr_threshold, bkg_boxsize)


def detection_pass(data, mask, sources, kernel, finder, snr_threshold: float, bkg_boxsize: int) -> Detection:
    """One pass of steps 1-3: the background estimated without ``mask | sources``, the segments."""
    background = estimate_background(data, mask | sources, bkg_boxsize=bkg_boxsize,
                                     bkg_filter_size=BKG_FILTER_SIZE, bkg_sigma=BKG_SIGMA,
                                     bkg_estimator=BKG_ESTIMATOR)
    subtracted = np.where(mask, 0.0, data - background.background)
    detection_image = convolve(subtracted, kernel, mask=mask, normalize_kernel=True)
    detection_image[mask] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDetectionsWarning)
        segments = finder(detection_image, snr_threshold * background.background_rms, mask=mask)
    log.info("background median %.4g, RMS %.4g; %d sources", float(background.background_median),
             float(background.background_rms_median), 0 if segments is None else segments.n_labels)
    return Detection(subtracted, detection_image, segments)


def apcorr_ee_fractions(path, optical_element: str, radii_pixels) -> np.ndarray:
    """The encircled energy within each radius (detector pixels) from the APCORR reference at
    ``path``: a cubic spline through its row's ``ee_fractions`` at ``ee_radii`` (rad's schema:
    pixels; romancal 1.1 evaluates its spline at the radii in arcsec).

    InputFileError naming the file when it has no row for ``optical_element`` or its radii do
    not reach the apertures'.
    """
    from scipy.interpolate import make_interp_spline

    with open_model(path, (datamodels.ApcorrRefModel,)) as reference:
        try:
            row = element_row(reference.data, optical_element, "apcorr")
        except LookupError as err:
            raise InputFileError(path, str(err)) from None
        radii = np.asarray(row["ee_radii"], dtype=np.float64)
        fractions = np.asarray(row["ee_fractions"], dtype=np.float64)
    wanted = np.asarray(radii_pixels, dtype=np.float64)
    if radii.size < 2 or wanted.min() < radii.min() or wanted.max() > radii.max():
        raise InputFileError(path, f"APCORR ee_radii of {optical_element} ({radii.min():.3g}-"
                                   f"{radii.max():.3g} pixels) do not cover the apertures "
                                   f"({wanted.min():.3g}-{wanted.max():.3g})")
    order = np.argsort(radii)
    spline = make_interp_spline(radii[order], fractions[order], k=min(3, radii.size - 1))
    return spline(wanted)


def measure(detection: Detection, err, dq, mask, *, scale: ImageScale, flux_to_njy: float,
            ee_fractions, psf_model=None) -> Table:
    """Steps 4-8 of the module docstring: the catalog (pixel positions 0-based, no sky coordinates)."""
    segments = detection.segments
    err = np.asarray(err, dtype=np.float64)
    pixels_per_arcsec = 1.0 / scale.pixel_scale_arcsec
    area_arcsec2 = scale.pixel_scale_arcsec**2
    # One copy of the errors with the unusable pixels zeroed, for the segments and the apertures (the
    # subtracted image has them zeroed already): full-size temporaries set a full detector's peak memory.
    error = np.where(mask, 0.0, err)
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
        add_psf_photometry(out, detection.subtracted, err, mask, psf_model, flux_to_njy)
    positions = photometry_positions(out)
    finite = np.isfinite(positions).all(axis=1)
    positions = np.where(finite[:, None], positions, -1000.0)  # an aperture there measures nothing

    data = np.where(mask, np.nan, detection.subtracted)
    radii = [r * pixels_per_arcsec for r in APERTURE_RADII_ARCSEC]
    apertures = [CircularAperture(positions, r) for r in radii]
    photometry = aperture_photometry(detection.subtracted, apertures, error=error)
    annulus = [r * pixels_per_arcsec for r in ANNULUS_RADII_ARCSEC]
    local, local_err = annulus_background(data, positions, annulus)
    out["aper_bkg_flux"] = local * flux_to_njy / area_arcsec2
    out["aper_bkg_flux_err"] = local_err * flux_to_njy / area_arcsec2
    for i, name in enumerate(aperture_column_names()):
        out[name] = np.asarray(photometry[f"aperture_sum_{i}"]) * flux_to_njy
        out[f"{name}_err"] = np.asarray(photometry[f"aperture_sum_err_{i}"]) * flux_to_njy
    ee = dict(zip(aperture_column_names(), ee_fractions, strict=True))
    out["is_extended"] = out["aper04_flux"] > out["aper02_flux"] * 1.2 * ee["aper04_flux"] / ee["aper02_flux"]

    dq = np.asarray(dq)
    out["warning_flags"] = warning_flags(positions, finite, segments, sources, mask, dq,
                                         FLAG_APERTURE_RADIUS_ARCSEC * pixels_per_arcsec)
    out["image_flags"] = np.array([np.bitwise_or.reduce(dq[s.slices][~s.data_masked.mask], initial=0)
                                   for s in segments.segments], dtype=np.int64).astype(np.int32)
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


def annulus_background(data, positions, radii) -> tuple[np.ndarray, np.ndarray]:
    """3-sigma-clipped median of each annulus (NaN pixels left out) and its standard error."""
    clip = SigmaClip(sigma=3.0)
    levels, errors = [], []
    for mask in CircularAnnulus(positions, *radii).to_mask(method="center"):
        values = mask.get_values(data)
        values = clip(values[np.isfinite(values)], masked=False)
        if values.size == 0:
            levels.append(np.nan)
            errors.append(np.nan)
            continue
        levels.append(np.median(values))
        errors.append(np.sqrt(np.pi / (2.0 * values.size)) * np.std(values))
    return np.array(levels), np.array(errors)


def warning_flags(positions, finite, segments, sources, mask, dq, radius) -> np.ndarray:
    """``warning_flags`` of the module docstring (step 8)."""
    flags = np.zeros(len(positions), np.int32)
    ny, nx = mask.shape
    cols = np.clip(np.rint(positions[:, 0]).astype(int), 0, nx - 1)
    rows = np.clip(np.rint(positions[:, 1]).astype(int), 0, ny - 1)
    flags |= np.where(~finite | mask[rows, cols], WARNING_BITS["centroid_unusable"], 0).astype(np.int32)
    saturated = (dq & dqflags.pixel.SATURATED) != 0
    in_saturated = np.array([saturated[s.slices][~s.data_masked.mask].any() for s in segments.segments])
    flags |= np.where(in_saturated, WARNING_BITS["saturated"], 0).astype(np.int32)
    aperture = CircularAperture(positions, radius)
    bad = aperture_photometry(mask.astype(np.float64), aperture, method="center")["aperture_sum"]
    flags |= np.where(np.asarray(bad) > 0, WARNING_BITS["bad_pixel_in_aperture"], 0).astype(np.int32)
    near_edge = ((positions[:, 0] - radius < -0.5) | (positions[:, 0] + radius > nx - 0.5)
                 | (positions[:, 1] - radius < -0.5) | (positions[:, 1] + radius > ny - 0.5))
    flags |= np.where(near_edge, WARNING_BITS["near_edge"], 0).astype(np.int32)
    return flags


def add_psf_photometry(out: Table, subtracted, err, mask, psf_model, flux_to_njy: float) -> None:
    """Step 6: fit the PSF at every centroid; its columns into ``out``."""
    start = Table({"id": out["label"], "x": out["x_centroid"], "y": out["y_centroid"],
                   "flux": out["segment_flux"] / flux_to_njy})
    fit_mask = mask | ~np.isfinite(err) | (err <= 0)
    fitted = fit_psf_photometry(subtracted, np.where(fit_mask, 1.0, err), fit_mask, start, psf_model)
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


def flux_conversion(meta, scale: ImageScale) -> float:
    """nJy per data unit summed over pixels (step 7): photometry's MJy/sr per DN/s x pixel area x 1e15."""
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


def schema_table(measured: Table, fit_psf: bool, template) -> Table:
    """``measured`` as rad's catalog: romancal's columns and order, the schema's dtypes, units and
    descriptions; what is not measured is NaN (floats), -1 (integers) or False."""
    table = Table()
    n = len(measured)
    for name in catalog_columns(fit_psf):
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


@dataclass(frozen=True)
class CatalogResult:
    catalog: Table  # measured columns, pixel positions 0-based, fluxes in nJy, no sky coordinates
    detection: Detection
    ee_fractions: np.ndarray  # of APERTURE_RADII_ARCSEC


def source_catalog(data, err, dq, *, psf_model, ee_fractions, scale: ImageScale, flux_to_njy: float,
                   kernel_fwhm: float, snr_threshold: float = 2.0, npixels: int = 5, deblend: bool = True,
                   bkg_boxsize: int = 1000, fit_psf: bool = True) -> CatalogResult:
    """Steps 1-8 of the module docstring on one image (arrays in, new arrays out).

    ``psf_model``: the effective PSF of the image (photutils ImagePSF) fitted to every source
    with ``fit_psf`` (else unused: None); ``ee_fractions``: a point source's encircled energy
    within each of APERTURE_RADII_ARCSEC (the aperture corrections). ValueError if no pixel
    is usable.
    """
    err = np.asarray(err, dtype=np.float64)
    mask = unusable_pixels(data, err, dq)
    if mask.all():
        raise ValueError("every pixel is flagged DO_NOT_USE or has no finite value and positive error")
    detection = detect(data, mask, kernel_fwhm=kernel_fwhm, snr_threshold=snr_threshold, npixels=npixels,
                       deblend=deblend, bkg_boxsize=bkg_boxsize)
    ee_fractions = np.asarray(ee_fractions, dtype=np.float64)
    if detection.segments is None:
        log.warning("no sources detected")
        return CatalogResult(Table(), detection, ee_fractions)
    catalog = measure(detection, err, dq, mask, scale=scale, flux_to_njy=flux_to_njy,
                      ee_fractions=ee_fractions, psf_model=psf_model if fit_psf else None)
    return CatalogResult(catalog, detection, ee_fractions)


def run(image, step: StepRun) -> tuple:
    """The catalog model (rad's ImageSourceCatalogModel) and segmentation model of an open ImageModel."""
    parameters, input_name = step.parameters, step.input
    data, err, dq = (plain_array(image[name]) for name in ("data", "err", "dq"))
    if data.ndim != 2 or 0 in data.shape or unusable_pixels(data, err, dq).all():
        raise NoScienceDataError(f"{input_name}: no usable pixel in data of shape {data.shape} "
                                 "(all DO_NOT_USE, not finite or without a positive error)")
    kernel_fwhm, _ = kernel_and_psf(image.meta.instrument, parameters["kernel_fwhm"], False, input_name)
    psf_model = epsf_reference_model(step.reference("epsf")) if parameters["fit_psf"] else None
    wcs = image.meta.get("wcs")
    scale = image_scale(wcs, data.shape)
    ee_fractions = apcorr_ee_fractions(step.reference("apcorr"), str(image.meta.instrument.optical_element),
                                       [r / scale.pixel_scale_arcsec for r in APERTURE_RADII_ARCSEC])
    result = source_catalog(data, err, dq, psf_model=psf_model, ee_fractions=ee_fractions, scale=scale,
                            flux_to_njy=flux_conversion(image.meta, scale), kernel_fwhm=kernel_fwhm,
                            snr_threshold=parameters["snr_threshold"], npixels=parameters["npixels"],
                            deblend=parameters["deblend"], bkg_boxsize=parameters["bkg_boxsize"],
                            fit_psf=parameters["fit_psf"])
    add_sky_coordinates(result.catalog, wcs, parameters["fit_psf"] and len(result.catalog) > 0)
    catalog_model = derived_model(datamodels.ImageSourceCatalogModel, image, Path(input_name).name)
    table = schema_table(result.catalog, parameters["fit_psf"], catalog_model)
    table.meta.update(catalog_meta(result.ee_fractions, scale, kernel_fwhm))
    catalog_model.source_catalog = table
    segmentation = derived_model(datamodels.SegmentationMapModel, image, Path(input_name).name)
    segments = result.detection.segments
    segmentation.data = (np.zeros(data.shape, np.uint32) if segments is None
                         else segments.data.astype(np.uint32))
    segmentation["detection_image"] = result.detection.detection_image.astype(np.float32)
    log.info("%d sources in the catalog", len(table))
    return catalog_model, segmentation


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


def main(argv=None) -> None:
    args, parameters = parse_step_args(STEP, __doc__.split("\n\n")[0], argv)
    if parameters["skip"]:
        log.info("%s skipped: no catalog for %s", STEP, args.input)
        return
    catalog_path, segmentation_path = output_paths(args.output)
    timer = PhaseTimer()
    with timer.phase("read"):
        image = open_model(args.input, INPUT_MODELS)
    with image:
        step = StepRun(STEP, parameters, args.input, catalog_path, image.meta)
        with timer.phase("step"):
            catalog_model, segmentation = run(image, step)
        with timer.phase("provenance"):
            for model in (catalog_model, segmentation):
                record_provenance(model, STEP, parameters, step.references)
        with timer.phase("write"):
            write_atomic(segmentation, segmentation_path)
            write_parquet(catalog_model, catalog_path)
    timer.log(STEP)


if __name__ == "__main__":
    cli.run_and_exit(main)
