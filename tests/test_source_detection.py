"""source_detection: DAOStarFinder detections and Roman PSF fits on fields with injected truth."""

import logging
import math

from romanpipe import background, cli, dqflags, roman_psf

import numpy as np
import pytest
import roman_datamodels as rdm
from astropy.table import Table
from roman_datamodels import datamodels
from scipy.spatial import cKDTree

import source_detection
from wfisim.scene import FWHM_PER_SIGMA, Catalog, random_catalog, render_rate

EXPO = "r0000101001001001001_01101_0001_WFI03"
EXPOSURE_TIME = 140.0  # s: Poisson noise of the rate, in DN/s with a gain of 1
READ_NOISE = 0.05  # DN/s
SKY = 1.0  # DN/s
DO_NOT_USE = int(dqflags.pixel.DO_NOT_USE)


def observe(rate, seed):
    """A noisy rate image (float32) and its ERR (float16) from a noiseless rate."""
    rng = np.random.default_rng(seed)
    data = rng.poisson(rate * EXPOSURE_TIME) / EXPOSURE_TIME + rng.normal(0.0, READ_NOISE, rate.shape)
    err = np.sqrt(rate / EXPOSURE_TIME + READ_NOISE**2)
    return data.astype(np.float32), err.astype(np.float16)


def gaussian_snr(flux, fwhm):
    """Signal-to-noise of an optimally weighted Gaussian star (noise-equivalent area 4 pi sigma^2)."""
    sigma = fwhm / FWHM_PER_SIGMA
    return flux / np.sqrt(flux / EXPOSURE_TIME + 4 * np.pi * sigma**2 * (SKY / EXPOSURE_TIME + READ_NOISE**2))


def isolated(x, y, distance):
    positions = np.c_[x, y]
    nearest, _ = cKDTree(positions).query(positions, k=2)
    return nearest[:, 1] > distance


def match(catalog, x, y, radius=1.0):
    """For each truth star: found?, index of the nearest detection."""
    distance, index = cKDTree(np.c_[catalog["x"], catalog["y"]]).query(np.c_[x, y])
    return distance < radius, index


def centroid_rms(catalog, x, y, found, index):
    dx = np.asarray(catalog["x"])[index[found]] - x[found]
    dy = np.asarray(catalog["y"])[index[found]] - y[found]
    return float(np.sqrt(np.mean(np.r_[dx, dy] ** 2)))


# --- the filter's default kernel ------------------------------------------------------------

@pytest.mark.parametrize(("element", "wavelength_um"), [("F062", 0.620), ("F158", 1.577), ("F213", 2.125)])
def test_default_kernel_fwhm_is_the_diffraction_fwhm_and_one_pixel_in_quadrature(element, wavelength_um):
    diffraction_arcsec = 1.03 * wavelength_um * 1e-6 / 2.36 * 180 / math.pi * 3600
    expected = math.sqrt((diffraction_arcsec / 0.11) ** 2 + 1.0)
    assert roman_psf.default_kernel_fwhm(element) == pytest.approx(expected, rel=1e-12)


def test_default_kernel_fwhm_of_a_grism_is_an_error():
    with pytest.raises(ValueError, match="GRISM"):
        roman_psf.default_kernel_fwhm("GRISM")


# --- (a) Gaussian field ---------------------------------------------------------------------

def test_gaussian_field_finds_isolated_bright_stars_with_precise_centroids():
    """>= 95 % of isolated S/N > 20 stars found, centroids within 0.05 pixel RMS.

    The PSF is a Gaussian of 2.2 pixels FWHM with a matching kernel: DAOStarFinder's
    marginal-Gaussian centroids lock towards pixel centres for undersampled stars (0.07
    pixel RMS at Roman's F158 sampling), which is what fit_psf is for (next test).
    """
    shape, fwhm = (384, 384), 2.2
    truth = random_catalog(7, shape, 250, flux_range=(4.0, 6000.0))  # S/N from 12 up
    data, err = observe(render_rate(shape, truth, SKY, fwhm), seed=5)
    dq = np.zeros(shape, np.uint32)

    catalog = source_detection.find_sources(data, err, dq, kernel_fwhm=fwhm)

    selected = isolated(truth.x, truth.y, 3 * fwhm + 2) & (gaussian_snr(truth.flux, fwhm) > 20)
    assert selected.sum() > 120
    x, y = truth.x[selected], truth.y[selected]
    found, index = match(catalog, x, y)
    assert found.mean() >= 0.95
    assert centroid_rms(catalog, x, y, found, index) <= 0.05
    assert catalog.colnames == ["id", "x", "y", "flux", "sharpness", "roundness1", "roundness2"]
    assert list(catalog["id"]) == list(range(1, len(catalog) + 1))


# --- (b) Roman PSF field and fit_psf ---------------------------------------------------------

