"""Fidelity against a known truth (issue 21): astrometry after tweakreg, detection purity and
completeness, mosaic over single-exposure star fluxes, our star fluxes over romancal's.

The truth is a star list (RA, Dec, and where the stars sit on the detector: the simulator's
``catalog`` x, y, or a true WCS inverted). ``exposure_fidelity`` runs our source_detection and
tweakreg scripts on a ``_photom`` product with ``fit_psf`` on and off against a reference
catalog; the other functions measure products that exist. Used by ``benchmarks/parity.py``.

Purity is the fraction of detections within MATCH_RADIUS_ARCSEC of a true star, any true star
(also one in the image's outer pixels); completeness the fraction of the stars at least
BRIGHT_SNR significant, 6 pixels or more inside the image and not brighter at the peak than
source_detection's ``peakmax`` (which drops such sources on purpose) that are detected.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MATCH_RADIUS_ARCSEC = 0.2        # a detection within this of a star is that star
BRIGHT_SNR = 10.0                # completeness is counted for stars at least this significant
APERTURE_RADIUS = 3.0            # pixels, for a star's significance and flux ratios
FLUX_RADIUS = 6.0                # pixels, for fluxes compared between products


@dataclass(frozen=True)
class Truth:
    """Stars at the exposure epoch: RA, Dec (deg)."""

    ra: np.ndarray
    dec: np.ndarray


def nearest_star(ra, dec, truth: Truth) -> tuple[np.ndarray, np.ndarray]:
    """For each (ra, dec): the index of the nearest true star and the separation in arcsec."""
    from astropy.coordinates import SkyCoord, match_coordinates_sky

    if len(ra) == 0:
        return np.zeros(0, int), np.zeros(0)
    index, separation, _ = match_coordinates_sky(SkyCoord(ra, dec, unit="deg"),
                                                 SkyCoord(truth.ra, truth.dec, unit="deg"))
    return np.asarray(index), separation.arcsec


def true_pixels(wcs, truth: Truth, shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, y of the stars through the (true) ``wcs`` and which of them are on the image."""
    x, y = wcs.invert(truth.ra, truth.dec, with_bounding_box=False)
    on = np.isfinite(x) & np.isfinite(y) & (x > 5) & (y > 5) & (x < shape[1] - 6) & (y < shape[0] - 6)
    return np.asarray(x), np.asarray(y), on


def wcs_error_mas(wcs, x, y, truth: Truth) -> float:
    """Median distance (mas) from where ``wcs`` puts the stars' true pixels to the stars."""
    from astropy.coordinates import SkyCoord

    ra, dec = wcs(x, y, with_bounding_box=False)
    return float(np.median(SkyCoord(ra, dec, unit="deg").separation(
        SkyCoord(truth.ra, truth.dec, unit="deg")).to_value("mas")))


def local_sky(data, positions, radius) -> np.ndarray:
    """Median of the finite pixels in an annulus from ``radius`` + 2 to + 5 pixels around each position."""
    from photutils.aperture import CircularAnnulus

    data = np.asarray(data, np.float64)
    annulus = CircularAnnulus(positions, radius + 2, radius + 5)
    return np.array([np.nanmedian(mask.multiply(data)[mask.data > 0]) if mask is not None else np.nan
                     for mask in annulus.to_mask(method="center")])


def star_significance(data, err, x, y, radius=APERTURE_RADIUS) -> np.ndarray:
    """Sky-subtracted aperture flux over its error at each (x, y) (NaN where the aperture holds bad
    pixels). The sky is subtracted: on a Level 2 image it would make every star significant."""
    from photutils.aperture import CircularAperture, aperture_photometry

    good = np.isfinite(data) & np.isfinite(err) & (err > 0)
    positions = np.column_stack([x, y])
    apertures = CircularAperture(positions, radius)
    table = aperture_photometry(np.where(good, data, 0.0), apertures, error=np.where(good, err, 0.0),
                                mask=~good)
    sky = local_sky(np.where(good, data, np.nan), positions, radius)
    flux = np.asarray(table["aperture_sum"]) - sky * apertures.area
    with np.errstate(divide="ignore", invalid="ignore"):
        return flux / np.asarray(table["aperture_sum_err"])


