"""wfisim sky, flat, photometry and PSF: proper motions, the Gaia-like catalog, FLAT and PHOTOM contents."""

import math

import numpy as np
import pytest
import roman_datamodels as rdm
from roman_datamodels import datamodels

from wfisim.detector import build_detector
from wfisim.flat import true_flat
from wfisim.photometry import PIXEL_AREA_SR, electron_rate_to_mjy, photmjsr
from wfisim.pointing import separation_arcsec
from wfisim.psf import render_stars
from wfisim.references import write_references
from wfisim.scene import Catalog, dispersed_catalog
from wfisim.sky import FieldCatalog, gaia_like_table, propagate

ARCSEC_PER_RAD = 180 * 3600 / math.pi


# --- sky catalog -----------------------------------------------------------------------------


def test_proper_motion_moves_stars_along_the_sky_by_pm_times_time():
    # 1000 mas/yr for 3.6 yr is 3.6": north at the equator, east at dec 60 (pmra includes cos dec).
    ra, dec = propagate(np.array([10.0, 10.0]), np.array([0.0, 60.0]), np.array([0.0, 1000.0]),
                        np.array([1000.0, 0.0]), 3.6)
    assert ra[0] == pytest.approx(10.0, abs=1e-12) and dec[0] == pytest.approx(0.001, rel=1e-9)
    assert ra[1] == pytest.approx(10.0 + 0.001 / math.cos(math.radians(60.0)), rel=1e-9)
    assert separation_arcsec(ra, dec, [10.0, 10.0], [0.0, 60.0]) == pytest.approx([3.6, 3.6], rel=1e-9)
    stars = FieldCatalog(np.array([10.0]), np.array([0.0]), np.array([100.0]), pmdec=np.array([1000.0]))
    assert stars.at_epoch(2016.0 + 3.6)[1] == pytest.approx([0.001], rel=1e-9)
    assert stars.source_id.tolist() == [1]


def test_gaia_like_catalog_lists_the_stars_gaia_sees_with_gaia_errors():
    rng = np.random.default_rng(1)
    count = 4000
    stars = FieldCatalog(rng.uniform(269.0, 271.0, count), rng.uniform(65.5, 66.5, count),
                         np.exp(rng.uniform(math.log(20.0), math.log(2000.0), count)),
                         pmra=rng.normal(0, 3, count), pmdec=rng.normal(0, 3, count))
    table = gaia_like_table(stars, np.random.default_rng(2), faint_limit_g=21.0)
    assert table.colnames == ["source_id", "ra", "dec", "ra_error", "dec_error", "pmra", "pmdec", "ref_epoch",
                              "phot_g_mean_mag"]
    assert {str(table[name].unit) for name in ("ra_error", "dec_error")} == {"mas"}
    assert str(table["pmra"].unit) == "mas / yr" and str(table["ra"].unit) == "deg"
    # G = 25 - 2.5 log10(flux): G <= 21 is flux >= 10**1.6 = 39.8 e/s.
    seen = stars.flux >= 10 ** 1.6
    assert table["source_id"].tolist() == stars.source_id[seen].tolist()
    assert np.all(table["phot_g_mean_mag"] <= 21.0) and np.all(table["ref_epoch"] == 2016.0)
    np.testing.assert_array_equal(table["pmra"], stars.pmra[seen])
    # Positions scatter about the truth by their stated errors (ra_error along the great circle).
    mas = 3.6e6
    pull_dec = (table["dec"] - stars.dec[seen]) * mas / table["dec_error"]
    pull_ra = (table["ra"] - stars.ra[seen]) * np.cos(np.radians(table["dec"])) * mas / table["ra_error"]
    for pull in (pull_ra, pull_dec):
        assert abs(np.mean(pull)) < 0.1 and np.std(pull) == pytest.approx(1.0, abs=0.06)
    assert 0.02 <= table["ra_error"].min()
    assert table["ra_error"].max() == pytest.approx(0.02 * 10 ** 1.6, rel=0.05)


# --- flat and photometry ---------------------------------------------------------------------


def test_true_flat_has_the_stated_structure():
    det = build_detector("WFI03", (264, 264), 4)
    flat = true_flat(det, "F158").astype(float)
    light = ~det.reference_pixels
    assert flat[light].mean() == pytest.approx(1.0, abs=1e-6) and np.all(flat[~light] == 1.0)
    # Pixel-to-pixel: differences of neighbours carry twice the variance of the 1.5 % noise.
    inner = flat[4:-4, 4:-4]
    assert np.std(np.diff(inner, axis=1)) / math.sqrt(2) == pytest.approx(0.015, rel=0.1)
    # Large scale: block means (the pixel noise averages away) vary by ~4 % rms.
    blocks = inner.reshape(16, 16, 16, 16).mean(axis=(1, 3))
    assert 0.03 < blocks.std() < 0.05
    assert not np.array_equal(flat, true_flat(det, "F087"))
    np.testing.assert_array_equal(flat, true_flat(det, "F158"))  # reproducible