ROMAN_SHAPE = (224, 224)
TRUTH_HALF_WIDTH = 20  # pixels


def galsim_rate(shape, x, y, flux):
    """Sky plus stars each drawn by galsim with its Roman PSF (SCA 3, H158) at its true position.

    galsim places the PSF's origin where it is asked to (``drawImage(offset=...)``, with
    galsim's own pixel convolution): the convention romanisim draws its stars with and
    romancal's ePSF is centred on, not the step's. The PSF is monochromatic at the
    bandpass's effective wavelength (the step's model: polychromatic, 4x oversampled,
    spline-interpolated). Its light centroid is ~0.1 pixel from its origin: a fit that
    centres its model on the light misses every star by that much.
    """
    import galsim
    import galsim.roman

    bandpass = galsim.roman.getBandpasses()["H158"]
    psf = galsim.roman.getPSF(3, "H158", pupil_bin=8, wavelength=bandpass.effective_wavelength)
    rate = np.full(shape, SKY)
    size = 2 * TRUTH_HALF_WIDTH + 1
    for x0, y0, f in zip(x, y, flux, strict=True):
        col, row = round(x0), round(y0)
        # An odd stamp's true centre is its central pixel: the offset puts the origin at (x0, y0).
        stamp = psf.withFlux(f).drawImage(nx=size, ny=size, scale=galsim.roman.pixel_scale,
                                          offset=(x0 - col, y0 - row)).array
        rows = slice(max(0, row - TRUTH_HALF_WIDTH), min(shape[0], row + TRUTH_HALF_WIDTH + 1))
        cols = slice(max(0, col - TRUTH_HALF_WIDTH), min(shape[1], col + TRUTH_HALF_WIDTH + 1))
        rate[rows, cols] += stamp[rows.start - row + TRUTH_HALF_WIDTH:rows.stop - row + TRUTH_HALF_WIDTH,
                                  cols.start - col + TRUTH_HALF_WIDTH:cols.stop - col + TRUTH_HALF_WIDTH]
    return rate


def jittered_grid(shape, spacing, rng):
    """Star positions on a grid, each moved by up to 3 pixels: no blends, every sub-pixel phase."""
    centres = np.arange(14.0, shape[0] - 12, spacing)
    return tuple(a.ravel() + rng.uniform(-3.0, 3.0, a.size) for a in np.meshgrid(centres, centres))


@pytest.fixture(scope="module")
def roman_field():
    """64 stars drawn by galsim (:func:`galsim_rate`), 22 to 34 pixels apart."""
    rng = np.random.default_rng(11)
    x, y = jittered_grid(ROMAN_SHAPE, 28.0, rng)
    flux = np.exp(rng.uniform(np.log(200.0), np.log(3000.0), x.size))
    data, err = observe(galsim_rate(ROMAN_SHAPE, x, y, flux), seed=12)
    return Catalog(x, y, flux), data, err


def test_fit_psf_on_galsim_drawn_stars_gives_positions_to_002_pixel_and_fluxes_to_a_few_percent(roman_field):
    truth, data, err = roman_field
    dq = np.zeros(data.shape, np.uint32)
    kernel = roman_psf.default_kernel_fwhm("F158")
    model = roman_psf.roman_psf_model("WFI03", "F158")

    dao = source_detection.find_sources(data, err, dq, kernel_fwhm=kernel)
    fitted = source_detection.find_sources(data, err, dq, kernel_fwhm=kernel, psf_model=model)

    selected = isolated(truth.x, truth.y, 8.0)
    x, y, flux = truth.x[selected], truth.y[selected], truth.flux[selected]
    assert selected.sum() > 50
    found, index = match(fitted, x, y)
    assert found.all()
    assert centroid_rms(fitted, x, y, found, index) <= 0.02
    # No bias: a fit about the PSF's light centroid misses galsim's origin by ~0.1 pixel.
    assert abs(np.median(np.asarray(fitted["x"])[index] - x)) < 0.01
    assert abs(np.median(np.asarray(fitted["y"])[index] - y)) < 0.01
    # The fit is what makes the centroids precise: DAOStarFinder alone is far off.
    dao_found, dao_index = match(dao, x, y)
    assert centroid_rms(dao, x, y, dao_found, dao_index) > 0.04
    ratio = np.asarray(fitted["flux"])[index] / flux
    assert abs(np.median(ratio) - 1) < 0.02
    assert np.percentile(np.abs(ratio - 1), 90) < 0.04
    assert set(source_detection.FIT_COLUMNS) <= set(fitted.colnames)
    # DAOStarFinder's centroids are kept beside the fitted ones, row for row.
    np.testing.assert_array_equal(fitted["x_init"], dao["x"])
    shift = np.hypot(fitted["x"] - fitted["x_init"], fitted["y"] - fitted["y_init"])
    assert (shift <= math.sqrt(2)).all() and np.median(shift) < 0.2


