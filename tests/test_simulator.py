"""wfisim: the ramp physics, the files it writes and the reference-file factory."""

from pathlib import Path

from romanpipe import crds_cache
from romanpipe.dqflags import pixel
from romanpipe.skycells import SkyMap

import numpy as np
import pytest
import roman_datamodels as rdm
import yaml
from astropy.time import Time
from roman_datamodels import datamodels
from scipy.stats import poisson

from wfisim.campaign import (
    CampaignConfig,
    FieldCatalog,
    detector_corners,
    simulate_campaign,
    simulate_exposure,
    sky_catalog,
)
from wfisim.detector import BORDER, build_detector
from wfisim.level1 import ExposureId
from wfisim.matables import (
    MA_TABLES,
    MaTable,
    even_ma_table,
    ma_table,
    mean_read_times,
    read_pattern_from_counts,
)
from wfisim.nonlinearity import nonlinear_response, saturation_threshold
from wfisim.pointing import DetectorGeometry, Pointing
from wfisim.ramps import PoissonDraws, RampEffect, simulate_ramp
from wfisim.references import make_reference, write_references
from wfisim.scene import Catalog, psf_fwhm_pixels, render_rate
from wfisim.truth import read_truth

FRAME = 3.04
START = Time("2027-03-01T00:00:00", format="isot", scale="utc")
UNEVEN_6 = ma_table("IMG_UNEVEN_6")


def detector(shape=(16, 16), name="WFI01", seed=7):
    return build_detector(name, shape, seed)


def science_ramp(det, rate, table, seed=1, **kwargs):
    return simulate_ramp(det.electron_rate(rate), det.science_readout(), table, seed, **kwargs)


def normal_pixel(det):
    """A light-sensitive pixel without defects."""
    row, col = np.argwhere(det.photosensitive & ~det.hot & ~det.ad_floor)[0]
    return int(row), int(col)


def one_exposure(out_dir, *, seed=(1, 2, 3), size=24, stars=None, sky=1.0):
    det = detector((size, size))
    geometry = DetectorGeometry(det.name, det.shape, Pointing.at(270.0, 66.0, 0.0))
    x, y = np.array([11.2]), np.array([12.7])
    ra, dec = geometry.pixel_to_sky(x, y)
    stars = stars or FieldCatalog(np.atleast_1d(ra), np.atleast_1d(dec), np.array([500.0]))
    return det, simulate_exposure(det, geometry, stars, sky=sky, optical_element="F158", table=UNEVEN_6,
                                  exposure_id=ExposureId(exposure=3), start_time=START, seed=list(seed),
                                  out_dir=out_dir)


# --- MA tables -------------------------------------------------------------------------------


def test_uneven_tables_average_more_reads_as_the_ramp_goes_on():
    reads_per_resultant = {name: [len(r) for r in table.read_pattern] for name, table in MA_TABLES.items()}
    assert reads_per_resultant["IMG_UNEVEN_6"] == [1, 2, 4, 8, 8, 1]
    assert reads_per_resultant["IMG_UNEVEN_16"] == [1, 2] + [4] * 11 + [8, 8, 1]
    assert reads_per_resultant["IMG_EVEN_8"] == [1] * 8
    assert MA_TABLES["IMG_UNEVEN_16"].last_read == 64


def test_mean_read_times_and_exposure_time():
    assert mean_read_times([[1], [2, 3], [4, 5, 6, 7]], FRAME) == pytest.approx([3.04, 7.6, 16.72])
    assert UNEVEN_6.exposure_time == pytest.approx(24 * FRAME)
    assert UNEVEN_6.effective_exposure_time == pytest.approx(FRAME * (24 - 1))


def test_read_pattern_from_counts_groups_consecutive_reads():
    assert read_pattern_from_counts([1, 2, 4]) == ((1,), (2, 3), (4, 5, 6, 7))


