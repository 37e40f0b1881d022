"""refpix: the readout's time order, each piece by hand, simulated effects removed, romancal parity."""

import logging

import numpy as np
import pytest
import roman_datamodels as rdm
from astropy.time import Time
from roman_datamodels import datamodels

import dq_init
import refpix
from refpix import (
    ReadoutLayout,
    ReferenceShapeError,
    correct_reference_pixels,
    cosine_fill,
    fourier_fill,
    reference_row_trends,
    resultant_means,
)
from wfisim import references
from wfisim.campaign import FieldCatalog, simulate_exposure
from wfisim.detector import build_detector
from wfisim.level1 import ExposureId
from wfisim.matables import ma_table
from wfisim.pointing import DetectorGeometry, Pointing
from wfisim.ramps import Chunk, simulate_ramp
from wfisim.refpix_effects import (
    REFPIX_DESCRIPTION,
    ElectronicsParameters,
    ReferencePixelEffects,
    build_refpix_reference,
    readout_electronics,
    refpix_coefficients,
)

BAD_REF_PIXEL = 2**17  # roman_datamodels' pixel flag
UNEVEN_6 = ma_table("IMG_UNEVEN_6")
OFFSETS_AND_DRIFTS = ElectronicsParameters(amplifier_offset_dn=30.0, correlated_noise_dn=0.0)
CORRELATED_NOISE = ElectronicsParameters(offset_jump_dn=0.0, drift_dn=0.0)
# The smallest layout: 32 amplifiers of 4 columns (all border), 8 rows (all reference rows).
TINY = ReadoutLayout(nrows=8, width=4)


def correct(data, amp33, *, gamma=None, zeta=None, alpha=None, pixeldq=None, **options):
    layout = ReadoutLayout.for_ramp(data.shape, amp33.shape)
    zero = np.zeros((32, layout.n_frequencies), np.complex128)
    pixeldq = np.zeros(data.shape[1:], np.uint32) if pixeldq is None else pixeldq
    return correct_reference_pixels(data, amp33, pixeldq, zero if gamma is None else gamma,
                                    zero if zeta is None else zeta, zero if alpha is None else alpha,
                                    **options)