@pytest.mark.peer
def test_fit_psf_finds_stars_romanisim_rendered_at_their_catalog_positions():
    """romanisim's own renderer (``add_objects_to_image`` via ``simulate_counts_generic``, with
    its galsim Roman PSF, Poisson noise and sky) places point sources at positions we give:
    the fitted positions land on them, without the ~0.1-pixel bias of a centroid convention."""
    pytest.importorskip("romanisim")
    import galsim
    import galsim.roman
    from romanisim import catalog, image, psf

    shape, exposure_time, sky = (160, 160), 140.0, 1.0
    centres = np.arange(14.0, shape[0] - 12, 22.0)
    rng = np.random.default_rng(31)
    x, y = (a.ravel() + rng.uniform(-3.0, 3.0, a.size) for a in np.meshgrid(centres, centres))
    flux = np.exp(rng.uniform(np.log(300.0), np.log(3000.0), x.size))  # e/s
    stars = [catalog.CatalogObject(None, galsim.DeltaFunction(), {"F158": f}) for f in flux]
    counts = galsim.ImageF(shape[1], shape[0], scale=galsim.roman.pixel_scale, xmin=0, ymin=0)
    model_psf = psf.make_psf(3, "F158", psftype="galsim", chromatic=False)
    image.simulate_counts_generic(counts, exposure_time, objlist=stars, psf=model_psf, zpflux=1.0,
                                  sky=sky, xpos=x, ypos=y, filter_name="F158", seed=32)
    data = (counts.array / exposure_time + rng.normal(0.0, READ_NOISE, shape)).astype(np.float32)
    err = np.sqrt(np.clip(data, sky, None) / exposure_time + READ_NOISE**2).astype(np.float16)

    fitted = source_detection.find_sources(data, err, np.zeros(shape, np.uint32),
                                           kernel_fwhm=roman_psf.default_kernel_fwhm("F158"),
                                           psf_model=roman_psf.roman_psf_model("WFI03", "F158"))

    found, index = match(fitted, x, y)
    assert found.all()
    dx, dy = np.asarray(fitted["x"])[index] - x, np.asarray(fitted["y"])[index] - y
    assert abs(np.median(dx)) < 0.01 and abs(np.median(dy)) < 0.01
    assert centroid_rms(fitted, x, y, found, index) <= 0.02


def test_vectorised_fits_agree_with_photutils_psf_photometry(roman_field):
    """All sources fitted at once give photutils' source-by-source fit: the same model, box of
    5 x 5 pixels, 1/error^2 weights, masked pixels left out, positions bound to +-1 pixel."""
    from photutils.psf import PSFPhotometry

    _, data, err = roman_field
    data = data.astype(np.float64) - SKY
    error = err.astype(np.float64)
    mask = np.zeros(data.shape, bool)
    mask[::7, ::5] = True  # some boxes lose a pixel or two
    model = roman_psf.roman_psf_model("WFI03", "F158")
    dao = source_detection.find_sources(data + SKY, err, np.zeros(data.shape, np.uint32),
                                        kernel_fwhm=roman_psf.default_kernel_fwhm("F158"))
    ours = roman_psf.fit_psf_photometry(data, error, mask, dao, model)
    photometry = PSFPhotometry(model, roman_psf.PSF_FIT_SHAPE,
                               xy_bounds=roman_psf.PSF_FIT_MAX_SHIFT, aperture_radius=2.5)
    expected = photometry(data, mask=mask, error=error,
                          init_params=Table({"id": dao["id"], "x": dao["x"], "y": dao["y"]}))
    assert len(ours) == len(expected) > 50
    np.testing.assert_allclose(ours["x"], expected["x_fit"], atol=1e-3)
    np.testing.assert_allclose(ours["y"], expected["y_fit"], atol=1e-3)
    np.testing.assert_allclose(ours["flux"], expected["flux_fit"], rtol=1e-3)
    np.testing.assert_allclose(ours["qfit"], expected["qfit"], rtol=0.01, atol=1e-3)
    # photutils scales the formal errors by the square root of the reduced chi-square (~1 here).
    assert np.median(ours["x_err"] / expected["x_err"]) == pytest.approx(1.0, abs=0.2)
    partial = (np.asarray(expected["flags"]) & 1) != 0
    np.testing.assert_array_equal((np.asarray(ours["psf_flags"]) & 1) != 0, partial)


