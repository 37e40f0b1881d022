"""The scene: a flat sky plus point sources, as a photo-electron rate image (e/s per pixel).

Stars are rendered with a circular Gaussian PSF integrated over each pixel, so a
star's pixels sum to its flux (less what falls off the array). The FWHM follows
the filter: the diffraction core 1.03 lambda/D at the filter's pivot wavelength,
broadened in quadrature by charge diffusion. Pixel ``(row, col)`` has its centre
at ``x = col``, ``y = row``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from .detector import BORDER

PIXEL_SCALE_ARCSEC = 0.11
TELESCOPE_DIAMETER_M = 2.36
CHARGE_DIFFUSION_FWHM_PIXELS = 0.6
PIVOT_WAVELENGTH_UM = {
    "F062": 0.620, "F087": 0.869, "F106": 1.060, "F129": 1.293,
    "F146": 1.464, "F158": 1.577, "F184": 1.842, "F213": 2.125,
}
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
STAMP_HALF_WIDTH_SIGMAS = 7.0  # the Gaussian beyond this holds < 1e-11 of the flux


@dataclass(frozen=True, eq=False)
class Catalog:
    """Point sources in detector pixels (``x`` column, ``y`` row) with fluxes in e/s."""

    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray

    def __post_init__(self) -> None:
        if not len(self.x) == len(self.y) == len(self.flux):
            raise ValueError("catalog columns x, y and flux differ in length")

    def __len__(self) -> int:
        return len(self.flux)


def psf_fwhm_pixels(optical_element: str) -> float:
    """FWHM (pixels) of the simulated PSF in ``optical_element``."""
    try:
        wavelength_m = PIVOT_WAVELENGTH_UM[optical_element.upper()] * 1e-6
    except KeyError:
        raise ValueError(f"unknown imaging filter {optical_element!r}; "
                         f"known: {', '.join(PIVOT_WAVELENGTH_UM)}") from None
    diffraction = math.degrees(1.03 * wavelength_m / TELESCOPE_DIAMETER_M) * 3600 / PIXEL_SCALE_ARCSEC
    return math.hypot(diffraction, CHARGE_DIFFUSION_FWHM_PIXELS)


def peak_pixel_fraction(fwhm_pixels: float) -> float:
    """Fraction of a star's flux in its brightest pixel when it sits on a pixel centre."""
    sigma = fwhm_pixels / FWHM_PER_SIGMA
    return float((ndtr(0.5 / sigma) - ndtr(-0.5 / sigma)) ** 2)


def render_rate(shape: tuple[int, int], catalog: Catalog, sky: float, fwhm_pixels: float) -> np.ndarray:
    """Rate image (e/s per pixel, float64): ``sky`` everywhere plus every star of ``catalog``."""
    nrows, ncols = shape
    rate = np.full(shape, float(sky))
    sigma = fwhm_pixels / FWHM_PER_SIGMA
    half = math.ceil(STAMP_HALF_WIDTH_SIGMAS * sigma)
    for x, y, flux in zip(catalog.x, catalog.y, catalog.flux, strict=True):
        col0, col1 = max(0, round(x) - half), min(ncols, round(x) + half + 1)
        row0, row1 = max(0, round(y) - half), min(nrows, round(y) + half + 1)
        if col0 >= col1 or row0 >= row1:
            continue
        # Integrals of the Gaussian between pixel edges, one axis at a time.
        along_x = np.diff(ndtr((np.arange(col0, col1 + 1) - 0.5 - x) / sigma))
        along_y = np.diff(ndtr((np.arange(row0, row1 + 1) - 0.5 - y) / sigma))
        rate[row0:row1, col0:col1] += flux * np.outer(along_y, along_x)
    return rate


def random_catalog(seed: int | Sequence[int], shape: tuple[int, int], n_stars: int, *,
                   flux_range: tuple[float, float] = (20.0, 2.0e3), n_bright: int = 0,
                   bright_flux_range: tuple[float, float] | None = None,
                   margin: float = BORDER + 2) -> Catalog:
    """Uniform positions inside the light-sensitive area and log-uniform fluxes.

    ``n_bright`` extra stars take fluxes from ``bright_flux_range`` (see
    :func:`saturating_flux_range`), so that a few saturate.
    """
    if n_bright and bright_flux_range is None:
        raise ValueError("bright stars need a bright_flux_range")
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    nrows, ncols = shape
    total = n_stars + n_bright
    x = rng.uniform(margin, ncols - 1 - margin, total)
    y = rng.uniform(margin, nrows - 1 - margin, total)
    flux = np.concatenate([_log_uniform(rng, flux_range, n_stars),
                           _log_uniform(rng, bright_flux_range, n_bright) if n_bright else []])
    return Catalog(x, y, flux)


def saturating_flux_range(full_well: float, exposure_time: float, fwhm_pixels: float,
                          fill_fractions: tuple[float, float] = (0.15, 0.5)) -> tuple[float, float]:
    """Fluxes (e/s) whose peak pixel fills ``full_well`` within these fractions of the exposure.

    The fractions stay well below 1 so that a star off a pixel centre, with a
    fainter peak, still saturates before the end.
    """
    peak = peak_pixel_fraction(fwhm_pixels)
    earliest, latest = fill_fractions
    return (full_well / (peak * latest * exposure_time), full_well / (peak * earliest * exposure_time))


def _log_uniform(rng: np.random.Generator, limits, size: int) -> np.ndarray:
    low, high = limits
    return np.exp(rng.uniform(math.log(low), math.log(high), size))


def dispersed_catalog(catalog: Catalog, first_pixel: float, last_pixel: float,
                      step_pixels: float = 0.25) -> Catalog:
    """Each star of ``catalog`` as a row of points from ``y + first_pixel`` to ``y + last_pixel``.

    The star's flux is shared evenly among the points: a short spectrum of flat
    spectral density, dispersed along the columns.
    """
    offsets = np.arange(first_pixel, last_pixel + step_pixels / 2, step_pixels)
    return Catalog(np.repeat(catalog.x, offsets.size), (catalog.y[:, None] + offsets).ravel(),
                   np.repeat(catalog.flux / offsets.size, offsets.size))