def test_even_table_for_ground_tests():
    table = ma_table("EVEN_55")
    assert table == even_ma_table(55)
    assert table.read_pattern[:2] == ((1,), (2,)) and table.read_pattern[-1] == (55,)


def test_read_pattern_must_increase():
    with pytest.raises(ValueError, match="increasing"):
        MaTable("BAD", 1, ((1, 2), (2, 3)))


# --- ramp physics ------------------------------------------------------------------------------


@pytest.mark.parametrize("mean", [0.05, 0.8, 3.04, 7.9])
def test_tabulated_poisson_draws_follow_the_poisson_distribution(mean):
    draws = PoissonDraws(np.full(200_000, mean), np.random.default_rng(5)).draw()
    counts = np.bincount(draws.astype(int))
    expected = poisson.pmf(np.arange(counts.size), mean) * draws.size
    frequent = expected > 50
    # Each well-populated bin within 5 sigma of its Poisson expectation.
    assert np.all(np.abs(counts[frequent] - expected[frequent]) < 5 * np.sqrt(expected[frequent]))
    assert draws.mean() == pytest.approx(mean, abs=5 * np.sqrt(mean / draws.size))


def test_mixed_small_and_large_means_draw_from_the_right_distribution():
    means = np.tile([2.0, 500.0], 50_000)
    draws = PoissonDraws(means, np.random.default_rng(2)).draw()
    for mean in (2.0, 500.0):
        sample = draws[means == mean]
        assert sample.mean() == pytest.approx(mean, abs=5 * np.sqrt(mean / sample.size))
        assert sample.var() == pytest.approx(mean, rel=0.03)


@pytest.mark.parametrize("rate", [2.0, 60.0])  # 6 and 182 e per read: tabulated and numpy draws
def test_mean_single_read_difference_is_rate_over_gain_times_frame_time(rate):
    det = detector((40, 40))
    table = even_ma_table(20)
    data = science_ramp(det, np.full(det.shape, rate), table).resultants.astype(np.float64)
    # Unsaturated pixels on the linear part of the A/D range.
    light = det.photosensitive & ~det.hot & ~det.ad_floor
    gain, read_noise = det.gain[light].astype(float), det.read_noise[light].astype(float)
    electrons = (rate + det.dark_current[light]) * FRAME

    # The mean of a pixel's read-to-read differences telescopes to (last - first) / (n - 1).
    n = table.nresultants
    measured = (data[-1] - data[0])[light] / (n - 1)
    expected = electrons / gain
    # Poisson charge between the first and last read, read noise and rounding of both reads.
    variance = (electrons * (n - 1) / gain**2 + 2 * read_noise**2 + 2 / 12) / (n - 1) ** 2
    error_of_mean = np.sqrt(variance.sum()) / light.sum()
    assert abs((measured - expected).mean()) < 4 * error_of_mean

    # The scatter of single differences carries the Poisson noise as well as the read noise.
    differences = np.diff(data, axis=0)[:, light]
    expected_variance = electrons / gain**2 + 2 * read_noise**2 + 2 / 12
    assert (differences - expected).var() == pytest.approx(expected_variance.mean(), rel=0.05)


class RecordReads(RampEffect):
    """Keeps every digitized read and its charge (the last effect sees the final DN)."""

    def __init__(self):
        self.dn, self.charge = {}, {}

    def add_signal(self, chunk, read_number, charge, dn):
        self.dn[read_number] = dn.copy()
        self.charge[read_number] = charge.copy()


