"""source_detection: find point sources with DAOStarFinder and attach their catalog for tweakreg.

Seed, "Source Detection": a 2-D background (photutils Background2D: ``bkg_boxsize``,
``bkg_filter_size``, ``bkg_sigma``-clipped ``bkg_estimator``) is subtracted, and
DAOStarFinder (Stetson 1987) finds sources above ``scalar_threshold`` or, with
``calc_scalar_threshold``, above the median of the threshold image background +
``snr_threshold`` x background RMS, within the ``sharplo``..``sharphi`` and
``roundlo``..``roundhi`` bounds and at most ``peakmax`` at the peak; ``max_sources``
keeps the brightest. Pixels flagged DO_NOT_USE, and NaN pixels, take no part: they
are set to the background, so they neither make nor hide a source, and no source may
peak on one. No source may peak on a JUMP_DET pixel either (its value is kept): ramp
fitting leaves a cosmic ray's hit pixel a residual of several sigma, star-like to
DAOStarFinder at Roman's sampling (423 of 599 detections on a romanisim exposure), while
a star loses its detection only when a cosmic ray hits its brightest pixel (0.08 % of
the pixels of a 6-resultant exposure are JUMP_DET). romancal 1.1's source catalog avoids
the residuals by asking for 25 connected pixels, which also drops faint stars (36
sources on that exposure, where DAOStarFinder finds 171 stars). With ``fit_psf`` a Roman
PSF (see below) is fitted to every detection (all at once: the fit of photutils'
PSFPhotometry, see :func:`fit_psf_photometry`) and the fitted x, y and flux replace
DAOStarFinder's.

The computed threshold is the romancal documentation's (section "Source Detection") and
romancal's ("based on the background level", "the SNR for the threshold image").
DAOStarFinder compares a threshold with the background-free amplitude of its zero-sum
kernel, so this one asks for snr_threshold + background/RMS standard deviations, about 15
for 1 DN/s of sky at 0.08 DN/s RMS. That suits tweakreg: on a 4088 x 4088 image with 2000
stars, snr_threshold x RMS alone (3 sigma) gives 53 000 detections, 51 000 of them noise;
this threshold 2 002.

The catalog (``id``, ``x``, ``y`` 0-based, ``flux`` in data units summed over the
source, ``sharpness``, ``roundness1``, ``roundness2``; with ``fit_psf`` also
``x_init``, ``y_init``, ``flux_init`` (DAOStarFinder's), ``x_err``, ``y_err``,
``flux_err``, ``qfit``, ``cfit`` and photutils' ``psf_flags``) is attached as a numpy
structured array in ``meta.source_catalog.tweakreg_catalog``, where tweakreg reads
it. ``save_catalogs`` also writes it beside the output as ``<base>_cat.ecsv`` or
``<base>_cat.asdf`` (``output_cat_filetype``) and records that file name (relative
to the product's folder) in ``meta.source_catalog.tweakreg_catalog_name``. The
ASDF file is rad's ImageSourceCatalogModel, so that roman_datamodels opens it:
the catalog's own columns plus the schema's, filled where this step measures them
(label, x/y_centroid, sharpness, roundness1, image_flags, ra/dec when the image
has a WCS) and NaN, -1 or False elsewhere.

``kernel_fwhm`` defaults to the filter's diffraction FWHM, 1.03 lambda/D for
Roman's D = 2.36 m at the filter's pivot wavelength in 0.11"/pixel, combined in
quadrature with the one-pixel width of the pixel response (DAOStarFinder looks at
pixel-sampled stars; romancal's default added the pixel in the same way):

    filter  F062  F087  F106  F129  F146  F158  F184  F213
    um      0.620 0.869 1.060 1.293 1.464 1.577 1.842 2.125
    diffr.  0.507 0.711 0.867 1.058 1.198 1.291 1.507 1.739  pixels
    kernel  1.121 1.227 1.324 1.456 1.561 1.633 1.809 2.006  pixels

The PSF for ``fit_psf`` is an effective PSF: the Roman PSF at the detector's centre
(meta.instrument.detector WFInn -> SCA nn) in the filter, integrated over the
0.11" pixel and sampled 4x finer over 41 x 41 pixels. It comes from stpsf when
that is installed with its data (``STPSF_PATH``); otherwise from galsim.roman
(pupil_bin 8, a star of flat photon spectrum across galsim's bandpass of the
filter: F062->R062, F087->Z087, F106->Y106, F129->J129, F146->W146, F158->H158,
F184->F184, F213->K213). It is computed once per detector and filter in a process
and, when ``ROMANPIPE_PSF_CACHE`` names a folder (the workflow sets
``results/.cache/psf``), kept there as a ``.npy`` file named by everything it depends
on (detector, filter, source and its version, oversampling, stamp, pupil sampling), so
a campaign builds it once per detector and filter: 3-6 s saved in every later job.
Its origin is the optical model's (galsim's ``drawImage(center=...)``, where romanisim
places a star and on which romancal's ePSF is centred): a fitted x, y is where that
origin lies. The light centroid (first moment) of the Roman PSF is ~0.1 pixel (11-15
mas) from it, and DAOStarFinder's positions, which follow the core, are within a few
thousandths of a pixel of it.

    python scripts/source_detection.py r..._photom.asdf r..._sourcedetection.asdf \\
        [--fit-psf true] [--save-catalogs true --output-cat-filetype ecsv]
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import logging
import math
import os
import warnings
from functools import cache
from pathlib import Path

from romanpipe import cli, dqflags
from romanpipe.errors import NoScienceDataError, ParameterError
from romanpipe.files import atomic_path
from romanpipe.naming import product_name
from romanpipe.products import COMPLETE, plain_array, write_atomic
from romanpipe.steprun import StepRun, run_script

import numpy as np
from astropy.stats import SigmaClip
from astropy.table import Table
from numpy.lib.stride_tricks import sliding_window_view
from photutils.background import Background2D, MeanBackground, MedianBackground, ModeEstimatorBackground
from photutils.detection import DAOStarFinder
from photutils.utils.exceptions import NoDetectionsWarning
from roman_datamodels import datamodels

log = logging.getLogger("source_detection")

STEP = "source_detection"
INPUT_MODELS = (datamodels.ImageModel,)

PIVOT_WAVELENGTH_UM = {"F062": 0.620, "F087": 0.869, "F106": 1.060, "F129": 1.293,
                       "F146": 1.464, "F158": 1.577, "F184": 1.842, "F213": 2.125}
TELESCOPE_DIAMETER_M = 2.36
PIXEL_SCALE_ARCSEC = 0.11
AIRY_FWHM_PER_LAMBDA_OVER_D = 1.03
PIXEL_RESPONSE_FWHM = 1.0

GALSIM_BANDPASS = {"F062": "R062", "F087": "Z087", "F106": "Y106", "F129": "J129",
                   "F146": "W146", "F158": "H158", "F184": "F184", "F213": "K213"}
PSF_OVERSAMPLING = 4
PSF_STAMP_PIXELS = 41  # holds ~96 % of the light; the fit's flux is the total all the same
GALSIM_PUPIL_BIN = 8
# Roman undersamples its PSF: the 5 x 5 pixels around a star hold most of its signal.
PSF_FIT_SHAPE = 5
# A fitted position may move this far (pixels) from DAOStarFinder's before it is a failed fit.
PSF_FIT_MAX_SHIFT = 1.0
PSF_FIT_MAX_ITERATIONS = 50
PSF_FIT_TOLERANCE = 1e-6  # pixels, and relative flux

PSF_CACHE_VARIABLE = "ROMANPIPE_PSF_CACHE"  # folder of built PSFs, shared by the jobs of a campaign
GOOD_PIXELS = "~DO_NOT_USE"  # DQ bit spec of the pixels that take part (romanpipe.dqflags)
NO_PEAK_BITS = "JUMP_DET"  # a source may not peak on these pixels (cosmic-ray residuals)
BACKGROUND_ESTIMATORS = {"mean": MeanBackground, "median": MedianBackground, "mode": ModeEstimatorBackground}
DAO_COLUMNS = ("id", "x", "y", "flux", "sharpness", "roundness1", "roundness2")
FIT_COLUMNS = ("x_init", "y_init", "flux_init", "x_err", "y_err", "flux_err", "qfit", "cfit", "psf_flags")


def default_kernel_fwhm(optical_element: str) -> float:
    """DAOStarFinder kernel FWHM (pixels) for a filter: diffraction FWHM (+) one pixel."""
    try:
        wavelength_m = PIVOT_WAVELENGTH_UM[optical_element.upper()] * 1e-6
    except KeyError:
        raise ValueError(f"optical element {optical_element!r} has no default kernel_fwhm "
                         f"(imaging filters: {', '.join(PIVOT_WAVELENGTH_UM)}); give kernel_fwhm") from None
    radians = AIRY_FWHM_PER_LAMBDA_OVER_D * wavelength_m / TELESCOPE_DIAMETER_M
    return math.hypot(math.degrees(radians) * 3600 / PIXEL_SCALE_ARCSEC, PIXEL_RESPONSE_FWHM)


def unusable_pixels(data, dq) -> np.ndarray:
    """True where a pixel is flagged DO_NOT_USE or has no finite value."""
    return ~dqflags.good_pixel_mask(dq, GOOD_PIXELS) | ~np.isfinite(data)


def cosmic_ray_pixels(dq) -> np.ndarray:
    """True where ramp fitting found a jump: a cosmic ray's residual may sit there."""
    return ~dqflags.good_pixel_mask(dq, f"~{NO_PEAK_BITS}")