def test_a_source_without_pixels_to_fit_keeps_daostarfinders_position(roman_field):
    """A box whose pixels are all masked (or all but two) is not fitted: DAOStarFinder's
    position and flux stay, flagged; the other sources are fitted as usual."""
    _, data, err = roman_field
    data = data.astype(np.float64) - SKY
    dao = source_detection.find_sources(data + SKY, err, np.zeros(data.shape, np.uint32),
                                        kernel_fwhm=roman_psf.default_kernel_fwhm("F158"))
    mask = np.zeros(data.shape, bool)
    first, second = (np.rint([dao["y"][i], dao["x"][i]]).astype(int) for i in (0, 1))
    mask[first[0] - 2:first[0] + 3, first[1] - 2:first[1] + 3] = True
    mask[second[0] - 2:second[0] + 3, second[1] - 2:second[1] + 3] = True
    mask[second[0], second[1]:second[1] + 2] = False  # two pixels left: fewer than the parameters
    model = roman_psf.roman_psf_model("WFI03", "F158")

    fitted = roman_psf.fit_psf_photometry(data, err.astype(np.float64), mask, dao, model)

    for i in (0, 1):
        for name in ("x", "y", "flux"):
            assert fitted[name][i] == dao[name][i]
        assert fitted["psf_flags"][i] & 1
    assert np.all(np.isfinite(fitted["x"])) and np.all(fitted["flux"][2:] > 0)
    assert np.median(np.hypot(fitted["x"][2:] - dao["x"][2:], fitted["y"][2:] - dao["y"][2:])) > 0.01


def test_roman_psf_model_is_normalised_to_unit_flux_per_native_pixel_grid():
    model = roman_psf.roman_psf_model("WFI03", "F158")
    rows, cols = np.mgrid[-20:21, -20:21]
    # The model's pixel values of a star at a pixel centre sum to the light within the 41-pixel stamp.
    within_stamp = model.evaluate(cols, rows, 1.0, 0.0, 0.0).sum()
    assert 0.93 < within_stamp < 1.0
    # A quarter-pixel shift moves the same light.
    shifted = model.evaluate(cols, rows, 1.0, 0.25, -0.25).sum()
    assert shifted == pytest.approx(within_stamp, abs=0.01)


def test_the_psf_is_built_once_per_detector_and_filter_into_the_cache_folder(tmp_path, monkeypatch, caplog):
    built = roman_psf.roman_psf_model("WFI03", "F158").data
    monkeypatch.setenv(roman_psf.PSF_CACHE_VARIABLE, str(tmp_path))
    roman_psf._effective_psf.cache_clear()
    with caplog.at_level(logging.INFO, logger="romanpipe.roman_psf"):
        first = roman_psf.roman_psf_model("WFI03", "F158").data
    [kept] = tmp_path.glob("*.npy")
    assert "SCA03_F158_galsim" in kept.name and "x4_41px" in kept.name
    np.testing.assert_array_equal(np.load(kept), built)
    np.testing.assert_array_equal(first, built)
    assert not list(tmp_path.glob(".*"))  # no staging file left

    # A later job reads the file instead of building the PSF.
    roman_psf._effective_psf.cache_clear()
    monkeypatch.setattr(roman_psf, "_galsim_effective_psf", lambda *_: pytest.fail("PSF built again"))
    np.testing.assert_array_equal(roman_psf.roman_psf_model("WFI03", "F158").data, built)

    # An unreadable file is built again and replaced.
    kept.write_bytes(b"not a numpy file")
    roman_psf._effective_psf.cache_clear()
    monkeypatch.setattr(roman_psf, "_galsim_effective_psf", lambda *_: built.copy())
    with caplog.at_level(logging.WARNING, logger="romanpipe.roman_psf"):
        np.testing.assert_array_equal(roman_psf.roman_psf_model("WFI03", "F158").data, built)
    assert "unreadable" in caplog.text
    np.testing.assert_array_equal(np.load(kept), built)
    roman_psf._effective_psf.cache_clear()


def test_unknown_detector_is_an_error():
    with pytest.raises(ValueError, match="WFI19"):
        roman_psf.roman_psf_model("WFI19", "F158")


# --- (c) cosmic-ray residuals ----------------------------------------------------------------

JUMP_DET = int(dqflags.pixel.JUMP_DET)


def add_cosmic_ray_residual(rate, dq, row, col, amplitude):
    """What ramp fitting leaves of a cosmic ray: its pixel, flagged JUMP_DET, ``amplitude`` high,
    and 40 % of that in its four neighbours, where the charge spread below the jump threshold."""
    rate[row, col] += amplitude
    for drow, dcol in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        rate[row + drow, col + dcol] += 0.4 * amplitude
    dq[row, col] |= JUMP_DET


