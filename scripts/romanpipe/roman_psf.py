"""The Roman effective PSF of a detector and filter, its vectorised fit, and the filter's kernel FWHM.

Shared by source_detection and source_catalog. The PSF is an effective PSF: the Roman PSF
at the detector's centre (meta.instrument.detector WFInn -> SCA nn) in the filter,
integrated over the 0.11" pixel and sampled 4x finer over 41 x 41 pixels, from stpsf when
that is installed with its data (``STPSF_PATH``), otherwise from galsim.roman (pupil_bin
8, a star of flat photon spectrum across galsim's bandpass of the filter). It is computed
once per detector and filter in a process and, when ``ROMANPIPE_PSF_CACHE`` names a
folder, kept there as a ``.npy`` file named by everything it depends on. Its origin is the
optical model's (galsim's ``drawImage(center=...)``): a fitted x, y is where that origin
lies (README, "Where we differ").
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import math
import os
from functools import cache
from pathlib import Path

import numpy as np
from astropy.table import Table

from .errors import ParameterError
from .files import atomic_path

log = logging.getLogger(__name__)

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


def default_kernel_fwhm(optical_element: str) -> float:
    """DAOStarFinder kernel FWHM (pixels) for a filter: diffraction FWHM (+) one pixel."""
    try:
        wavelength_m = PIVOT_WAVELENGTH_UM[optical_element.upper()] * 1e-6
    except KeyError:
        raise ValueError(f"optical element {optical_element!r} has no default kernel_fwhm "
                         f"(imaging filters: {', '.join(PIVOT_WAVELENGTH_UM)}); give kernel_fwhm") from None
    radians = AIRY_FWHM_PER_LAMBDA_OVER_D * wavelength_m / TELESCOPE_DIAMETER_M
    return math.hypot(math.degrees(radians) * 3600 / PIXEL_SCALE_ARCSEC, PIXEL_RESPONSE_FWHM)


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


def kernel_and_psf(instrument, kernel_fwhm: float | None, with_psf: bool, input_name) -> tuple[float, object]:
    """The detection kernel's FWHM (``kernel_fwhm``, or the filter's default when None) and the
    Roman PSF model of ``instrument`` (meta.instrument) when ``with_psf`` (else None).
    ParameterError naming ``input_name`` for a detector or optical element without them."""
    try:
        fwhm = default_kernel_fwhm(str(instrument.optical_element)) if kernel_fwhm is None else kernel_fwhm
        psf_model = (roman_psf_model(str(instrument.detector), str(instrument.optical_element))
                     if with_psf else None)
    except ValueError as err:
        raise ParameterError(f"{input_name}: {err}") from None
    return fwhm, psf_model


def encircled_energy(psf_model, radii_pixels) -> np.ndarray:
    """The fraction of a point source's flux within each radius (native pixels) of its origin.

    The effective PSF's samples are the flux a pixel centred there collects (in units of the
    flux the model is normalised to: its samples sum to oversampling^2 over the plane it
    covers), so their sum over a circle divided by oversampling^2 is what aperture
    photometry of that radius measures.
    """
    from photutils.aperture import CircularAperture, aperture_photometry

    oversampling = float(psf_model.oversampling[0])
    apertures = [CircularAperture(psf_model.origin, r * oversampling) for r in radii_pixels]
    sums = aperture_photometry(np.asarray(psf_model.data), apertures)
    return np.array([float(sums[f"aperture_sum_{i}"][0]) for i in range(len(apertures))]) / oversampling**2


def epsf_reference_model(path):
    """A photutils ImagePSF of an EPSF reference file: its first PSF (in focus, first spectral type,
    first position), oversampled ``meta.oversample`` times, origin on the central sample."""
    from photutils.psf import ImagePSF
    from roman_datamodels import datamodels

    from .products import open_model

    with open_model(path, (datamodels.EpsfRefModel,)) as reference:
        stamp = np.array(reference.psf[0, 0, 0], dtype=np.float64)
        oversampling = int(reference.meta.oversample)
    return ImagePSF(stamp, oversampling=oversampling)