class MeshMedianBackground2D(Background2D):
    """photutils' Background2D with its mesh median filter done in one vectorised call.

    photutils 3.0 filters the mesh with scipy's ``generic_filter(data, nanmedian, size,
    mode="constant", cval=nan)``: one Python call of nanmedian per mesh point, twice
    (background and RMS), 2 x 206 000 calls on a 4088 x 4088 image of 9-pixel boxes
    (~60 % of the background's time). The same median of the same window, NaN outside the
    mesh, for all points at once gives identical values (tested against photutils).
    """

    def _filter_grid(self, data):
        if tuple(self.filter_size) == (1, 1) or self.filter_threshold is not None:
            return super()._filter_grid(data)
        ny, nx = self.filter_size  # odd (photutils checks)
        padded = np.pad(data, ((ny // 2, ny // 2), (nx // 2, nx // 2)), constant_values=np.nan)
        windows = sliding_window_view(padded, (ny, nx)).reshape(*data.shape, ny * nx)
        return np.nanmedian(windows, axis=-1)


def estimate_background(data, mask, *, bkg_boxsize, bkg_filter_size, bkg_sigma,
                        bkg_estimator) -> Background2D:
    """The 2-D background and its RMS; one box over the whole image if the mesh cannot be estimated."""
    options = dict(filter_size=bkg_filter_size, mask=mask, sigma_clip=SigmaClip(sigma=bkg_sigma),
                   bkg_estimator=BACKGROUND_ESTIMATORS[bkg_estimator]())
    try:
        return MeshMedianBackground2D(data, bkg_boxsize, **options)
    except ValueError as err:
        # Too many masked boxes (photutils' exclude_percentile): romancal's fallback.
        log.info("background mesh of %d-pixel boxes failed (%s): one box over the whole image",
                 bkg_boxsize, err)
        return MeshMedianBackground2D(data, data.shape, exclude_percentile=100.0, **options)


def find_sources(data, err, dq, *, kernel_fwhm, sharplo=0.0, sharphi=1.0, roundlo=-1.0, roundhi=1.0,
                 peakmax=1000.0, max_sources=None, scalar_threshold=None, calc_scalar_threshold=True,
                 snr_threshold=3.0, bkg_estimator="median", bkg_boxsize=9, bkg_sigma=2.0, bkg_filter_size=3,
                 psf_model=None) -> Table:
    """The source catalog of a rate image (columns: see the module docstring). Inputs are not modified.

    data, err, dq (ny, nx); ``psf_model`` (a photutils PSF model, e.g. :func:`roman_psf_model`)
    turns on PSF fitting. ValueError if every pixel is unusable.
    """
    if scalar_threshold is None and not calc_scalar_threshold:
        raise ValueError("one of scalar_threshold or calc_scalar_threshold must be chosen")
    data = np.asarray(data, dtype=np.float64)
    bad = unusable_pixels(data, dq)
    if bad.all():
        raise ValueError("every pixel is flagged DO_NOT_USE or not finite")
    background = estimate_background(np.where(bad, 0.0, data), bad, bkg_boxsize=bkg_boxsize,
                                     bkg_filter_size=bkg_filter_size, bkg_sigma=bkg_sigma,
                                     bkg_estimator=bkg_estimator)
    # Background2D interpolates its mesh again at every access to these two images.
    level, rms = background.background, background.background_rms
    subtracted = np.where(bad, 0.0, data - level)
    if scalar_threshold is not None:
        threshold = float(scalar_threshold)
    else:
        # The documented threshold image and its median (romancal's definition): see the module docstring.
        threshold = float(np.median(level + snr_threshold * rms))
    log.info("background median %.4g, RMS %.4g; detection threshold %.4g, kernel FWHM %.3f pixels",
             float(background.background_median), float(background.background_rms_median), threshold,
             kernel_fwhm)

    finder = DAOStarFinder(threshold, kernel_fwhm, sharpness_range=(sharplo, sharphi),
                           roundness_range=(roundlo, roundhi), peak_max=peakmax, n_brightest=max_sources)
    with warnings.catch_warnings():
        # An empty field is a result, reported below, not a warning.
        warnings.simplefilter("ignore", NoDetectionsWarning)
        found = finder(subtracted, mask=bad | cosmic_ray_pixels(dq))
    if found is None:
        log.warning("no sources detected")
        return empty_catalog(psf_model is not None)
    catalog = Table({"id": np.arange(1, len(found) + 1, dtype=np.int64),
                     "x": np.asarray(found["x_centroid"], dtype=np.float64),
                     "y": np.asarray(found["y_centroid"], dtype=np.float64),
                     "flux": np.asarray(found["flux"], dtype=np.float64),
                     **{name: np.asarray(found[name], dtype=np.float64)
                        for name in ("sharpness", "roundness1", "roundness2")}})
    log.info("DAOStarFinder: %d sources", len(catalog))
    if psf_model is None:
        return catalog
    error = np.asarray(err, dtype=np.float64)
    fit_mask = bad | ~np.isfinite(error) | (error <= 0)
    return fit_psf_photometry(subtracted, np.where(fit_mask, 1.0, error), fit_mask, catalog, psf_model)


def fit_psf_photometry(data, error, mask, catalog: Table, psf_model) -> Table:
    """``catalog`` with x, y, flux from PSF fits where a fit succeeded (DAOStarFinder's kept elsewhere).

    Every source is fitted at once (Levenberg-Marquardt on arrays of shape (sources, 5, 5)):
    flux, x, y of ``psf_model`` (a photutils ImagePSF, evaluated through its own spline) to
    the ``PSF_FIT_SHAPE`` box of pixels around DAOStarFinder's position, weighted by
    1/error^2 without the masked pixels, the position held within ``PSF_FIT_MAX_SHIFT``
    of DAOStarFinder's. The fit photutils' PSFPhotometry makes source by source (the same
    model, box, weights and bounds; the same positions within 0.001 pixel, tested), ~20
    times faster. ``x_err``, ``y_err``, ``flux_err``: the formal errors (photutils scales
    them by the reduced chi-square); ``qfit``: sum of |residuals| / flux; ``cfit``: residual
    of the central pixel / flux; ``psf_flags``: photutils' bits (PSF_FLAGS) for a partial or
    masked box, a flux <= 0, no convergence and a position at its bound.
    """
    from photutils.psf import PSF_FLAGS

    x_init = np.asarray(catalog["x"], dtype=np.float64)
    y_init = np.asarray(catalog["y"], dtype=np.float64)
    half = PSF_FIT_SHAPE // 2
    offsets = np.arange(-half, half + 1)
    shape = (len(catalog), PSF_FIT_SHAPE, PSF_FIT_SHAPE)
    rows = np.broadcast_to(np.rint(y_init).astype(int)[:, None, None] + offsets[None, :, None], shape)
    cols = np.broadcast_to(np.rint(x_init).astype(int)[:, None, None] + offsets[None, None, :], shape)
    inside = (rows >= 0) & (rows < data.shape[0]) & (cols >= 0) & (cols < data.shape[1])
    at = (np.clip(rows, 0, data.shape[0] - 1), np.clip(cols, 0, data.shape[1] - 1))
    usable = inside & ~mask[at]
    weight = np.where(usable, 1.0 / np.where(usable, error[at], 1.0) ** 2, 0.0)
    values = np.where(usable, data[at], 0.0)

    def unit_psf(x0, y0, derivative=None):
        """The PSF of unit flux at (x0, y0) over each box, or its derivative along x0 or y0."""
        scale_y, scale_x = psf_model.oversampling
        xi = scale_x * (cols - x0[:, None, None]) + psf_model.origin[0]
        yi = scale_y * (rows - y0[:, None, None]) + psf_model.origin[1]
        order = {None: (0, 0), "x": (1, 0), "y": (0, 1)}[derivative]
        values = psf_model.interpolator(xi.ravel(), yi.ravel(), dx=order[0], dy=order[1], grid=False)
        factor = {None: 1.0, "x": -scale_x, "y": -scale_y}[derivative]
        return factor * values.reshape(shape)

    def chi_square(flux, x0, y0):
        return np.sum(weight * (values - flux[:, None, None] * unit_psf(x0, y0)) ** 2, axis=(1, 2))

    # Start from the best flux at DAOStarFinder's position (linear least squares).
    x0, y0 = x_init.copy(), y_init.copy()
    profile = unit_psf(x0, y0)
    flux = np.sum(weight * values * profile, axis=(1, 2)) / np.maximum(
        np.sum(weight * profile**2, axis=(1, 2)), np.finfo(float).tiny)
    chi2 = chi_square(flux, x0, y0)
    damping = np.full(len(catalog), 1e-3)
    converged = np.zeros(len(catalog), bool)
    for _ in range(PSF_FIT_MAX_ITERATIONS):
        active = ~converged
        if not active.any():
            break
        profile = unit_psf(x0, y0)
        jacobian = np.stack([profile, flux[:, None, None] * unit_psf(x0, y0, "x"),
                             flux[:, None, None] * unit_psf(x0, y0, "y")], axis=-1)
        residual = values - flux[:, None, None] * profile
        normal = np.einsum("sij,sijk,sijl->skl", weight, jacobian, jacobian)
        gradient = np.einsum("sij,sijk,sij->sk", weight, jacobian, residual)
        damped = normal + damping[:, None, None] * normal * np.eye(3)
        # A pseudo-inverse: a box with fewer usable pixels than parameters does not move.
        step = np.einsum("skl,sl->sk", np.linalg.pinv(damped), gradient)
        trial_flux = flux + step[:, 0]
        trial_x = np.clip(x0 + step[:, 1], x_init - PSF_FIT_MAX_SHIFT, x_init + PSF_FIT_MAX_SHIFT)
        trial_y = np.clip(y0 + step[:, 2], y_init - PSF_FIT_MAX_SHIFT, y_init + PSF_FIT_MAX_SHIFT)
        trial_chi2 = chi_square(trial_flux, trial_x, trial_y)
        better = active & (trial_chi2 <= chi2)
        moved = np.maximum(np.hypot(trial_x - x0, trial_y - y0),
                           np.abs(trial_flux - flux) / np.maximum(np.abs(flux), np.finfo(float).tiny))
        flux, x0, y0 = (np.where(better, new, old) for new, old in
                        ((trial_flux, flux), (trial_x, x0), (trial_y, y0)))
        converged |= better & (moved < PSF_FIT_TOLERANCE)
        chi2 = np.where(better, trial_chi2, chi2)
        damping = np.where(better, damping / 10, np.minimum(damping * 10, 1e10))

    profile = unit_psf(x0, y0)
    jacobian = np.stack([profile, flux[:, None, None] * unit_psf(x0, y0, "x"),
                         flux[:, None, None] * unit_psf(x0, y0, "y")], axis=-1)
    normal = np.einsum("sij,sijk,sijl->skl", weight, jacobian, jacobian)
    with np.errstate(invalid="ignore"):
        variances = np.diagonal(np.linalg.pinv(normal), axis1=1, axis2=2)
    residual = np.where(usable, values - flux[:, None, None] * profile, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        qfit = np.sum(np.abs(residual), axis=(1, 2)) / flux
        cfit = residual[:, half, half] / flux
    flags = np.where(usable.all(axis=(1, 2)), 0, PSF_FLAGS.N_PIXELS_FIT_PARTIAL)
    flags |= np.where(flux <= 0, PSF_FLAGS.NEGATIVE_FLUX, 0)
    flags |= np.where(converged, 0, PSF_FLAGS.NO_CONVERGENCE)
    at_bound = np.maximum(np.abs(x0 - x_init), np.abs(y0 - y_init)) >= PSF_FIT_MAX_SHIFT
    flags |= np.where(at_bound, PSF_FLAGS.NEAR_BOUND, 0)

    enough_pixels = usable.sum(axis=(1, 2)) >= 3  # as many as the parameters
    fitted = np.isfinite(x0) & np.isfinite(y0) & np.isfinite(flux) & (flux > 0) & enough_pixels
    out = catalog.copy()
    out["x_init"], out["y_init"], out["flux_init"] = catalog["x"], catalog["y"], catalog["flux"]
    out["x"] = np.where(fitted, x0, catalog["x"])
    out["y"] = np.where(fitted, y0, catalog["y"])
    out["flux"] = np.where(fitted, flux, catalog["flux"])
    out["x_err"], out["y_err"], out["flux_err"] = np.sqrt(variances[:, 1]), np.sqrt(variances[:, 2]), \
        np.sqrt(variances[:, 0])
    out["qfit"], out["cfit"] = qfit, cfit
    out["psf_flags"] = flags.astype(np.int32)
    log.info("PSF fits: %d of %d succeeded, %d flagged", int(fitted.sum()), len(out),
             int(np.count_nonzero(out["psf_flags"])))
    return out


def empty_catalog(with_fit: bool) -> Table:
    names = DAO_COLUMNS + (FIT_COLUMNS if with_fit else ())
    dtypes = [np.int64 if name == "id" else np.int32 if name == "psf_flags" else np.float64 for name in names]
    return Table(names=names, dtype=dtypes)


def sca_number(detector: str) -> int:
    """WFI01..WFI18 -> 1..18."""
    name = detector.upper()
    if not (name.startswith("WFI") and name[3:].isdigit() and 1 <= int(name[3:]) <= 18):
        raise ValueError(f"detector {detector!r} is not one of WFI01..WFI18")
    return int(name[3:])


@cache
def _effective_psf(sca: int, optical_element: str) -> np.ndarray:
    """The oversampled effective PSF, normalised as photutils' ImagePSF expects (sum = oversampling^2)."""
    source = _psf_source()
    cached = _psf_cache_path(sca, optical_element, source)
    data = _read_cached_psf(cached) if cached is not None else None
    if data is None:
        build = _stpsf_effective_psf if source == "stpsf" else _galsim_effective_psf
        data = build(sca, optical_element)
        if cached is not None:
            with atomic_path(cached) as staging, staging.open("wb") as stream:
                np.save(stream, data)
            log.info("kept the PSF as %s", cached)
    data.flags.writeable = False
    return data


def _psf_source() -> str:
    """stpsf when it is installed with its data (STPSF_PATH), else galsim."""
    data_path = os.environ.get("STPSF_PATH")
    if not data_path or not Path(data_path).is_dir():
        log.info("stpsf data not found (STPSF_PATH): Roman PSF from galsim")
        return "galsim"
    if importlib.util.find_spec("stpsf") is None:
        log.info("stpsf not installed: Roman PSF from galsim")
        return "galsim"
    return "stpsf"


def _psf_cache_path(sca: int, optical_element: str, source: str) -> Path | None:
    """The cache file of a PSF, named by all it depends on; None without ``ROMANPIPE_PSF_CACHE``."""
    folder = os.environ.get(PSF_CACHE_VARIABLE)
    if not folder:
        return None
    version = importlib.metadata.version("GalSim" if source == "galsim" else "stpsf")
    sampling = f"pupilbin{GALSIM_PUPIL_BIN}_" if source == "galsim" else ""
    return Path(folder) / (f"roman_epsf_SCA{sca:02d}_{optical_element}_{source}{version}_{sampling}"
                           f"x{PSF_OVERSAMPLING}_{PSF_STAMP_PIXELS}px.npy")


def _read_cached_psf(path: Path) -> np.ndarray | None:
    """The cached PSF, or None when there is none or it cannot be read (it is then rebuilt)."""
    if not path.is_file():
        return None
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        log.warning("cached PSF %s unreadable (%s): building it again", path, err)
        return None
    log.info("Roman PSF from the cache: %s", path)
    return data


def _stpsf_effective_psf(sca: int, optical_element: str) -> np.ndarray:
    import stpsf
    from astropy.convolution import Box2DKernel, convolve

    instrument = stpsf.roman.WFI()
    instrument.filter = optical_element
    instrument.detector = f"SCA{sca:02d}"
    log.info("computing the Roman PSF of SCA%02d %s with stpsf", sca, optical_element)
    psf = instrument.calc_psf(oversample=PSF_OVERSAMPLING, fov_pixels=PSF_STAMP_PIXELS)
    # stpsf's oversampled image is not integrated over the detector pixel (its gridded library
    # convolves with a box of one pixel likewise).
    integrated = convolve(psf["OVERDIST"].data, Box2DKernel(PSF_OVERSAMPLING))
    return np.asarray(integrated, dtype=np.float64) * PSF_OVERSAMPLING**2


def _galsim_effective_psf(sca: int, optical_element: str) -> np.ndarray:
    import galsim
    import galsim.roman

    bandpass = galsim.roman.getBandpasses()[GALSIM_BANDPASS[optical_element]]
    log.info("computing the Roman PSF of SCA%02d %s with galsim (bandpass %s, pupil_bin %d)",
             sca, optical_element, GALSIM_BANDPASS[optical_element], GALSIM_PUPIL_BIN)
    psf = galsim.roman.getPSF(sca, GALSIM_BANDPASS[optical_element], pupil_bin=GALSIM_PUPIL_BIN)
    star = galsim.DeltaFunction() * galsim.SED("1", "nm", "fphotons")
    effective = galsim.Convolve(star, psf, galsim.Pixel(galsim.roman.pixel_scale))
    size = PSF_STAMP_PIXELS * PSF_OVERSAMPLING + 1  # odd: the star sits on the central sample
    # "no_pixel": the native pixel is already in the profile; the samples are its values.
    image = effective.drawImage(bandpass, nx=size, ny=size, method="no_pixel",
                                scale=galsim.roman.pixel_scale / PSF_OVERSAMPLING)
    flux_in_band = effective.calculateFlux(bandpass)
    return image.array.astype(np.float64) / flux_in_band * PSF_OVERSAMPLING**2


def roman_psf_model(detector: str, optical_element: str):
    """A photutils ImagePSF of the Roman effective PSF for a detector (WFInn) and imaging filter."""
    from photutils.psf import ImagePSF

    element = optical_element.upper()
    if element not in GALSIM_BANDPASS:
        raise ValueError(f"no Roman PSF for optical element {optical_element!r} "
                         f"(imaging filters: {', '.join(GALSIM_BANDPASS)})")
    return ImagePSF(_effective_psf(sca_number(detector), element), oversampling=PSF_OVERSAMPLING)


def catalog_product(image, catalog: Table, image_name: str):
    """rad's ImageSourceCatalogModel holding ``catalog``: its columns plus the schema's."""
    template = datamodels.ImageSourceCatalogModel.create_fake_data()
    meta = {key: copy.deepcopy(image.meta[key]) for key in template.meta
            if key in image.meta and key not in ("model_type", "filename")}
    product = datamodels.ImageSourceCatalogModel.create_minimal({"meta": meta})
    product.meta["image"] = {"filename": image_name, "file_date": copy.deepcopy(image.meta.file_date)}
    product.source_catalog = _schema_table(template.source_catalog, image, catalog)
    return product


def _schema_table(template: Table, image, catalog: Table) -> Table:
    """The schema's columns: measured here where this step measures them, else NaN, -1 or False."""
    n = len(catalog)
    table = Table()
    for name in template.colnames:
        column = template[name]
        kind = column.dtype.kind
        fill = np.nan if kind == "f" else False if kind == "b" else -1
        table[name] = column.__class__(np.full(n, fill, dtype=column.dtype), unit=column.unit,
                                       description=column.description)
    x_dao = catalog["x_init"] if "x_init" in catalog.colnames else catalog["x"]
    y_dao = catalog["y_init"] if "y_init" in catalog.colnames else catalog["y"]
    dq = plain_array(image.dq)
    rows = np.clip(np.rint(catalog["y"]).astype(int), 0, dq.shape[0] - 1)
    cols = np.clip(np.rint(catalog["x"]).astype(int), 0, dq.shape[1] - 1)
    # In place, so that the schema's dtypes, units and descriptions stay.
    table["label"][:] = catalog["id"]
    table["x_centroid"][:] = x_dao
    table["y_centroid"][:] = y_dao
    table["sharpness"][:] = catalog["sharpness"]
    table["roundness1"][:] = catalog["roundness1"]
    table["warning_flags"][:] = 0
    table["image_flags"][:] = dq[rows, cols]
    wcs = image.meta.get("wcs")
    if wcs is not None and n:
        table["ra"][:], table["dec"][:] = wcs(np.asarray(catalog["x"]), np.asarray(catalog["y"]))
        table["ra_centroid"][:], table["dec_centroid"][:] = wcs(np.asarray(x_dao), np.asarray(y_dao))
    for name in catalog.colnames:
        if name not in table.colnames:
            table[name] = catalog[name]
    return table


def catalog_path(output: Path, filetype: str) -> Path:
    """``<base>_cat.<asdf|ecsv>`` beside the output."""
    return product_name(output, "cat").with_suffix(f".{filetype}")


def write_catalog(image, catalog: Table, path: Path, image_name: str) -> Path:
    """Write the catalog file so that ``path`` only ever holds a complete catalog."""
    if path.suffix == ".asdf":
        return write_atomic(catalog_product(image, catalog, image_name), path)
    with atomic_path(path) as staging:
        catalog.write(staging, format="ascii.ecsv")
    log.info("wrote %s", path)
    return path


def attach_catalog(image, catalog: Table, catalog_name: str | None) -> None:
    """Put the catalog where tweakreg reads it (rad's meta.source_catalog)."""
    source_catalog = {"tweakreg_catalog": np.asarray(catalog.as_array())}
    if catalog_name is not None:
        source_catalog["tweakreg_catalog_name"] = catalog_name
    image.meta["source_catalog"] = source_catalog


def run(image, step: StepRun):
    """``image`` (an ImageModel, updated and returned) with its catalog of point sources;
    ``save_catalogs`` also writes the catalog beside ``step.output``."""
    parameters = step.parameters
    settings = {name: parameters[name] for name in (
        "sharplo", "sharphi", "roundlo", "roundhi", "peakmax", "max_sources", "scalar_threshold",
        "calc_scalar_threshold", "snr_threshold", "bkg_estimator", "bkg_boxsize", "bkg_sigma",
        "bkg_filter_size")}
    if settings["scalar_threshold"] is None and not settings["calc_scalar_threshold"]:
        raise ParameterError(f"{STEP}: one of scalar_threshold or calc_scalar_threshold must be chosen")
    data, err, dq = (plain_array(image[name]) for name in ("data", "err", "dq"))
    if data.ndim != 2 or 0 in data.shape or unusable_pixels(data, dq).all():
        raise NoScienceDataError(f"{step.input}: no usable pixel in data of shape {data.shape} "
                                 "(all DO_NOT_USE or not finite)")
    instrument = image.meta.instrument
    try:
        kernel_fwhm = (default_kernel_fwhm(str(instrument.optical_element))
                       if parameters["kernel_fwhm"] is None else parameters["kernel_fwhm"])
        psf_model = (roman_psf_model(str(instrument.detector), str(instrument.optical_element))
                     if parameters["fit_psf"] else None)
    except ValueError as err:
        raise ParameterError(f"{step.input}: {err}") from None
    catalog = find_sources(data, err, dq, kernel_fwhm=kernel_fwhm, psf_model=psf_model, **settings)
    catalog_name = None
    if parameters["save_catalogs"]:
        path = catalog_path(step.output, parameters["output_cat_filetype"])
        catalog_name = write_catalog(image, catalog, path, step.output.name).name
    # The product is the input plus its catalog: the script writes it from the open
    # (memory-mapped) model, not from a copy of its arrays.
    attach_catalog(image, catalog, catalog_name)
    return image, COMPLETE


def main(argv=None) -> None:
    run_script(STEP, __doc__, INPUT_MODELS, run, argv)


if __name__ == "__main__":
    cli.run_and_exit(main)