def star_peaks(data, x, y) -> np.ndarray:
    """The brightest finite pixel of the 3 x 3 around each (x, y) (NaN where none is)."""
    data = np.asarray(data, np.float64)
    rows, columns = np.rint(np.asarray(y)).astype(int), np.rint(np.asarray(x)).astype(int)
    peaks = np.full(len(rows), -np.inf)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            r, c = rows + dy, columns + dx
            inside = (r >= 0) & (c >= 0) & (r < data.shape[0]) & (c < data.shape[1])
            values = np.full(len(rows), -np.inf)
            values[inside] = data[r[inside], c[inside]]
            peaks = np.fmax(peaks, np.where(np.isfinite(values), values, -np.inf))
    return np.where(np.isfinite(peaks), peaks, np.nan)


def detection_quality(detected_ra, detected_dec, truth: Truth, counted: np.ndarray,
                      radius_arcsec=MATCH_RADIUS_ARCSEC) -> dict:
    """Purity (detections that are stars) and completeness (``counted`` stars detected).

    Purity is judged against every true star, wherever it sits: a detection of a star in the
    image's outer pixels is real, although such stars are not ``counted``. ``counted`` marks
    the stars completeness is measured on (see :func:`counted_stars`).
    """
    index, separation = nearest_star(detected_ra, detected_dec, truth)
    real = separation <= radius_arcsec
    found = np.zeros(len(truth.ra), bool)
    found[index[real]] = True
    counted = np.asarray(counted, bool)
    return {"detections": int(len(detected_ra)), "purity": float(real.mean()) if real.size else float("nan"),
            "bright_stars": int(counted.sum()),
            "completeness": float(found[counted].mean()) if counted.any() else float("nan")}


def counted_stars(significance, peaks, peakmax) -> np.ndarray:
    """Stars completeness counts: at least BRIGHT_SNR significant and not brighter at the peak
    than source_detection's ``peakmax``, above which DAOStarFinder drops a source on purpose
    (the romancal documentation, section "Source Detection": saturated cores are no positions
    for tweakreg). NaN significance (off the image, bad pixels) is not counted."""
    significance, peaks = np.asarray(significance, float), np.asarray(peaks, float)
    return (np.nan_to_num(significance, nan=-np.inf) >= BRIGHT_SNR) & ~(peaks > peakmax)


def star_fluxes(data, wcs, truth: Truth, radius=FLUX_RADIUS) -> np.ndarray:
    """Sky-subtracted aperture sums at the stars (in the data's units times pixels); NaN off the data."""
    from photutils.aperture import CircularAperture, aperture_photometry

    data = np.asarray(data, np.float64)
    x, y, on = true_pixels(wcs, truth, data.shape)
    fluxes = np.full(len(truth.ra), np.nan)
    if not on.any():
        return fluxes
    positions = np.column_stack([x[on], y[on]])
    apertures = CircularAperture(positions, radius)
    finite = np.isfinite(data)
    sums = aperture_photometry(np.where(finite, data, 0.0), apertures, mask=~finite)
    bad = aperture_photometry((~finite).astype(float), apertures)["aperture_sum"]
    values = np.asarray(sums["aperture_sum"]) - local_sky(data, positions, radius) * apertures.area
    fluxes[np.flatnonzero(on)] = np.where(np.asarray(bad) == 0, values, np.nan)
    return fluxes


def median_ratio(numerator, denominator, keep=None) -> tuple[float, int]:
    """Median of numerator / denominator where both are finite and positive (and ``keep``)."""
    numerator, denominator = np.asarray(numerator), np.asarray(denominator)
    use = np.isfinite(numerator) & np.isfinite(denominator) & (denominator > 0)
    if keep is not None:
        use &= keep
    ratio = float(np.median(numerator[use] / denominator[use])) if use.any() else float("nan")
    return ratio, int(use.sum())