def test_resultants_are_rounded_clipped_means_of_their_reads():
    det = detector((12, 12))
    # Read 4 is skipped: it collects charge but is never digitized.
    table = MaTable("GAPPY", 1, ((1,), (2, 3), (5, 6, 7)))
    rate = np.full(det.shape, 40.0)
    full = normal_pixel(det)
    rate[full] = 20_000.0  # saturates during the last resultant
    recorder = RecordReads()
    resultants = science_ramp(det, rate, table, effects=[recorder]).resultants

    assert sorted(recorder.dn) == [1, 2, 3, 5, 6, 7]
    nrows, ncols = det.shape
    for index, reads in enumerate(table.read_pattern):
        for row in range(nrows):
            for col in range(ncols):
                mean = sum(recorder.dn[read][row, col] for read in reads) / len(reads)
                assert resultants[index, row, col] == min(max(round(mean), 0), 65535)

    charge = np.array([recorder.charge[read] for read in (1, 2, 3, 5, 6, 7)])
    assert np.all(np.diff(charge, axis=0) >= 0)
    assert np.all(charge <= det.full_well)
    assert charge[(-1, *full)] == det.full_well[full]
    # What is left after the charge's DN is the read noise.
    residual = np.array([recorder.dn[read] for read in (1, 2, 3, 5, 6, 7)]) - charge / det.gain - det.bias
    assert residual.std() / det.read_noise.mean() == pytest.approx(1.0, abs=0.1)


def test_late_reads_saturate_while_the_resultant_stays_below_the_threshold():
    det = detector()
    rate = np.full(det.shape, 1.0)
    pix = normal_pixel(det)
    # Full well at read 20, inside resultant 4 (reads 16 to 23): its reads 20-23 are full.
    rate[pix] = float(det.full_well[pix]) / (20 * FRAME)
    ramp = science_ramp(det, rate, UNEVEN_6)

    value = ramp.resultants[(4, *pix)]
    threshold = det.saturation_threshold[pix]
    assert value < threshold
    assert ramp.first_saturated_resultant[pix] == 4
    # The saturation step's diluted threshold (<t>/max(t) = 19.5 / 23) still catches it.
    assert value >= threshold * 19.5 / 23
    # A full resultant reads the saturation level, above the threshold.
    assert ramp.resultants[(5, *pix)] > threshold
    assert np.count_nonzero(ramp.first_saturated_resultant >= 0) == np.count_nonzero(
        ramp.first_saturated_resultant[det.hot] >= 0) + 1


def test_ad_floor_pixels_read_zero():
    det = detector((32, 32))
    data = science_ramp(det, np.full(det.shape, 1.0), UNEVEN_6).resultants
    assert det.ad_floor.sum() >= 1
    assert np.all(data[:, det.ad_floor] == 0)
    assert np.all(data[:, ~det.ad_floor] > 0)


def test_dead_and_reference_pixels_collect_no_signal():
    det = detector((32, 32))
    data = science_ramp(det, np.full(det.shape, 500.0), UNEVEN_6).resultants.astype(float)
    signal = data[-1] - data[0]
    # Noise only: two reads of at most 7 DN read noise each.
    assert np.all(np.abs(signal[det.dead]) < 5 * np.sqrt(2) * 7)
    assert np.all(np.abs(signal[det.reference_pixels]) < 5 * np.sqrt(2) * 7)
    assert det.reference_pixels.sum() == 32 * 32 - (32 - 2 * BORDER) ** 2
    light = det.photosensitive
    assert np.all(signal[light] > 500 * 23 * FRAME / 2.2 * 0.9)


def test_output_does_not_depend_on_the_number_of_threads():
    det = detector((80, 16))  # three row chunks
    rate = np.full(det.shape, 5.0)
    one = science_ramp(det, rate, UNEVEN_6, workers=1)
    three = science_ramp(det, rate, UNEVEN_6, workers=3)
    assert np.array_equal(one.resultants, three.resultants)
    assert np.array_equal(one.first_saturated_resultant, three.first_saturated_resultant)


# --- scene -----------------------------------------------------------------------------------


@pytest.mark.parametrize("optical_element", ["F062", "F158", "F213"])
def test_point_source_pixels_sum_to_its_flux(optical_element):
    catalog = Catalog(np.array([31.3]), np.array([28.7]), np.array([1234.0]))
    rate = render_rate((64, 64), catalog, 0.0, psf_fwhm_pixels(optical_element))
    assert rate.sum() == pytest.approx(1234.0, rel=0.01)
    assert np.unravel_index(rate.argmax(), rate.shape) == (29, 31)