def test_cosmic_ray_residuals_make_no_detection_and_hide_no_star():
    """>= 95 % of the detections are stars and >= 95 % of the 10-sigma stars are found on a field
    of galsim stars with as many cosmic-ray residuals of 5 to 30 sigma between them, and residuals
    on the wings of bright stars (romanisim exposure: 423 of 599 detections were residuals)."""
    rng = np.random.default_rng(41)
    x, y = jittered_grid(ROMAN_SHAPE, 28.0, rng)
    flux = np.exp(rng.uniform(np.log(2.0), np.log(3000.0), x.size))
    rate = galsim_rate(ROMAN_SHAPE, x, y, flux)
    dq = np.zeros(ROMAN_SHAPE, np.uint32)
    pixel_sigma = math.sqrt(SKY / EXPOSURE_TIME + READ_NOISE**2)
    between = np.arange(28.0, ROMAN_SHAPE[0] - 12, 28.0)
    for row, col in zip(*(a.ravel() for a in np.meshgrid(between, between)), strict=True):
        add_cosmic_ray_residual(rate, dq, int(row), int(col), rng.uniform(5, 30) * pixel_sigma)
    bright = np.flatnonzero(flux > 500)
    for star in bright:  # one pixel from the star's brightest pixel
        amplitude = rng.uniform(5, 30) * pixel_sigma
        add_cosmic_ray_residual(rate, dq, round(y[star]) + 1, round(x[star]), amplitude)
    data, err = observe(rate, seed=42)
    assert len(bright) >= 10

    kernel = roman_psf.default_kernel_fwhm("F158")
    catalog = source_detection.find_sources(data, err, dq, kernel_fwhm=kernel)

    distance, _ = cKDTree(np.c_[x, y]).query(np.c_[catalog["x"], catalog["y"]])
    assert np.mean(distance < 1.0) >= 0.95
    # S/N of an optimally weighted star: the PSF's noise-equivalent area is 1 / sum(p^2).
    unit = galsim_rate((41, 41), [20.0], [20.0], [1.0]) - SKY
    snr = flux / np.sqrt(flux / EXPOSURE_TIME + pixel_sigma**2 / np.sum(unit**2))
    found, _ = match(catalog, x, y)
    assert 30 <= (snr >= 10).sum() < len(flux) and found[snr >= 10].mean() >= 0.95
    assert found[bright].all()


# --- (d) max_sources -----------------------------------------------------------------------