def exposure_fidelity(photom: Path, refcat: Path, truth: Truth, x, y, work: Path) -> dict:
    """Our source_detection and tweakreg on ``photom`` with fit_psf on and off: astrometry of
    the aligned WCS (median, mas) and detection purity/completeness (fit_psf off's catalog).
    ``x``, ``y``: where the stars truly sit on the image (0-based Level 2 pixels)."""
    from romanpipe.params import step_defaults

    import roman_datamodels as rdm
    from astropy.table import Table

    work.mkdir(parents=True, exist_ok=True)
    with rdm.open(photom) as image:
        data, err = np.array(image.data, np.float64), np.array(image.err, np.float64)
    x, y = np.asarray(x, float), np.asarray(y, float)
    on = (x > 5) & (y > 5) & (x < data.shape[1] - 6) & (y < data.shape[0] - 6)
    on_image = Truth(truth.ra[on], truth.dec[on])
    peakmax = step_defaults("source_detection")["peakmax"]
    peaks = star_peaks(data, x, y)
    significance = np.full(len(x), np.nan)
    significance[on] = star_significance(data, err, x[on], y[on])
    counted = on & counted_stars(significance, peaks, peakmax)
    results = {"stars": int(on.sum()), "above peakmax": int((on & (peaks > peakmax)).sum())}
    for fit_psf in (False, True):
        label = "fit_psf" if fit_psf else "centroid"
        detected = work / f"{label}_sourcedetection.asdf"
        aligned = work / f"{label}_tweakreg.asdf"
        scripts = ROOT / "scripts"
        subprocess.run([sys.executable, str(scripts / "source_detection.py"), str(photom), str(detected),
                        "--fit-psf", str(fit_psf).lower(), "-q"], check=True)
        subprocess.run([sys.executable, str(scripts / "tweakreg.py"), str(detected), str(aligned),
                        "--abs-refcat", str(refcat), "-q"], check=True)
        with rdm.open(aligned) as product:
            wcs = product.meta.wcs
            results[f"{label} astrometry mas"] = wcs_error_mas(wcs, x[on], y[on], on_image)
            results[f"{label} tweakreg"] = str(product.meta.cal_step.tweakreg)
            if not fit_psf:
                with rdm.open(detected) as found:
                    catalog = Table(np.asarray(found.meta.source_catalog.tweakreg_catalog))
                ra, dec = wcs(np.asarray(catalog["x"], float), np.asarray(catalog["y"], float))
                results.update(detection_quality(ra, dec, truth, counted))
    with rdm.open(photom) as image:
        results["input astrometry mas"] = wcs_error_mas(image.meta.wcs, x[on], y[on], on_image)
    return results


def mosaic_over_single(mosaic, singles, truth: Truth, keep=None) -> tuple[float, int]:
    """Median over stars (those in ``keep``, if given) of a mosaic's flux over the mean of the
    single exposures' (surface brightness times each product's pixel area, so both are fluxes),
    in apertures of one size on the sky: FLUX_RADIUS pixels of the first single exposure (a sky
    cell's pixels are half the detector's)."""
    single_area = pixel_area_sr(singles[0].meta.wcs, np.shape(singles[0].data))

    def flux(model):
        area = pixel_area_sr(model.meta.wcs, np.shape(model.data))
        radius = FLUX_RADIUS * np.sqrt(single_area / area)
        return star_fluxes(model.data, model.meta.wcs, truth, radius) * area

    per_exposure = np.array([flux(model) for model in singles])
    with np.errstate(invalid="ignore"):
        complete = np.isfinite(per_exposure).all(axis=0)
        single = np.where(complete, per_exposure.mean(axis=0), np.nan)
    return median_ratio(flux(mosaic), single, keep)


def pixel_area_sr(wcs, shape) -> float:
    """Pixel area (sr) of ``wcs`` at the image centre."""
    cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    ra, dec = wcs(np.array([cx, cx + 1, cx]), np.array([cy, cy, cy + 1]), with_bounding_box=False)
    ra, dec = np.radians(ra), np.radians(dec)
    east = np.array([(ra[1] - ra[0]) * np.cos(dec[0]), dec[1] - dec[0]])
    north = np.array([(ra[2] - ra[0]) * np.cos(dec[0]), dec[2] - dec[0]])
    return float(abs(east[0] * north[1] - east[1] * north[0]))


def significant_stars(model, truth: Truth, snr=BRIGHT_SNR) -> np.ndarray:
    """Which stars are at least ``snr`` significant (aperture flux over its error) on ``model``
    (a Level 2 or 3 product: data, err, WCS); False off the image."""
    x, y, on = true_pixels(model.meta.wcs, truth, np.shape(model.data))
    significance = np.full(len(truth.ra), np.nan)
    data, err = np.asarray(model.data, np.float64), np.asarray(model.err, np.float64)
    significance[on] = star_significance(data, err, x[on], y[on])
    return np.nan_to_num(significance, nan=-np.inf) >= snr


def ours_over_peer(ours, theirs, truth: Truth) -> tuple[float, int]:
    """Median over stars >= BRIGHT_SNR of our _cal's aperture flux over romancal's (same pixels)."""
    return median_ratio(star_fluxes(ours.data, ours.meta.wcs, truth),
                        star_fluxes(theirs.data, ours.meta.wcs, truth), significant_stars(ours, truth))