def random_ramp(layout, nresultants=3, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.integers(9000, 11000, (nresultants, layout.nrows, layout.ncols)).astype(np.float32)
    amp33 = rng.integers(9000, 11000, (nresultants, layout.nrows, layout.width)).astype(np.uint16)
    return data, amp33


ONLY_CORRELATION = {"remove_offset": False, "remove_trends": False,
                    "cosine_interpolate": False, "fft_interpolate": False}


# ------------------------------------------------------------------------ time order of the readout


def test_amplifiers_alternate_read_direction():
    layout = ReadoutLayout(nrows=8, width=8)
    amplifier, position = layout.column_read_order()
    assert amplifier[[0, 7, 8, 15, 16, 255]].tolist() == [0, 0, 1, 1, 2, 31]
    # Amplifier 0 reads left to right, amplifier 1 right to left, amplifier 31 (odd) too.
    assert position[[0, 7, 8, 15, 16, 255, 248]].tolist() == [0, 7, 7, 0, 0, 0, 7]


def test_read_times_count_the_idle_pixel_times_at_the_end_of_each_row():
    layout = ReadoutLayout(nrows=8, width=8)  # row period 8 + 12 = 20 pixel times
    science, amp33 = layout.read_times()
    assert science[0, 0] == 0 and science[0, 7] == 7
    assert science[1, 0] == 20 and science[1, 8] == 27 and science[1, 15] == 20
    assert science[2, 255] == 40  # the right border is read first by its amplifier
    assert amp33[3].tolist() == list(range(60, 68))
    assert layout.stream_length == 160 and layout.n_frequencies == 81


def test_streams_hold_each_amplifier_in_read_order_and_round_trip():
    layout = ReadoutLayout(nrows=8, width=8)
    frame = np.arange(8 * 256, dtype=np.float64).reshape(8, 256)
    amp33 = np.arange(64, dtype=np.float64).reshape(8, 8) + 1e5
    streams = layout.to_streams(frame, amp33, out=np.full((33, 8, 20), np.nan))
    assert streams[0, 2, :8].tolist() == frame[2, 0:8].tolist()
    assert streams[1, 2, :8].tolist() == frame[2, 15:7:-1].tolist()
    assert streams[32, 5, :8].tolist() == amp33[5].tolist()
    assert not streams[:, :, 8:].any()  # idle pixel times
    np.testing.assert_array_equal(layout.to_frame(streams), frame)


def test_simulator_and_step_agree_on_when_each_pixel_is_read():
    detector = build_detector("WFI01", (16, 256), 1)
    electronics = readout_electronics(detector)
    output, position = electronics.output_order("science", 256)
    amplifier, step_position = ReadoutLayout(16, 8).column_read_order()
    np.testing.assert_array_equal(output, amplifier)
    np.testing.assert_array_equal(position, step_position)
    assert electronics.frame_length == ReadoutLayout(16, 8).stream_length


# ------------------------------------------------------------------------ the pieces, by hand


def test_resultant_means_are_the_offsets():
    cube = np.array([[[1.0, 10.0]], [[2.0, 10.0]], [[6.0, 13.0]]], np.float32)
    assert resultant_means(cube).tolist() == [[3.0, 11.0]]


def test_trend_fit_uses_only_usable_reference_row_samples():
    layout = ReadoutLayout(nrows=12, width=4)
    times = layout.centered_times()
    rng = np.random.default_rng(1)
    streams = rng.normal(0, 100, (33, 12, 16))  # middle rows: ignored by the fit
    line = 2.0 + 0.5 * times
    for rows in (slice(0, 4), slice(8, 12)):
        streams[:, rows] = line[rows]
    usable = layout.usable_samples(np.zeros((12, 128), bool))
    streams[:, :, 4:] = 0.0  # idle samples
    streams[3, 0, 1] = 1e6  # a flagged reference pixel
    usable[3, 0, 1] = False
    slope, intercept = reference_row_trends(streams, usable, times)
    np.testing.assert_allclose(slope, 0.5, rtol=1e-12)
    np.testing.assert_allclose(intercept, 2.0, rtol=1e-12)


def test_trend_fit_of_an_amplifier_without_usable_samples_is_flat_zero():
    streams = np.ones((33, 8, 16))
    usable = np.zeros((33, 8, 16), bool)
    slope, intercept = reference_row_trends(streams, usable, TINY.centered_times())
    assert not slope.any() and not intercept.any()


def test_cosine_fill_is_the_cosine_weighted_mean_of_the_present_neighbours():
    stream = np.array([0.0, 0.0, 99.0, 6.0, 0.0])
    present = np.array([True, True, False, True, True])
    c1, c2 = np.cos(np.pi / 32), np.cos(2 * np.pi / 32)
    filled = cosine_fill(stream, present)
    assert filled[2] == pytest.approx(6.0 * c1 / (2 * c1 + 2 * c2))
    assert filled[[0, 1, 3, 4]].tolist() == [0.0, 0.0, 6.0, 0.0]


def test_cosine_fill_far_from_any_read_sample_gives_zero():
    present = np.zeros(40, bool)
    present[0] = True
    filled = cosine_fill(np.full(40, 5.0), present)
    assert filled[1:16].tolist() == [5.0] * 15 and not filled[16:].any()


def test_fourier_fill_is_three_rounds_of_the_apodized_low_pass():
    # The taper (1 + cos)/2 smooths by [1/4, 1/2, 1/4]: a hole in a field of ones fills 0.5, 0.75, 0.875.
    stream = np.ones(64)
    stream[10] = 0.0
    present = np.ones(64, bool)
    present[10] = False
    assert fourier_fill(stream, present, rounds=1)[10] == pytest.approx(0.5)
    filled = fourier_fill(stream, present)
    assert filled[10] == pytest.approx(0.875)
    assert (filled[present] == 1.0).all()


def test_fourier_fill_equals_the_apodized_fourier_transform():
    rng = np.random.default_rng(2)
    stream = rng.normal(size=100)
    present = rng.random(100) > 0.3
    expected = stream.copy()
    taper = 0.5 * (1 + np.cos(2 * np.pi * np.arange(51) / 100))
    expected[~present] = np.fft.irfft(np.fft.rfft(expected) * taper, 100)[~present]
    np.testing.assert_allclose(fourier_fill(stream, present, rounds=1), expected, atol=1e-12)


# ------------------------------------------------------------------------ the kernel, by hand


def test_offset_alone_is_removed_and_restored():
    data, amp33 = random_ramp(TINY)
    np.testing.assert_array_equal(correct(data, amp33, **{**ONLY_CORRELATION, "remove_offset": True}), data)


def test_a_single_resultant_is_its_own_offset_and_comes_out_unchanged():
    data, amp33 = random_ramp(TINY, nresultants=1)
    unit = np.ones((32, TINY.n_frequencies), np.complex128)
    np.testing.assert_array_equal(correct(data, amp33, gamma=unit, alpha=unit), data)


def test_trends_remove_amplifier_offsets_drifts_and_a_discretization_like_bias():
    layout = ReadoutLayout(nrows=16, width=8)
    science_times, amp33_times = layout.read_times()
    amplifier, _ = layout.column_read_order()
    rng = np.random.default_rng(3)
    bias = rng.integers(9000, 11000, (16, 256)).astype(np.float64)
    # Per resultant: -0.5 + 1/(2N)-like constant for every pixel, and per amplifier a jump and a drift.
    reads = np.array([1, 2, 4, 8])
    constant = -0.5 + 1.0 / (2 * reads)
    jump = rng.normal(0, 5, (4, 33))
    drift = rng.normal(0, 1e-2, (4, 33))
    data = np.stack([bias + constant[k] + jump[k, amplifier] + drift[k, amplifier] * science_times
                     for k in range(4)]).astype(np.float32)
    amp33 = np.full((4, 16, 8), 10000, np.uint16)
    out = correct(data, amp33, remove_trends=True, cosine_interpolate=False, fft_interpolate=False)
    # Only a constant per pixel is left: the pixel's mean, which the offset step puts back.
    np.testing.assert_allclose(out - out.mean(axis=0), 0.0, atol=2e-3)
    np.testing.assert_allclose(out.mean(axis=0), data.mean(axis=0), atol=2e-3)


def test_unit_alpha_subtracts_amp33_read_at_the_same_time():
    layout = ReadoutLayout(nrows=8, width=8)
    data, amp33 = random_ramp(layout, seed=4)
    # Undo the coefficient normalization 2 x bins / length: the filter becomes the identity.
    unit = np.full((32, 81), 160 / (2 * 81), np.complex128)
    out = correct(data, amp33, alpha=unit, **ONLY_CORRELATION)
    expected = data.astype(np.float64)
    # Column 9 is amplifier 1, read right to left: position 6, as amp33's column 6.
    assert out[1, 3, 9] == pytest.approx(expected[1, 3, 9] - amp33[1, 3, 6], abs=1e-3)
    assert out[2, 7, 16] == pytest.approx(expected[2, 7, 16] - amp33[2, 7, 0], abs=1e-3)
    assert layout.n_frequencies == 81


def test_unit_gamma_and_zeta_subtract_the_border_column_read_at_the_same_time():
    data, amp33 = random_ramp(ReadoutLayout(nrows=8, width=8), seed=5)
    # Also undo the border streams' scaling by row period / 4 = 20 / 4.
    unit = np.full((32, 81), 160 / (2 * 81) / 5, np.complex128)
    left = correct(data, amp33, gamma=unit, **ONLY_CORRELATION)
    right = correct(data, amp33, zeta=unit, **ONLY_CORRELATION)
    # Column 18: amplifier 2, position 2, read with left column 2 and right column 255 - 2.
    assert left[0, 4, 18] == pytest.approx(data[0, 4, 18] - data[0, 4, 2], abs=1e-3)
    assert right[0, 4, 18] == pytest.approx(data[0, 4, 18] - data[0, 4, 253], abs=1e-3)
    # Column 21: position 5, while no border column is read.
    assert left[0, 4, 21] == pytest.approx(data[0, 4, 21], abs=1e-3)


def test_inputs_are_not_modified():
    data, amp33 = random_ramp(TINY)
    pixeldq = np.zeros((8, 128), np.uint32)
    copies = data.copy(), amp33.copy(), pixeldq.copy()
    unit = np.ones((32, TINY.n_frequencies), np.complex128)
    out = correct(data, amp33, alpha=unit, gamma=unit, pixeldq=pixeldq)
    assert out.dtype == np.float32 and out.shape == data.shape
    for original, copy in zip((data, amp33, pixeldq), copies, strict=True):
        np.testing.assert_array_equal(original, copy)


def test_flagged_reference_pixels_are_left_out_but_keep_their_data():
    layout = ReadoutLayout(nrows=16, width=8)
    data, amp33 = random_ramp(layout, seed=6)
    unit = np.full((32, layout.n_frequencies), 0.3, np.complex128)
    pixeldq = np.zeros((16, 256), np.uint32)
    pixeldq[5, 1] = pixeldq[0, 40] = BAD_REF_PIXEL  # a left border pixel, a top row pixel
    reference = correct(data, amp33, gamma=unit, alpha=unit, pixeldq=pixeldq)
    spoiled = data.copy()
    spoiled[:, 5, 1] += 5000.0 * np.arange(3)
    spoiled[:, 0, 40] -= 3000.0 * np.arange(3)
    out = correct(spoiled, amp33, gamma=unit, alpha=unit, pixeldq=pixeldq)
    untouched = np.ones((16, 256), bool)
    untouched[5, 1] = untouched[0, 40] = False
    np.testing.assert_allclose(out[:, untouched], reference[:, untouched], atol=2e-3)
    np.testing.assert_allclose(out[:, 5, 1] - reference[:, 5, 1], spoiled[:, 5, 1] - data[:, 5, 1], atol=2e-3)


@pytest.mark.parametrize("option, piece", [("remove_offset", "resultant_means"),
                                           ("remove_trends", "reference_row_trends"),
                                           ("cosine_interpolate", "cosine_fill"),
                                           ("fft_interpolate", "fourier_fill")])
def test_an_option_turned_off_skips_its_piece(monkeypatch, option, piece):
    calls = []
    original = getattr(refpix, piece)
    monkeypatch.setattr(refpix, piece, lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs))
    data, amp33 = random_ramp(TINY)
    correct(data, amp33)
    assert calls
    calls.clear()
    correct(data, amp33, **{option: False})
    assert not calls