def test_psf_widens_with_wavelength():
    assert psf_fwhm_pixels("F062") < psf_fwhm_pixels("F158") < psf_fwhm_pixels("F213")
    assert 1.0 < psf_fwhm_pixels("F158") < 2.0


# --- geometry --------------------------------------------------------------------------------


def test_pointing_round_trips_and_dithers_shift_the_sky():
    home = Pointing.at(270.0, 66.0, 30.0)
    assert (home.ra, home.dec, home.pa_v3) == pytest.approx((270.0, 66.0, 30.0))
    geometry = DetectorGeometry("WFI07", (4096, 4096), home)
    x, y = np.array([10.0, 4000.0]), np.array([20.0, 3000.0])
    ra, dec = geometry.pixel_to_sky(x, y)
    np.testing.assert_allclose(geometry.sky_to_pixel(ra, dec), (x, y), atol=1e-6)
    dithered = DetectorGeometry("WFI07", (4096, 4096), home.dithered(2.5, -1.5))
    # The slew moves the sky by minus the step in WFI_CEN's ideal frame (0.11" nominal pixels):
    # ideal x is -V2 rotated by 60 deg (V3IdlYAngle -60, VIdlParity -1).
    angle = np.radians(-60.0)
    step_v2 = -2.5 * 0.11 * np.cos(angle) + -1.5 * 0.11 * np.sin(angle)
    step_v3 = 2.5 * 0.11 * np.sin(angle) + -1.5 * 0.11 * np.cos(angle)
    v2, v3 = geometry.pointing.sky_to_v2v3(ra, dec)
    v2_after, v3_after = dithered.pointing.sky_to_v2v3(ra, dec)
    # (A slew is a rotation, not a shift of V2/V3: 0.1 mas apart a quarter degree from WFI_CEN.)
    np.testing.assert_allclose((v2_after - v2, v3_after - v3), ([-step_v2] * 2, [-step_v3] * 2), atol=1e-4)
    # In WFI07's pixels that is the nominal step to within its scale and distortion (a few per cent).
    shift = np.array(dithered.sky_to_pixel(ra, dec)) - (x, y)
    np.testing.assert_allclose(shift, [[-2.5, -2.5], [1.5, 1.5]], atol=0.08)


# --- files -----------------------------------------------------------------------------------