def grid_field(shape=(160, 160), spacing=20, fwhm=2.0, seed=3):
    """Stars on a grid (no blends), each with its own flux."""
    centres = np.arange(spacing, shape[0] - spacing // 2, spacing, dtype=float)
    x, y = (a.ravel() + 0.3 for a in np.meshgrid(centres, centres))
    flux = np.geomspace(80.0, 4000.0, x.size)
    np.random.default_rng(seed).shuffle(flux)
    truth = Catalog(x, y, flux)
    data, err = observe(render_rate(shape, truth, SKY, fwhm), seed=seed)
    return truth, data, err


def test_max_sources_keeps_the_brightest():
    truth, data, err = grid_field()
    dq = np.zeros(data.shape, np.uint32)
    catalog = source_detection.find_sources(data, err, dq, kernel_fwhm=2.0, max_sources=10, peakmax=None)
    assert len(catalog) == 10
    _, nearest = cKDTree(np.c_[truth.x, truth.y]).query(np.c_[catalog["x"], catalog["y"]])
    assert set(nearest) == set(np.argsort(truth.flux)[-10:])


def test_peakmax_drops_stars_whose_brightest_pixel_is_above_it():
    truth, data, err = grid_field()
    dq = np.zeros(data.shape, np.uint32)
    every = source_detection.find_sources(data, err, dq, kernel_fwhm=2.0, peakmax=None)
    capped = source_detection.find_sources(data, err, dq, kernel_fwhm=2.0, peakmax=200.0)
    peak_fraction = (math.erf(0.5 / (2.0 / FWHM_PER_SIGMA) / math.sqrt(2))) ** 2
    bright = truth.flux * peak_fraction > 260  # clearly above peakmax after pixel phase and noise
    found_bright, _ = match(capped, truth.x[bright], truth.y[bright])
    assert bright.any() and not found_bright.any()
    assert len(capped) < len(every)


def test_the_halo_of_a_star_above_peakmax_makes_no_detection_and_hides_no_star():
    """A galsim Roman-PSF star of 30,000 DN/s (above peakmax, dropped) and four of 300 DN/s
    25-27 pixels from it: its rings and strut spikes were four more detections, of 17-38
    DN/s at 10-17 pixels; only the four stars may be found."""
    shape = (128, 128)
    x = np.array([64.3, 90.0, 39.0, 64.2, 64.0])
    y = np.array([63.8, 64.0, 67.0, 91.0, 38.0])
    data, err = observe(galsim_rate(shape, x, y, np.array([3e4, 300.0, 300.0, 300.0, 300.0])), seed=5)
    catalog = source_detection.find_sources(data, err, np.zeros(shape, np.uint32), kernel_fwhm=1.633,
                                            peakmax=1000.0)
    found, _ = match(catalog, x[1:], y[1:])
    assert found.all() and len(catalog) == 4


def test_in_halo_is_below_halo_factor_times_the_d_cubed_envelope():
    """Hand values: a bright source of 1000 at the origin, FWHM 1; at 10 pixels the envelope
    is 1000 x 10^-3 = 1, times HALO_FACTOR; within one FWHM it is the whole flux."""
    edge = source_detection.HALO_FACTOR
    halo = source_detection.in_halo(np.array([10.0, 10.0, 0.5, 30.0]), np.zeros(4),
                                    np.array([0.99 * edge, 1.01 * edge, 999.0, 0.99 * edge]),
                                    np.array([0.0]), np.array([0.0]), np.array([1000.0]), 1.0)
    np.testing.assert_array_equal(halo, [True, False, True, False])


def test_computed_threshold_is_the_median_of_background_plus_snr_threshold_times_rms():
    from astropy.stats import SigmaClip
    from photutils.background import Background2D, MedianBackground

    _, data, err = grid_field()
    dq = np.zeros(data.shape, np.uint32)
    background = Background2D(data.astype(np.float64), 9, filter_size=3, sigma_clip=SigmaClip(sigma=2.0),
                              bkg_estimator=MedianBackground())
    threshold = np.median(background.background + 4.0 * background.background_rms)
    computed = source_detection.find_sources(data, err, dq, kernel_fwhm=2.0, snr_threshold=4.0)
    given = source_detection.find_sources(data, err, dq, kernel_fwhm=2.0, scalar_threshold=threshold)
    noise_only = source_detection.find_sources(data, err, dq, kernel_fwhm=2.0,
                                               scalar_threshold=4.0 * np.median(background.background_rms))
    assert len(computed) == len(given) > 0
    np.testing.assert_allclose(computed["x"], given["x"])
    assert len(noise_only) > len(computed)  # the sky level is part of the computed threshold


@pytest.mark.parametrize("filter_size", [3, (3, 5), 1])
def test_background_mesh_filter_equals_photutils(filter_size):
    """The vectorised mesh median gives photutils' own background and RMS, masked boxes included."""
    from astropy.stats import SigmaClip
    from photutils.background import Background2D, MedianBackground

    _, data, _ = grid_field()
    data = data.astype(np.float64) + np.linspace(0.0, 2.0, data.shape[1])  # a gradient to filter
    mask = np.zeros(data.shape, bool)
    mask[40:70, 100:130] = True  # whole boxes without a pixel: their mesh points are interpolated
    options = dict(filter_size=filter_size, mask=mask, sigma_clip=SigmaClip(sigma=2.0),
                   bkg_estimator=MedianBackground())
    expected = Background2D(data, 9, **options)
    ours = background.MeshMedianBackground2D(data, 9, **options)
    np.testing.assert_array_equal(ours.background, expected.background)
    np.testing.assert_array_equal(ours.background_rms, expected.background_rms)


@pytest.mark.parametrize("estimator", ["mean", "median", "mode"])
def test_every_background_estimator_finds_every_grid_star(estimator):
    truth, data, err = grid_field()
    catalog = source_detection.find_sources(data, err, np.zeros(data.shape, np.uint32), kernel_fwhm=2.0,
                                            peakmax=None, bkg_estimator=estimator)
    found, _ = match(catalog, truth.x, truth.y)
    assert found.all()


def test_a_threshold_must_be_chosen_and_a_high_one_finds_nothing():
    _, data, err = grid_field()
    dq = np.zeros(data.shape, np.uint32)
    with pytest.raises(ValueError, match="calc_scalar_threshold"):
        source_detection.find_sources(data, err, dq, kernel_fwhm=2.0, calc_scalar_threshold=False)
    empty = source_detection.find_sources(data, err, dq, kernel_fwhm=2.0, scalar_threshold=1e6,
                                          psf_model=roman_psf.roman_psf_model("WFI03", "F158"))
    assert len(empty) == 0
    assert set(source_detection.FIT_COLUMNS) <= set(empty.colnames)


# --- (e) masked pixels ---------------------------------------------------------------------

def blobs_field(flag):
    """Grid stars plus star-like hot-pixel blobs, flagged DO_NOT_USE when ``flag``; a few NaN pixels."""
    truth, data, err = grid_field()
    dq = np.zeros(data.shape, np.uint32)
    # Two blobs sit 3 to 4 pixels from a star, within its DAOStarFinder footprint.
    hot = [(10, 30), (30, 50), (50, 10), (70, 130), (130, 70), (150, 150), (90, 25), (28, 92), (44, 60),
           (63, 103)]
    for row, col in hot:
        data[row - 1:row + 2, col - 1:col + 2] += np.array([[40, 80, 40], [80, 300, 80], [40, 80, 40]],
                                                           dtype=np.float32)
        if flag:
            dq[row - 1:row + 2, col - 1:col + 2] |= DO_NOT_USE
    data[5, 5] = data[100, 3] = np.nan
    return truth, data, err, dq, np.array(hot, dtype=float)


def test_masked_hot_pixels_make_no_detection_and_hide_no_star():
    truth, data, err, dq, hot = blobs_field(flag=True)
    originals = data.copy(), dq.copy()
    catalog = source_detection.find_sources(data, err, dq, kernel_fwhm=2.0, peakmax=None)
    near_hot, _ = cKDTree(np.c_[catalog["y"], catalog["x"]]).query(hot)
    assert (near_hot > 2.0).all()
    found, _ = match(catalog, truth.x, truth.y)
    assert found.all()
    np.testing.assert_array_equal(data, originals[0])  # inputs untouched
    np.testing.assert_array_equal(dq, originals[1])


def test_background_of_a_heavily_masked_image_falls_back_to_one_box(caplog):
    truth, data, err = grid_field()
    dq = np.zeros(data.shape, np.uint32)
    dq[:, 2::4] |= DO_NOT_USE  # a quarter of every box (photutils rejects them all); 2 pixels from stars
    with caplog.at_level(logging.INFO, logger="romanpipe.background"):
        catalog = source_detection.find_sources(data, err, dq, kernel_fwhm=2.0, peakmax=None)
    assert "one box over the whole image" in caplog.text
    found, _ = match(catalog, truth.x, truth.y)
    assert found.all()


def test_the_same_hot_pixels_unflagged_are_detected():
    _, data, err, dq, hot = blobs_field(flag=False)
    catalog = source_detection.find_sources(data, err, dq, kernel_fwhm=2.0, peakmax=None)
    near_hot, _ = cKDTree(np.c_[catalog["y"], catalog["x"]]).query(hot)
    assert (near_hot < 1.0).sum() >= len(hot) - 1


# --- (f) the command line ------------------------------------------------------------------

def write_image(path, data, err, dq, detector="WFI03", element="F158"):
    model = datamodels.ImageModel.create_fake_data(shape=data.shape)
    model.data, model.err, model.dq = data, err, dq
    model.meta.instrument.detector = detector
    model.meta.instrument.optical_element = element
    model.meta.filename = path.name
    model.to_asdf(path)
    return path


@pytest.fixture
def image_file(tmp_path):
    truth = random_catalog(21, (128, 128), 40, flux_range=(100.0, 2000.0))
    data, err = observe(render_rate((128, 128), truth, SKY, 2.0), seed=22)
    return truth, write_image(tmp_path / f"{EXPO}_photom.asdf", data, err, np.zeros((128, 128), np.uint32))


def test_cli_attaches_the_catalog_and_records_cal_step(image_file, tmp_path):
    truth, path = image_file
    out = tmp_path / f"{EXPO}_sourcedetection.asdf"
    assert cli.run(source_detection.main, [str(path), str(out), "--kernel-fwhm", "2.0"]) == 0
    with rdm.open(out) as product:
        assert product.meta.cal_step.source_catalog == "COMPLETE"
        assert "tweakreg_catalog_name" not in product.meta.source_catalog
        catalog = Table(np.asarray(product.meta.source_catalog.tweakreg_catalog))
        assert product.meta.provenance.source_detection.parameters.kernel_fwhm == 2.0
    assert {"id", "x", "y", "flux"} <= set(catalog.colnames)
    bright = gaussian_snr(truth.flux, 2.0) > 20
    found, _ = match(catalog, truth.x[bright], truth.y[bright])
    assert found.mean() >= 0.95
    assert not list(tmp_path.glob(f"{EXPO}_cat.*"))


def test_cli_catalog_of_a_few_sources_reads_back(tmp_path):
    """asdf writes a catalog of a few rows inline in the YAML, where it cannot read it back
    when the rows are as many as the columns (here 7: id, x, y, flux, sharpness, roundness1/2)."""
    truth = Catalog(x=np.linspace(15.3, 80.6, 7), y=np.linspace(20.2, 75.8, 7)[::-1], flux=np.full(7, 2500.0))
    data, err = observe(render_rate((96, 96), truth, SKY, 2.0), seed=6)
    path = write_image(tmp_path / f"{EXPO}_photom.asdf", data, err, np.zeros((96, 96), np.uint32))
    out = tmp_path / f"{EXPO}_sourcedetection.asdf"
    assert cli.run(source_detection.main, [str(path), str(out), "--kernel-fwhm", "2.0"]) == 0
    with rdm.open(out) as product:
        catalog = Table(np.asarray(product.meta.source_catalog.tweakreg_catalog))
    found, _ = match(catalog, truth.x, truth.y)
    assert len(catalog) == len(catalog.colnames) == 7 and found.all()


@pytest.mark.parametrize("filetype", ["ecsv", "asdf"])
def test_cli_saves_the_catalog_beside_the_output(image_file, tmp_path, filetype):
    _, path = image_file
    out = tmp_path / f"{EXPO}_sourcedetection.asdf"
    status = cli.run(source_detection.main, [str(path), str(out), "--kernel-fwhm", "2.0", "--save-catalogs",
                                             "true", "--output-cat-filetype", filetype])
    assert status == 0
    saved = tmp_path / f"{EXPO}_cat.{filetype}"
    with rdm.open(out) as product:
        assert product.meta.source_catalog.tweakreg_catalog_name == saved.name
        attached = Table(np.asarray(product.meta.source_catalog.tweakreg_catalog))
    if filetype == "ecsv":
        written = Table.read(saved, format="ascii.ecsv")
    else:
        with rdm.open(saved) as catalog_model:
            assert isinstance(catalog_model, datamodels.ImageSourceCatalogModel)
            assert catalog_model.meta.image.filename == out.name
            written = Table(catalog_model.source_catalog)
        np.testing.assert_array_equal(written["label"], attached["id"])
        np.testing.assert_allclose(written["x_centroid"], attached["x"], rtol=1e-6)
    assert len(written) == len(attached) > 0
    for name in ("id", "x", "y", "flux"):
        np.testing.assert_array_equal(np.asarray(written[name]), np.asarray(attached[name]))


def test_cli_fit_psf_replaces_the_positions_with_the_fitted_ones(roman_field, tmp_path):
    truth, data, err = roman_field
    path = write_image(tmp_path / f"{EXPO}_photom.asdf", data, err, np.zeros(data.shape, np.uint32))
    out = tmp_path / f"{EXPO}_sourcedetection.asdf"
    arguments = [str(path), str(out), "--fit-psf", "true", "--save-catalogs", "true"]
    assert cli.run(source_detection.main, arguments) == 0
    with rdm.open(out) as product:
        catalog = Table(np.asarray(product.meta.source_catalog.tweakreg_catalog))
    with rdm.open(tmp_path / f"{EXPO}_cat.asdf") as saved:
        np.testing.assert_array_equal(saved.source_catalog["psf_flags"], catalog["psf_flags"])
        np.testing.assert_allclose(saved.source_catalog["x_centroid"], catalog["x_init"], rtol=1e-6)
    selected = isolated(truth.x, truth.y, 8.0)
    found, index = match(catalog, truth.x[selected], truth.y[selected])
    assert found.all()
    assert centroid_rms(catalog, truth.x[selected], truth.y[selected], found, index) <= 0.02
    assert {"x_init", "y_init", "psf_flags"} <= set(catalog.colnames)


def test_cli_unknown_parameter_fails_in_one_line_without_output(image_file, tmp_path, caplog):
    _, path = image_file
    out = tmp_path / "out.asdf"
    status = cli.run(source_detection.main, [str(path), str(out), "--workflow-params", '{"no_such": 1}'])
    assert status == 1 and not out.exists()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "no_such" in errors[0] and "\n" not in errors[0]
    assert cli.run(source_detection.main, [str(path), str(out), "--no-such", "1"]) == 1
    assert not out.exists()


def test_cli_missing_input_fails_in_one_line_without_output(tmp_path, caplog):
    out = tmp_path / "out.asdf"
    assert cli.run(source_detection.main, [str(tmp_path / "missing.asdf"), str(out)]) == 1
    assert not out.exists()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "missing.asdf" in errors[0] and "\n" not in errors[0]


def test_cli_all_pixels_unusable_is_no_science_data(tmp_path):
    data = np.ones((32, 32), np.float32)
    path = write_image(tmp_path / f"{EXPO}_photom.asdf", data, data.astype(np.float16),
                       np.full((32, 32), DO_NOT_USE, np.uint32))
    out = tmp_path / "out.asdf"
    assert cli.run(source_detection.main, [str(path), str(out)]) == 64
    assert not out.exists()


# --- the peer reads what we attach ----------------------------------------------------------

@pytest.mark.peer
def test_romancal_tweakreg_reads_the_attached_and_the_saved_catalogs(image_file, tmp_path):
    pytest.importorskip("romancal")
    from romancal.tweakreg.tweakreg_step import TweakRegStep

    _, path = image_file
    out = tmp_path / f"{EXPO}_sourcedetection.asdf"
    assert cli.run(source_detection.main, [str(path), str(out), "--kernel-fwhm", "2.0",
                                           "--save-catalogs", "true"]) == 0
    step = TweakRegStep()
    with rdm.open(out) as product:
        in_memory = step.get_tweakreg_catalog(product.meta.source_catalog, product)
        saved = step.read_catalog(str(tmp_path / product.meta.source_catalog.tweakreg_catalog_name))
    assert len(in_memory) == len(saved) > 0
    np.testing.assert_array_equal(np.asarray(saved["x"]), np.asarray(in_memory["x"]))