def test_options_off_leave_the_per_resultant_offsets():
    layout = ReadoutLayout(nrows=16, width=8)
    data, amp33 = random_ramp(layout, seed=7)
    steps = np.float32(25.0) * np.arange(3, dtype=np.float32)[:, None, None]
    stepped = data + steps
    kept = correct(stepped, amp33, remove_trends=False) - correct(data, amp33, remove_trends=False)
    np.testing.assert_allclose(kept, np.broadcast_to(steps, data.shape), atol=2e-3)
    # With trends the steps go; their mean, 25 DN, is part of each pixel's offset and comes back.
    removed = correct(stepped, amp33) - correct(data, amp33)
    np.testing.assert_allclose(removed, 25.0, atol=2e-3)


def test_without_offset_removal_trends_take_out_the_absolute_level():
    layout = ReadoutLayout(nrows=16, width=8)
    data, amp33 = random_ramp(layout, seed=8)
    out = correct(data, amp33, remove_offset=False)
    assert abs(float(out.mean())) < 200.0 < float(data.mean())


def test_bad_reference_shape_is_a_clear_error():
    data, amp33 = random_ramp(TINY)
    wrong = np.zeros((32, 100), np.complex128)
    with pytest.raises(ReferenceShapeError, match=r"REFPIX gamma has shape \(32, 100\), expected \(32, 65\)"):
        correct(data, amp33, gamma=wrong)