def test_exposure_files_open_validate_and_carry_the_metadata(tmp_path):
    det, (uncal, truth_path) = one_exposure(tmp_path)
    assert uncal.name == "r0000101001001001001_01101_0003_WFI01_uncal.asdf"
    assert truth_path.name == "r0000101001001001001_01101_0003_WFI01_truth.asdf"
    with rdm.open(uncal) as model:
        assert isinstance(model, datamodels.ScienceRawModel)
        model.validate()
        assert model.data.dtype == np.uint16 and model.data.shape == (6, 24, 24)
        assert model.amp33.dtype == np.uint16 and model.amp33.shape == (6, 24, 4)
        exposure = model.meta.exposure
        assert exposure.read_pattern == UNEVEN_6.read_pattern_lists()
        assert exposure.nresultants == 6 and exposure.ma_table_name == "IMG_UNEVEN_6"
        assert exposure.type == "WFI_IMAGE"
        assert exposure.frame_time == FRAME and exposure.truncated is False
        assert (exposure.end_time - exposure.start_time).sec == pytest.approx(24 * FRAME)
        assert model.meta.instrument.detector == "WFI01"
        assert model.meta.instrument.optical_element == "F158"
        assert model.meta.observation.exposure == 3
        assert model.meta.wcsinfo.aperture_name == "WFI01_FULL"
        data = np.asarray(model.data)

    truth = read_truth(truth_path)
    assert truth["read_pattern"] == UNEVEN_6.read_pattern_lists()
    assert truth["catalog"]["x"] == pytest.approx([11.2]) and truth["catalog"]["y"] == pytest.approx([12.7])
    assert truth["catalog"]["flux_e_per_s"] == pytest.approx([500.0])
    # The pixels collect the scene times the true flat.
    scene = truth["rate_e_per_s"] / truth["flat"]
    assert scene.sum() == pytest.approx(1.0 * 24 * 24 + 500.0, rel=1e-3)
    assert np.array_equal(truth["detector"]["bias_dn"], det.bias)
    assert np.array_equal(truth["detector"]["dead"], det.dead)
    assert truth["first_saturated_resultant"].shape == (24, 24)
    # The star is in the data where the truth puts it.
    signal = data[-1].astype(float) - data[0]
    brightest = np.argmax(np.where(det.photosensitive & ~det.hot, signal, 0))
    assert np.unravel_index(brightest, signal.shape) == (13, 11)


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    _, (uncal, truth) = one_exposure(tmp_path / "a")
    _, (uncal_again, truth_again) = one_exposure(tmp_path / "b")
    _, (uncal_other, _) = one_exposure(tmp_path / "c", seed=(1, 2, 4))
    assert truth.read_bytes() == truth_again.read_bytes()
    with rdm.open(uncal) as a, rdm.open(uncal_again) as b, rdm.open(uncal_other) as c:
        assert np.asarray(a.data).tobytes() == np.asarray(b.data).tobytes()
        assert np.asarray(a.amp33).tobytes() == np.asarray(b.amp33).tobytes()
        # roman_datamodels stamps meta.file_date with the wall clock on every write.
        def metadata(model):
            return {key: value for key, value in model.meta.to_flat_dict().items() if key != "file_date"}

        assert metadata(a) == metadata(b)
        assert not np.array_equal(a.data, c.data)


# --- reference files -------------------------------------------------------------------------


def test_reference_files_have_the_right_models_metadata_and_values(tmp_path):
    det = detector((32, 32))
    paths = write_references(det, tmp_path, useafter="2027-02-28T00:00:00")
    assert [p.name for p in paths] == ["roman_wfi_mask_0001.asdf", "roman_wfi_saturation_0001.asdf",
                                       "roman_wfi_gain_0001.asdf", "roman_wfi_readnoise_0001.asdf",
                                       "roman_wfi_linearity_0001.asdf",
                                       "roman_wfi_inverselinearity_0001.asdf",
                                       "roman_wfi_integralnonlinearity_0001.asdf", "roman_wfi_dark_0001.asdf",
                                       "roman_wfi_photom_0001.asdf"]
    expected = {"mask": datamodels.MaskRefModel, "saturation": datamodels.SaturationRefModel,
                "gain": datamodels.GainRefModel, "readnoise": datamodels.ReadnoiseRefModel,
                "linearity": datamodels.LinearityRefModel,
                "inverselinearity": datamodels.InverselinearityRefModel,
                "integralnonlinearity": datamodels.IntegralnonlinearityRefModel,
                "dark": datamodels.DarkRefModel, "photom": datamodels.WfiImgPhotomRefModel}
    for path, (reftype, model_type) in zip(paths, expected.items(), strict=True):
        with rdm.open(path) as model:
            assert isinstance(model, model_type)
            model.validate()
            meta = model.meta
            assert meta.reftype == reftype.upper()
            assert meta.instrument.name == "WFI" and meta.instrument.detector == "WFI01"
            assert meta.telescope == "ROMAN" and meta.pedigree == "SIMULATION"
            assert meta.author and meta.description and meta.origin
            assert meta.useafter == Time("2027-02-28T00:00:00")
            if reftype == "mask":
                dq = np.asarray(model.dq)
                assert np.array_equal(dq & pixel.DEAD != 0, det.dead)
                assert np.array_equal(dq & pixel.HOT != 0, det.hot)
            elif reftype == "saturation":
                data, dq = np.asarray(model.data), np.asarray(model.dq)
                known = ~np.isnan(data)
                assert 1 <= np.count_nonzero(~known) and 1 <= np.count_nonzero(dq & pixel.NO_SAT_CHECK)
                response = nonlinear_response(det)
                assert np.array_equal(data[known], saturation_threshold(det, response)[known])
                level = det.bias + response.measured_signal(det.full_well / response.gain)
                assert np.all((level - data)[known] == pytest.approx(5 * det.read_noise[known], abs=0.01))
            elif reftype == "gain":
                assert np.array_equal(model.data, det.gain)
            elif reftype == "linearity":
                assert model.coeffs.shape == (4, 32, 32)
            elif reftype == "inverselinearity":
                assert model.coeffs.shape == (6, 32, 32) and not np.asarray(model.dq).any()
            elif reftype == "integralnonlinearity":
                # The simulated A/D converter has no integral nonlinearity.
                assert meta.n_channels == 32 and meta.n_pixels_per_channel == 128
                assert not np.asarray(model.inl_table.science_channel_01.correction).any()
            elif reftype == "dark":
                assert np.array_equal(model.dark_slope, (det.dark_current / det.gain).astype(np.float32))
                assert meta.exposure.type == "WFI_IMAGE"
            elif reftype == "photom":
                table = model.phot_table
                assert table["F158"]["photmjsr"] > 0 and table["PRISM"]["photmjsr"] is None
            else:
                assert np.array_equal(model.data, det.read_noise)
                assert meta.exposure.type == "WFI_IMAGE"
                assert meta.exposure.p_exptype == "WFI_IMAGE|WFI_SPECTRAL|"
    # A second delivery gets new names.
    assert write_references(det, tmp_path, useafter="2027-02-28T00:00:00", reftypes=["gain"])[0].name == \
        "roman_wfi_gain_0002.asdf"


