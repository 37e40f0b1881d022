"""Point-spread functions: how a star's flux spreads over the pixels.

``gaussian`` (default): a circular Gaussian integrated over each pixel, FWHM from
``wfisim.scene.psf_fwhm_pixels``; it is centred on the star's position.

``roman``: GalSim's Roman optical PSF (``galsim.roman.getPSF``) of the detector,
at the centre of the simulated cutout, monochromatic at the filter's effective
wavelength (pupil sampled with ``pupil_bin`` 8), convolved with the 0.11"
pixel and drawn 4x oversampled: an *effective* PSF whose value at an offset is
the fraction of the flux a pixel centred there receives. A star's pixels sample
it (cubic spline) at their offsets from the star. The PSF's origin (GalSim's: where
``drawImage(center=...)`` puts a star, as romanisim places its stars and romancal's
ePSF is centred) sits at the star's position, so the truth position
(``catalog.x``, ``catalog.y``) is that origin; the light centroid of the Roman PSF is
~0.1 pixel away from it (its coma). Every star stamp is
``2 * ROMAN_STAMP_HALF_WIDTH + 1`` pixels wide and normalised to sum to the
star's flux (the wings beyond, ~5 % of the light, are dropped). GalSim's PSF is
drawn in its own SCA pixel frame, taken here as the simulator's science-pixel frame.
One effective PSF per (detector, filter), cached in the process.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from scipy import ndimage

from .scene import FWHM_PER_SIGMA, STAMP_HALF_WIDTH_SIGMAS, Catalog, psf_fwhm_pixels, render_rate

PSF_MODELS = ("gaussian", "roman")
OVERSAMPLING = 4
ROMAN_STAMP_HALF_WIDTH = 16  # pixels
ROMAN_PUPIL_BIN = 8
# GalSim names the WFI bandpasses by their band letter.
GALSIM_BANDPASS = {"F062": "R062", "F087": "Z087", "F106": "Y106", "F129": "J129",
                   "F146": "W146", "F158": "H158", "F184": "F184", "F213": "K213"}
LONG_PUPIL_FROM_NM = 1700.0  # F184's pupil mask serves the bands beyond (F213)
CUTOUT_CENTRE_SCI = 2044.5  # 1-based science pixel at the centre of every simulated cutout


def render_stars(shape: tuple[int, int], catalog: Catalog, sky: float, optical_element: str, *,
                 detector: str, psf: str = "gaussian") -> np.ndarray:
    """Rate image (e/s per pixel, float64): ``sky`` plus the stars of ``catalog`` with PSF model ``psf``."""
    if psf == "gaussian":
        return render_rate(shape, catalog, sky, psf_fwhm_pixels(optical_element))
    if psf != "roman":
        raise ValueError(f"unknown PSF model {psf!r}; known: {', '.join(PSF_MODELS)}")
    effective = roman_effective_psf(detector.upper(), optical_element.upper())
    rate = np.full(shape, float(sky))
    nrows, ncols = shape
    half = ROMAN_STAMP_HALF_WIDTH
    offsets = np.arange(-half, half + 1)
    centre = (effective.shape[0] - 1) / 2.0
    for x, y, flux in zip(catalog.x, catalog.y, catalog.flux, strict=True):
        col, row = round(x), round(y)
        if col + half < 0 or col - half >= ncols or row + half < 0 or row - half >= nrows:
            continue
        grid_y = centre + (row + offsets - y) * OVERSAMPLING
        grid_x = centre + (col + offsets - x) * OVERSAMPLING
        stamp = ndimage.map_coordinates(effective, np.meshgrid(grid_y, grid_x, indexing="ij"), order=3,
                                        mode="constant", prefilter=False)
        total = stamp.sum()
        stamp *= flux / total
        rows, cols = slice(max(0, row - half), min(nrows, row + half + 1)), \
            slice(max(0, col - half), min(ncols, col + half + 1))
        rate[rows, cols] += stamp[rows.start - (row - half):rows.stop - (row - half),
                                  cols.start - (col - half):cols.stop - (col - half)]
    return rate


@cache
def roman_effective_psf_image(detector: str, optical_element: str) -> np.ndarray:
    """The pixel-convolved Roman PSF, 4x oversampled, origin on the central sample (read-only)."""
    import galsim
    import galsim.roman

    if optical_element not in GALSIM_BANDPASS:
        raise ValueError(f"no Roman PSF for {optical_element!r}; "
                         f"imaging filters: {', '.join(GALSIM_BANDPASS)}")
    name = GALSIM_BANDPASS[optical_element]
    bandpass = galsim.roman.getBandpasses()[name]
    # getPSF knows some bands by name; for the others the pupil (F184's for the long bands) is chosen.
    if name in galsim.roman.longwave_bands or name in galsim.roman.shortwave_bands:
        pupil = name
    else:
        pupil = "long" if bandpass.effective_wavelength > LONG_PUPIL_FROM_NM else "short"
    optical = galsim.roman.getPSF(int(detector.removeprefix("WFI")), pupil,
                                  SCA_pos=galsim.PositionD(CUTOUT_CENTRE_SCI, CUTOUT_CENTRE_SCI),
                                  wavelength=bandpass.effective_wavelength, pupil_bin=ROMAN_PUPIL_BIN)
    effective = galsim.Convolve(optical, galsim.Pixel(galsim.roman.pixel_scale))
    # Room for the stamp plus a pixel either side for the interpolation.
    size = (2 * ROMAN_STAMP_HALF_WIDTH + 3) * OVERSAMPLING + 1
    # Odd-sized and drawn without offset: the PSF's origin is the central sample.
    image = effective.drawImage(nx=size, ny=size, scale=galsim.roman.pixel_scale / OVERSAMPLING,
                                method="no_pixel").array.astype(np.float64)
    image.flags.writeable = False
    return image


@cache
def roman_effective_psf(detector: str, optical_element: str) -> np.ndarray:
    """:func:`roman_effective_psf_image` as cubic-spline coefficients (what the stars sample)."""
    return ndimage.spline_filter(roman_effective_psf_image(detector, optical_element), order=3)


def epsf_stamp(detector: str, optical_element: str) -> np.ndarray:
    """The effective PSF over the pixels a star's stamp covers, normalised as the stamps are.

    The ``2 * ROMAN_STAMP_HALF_WIDTH + 1`` pixels around the origin, 4x oversampled, scaled
    so that the samples sum to OVERSAMPLING^2: a star's pixels (one sample in 16) then sum
    to its flux, as :func:`render_stars` makes them. The EPSF reference holds it.
    """
    image = roman_effective_psf_image(detector, optical_element)
    centre = (image.shape[0] - 1) // 2
    half = ROMAN_STAMP_HALF_WIDTH * OVERSAMPLING + OVERSAMPLING // 2
    stamp = image[centre - half:centre + half + 1, centre - half:centre + half + 1]
    return stamp * (OVERSAMPLING**2 / stamp.sum())


def fwhm_pixels(optical_element: str, psf: str = "gaussian") -> float | None:
    """FWHM of the Gaussian PSF (pixels); None for the Roman PSF, which is not Gaussian."""
    return psf_fwhm_pixels(optical_element) if psf == "gaussian" else None


def stamp_half_width(optical_element: str, psf: str = "gaussian") -> int:
    """How far (pixels) from its centre a star still adds light."""
    if psf == "roman":
        return ROMAN_STAMP_HALF_WIDTH
    return math.ceil(STAMP_HALF_WIDTH_SIGMAS * psf_fwhm_pixels(optical_element) / FWHM_PER_SIGMA)