def test_flat_reference_divides_out_the_flat_and_the_gain_structure(tmp_path):
    det = build_detector("WFI03", (48, 48), 4)
    [path] = write_references(det, tmp_path, useafter="2027-01-01T00:00:00", reftypes=["flat"],
                              optical_elements=["F158", "PRISM"])  # no FLAT for a spectral element
    with rdm.open(path) as model:
        assert isinstance(model, datamodels.FlatRefModel)
        model.validate()
        assert model.meta.instrument.optical_element == "F158"
        data, err, dq = (np.asarray(model.data), np.asarray(model.err), np.asarray(model.dq))
    flat = true_flat(det, "F158")
    light = ~det.reference_pixels
    valid = np.isfinite(data) & (data != 0)
    assert np.isnan(data).sum() == 1 and (data == 0).sum() == 1 and not np.any(dq)
    # What the pixels digitise per photo-electron of the scene (flat / gain), over the reference,
    # is one number: 1 / nominal gain.
    dn_per_electron = flat / det.gain
    usable = valid & light
    np.testing.assert_allclose(dn_per_electron[usable] / data[usable], 1 / det.nominal_gain, rtol=1e-6)
    np.testing.assert_array_equal(data[~light], 1.0)
    np.testing.assert_allclose(err[valid], 0.002 * data[valid], rtol=1e-6)


def test_photom_reference_converts_dn_per_second_to_mjy_per_sr(tmp_path):
    det = build_detector("WFI03", (16, 16), 4)
    [path] = write_references(det, tmp_path, useafter="2027-01-01T00:00:00", reftypes=["photom"])
    with rdm.open(path) as model:
        assert isinstance(model, datamodels.WfiImgPhotomRefModel)
        model.validate()
        table = model.phot_table
        assert sorted(table) == ["DARK", "F062", "F087", "F106", "F129", "F146", "F158", "F184", "F213",
                                 "GRISM", "PRISM"]
        # AB 26.4 gives 1 e/s in F158: 3631 Jy * 10**(-0.4 * 26.4) per e/s, 2 e/DN, a 0.11" pixel.
        pixel_sr = (0.11 / ARCSEC_PER_RAD) ** 2
        expected = 3631e-6 * 10 ** (-0.4 * 26.4) * 2.0 / pixel_sr
        assert table["F158"]["photmjsr"] == pytest.approx(expected, rel=1e-9)
        assert table["F158"]["pixelareasr"] == pytest.approx(pixel_sr, rel=1e-9)
        assert table["F158"]["uncertainty"] == pytest.approx(0.01 * expected)
        assert table["PRISM"]["photmjsr"] is None and table["PRISM"]["collecting_area"] > 0
        assert all(value is None for value in table["DARK"].values())
    # A star of 1000 e/s is 500 DN/s; summing its calibrated pixels (MJy/sr x sr) gives its flux.
    assert electron_rate_to_mjy(1000.0, "F158", 2.0) == pytest.approx(500 * expected * PIXEL_AREA_SR)
    assert photmjsr("F158", 2.0) == pytest.approx(expected)


# --- PSFs and spectra --------------------------------------------------------------------------


@pytest.mark.parametrize("psf", ["gaussian", "roman"])
def test_stars_keep_their_flux(psf):
    stars = Catalog(np.array([20.37, 70.0]), np.array([19.81, 74.5]), np.array([1000.0, 500.0]))
    rate = render_stars((96, 96), stars, 0.0, "F158", detector="WFI01", psf=psf)
    assert rate.sum() == pytest.approx(1500.0, rel=1e-6)
    first = rate.copy()
    first[:, 45:] = 0.0  # the first star alone: stamps reach 16 pixels at most
    assert first.sum() == pytest.approx(1000.0, rel=1e-6)
    if psf == "gaussian":  # symmetric: its centroid is its position
        y, x = np.mgrid[:96, :96]
        assert (x * first).sum() / first.sum() == pytest.approx(20.37, abs=2e-3)
        assert (y * first).sum() / first.sum() == pytest.approx(19.81, abs=2e-3)
    else:  # diffraction-limited core: sharper than the broad Gaussian's 1.5-pixel FWHM
        assert first.max() / 1000.0 > 0.15


@pytest.mark.parametrize(("x", "y"), [(20.37, 19.81), (20.0, 20.5)])
def test_roman_stars_sit_where_galsim_draws_its_psf_origin(x, y):
    """A star's pixels are galsim's own drawing of the same PSF at the star's position.

    galsim puts the PSF's origin at the position it is asked for (``drawImage`` with an
    offset, pixel response included): romanisim's convention, and romancal's ePSF's. The
    PSF's light centroid is ~0.1 pixel from that origin, so a star placed by its centroid
    differs from galsim's drawing by ~20 % of the peak (0.2 % when placed by its origin).
    """
    import galsim
    import galsim.roman

    bandpass = galsim.roman.getBandpasses()["H158"]
    optical = galsim.roman.getPSF(1, "H158", SCA_pos=galsim.PositionD(2044.5, 2044.5),
                                  wavelength=bandpass.effective_wavelength, pupil_bin=8)
    # A 41-pixel stamp: its true centre is pixel (20, 20).
    expected = optical.drawImage(nx=41, ny=41, scale=galsim.roman.pixel_scale,
                                 offset=(x - 20, y - 20)).array.astype(np.float64)
    rate = render_stars((41, 41), Catalog(np.array([x]), np.array([y]), np.array([1.0])), 0.0, "F158",
                        detector="WFI01", psf="roman")
    stamp = (slice(round(y) - 16, round(y) + 17), slice(round(x) - 16, round(x) + 17))
    expected = expected[stamp] / expected[stamp].sum()
    assert np.abs(rate[stamp] - expected).max() < 0.005 * expected.max()


def test_dispersed_catalog_spreads_each_star_along_its_column():
    trace = dispersed_catalog(Catalog(np.array([5.2]), np.array([20.0]), np.array([120.0])), -15.0, 15.0)
    assert np.all(trace.x == 5.2) and trace.y.min() == 5.0 and trace.y.max() == 35.0
    assert trace.flux.sum() == pytest.approx(120.0) and np.ptp(trace.flux) == 0