def test_unknown_reftype_is_refused():
    with pytest.raises(ValueError, match="no reference factory"):
        make_reference("area", detector(), useafter="2027-01-01T00:00:00")


def test_optical_element_is_required_exactly_where_crds_selects_on_it():
    with pytest.raises(ValueError, match="optical element is required"):
        make_reference("flat", detector(), useafter="2027-01-01T00:00:00")
    with pytest.raises(ValueError, match="no optical element"):
        make_reference("gain", detector(), useafter="2027-01-01T00:00:00", optical_element="F158")
    with pytest.raises(ValueError, match="no reference for optical element"):
        make_reference("flat", detector(), useafter="2027-01-01T00:00:00", optical_element="PRISM")


# --- campaign --------------------------------------------------------------------------------


def test_epsf_reference_is_the_psf_the_stars_are_drawn_with():
    """A star drawn at a sample of the EPSF's grid has the EPSF's values at its pixels."""
    from wfisim.psf import OVERSAMPLING, ROMAN_STAMP_HALF_WIDTH, render_stars

    model = make_reference("epsf", detector(name="WFI03"), useafter="2027-01-01T00:00:00",
                           optical_element="F158")
    model.validate()
    psf = np.asarray(model.psf)
    assert psf.shape == (1, 1, 1, 133, 133) and model.meta.oversample == OVERSAMPLING
    assert psf.sum() == pytest.approx(OVERSAMPLING**2, rel=1e-6)
    shape = (2 * ROMAN_STAMP_HALF_WIDTH + 1,) * 2
    centre = float(ROMAN_STAMP_HALF_WIDTH)
    star = render_stars(shape, Catalog(np.array([centre]), np.array([centre]), np.array([1000.0])), 0.0,
                        "F158", detector="WFI03", psf="roman")
    native = psf[0, 0, 0, 2::OVERSAMPLING, 2::OVERSAMPLING]  # the samples at the pixel centres
    np.testing.assert_allclose(star, 1000.0 * native / native.sum(), rtol=1e-4, atol=1e-6)