@pytest.mark.parametrize("data_shape, amp33_shape, message", [
    ((2, 16, 16), (2, 16, 4), "16 columns cannot be read by 32 amplifiers"),
    ((2, 16, 200), (2, 16, 6), "200 columns cannot be read"),
    ((2, 6, 128), (2, 6, 4), "6 rows leave no room"),
    ((2, 16, 256), (2, 16, 4), r"amp33 has shape \(2, 16, 4\), expected \(2, 16, 8\)"),
])
def test_layouts_that_do_not_fit_are_clear_errors(data_shape, amp33_shape, message):
    with pytest.raises(ValueError, match=message):
        ReadoutLayout.for_ramp(data_shape, amp33_shape)


# ------------------------------------------------------------------------ simulated effects


@pytest.fixture(scope="module")
def detector():
    return build_detector("WFI01", (256, 256), 11)


def simulated(detector, parameters=None, seed=5):
    """uint16-valued science and amp33 resultants, with the effect when ``parameters`` are given."""
    effects = []
    if parameters:
        effects = [ReferencePixelEffects(readout_electronics(detector, parameters), [seed, 9])]
    rate = detector.electron_rate(np.full(detector.shape, 1.0))
    science = simulate_ramp(rate, detector.science_readout(), UNEVEN_6, seed, effects=effects)
    amp33 = simulate_ramp(np.zeros(detector.amp33_bias.shape), detector.amp33_readout(), UNEVEN_6, seed,
                          effects=effects)
    return science.resultants.astype(np.float32), amp33.resultants