def test_apcorr_reference_is_the_encircled_energy_of_the_epsf_reference(tmp_path):
    """One APCORR per detector, a row per imaging filter of the campaign: the fraction of a simulated
    star's flux (its stamp's) within each radius, summed here pixel by pixel on a star drawn
    by the simulator at a pixel centre, in circles of whole pixels."""
    from wfisim.psf import ROMAN_STAMP_HALF_WIDTH, render_stars

    paths = write_references(detector(name="WFI03"), tmp_path, useafter="2027-01-01T00:00:00",
                             reftypes=["apcorr"], optical_elements=["F158", "PRISM", "F062", "F158"])
    [path] = paths
    with rdm.open(path) as model:
        model.validate()
        assert model.meta.reftype == "APCORR" and model.meta.instrument.detector == "WFI03"
        assert list(model.data) == ["F062", "F158"]
        row = model.data["F158"]
        radii, fractions = np.asarray(row["ee_radii"]), np.asarray(row["ee_fractions"])
        np.testing.assert_allclose(np.asarray(row["ap_corrections"]) * fractions, 1.0)
    assert radii[0] == pytest.approx(0.1) and radii[-1] == pytest.approx(ROMAN_STAMP_HALF_WIDTH)
    assert np.all(np.diff(fractions) > 0) and 0.98 < fractions[-1] < 1.0  # the stamp's corners beyond
    half = ROMAN_STAMP_HALF_WIDTH
    centre = np.array([float(half)])
    star = render_stars((2 * half + 1,) * 2, Catalog(centre, centre, np.array([1.0])), 0.0, "F158",
                        detector="WFI03", psf="roman")
    y, x = np.mgrid[-half:half + 1, -half:half + 1]
    # A circle of radius r + 0.5 holds the pixels whose centres lie within r + 0.5 ~ the same area
    # as the exact circle: compare where the ring of partly covered pixels carries little light.
    for radius in (4.0, 8.0, 12.0):
        within = star[np.hypot(x, y) <= radius].sum()
        assert np.interp(radius, radii, fractions) == pytest.approx(within, abs=0.01)
    assert write_references(detector(name="WFI03"), tmp_path, useafter="2027-01-01T00:00:00",
                            reftypes=["apcorr"], optical_elements=["PRISM"]) == []


def test_a_far_dither_without_saturating_stars_gets_its_stars():
    """Saturating stars are kept inside every dither; with none to place, a dither wider than
    half the array is fine (numpy refused the empty draw from an inverted range)."""
    mapping = {"detectors": ["WFI01"], "exposures_per_filter": 2, "dithers": [[0, 0], [90, 60]],
               "size": 64, "stars": 5, "saturating_stars": 0}
    detectors = [build_detector("WFI01", (64, 64), 1)]
    home = Pointing.at(270.0, 66.0, 0.0)
    stars = sky_catalog(CampaignConfig.from_mapping(mapping), detectors, home, UNEVEN_6)
    assert len(stars.flux) >= 5
    with pytest.raises(ValueError, match="1 saturating star"):
        config = CampaignConfig.from_mapping({**mapping, "saturating_stars": 1})
        sky_catalog(config, detectors, home, UNEVEN_6)


def test_campaign_writes_exposures_truth_references_crds_cache_and_workflow_config(tmp_path):
    config = CampaignConfig.from_mapping({
        "detectors": ["WFI01", "WFI02"], "filters": ["F087"], "exposures_per_filter": 2,
        "dithers": [[0, 0], [2.5, 1.5]], "size": 32, "stars": 3, "saturating_stars": 1, "seed": 3,
    })
    outputs = simulate_campaign(config, tmp_path)
    names = sorted(path.name for path in outputs.uncal)
    assert names == [f"r0000101001001001001_01101_000{e}_WFI0{d}_uncal.asdf" for e in (1, 2) for d in (1, 2)]
    assert all(path.is_file() for path in outputs.uncal + outputs.truth)
    assert yaml.safe_load(outputs.workflow_config.read_text()) == {
        "inputs": {"uncal_dir": "uncal"}, "crds": {"path": "crds_cache"},
        "tweakreg": {"abs_refcat": "catalogs/gaia_like.ecsv"},  # no network: the campaign's catalog
        "refpix": {"skip": True}}  # arrays too small for the 32-output readout: no REFPIX reference
    assert crds_cache.current_context(tmp_path / "crds_cache") == outputs.crds_context
    assert crds_cache.context_references(tmp_path / "crds_cache", outputs.crds_context) == sorted(
        path.name for path in outputs.references)
    # Per detector: MASK SATURATION GAIN READNOISE LINEARITY INVERSELINEARITY INTEGRALNONLINEARITY DARK
    # PHOTOM APCORR, and DISTORTION, FLAT and EPSF of F087; one DARKDECAYSIGNAL and the sky map of the
    # campaign's sky, whose cells cover every detector's corners.
    assert len(outputs.references) == 2 * 13 + 2
    skymap = SkyMap.read(next(path for path in outputs.references if "skycells" in path.name))
    for det in ("WFI01", "WFI02"):
        geometry = DetectorGeometry(det, (32, 32), Pointing.at(**config.pointing))
        ra, dec = detector_corners(geometry)
        for r, d in zip(ra, dec, strict=True):
            assert skymap.cells_touching(f"POLYGON ICRS {r} {d} {r + 1e-5} {d} {r} {d + 1e-5}")
    for path in outputs.references:
        with rdm.open(path) as model:
            assert model.meta.useafter < Time(config.start_time)

    # The dither moves every star by minus the offset on the detector.
    first, second = (read_truth(tmp_path / "truth" / f"r0000101001001001001_01101_000{e}_WFI01_truth.asdf")
                     for e in (1, 2))
    _, in_first, in_second = np.intersect1d(first["catalog"]["source_id"], second["catalog"]["source_id"],
                                            return_indices=True)
    assert in_first.size >= 3
    # Within the local pixel scale (< 2 % off the nominal 0.11") and the stars' motion in 2.6 min.
    assert second["catalog"]["x"][in_second] == pytest.approx(first["catalog"]["x"][in_first] - 2.5, abs=0.05)
    assert second["catalog"]["y"][in_second] == pytest.approx(first["catalog"]["y"][in_first] - 1.5, abs=0.05)


def test_campaign_config_rejects_unknown_settings():
    with pytest.raises(ValueError, match="unknown campaign setting"):
        CampaignConfig.from_mapping({"detector": ["WFI01"]})


def test_demo_config_is_valid():
    config = CampaignConfig.from_yaml(Path(__file__).parents[1] / "config" / "demo_campaign.yaml")
    assert config.detectors == ["WFI01", "WFI02"] and config.filters == ["F158", "F087"]
    assert len(ma_table(config.ma_table).read_pattern) == 6 and config.size == 256
    # A mosaic needs sub-pixel phases: the dithers' fractional parts visit all four half-pixel phases.
    phases = {(dx % 1, dy % 1) for dx, dy in config.dither_offsets()}
    assert len(config.dither_offsets()) >= 4 and phases == {(0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.5, 0.5)}
    assert config.pointing_error["offset_arcsec"] > 0 and config.pointing_error["roll_deg"] > 0
    assert config.spectral_exposures == {"PRISM": 1} and config.cosmic_ray_flux_per_cm2_s == 5.0
    assert [element for element, _ in config.observations()] == ["F158", "F087", "PRISM"]


@pytest.mark.parametrize(("setting", "message"), [
    ({"filters": ["F999"]}, "unknown imaging filter"),
    ({"spectral_exposures": {"F158": 1}}, "unknown spectral element"),
    ({"psf": "airy"}, "unknown psf"),
    ({"pointing_error": {"offset_arcsec": 1.0}}, "offset_arcsec and roll_deg"),
])
def test_campaign_config_rejects_bad_values(setting, message):
    with pytest.raises(ValueError, match=message):
        CampaignConfig.from_mapping(setting)