@pytest.fixture(scope="module")
def clean(detector):
    return simulated(detector)


def corrected_with_factory_coefficients(detector, ramp, parameters):
    coefficients = refpix_coefficients(detector, parameters)
    return correct(*ramp, **coefficients)


def varying_part(cube, detector):
    """Deviations from each pixel's mean over the resultants (what a ramp slope sees), on the
    light-sensitive pixels that do not sit at the A/D floor (where the effect is clipped away)."""
    keep = detector.photosensitive & ~detector.ad_floor
    return (cube - cube.mean(axis=0))[:, keep]


def test_injected_offsets_and_drifts_are_removed_below_half_a_dn(detector, clean):
    with_effect = simulated(detector, OFFSETS_AND_DRIFTS)
    injected = varying_part(with_effect[0] - clean[0], detector)
    corrected = [corrected_with_factory_coefficients(detector, ramp, OFFSETS_AND_DRIFTS)
                 for ramp in (with_effect, clean)]
    residual = varying_part(corrected[0] - corrected[1], detector)
    assert np.abs(injected).max() > 5.0
    assert np.abs(residual).max() < 1.5  # the resultants' rounding to whole DN, twice
    # Averaged over each amplifier and resultant, as the effect was injected: below half a DN.
    keep = detector.photosensitive & ~detector.ad_floor
    amplifier = np.broadcast_to(np.arange(256) // 8, (256, 256))[keep]
    per_amplifier = np.array([[residual[k, amplifier == a].mean() for a in range(32)] for k in range(6)])
    assert np.abs(per_amplifier).max() < 0.5


def test_correlated_noise_loses_over_90_percent_of_its_variance(detector, clean):
    with_noise = simulated(detector, CORRELATED_NOISE)
    injected = varying_part(with_noise[0] - clean[0], detector)
    corrected_clean = corrected_with_factory_coefficients(detector, clean, CORRELATED_NOISE)
    residual = varying_part(corrected_with_factory_coefficients(detector, with_noise, CORRELATED_NOISE)
                            - corrected_clean, detector)
    assert injected.var() > 5.0
    assert residual.var() < 0.1 * injected.var()
    # The price: the reference streams' own read noise, which the correction brings into a
    # clean ramp, stays within a tenth of the ramp's own read noise.
    added = varying_part(corrected_clean - clean[0], detector)
    read_noise_variance = varying_part(simulated(detector, seed=6)[0] - clean[0], detector).var() / 2
    assert added.var() < 0.1 * read_noise_variance


def test_the_fourier_correction_does_the_work_on_correlated_noise(detector, clean):
    with_noise = simulated(detector, CORRELATED_NOISE)
    injected = varying_part(with_noise[0] - clean[0], detector)
    residual = varying_part(correct(*with_noise) - correct(*clean), detector)  # zero coefficients
    assert residual.var() > 0.5 * injected.var()


def test_effect_is_shared_by_science_and_amp33_and_keyed_by_read(detector):
    electronics = readout_electronics(detector, CORRELATED_NOISE)
    effect = ReferencePixelEffects(electronics, [1, 2])
    science = np.zeros((32, 256))
    amp33 = np.zeros((32, 8))
    effect.add_signal(Chunk("science", slice(32, 64), 256, 3.04, None), 3, None, science)
    effect.add_signal(Chunk("amp33", slice(32, 64), 8, 3.04, None), 3, None, amp33)
    # Column 21 (amplifier 2, position 5) is read with amp33's column 5.
    coupling = electronics.coupling
    np.testing.assert_allclose(science[:, 21] / coupling[2], amp33[:, 5] / coupling[32], rtol=1e-6)
    again = ReferencePixelEffects(electronics, [1, 2])
    np.testing.assert_array_equal(again.read_values(3).stream, effect.read_values(3).stream)
    assert not np.array_equal(effect.read_values(4).stream, effect.read_values(3).stream)


def test_simulated_ramp_with_effects_is_the_same_for_any_number_of_workers(detector):
    electronics = readout_electronics(detector)
    rate = detector.electron_rate(np.full(detector.shape, 1.0))
    ramps = [simulate_ramp(rate, detector.science_readout(), UNEVEN_6, 3, workers=workers,
                           effects=[ReferencePixelEffects(electronics, 8)]).resultants for workers in (1, 2)]
    np.testing.assert_array_equal(*ramps)


def test_electronics_need_the_step_layout():
    with pytest.raises(ValueError, match="amp33 of 4"):
        readout_electronics(build_detector("WFI01", (16, 16), 1))


# ------------------------------------------------------------------------ the script


@pytest.fixture
def refpix_file(tmp_path, detector, monkeypatch):
    """A REFPIX file from the reference factory, as wfisim.references will make it."""
    kind = references.ReferenceKind("refpix", datamodels.RefpixRefModel, REFPIX_DESCRIPTION,
                                    build_refpix_reference)
    monkeypatch.setitem(references.REFERENCE_KINDS, "refpix", kind)
    return references.write_references(detector, tmp_path / "refs", useafter="2027-01-01T00:00:00",
                                       reftypes=["refpix", "mask"])


def simulated_dqinit(tmp_path, detector, mask_path, *, seed=(1, 2, 3)):
    geometry = DetectorGeometry(detector.name, detector.shape, Pointing.at(270.0, 66.0, 0.0))
    stars = FieldCatalog(np.array([270.0]), np.array([66.0]), np.array([300.0]))
    effect = ReferencePixelEffects(readout_electronics(detector), list(seed))
    uncal, _ = simulate_exposure(detector, geometry, stars, sky=1.0, optical_element="F158", table=UNEVEN_6,
                                 exposure_id=ExposureId(), start_time=Time("2027-03-01T00:00:00"),
                                 seed=list(seed), out_dir=tmp_path, effects=[effect])
    ramp_path = tmp_path / uncal.name.replace("_uncal", "_dqinit")
    assert dq_init.cli.run(dq_init.main, [str(uncal), str(ramp_path), "--override-mask", str(mask_path)]) == 0
    return ramp_path


def test_script_corrects_data_and_keeps_the_raw_reference_arrays(tmp_path, detector, refpix_file):
    refpix_path, mask_path = refpix_file
    ramp_path = simulated_dqinit(tmp_path, detector, mask_path)
    out = tmp_path / ramp_path.name.replace("_dqinit", "_refpix")
    status = refpix.cli.run(refpix.main, [str(ramp_path), str(out), "--override-refpix", str(refpix_path),
                                          "--mark-skipped", "saturation"])
    assert status == 0
    with rdm.open(ramp_path) as before, rdm.open(out) as after:
        assert after.meta.cal_step.refpix == "COMPLETE"
        assert after.meta.cal_step.saturation == "SKIPPED"
        assert after.meta.ref_file.refpix == refpix_path.name
        assert after.meta.provenance["refpix"]["parameters"]["remove_trends"] is True
        for name in ("amp33", "groupdq", "pixeldq", "border_ref_pix_left", "border_ref_pix_right",
                     "border_ref_pix_top", "dq_border_ref_pix_bottom"):
            np.testing.assert_array_equal(after[name], before[name])
        change = after.data - before.data
        assert after.data.dtype == np.float32 and np.abs(change).max() > 5.0
        # Each pixel's mean over the resultants is put back.
        np.testing.assert_allclose(change.mean(axis=0), 0.0, atol=5e-3)


def test_script_names_the_input_whose_layout_does_not_fit(tmp_path, level1_file, mask_file, refpix_file,
                                                          caplog):
    ramp_path = tmp_path / "tiny_dqinit.asdf"
    assert dq_init.cli.run(dq_init.main, [str(level1_file), str(ramp_path), "--override-mask",
                                          str(mask_file)]) == 0
    with caplog.at_level(logging.ERROR):
        status = refpix.cli.run(refpix.main, [str(ramp_path), str(tmp_path / "tiny_refpix.asdf"),
                                              "--override-refpix", str(refpix_file[0])])
    assert status == 1
    assert f"{ramp_path}: 16 columns cannot be read by 32 amplifiers" in caplog.text


def test_script_names_the_reference_whose_shape_does_not_fit(tmp_path, detector, refpix_file, caplog):
    refpix_path, mask_path = refpix_file
    ramp_path = simulated_dqinit(tmp_path, detector, mask_path)
    other = build_detector("WFI01", (128, 256), 11)
    wrong = datamodels.RefpixRefModel.create_fake_data(refpix_coefficients(other))
    wrong_path = tmp_path / "roman_wfi_refpix_0009.asdf"
    wrong.to_asdf(wrong_path)
    out = tmp_path / "x_refpix.asdf"
    with caplog.at_level(logging.ERROR):
        status = refpix.cli.run(refpix.main, [str(ramp_path), str(out), "--override-refpix", str(wrong_path)])
    assert status == 1 and not out.exists()
    assert f"{wrong_path}: REFPIX gamma has shape (32, 1281), expected (32, 2561)" in caplog.text


# ------------------------------------------------------------------------ romancal, for comparison


def detied(ramp):
    """The ramp with no pixel whose mean over the resultants is a whole DN: romancal takes every
    0.0 after its offset removal for a missing sample, so ties would make it skip real pixels."""
    data, amp33 = ramp[0].copy(), ramp[1].copy()
    for cube in (data, amp33):
        tied = cube.astype(np.int64).sum(axis=0) % cube.shape[0] == 0
        cube[-1][tied] += 1
    return data, amp33


@pytest.fixture(scope="module")
def wide_detector():
    return build_detector("WFI02", (128, 4096), 12)


@pytest.fixture(scope="module")
def wide_saturation_like(wide_detector):
    """A dq_init/saturation-like ramp at romancal's full width (4096 + 128 columns), 128 rows."""
    return simulated(wide_detector, ElectronicsParameters(), seed=21)


def romancal_refpix(ramp, coefficients, **options):
    run_steps = pytest.importorskip("romancal.refpix.refpix").run_steps
    model = datamodels.RampModel.create_fake_data(shape=(1, 1, 1))
    model.data = ramp[0].copy()
    model.amp33 = ramp[1].copy()
    model.pixeldq = np.zeros(ramp[0].shape[1:], np.uint32)
    reference = datamodels.RefpixRefModel.create_fake_data(coefficients)
    return run_steps(model, reference, **options).data


def difference_summary(ours, theirs):
    difference = np.abs(ours.astype(np.float64) - theirs)
    return float(np.median(difference)), float(difference.max()), float((difference > 0.01).mean())


@pytest.mark.peer
def test_same_result_as_romancal_refpix_step(tmp_path, wide_detector, wide_saturation_like):
    """RefPixStep itself (through its process method: run() would ask a CRDS server for its
    context) on a realistic ramp, with the factory's REFPIX reference."""
    romancal_refpix_step = pytest.importorskip("romancal.refpix")
    coefficients = refpix_coefficients(wide_detector)
    reference_path = tmp_path / "roman_wfi_refpix_0001.asdf"
    datamodels.RefpixRefModel.create_fake_data(coefficients).to_asdf(reference_path)
    log = logging.getLogger(__name__)
    for name, ramp in (("de-tied", detied(wide_saturation_like)), ("raw", wide_saturation_like)):
        model = datamodels.RampModel.create_fake_data(shape=(1, 1, 1))
        model.data, model.amp33 = ramp[0].copy(), ramp[1].copy()
        model.pixeldq = np.zeros(ramp[0].shape[1:], np.uint32)
        model.meta.cal_step = {}
        theirs = romancal_refpix_step.RefPixStep(override_refpix=str(reference_path)).process(model).data
        ours = correct(*ramp, **coefficients)
        median, largest, share = difference_summary(ours, theirs)
        log.info("refpix vs romancal, %s input: median %.2g DN, max %.3g DN, %.3g%% of pixels > 0.01 DN",
                 name, median, largest, 100 * share)
        if name == "de-tied":
            assert largest < 0.01
        else:
            # romancal leaves the trend in every pixel equal to its mean over the resultants
            # (0.0 once the offset is removed), and drops such samples from its fits.
            tied = ramp[0] == ramp[0].mean(axis=0, dtype=np.float64)
            assert median < 0.05
            assert (np.abs(ours - theirs)[~tied] < 1.0).all()
            log.info("%.3g%% of the pixels tie with their mean", 100 * tied.mean())


@pytest.mark.peer
@pytest.mark.parametrize("off", ["remove_offset", "remove_trends", "cosine_interpolate", "fft_interpolate"])
def test_same_result_as_romancal_with_an_option_off(wide_detector, wide_saturation_like, off):
    """Through run_steps with keywords: RefPixStep 1.1 passes its options one place off."""
    options = {"remove_offset": True, "remove_trends": True, "cosine_interpolate": True,
               "fft_interpolate": True, off: False}
    coefficients = refpix_coefficients(wide_detector)
    ramp = detied(wide_saturation_like)
    theirs = romancal_refpix(ramp, coefficients, **options)
    ours = correct(*ramp, **coefficients, **options)
    # Pixels at the A/D floor read 0.0, which romancal takes for missing when the offset stays.
    comparable = (ramp[0] != 0).all(axis=0)
    median, largest, _ = difference_summary(ours[:, comparable], theirs[:, comparable])
    assert median < 1e-3 and largest < 0.01
