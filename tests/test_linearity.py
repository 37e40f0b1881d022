"""linearity: hand-computed corrections for every rule of the romancal documentation, the script,
and simulated ramps."""

from dataclasses import replace

from romanpipe import blocks
from romanpipe.dqflags import pixel

import numpy as np
import pytest
import roman_datamodels as rdm
from roman_datamodels import datamodels

import dq_init
import linearity
from conftest import EXPO, TINY_SHAPE
from linearity import correct_linearity, evaluate_polynomial
from wfisim import references
from wfisim.detector import build_detector
from wfisim.matables import ma_table
from wfisim.nonlinearity import (
    NonlinearityParameters,
    inverse_linearity_reference_arrays,
    linearity_reference_arrays,
    nonlinear_response,
    raw_dn_coefficients,
    saturation_threshold,
)
from wfisim.ramps import RampEffect, simulate_ramp

SAT = 2
NO_LIN_CORR = 2**20
DEAD = 1024
FLAGS = {"SATURATED": SAT, "NO_LIN_CORR": NO_LIN_CORR}


def ramp(*pixels):
    """A (nresultants, 1, npixels) ramp from per-pixel resultant lists."""
    return np.array(pixels, dtype=np.float32).T[:, None, :]


def planes(*pixels):
    """(ncoeffs, 1, npixels) coefficients from per-pixel lists, lowest order first."""
    return np.array(pixels, dtype=np.float32).T[:, None, :]


def run(data, coeffs, *, groupdq=None, pixeldq=None, lin_dq=None):
    n = data.shape[2]
    return correct_linearity(
        data, np.zeros(data.shape, np.uint8) if groupdq is None else groupdq,
        np.zeros((1, n), np.uint32) if pixeldq is None else pixeldq, coeffs,
        np.zeros((1, n), np.uint32) if lin_dq is None else lin_dq, flags=FLAGS)


def test_quadratic_polynomial_is_applied_to_every_resultant():
    # F_c = 1 + 2 F + 0.5 F^2: F = 0, 1, 2, 10 -> 1, 3.5, 7, 71.
    data, pdq = run(ramp([0, 1, 2, 10]), planes([1, 2, 0.5]))
    assert data[:, 0, 0].tolist() == [1.0, 3.5, 7.0, 71.0]
    assert data.dtype == np.float32 and not pdq.any()


def test_every_coefficient_plane_is_used():
    # A line F_c = 7 + 3 F (two planes) and a quartic F_c = F + F^4 / 1000 (five planes).
    data, _ = run(ramp([1, 10]), planes([7, 3]))
    assert data[:, 0, 0].tolist() == [10.0, 37.0]
    data, _ = run(ramp([2, 10]), planes([0, 1, 0, 0, 0.001]))
    assert data[:, 0, 0] == pytest.approx([2.016, 20.0])


def test_horner_matches_the_power_sum():
    values = np.array([[0.5, -3.0, 1.2e4]])
    coeffs = np.array([[[3.0]], [[-2.0]], [[1e-3]], [[4e-8]]])
    expected = sum(coeffs[n] * values**n for n in range(4))
    np.testing.assert_allclose(evaluate_polynomial(coeffs, values), expected, rtol=1e-15)


def test_nan_coefficient_leaves_the_pixel_and_flags_no_lin_corr():
    data, pdq = run(ramp([10, 20], [10, 20]), planes([0, 2, np.nan], [0, 2, 0]))
    assert data[:, 0, :].tolist() == [[10.0, 20.0], [20.0, 40.0]]
    assert pdq.tolist() == [[NO_LIN_CORR, 0]]


def test_zero_linear_coefficient_leaves_the_pixel_and_flags_no_lin_corr():
    # stcal's rule: c_1 = 0 (here with c_2 != 0, and all zero) would not linearize the ramp but
    # replace it (all zero: by 0 DN), so the pixel keeps its data and says so.
    data, pdq = run(ramp([10, 20], [10, 20], [10, 20]), planes([5, 0, 1e-3], [0, 0, 0], [0, 2, 0]))
    assert data[:, 0, :].tolist() == [[10.0, 10.0, 20.0], [20.0, 20.0, 40.0]]
    assert pdq.tolist() == [[NO_LIN_CORR, NO_LIN_CORR, 0]]


def test_no_lin_corr_in_the_reference_dq_leaves_the_pixel():
    data, pdq = run(ramp([10, 20], [10, 20]), planes([0, 2], [0, 2]),
                    lin_dq=np.array([[NO_LIN_CORR, 0]], np.uint32))
    assert data[:, 0, :].tolist() == [[10.0, 20.0], [20.0, 40.0]]
    assert pdq.tolist() == [[NO_LIN_CORR, 0]]


def test_saturated_resultants_are_left_alone():
    groupdq = np.array([0, 0, SAT, SAT], np.uint8)[:, None, None]
    data, _ = run(ramp([1, 2, 3, 4]), planes([0, 10]), groupdq=groupdq)
    assert data[:, 0, 0].tolist() == [10.0, 20.0, 3.0, 4.0]


def test_reference_dq_is_or_ed_into_pixeldq():
    _, pdq = run(ramp([1, 2], [1, 2]), planes([0, 1], [0, 1]), pixeldq=np.array([[DEAD, 4]], np.uint32),
                 lin_dq=np.array([[8, NO_LIN_CORR]], np.uint32))
    assert pdq.tolist() == [[DEAD | 8, 4 | NO_LIN_CORR]]


def test_inputs_are_not_modified():
    data, groupdq = ramp([1, 2, 3]), np.array([0, 0, SAT], np.uint8)[:, None, None]
    pixeldq, coeffs, lin_dq = np.zeros((1, 1), np.uint32), planes([1, np.nan]), np.ones((1, 1), np.uint32)
    copies = [a.copy() for a in (data, groupdq, pixeldq, coeffs, lin_dq)]
    correct_linearity(data, groupdq, pixeldq, coeffs, lin_dq, flags=FLAGS)
    for array, original in zip((data, groupdq, pixeldq, coeffs, lin_dq), copies, strict=True):
        np.testing.assert_array_equal(array, original)


def test_the_result_can_overwrite_the_input(monkeypatch):
    monkeypatch.setattr(blocks, "BLOCK_VALUES", 4)  # one row per block
    data = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    coeffs = np.stack([np.ones((2, 3)), np.full((2, 3), 2.0)]).astype(np.float32)
    args = (np.zeros(data.shape, np.uint8), np.zeros((2, 3), np.uint32), coeffs, np.zeros((2, 3), np.uint32))
    expected, _ = correct_linearity(data.copy(), *args, flags=FLAGS)
    result, _ = correct_linearity(data, *args, flags=FLAGS, out=data)
    assert result is data
    np.testing.assert_array_equal(data, expected)
    np.testing.assert_array_equal(expected, 1 + 2 * np.arange(12).reshape(2, 2, 3))
    with pytest.raises(ValueError, match="out is a float32 array of shape"):
        correct_linearity(data, *args, flags=FLAGS, out=np.empty((1, 2, 3), np.float32))


def test_row_blocks_give_the_same_result_as_one_block(monkeypatch):
    rng = np.random.default_rng(3)
    data = rng.uniform(1e4, 5e4, (4, 9, 5)).astype(np.float32)
    coeffs = np.stack([rng.uniform(-50, 50, (9, 5)), rng.uniform(0.9, 1.1, (9, 5)),
                       rng.uniform(0, 1e-6, (9, 5))]).astype(np.float32)
    groupdq = np.zeros(data.shape, np.uint8)
    groupdq[3, 4, 2] = SAT
    args = (data, groupdq, np.zeros((9, 5), np.uint32), coeffs, np.zeros((9, 5), np.uint32))
    whole, _ = correct_linearity(*args, flags=FLAGS)
    monkeypatch.setattr(blocks, "BLOCK_VALUES", 2 * 4 * 5)  # two rows per block, a short last one
    assert blocks.rows_per_block(data.shape) == 2
    blocked, _ = correct_linearity(*args, flags=FLAGS)
    np.testing.assert_array_equal(blocked, whole)
    assert blocked[3, 4, 2] == data[3, 4, 2]


@pytest.mark.parametrize(("coeffs_shape", "lin_dq_shape", "message"), [
    ((2, 1, 3), (1, 2), "LINEARITY coeffs have shape"),
    ((1, 1, 2), (1, 2), "ncoeffs >= 2"),
    ((2, 1, 2), (2, 2), "LINEARITY dq has shape"),
])
def test_reference_shapes_are_checked(coeffs_shape, lin_dq_shape, message):
    data = ramp([1, 2], [1, 2])
    with pytest.raises(ValueError, match=message):
        correct_linearity(data, np.zeros(data.shape, np.uint8), np.zeros((1, 2), np.uint32),
                          np.zeros(coeffs_shape, np.float32), np.zeros(lin_dq_shape, np.uint32), flags=FLAGS)


def test_groupdq_shape_is_checked():
    data = ramp([1, 2])
    with pytest.raises(ValueError, match="groupdq has shape"):
        correct_linearity(data, np.zeros((1, 1, 1), np.uint8), np.zeros((1, 1), np.uint32),
                          planes([0, 1]), np.zeros((1, 1), np.uint32), flags=FLAGS)


# ---------------------------------------------------------------- the script on tiny Roman files


def linearity_file(path, coeffs, dq):
    ref = datamodels.LinearityRefModel.create_fake_data(shape=coeffs.shape)
    ref.coeffs, ref.dq = coeffs, dq
    ref.to_asdf(path)
    return path


@pytest.fixture
def ramp_file(tmp_path, level1_file, mask_file):
    path = tmp_path / f"{EXPO}_dqinit.asdf"
    assert dq_init.cli.run(dq_init.main, [str(level1_file), str(path),
                                          "--override-mask", str(mask_file)]) == 0
    return path


def test_script_corrects_and_records_the_step(tmp_path, ramp_file):
    shape = TINY_SHAPE[1:]
    coeffs = np.stack([np.full(shape, 5.0), np.full(shape, 1.01), np.full(shape, 2e-6)]).astype(np.float32)
    coeffs[2, 3, 4] = np.nan
    dq = np.zeros(shape, np.uint32)
    dq[1, 2] = NO_LIN_CORR
    reference = linearity_file(tmp_path / "roman_wfi_linearity_0001.asdf", coeffs, dq)
    out = tmp_path / f"{EXPO}_linearity.asdf"
    assert linearity.cli.run(linearity.main, [str(ramp_file), str(out),
                                              "--override-linearity", str(reference)]) == 0
    with rdm.open(ramp_file) as before, rdm.open(out) as after:
        raw = before.data.astype(np.float64)
        expected = 5.0 + np.float32(1.01) * raw + np.float32(2e-6) * raw**2
        expected[:, 3, 4] = raw[:, 3, 4]
        expected[:, 1, 2] = raw[:, 1, 2]
        np.testing.assert_allclose(after.data, expected, rtol=1e-7)
        assert after.pixeldq[3, 4] & NO_LIN_CORR and after.pixeldq[1, 2] & NO_LIN_CORR
        assert after.pixeldq[5, 6] & DEAD  # the MASK flag from dq_init survives
        assert after.meta.cal_step.linearity == "COMPLETE"
        assert after.meta.ref_file.linearity == reference.name
        assert after.meta.provenance["linearity"]["references"]["linearity"]["file"] == reference.name


def test_script_rejects_a_reference_of_another_shape(tmp_path, ramp_file):
    reference = linearity_file(tmp_path / "roman_wfi_linearity_0001.asdf",
                               np.zeros((2, 8, 8), np.float32), np.zeros((8, 8), np.uint32))
    out = tmp_path / "x_linearity.asdf"
    assert linearity.cli.run(linearity.main, [str(ramp_file), str(out),
                                              "--override-linearity", str(reference)]) == 1
    assert not out.exists()


# ---------------------------------------------------------------- simulated nonlinearity


def saturated_resultants(first_saturated_resultant, nresultants):
    """True from the simulator's first resultant with a full read on (what the saturation step flags)."""
    index = np.arange(nresultants)[:, None, None]
    return (first_saturated_resultant >= 0) & (index >= first_saturated_resultant)


@pytest.fixture(scope="module")
def detector():
    return build_detector("WFI01", (40, 40), 11)


def test_response_has_the_drawn_deficit_at_full_well(detector):
    response = nonlinear_response(detector)
    full = detector.full_well / response.gain
    deficit = 1.0 - response.measured_signal(full) / full
    assert np.median(deficit) == pytest.approx(NonlinearityParameters().full_well_deficit, rel=0.05)
    signal = np.linspace(0.0, 5e4, detector.bias.size).reshape(detector.shape)
    np.testing.assert_allclose(response.linear_signal(response.measured_signal(signal)), signal, atol=1e-8)
    assert nonlinear_response(detector).linearization.tobytes() == response.linearization.tobytes()


def test_reference_inverts_the_response_from_bias_to_saturation(detector):
    """The float32 reference polynomial on raw DN gives bias + linear signal to < 1e-5 of the signal."""
    response = nonlinear_response(detector)
    arrays = linearity_reference_arrays(detector, np.random.default_rng(0))
    full = detector.full_well / response.gain
    linear = np.linspace(0.0, 1.0, 200)[:, None, None] * full  # bias .. saturation
    raw = detector.bias + np.stack([response.measured_signal(s) for s in linear])
    corrected = evaluate_polynomial(arrays["coeffs"].astype(np.float64), raw)
    error = corrected - (detector.bias + linear)
    usable = ~np.isnan(arrays["coeffs"]).any(axis=0)
    assert np.abs(error[:, usable]).max() < 0.01  # DN
    assert (np.abs(error) / np.maximum(linear, 1.0))[1:, usable].max() < 1e-5


def test_reference_has_a_few_nan_and_no_lin_corr_pixels(detector):
    arrays = linearity_reference_arrays(detector, np.random.default_rng(0))
    assert arrays["coeffs"].shape == (4, 40, 40) and arrays["coeffs"].dtype == np.float32
    nan_pixels = np.isnan(arrays["coeffs"]).any(axis=0)
    flagged = (arrays["dq"] & NO_LIN_CORR) != 0
    assert nan_pixels.sum() == flagged.sum() == 1 and not (nan_pixels & flagged).any()


def test_reference_factory_writes_a_valid_linearity_file(tmp_path, monkeypatch, detector):
    """The entry the lead adds to wfisim.references.REFERENCE_KINDS, through the real factory."""
    kind = references.ReferenceKind("linearity", datamodels.LinearityRefModel, "Simulated nonlinearity.",
                                    linearity_reference_arrays)
    monkeypatch.setitem(references.REFERENCE_KINDS, "linearity", kind)
    [path] = references.write_references(detector, tmp_path, useafter="2027-02-28T00:00:00",
                                         reftypes=["linearity"])
    with rdm.open(path) as model:
        model.validate()
        assert model.meta.reftype == "LINEARITY" and model.meta.instrument.detector == "WFI01"
        coeffs = np.asarray(model.coeffs)
    expected = raw_dn_coefficients(nonlinear_response(detector).linearization, detector.bias)
    known = ~np.isnan(coeffs)
    np.testing.assert_array_equal(coeffs[known], expected.astype(np.float32)[known])
    assert (~known).any(axis=0).sum() == 1


def test_simulated_nonlinearity_is_the_same_for_any_number_of_workers(detector):
    rate = detector.electron_rate(np.full(detector.shape, 300.0))
    table = ma_table("IMG_UNEVEN_6")
    ramps = [simulate_ramp(rate, detector.science_readout(), table, 2, effects=[nonlinear_response(detector)],
                           workers=workers).resultants for workers in (1, 2)]
    np.testing.assert_array_equal(*ramps)


def test_saturation_threshold_is_reached_by_a_full_non_linear_pixel(detector):
    response = nonlinear_response(detector)
    threshold = saturation_threshold(detector, response)
    full_reading = detector.bias + response.measured_signal(detector.full_well / response.gain)
    assert (threshold < full_reading).all()
    # The linear model's threshold would never be reached by this detector.
    assert (detector.saturation_threshold > full_reading).mean() > 0.99


class RecordReads(RampEffect):
    """Keeps the DN of every kept read of the science array, as the effects before it left them."""

    def __init__(self, shape):
        self.shape, self.dn = shape, {}

    def add_signal(self, chunk, read_number, charge, dn):
        if chunk.readout == "science":
            self.dn.setdefault(read_number, np.empty(self.shape))[chunk.rows] = dn


def linear_twins(detector, table, *effects):
    """The same ramp with and without the nonlinearity (and ``effects``), read without noise.

    Both draw the same charge (the nonlinearity draws no random numbers). No
    read noise: it enters after the nonlinearity, so the correction would scale
    it by P'(m) (up to 1.15) and the twins would differ by that much noise.
    Rates go from dark to saturating well within the exposure, one per pixel.
    """
    rate = np.geomspace(1.0, 2.5 * np.median(detector.full_well) / table.exposure_time, detector.bias.size)
    rate = detector.electron_rate(rate.reshape(detector.shape))
    readout = replace(detector.science_readout(), read_noise=np.zeros(detector.shape))
    non_linear = simulate_ramp(rate, readout, table, 5, effects=[nonlinear_response(detector), *effects],
                               workers=1)
    return non_linear, simulate_ramp(rate, readout, table, 5, workers=1)


def corrected_twin(detector, non_linear, nresultants):
    """The non-linear ramp through the step, its saturated resultants flagged from the simulator's truth."""
    reference = linearity_reference_arrays(detector, np.random.default_rng(0))
    saturated = saturated_resultants(non_linear.first_saturated_resultant, nresultants)
    corrected, pixeldq = correct_linearity(
        non_linear.resultants.astype(np.float32), np.where(saturated, np.uint8(SAT), np.uint8(0)),
        np.zeros(detector.shape, np.uint32), reference["coeffs"], reference["dq"])
    checked = (~saturated & detector.photosensitive & ~detector.ad_floor
               & ((pixeldq & pixel.NO_LIN_CORR) == 0))
    np.testing.assert_array_equal(corrected[saturated], non_linear.resultants[saturated])
    return corrected, checked, reference


# uint16 rounding of both twins: 0.5 DN each, the non-linear one scaled by the correction's slope (< 1.2).
ROUNDING_DN = 0.5 * 1.2 + 0.5


@pytest.mark.parametrize("table_name", ["EVEN_8", "IMG_UNEVEN_16"])
def test_corrected_simulated_ramps_are_linear_to_a_thousandth(detector, table_name):
    """Linearity measured against the linear twin: |corrected - twin| / (twin - bias).

    Over every unsaturated resultant of every corrected light-sensitive pixel,
    signals up to 0.9 of full well: the error is below 0.1 % of the signal plus
    the rounding, and below 0.1 % outright from 2000 DN (where the rounding is
    < 0.06 %); uncorrected, the same comparison is off by several per cent.
    """
    table = ma_table(table_name)
    non_linear, twin = linear_twins(detector, table)
    corrected, checked, _ = corrected_twin(detector, non_linear, table.nresultants)
    signal = (twin.resultants - detector.bias.astype(np.float64))[checked]
    error = (corrected - twin.resultants)[checked]
    uncorrected = (non_linear.resultants.astype(np.float64) - twin.resultants)[checked]
    assert signal.max() > 0.9 * np.median(detector.full_well / detector.gain)
    assert (np.abs(error) <= 1e-3 * signal + ROUNDING_DN).all()
    bright = signal >= 2000.0
    assert bright.sum() > 300
    assert (np.abs(error[bright]) / signal[bright]).max() < 1e-3
    assert (np.abs(uncorrected[bright]) / signal[bright]).max() > 0.03


def test_multi_read_resultants_keep_the_nonlinearity_of_their_average(detector):
    """The romancal documentation corrects the mean of a resultant's reads, not each read. The
    step's output is the polynomial of that mean (to the uint16 rounding of the resultant), and
    what it leaves, F_c(mean of raw reads) - (bias + mean of linear signals), is about -P''/2 times the spread
    of the reads' signals: in IMG_UNEVEN_6, whose long resultants average 8 of 24 reads, it
    exceeds 0.1 % of the signal (up to ~0.2 %)."""
    table = ma_table("IMG_UNEVEN_6")
    reads = RecordReads(detector.shape)
    non_linear, twin = linear_twins(detector, table, reads)
    corrected, checked, reference = corrected_twin(detector, non_linear, table.nresultants)
    mean_raw = np.stack([np.mean([reads.dn[read] for read in pattern], axis=0)
                         for pattern in table.read_pattern])
    polynomial_of_mean = evaluate_polynomial(reference["coeffs"].astype(np.float64), mean_raw)
    np.testing.assert_array_less(np.abs(corrected - polynomial_of_mean)[checked], 0.5 * 1.2)

    signal = (twin.resultants - detector.bias.astype(np.float64))[checked]
    averaging_error = (polynomial_of_mean - twin.resultants)[checked]
    bright = signal >= 2000.0
    assert 1e-3 < (np.abs(averaging_error[bright]) / signal[bright]).max() < 3e-3
    single_read = np.array([len(pattern) == 1 for pattern in table.read_pattern])[:, None, None]
    single_read_checked = (checked & single_read)[checked]
    assert (np.abs(averaging_error[single_read_checked]) <= 1e-3 * signal[single_read_checked] + 0.5).all()


# ---------------------------------------------------------------- romancal, for comparison


@pytest.mark.peer
def test_same_result_as_romancal_on_single_read_resultants(tmp_path, detector):
    """romancal 1.1's LinearityStep corrects reads through an INVERSELINEARITY reference; on
    resultants of one read each that reduces to the documented polynomial, so the two must agree."""
    romancal_linearity = pytest.importorskip("romancal.linearity")
    response = nonlinear_response(detector)
    reference = linearity_reference_arrays(detector, np.random.default_rng(0))
    table = ma_table("EVEN_8")
    rate = np.geomspace(1.0, 2.5 * np.median(detector.full_well) / table.exposure_time, detector.bias.size)
    simulated = simulate_ramp(detector.electron_rate(rate.reshape(detector.shape)),
                              detector.science_readout(), table, 5, effects=[response], workers=1)
    model = datamodels.RampModel.create_fake_data(shape=simulated.resultants.shape)
    model.data = simulated.resultants.astype(np.float32)
    model.groupdq = np.where(saturated_resultants(simulated.first_saturated_resultant, table.nresultants),
                             np.uint8(SAT), np.uint8(0))
    model.pixeldq = np.zeros(detector.shape, np.uint32)
    model.meta.exposure.read_pattern = table.read_pattern_lists()
    linearity_path = linearity_file(tmp_path / "roman_wfi_linearity_0001.asdf", reference["coeffs"],
                                    reference["dq"])
    inverse = datamodels.InverselinearityRefModel.create_fake_data(shape=reference["coeffs"].shape)
    # Only romancal's multi-read path uses it: on single reads any finite inverse cancels out.
    inverse.coeffs = np.zeros(reference["coeffs"].shape, np.float32)
    inverse.coeffs[1] = 1.0
    inverse.dq = np.zeros(detector.shape, np.uint32)
    inverse_path = tmp_path / "roman_wfi_inverselinearity_0001.asdf"
    inverse.to_asdf(inverse_path)

    ours, our_pixeldq = correct_linearity(model.data, model.groupdq, model.pixeldq,
                                          reference["coeffs"], reference["dq"])
    step = romancal_linearity.LinearityStep(override_linearity=str(linearity_path),
                                            override_inverselinearity=str(inverse_path),
                                            override_integralnonlinearity="N/A")
    theirs = step.process(model)  # run() would also ask a CRDS server for its context
    np.testing.assert_allclose(ours, theirs.data, rtol=2e-7, atol=2e-3)
    np.testing.assert_array_equal(our_pixeldq, theirs.pixeldq)


@pytest.mark.peer
def test_uncorrectable_coefficients_as_stcal():
    """Zero linear, all-zero, NaN and NO_LIN_CORR pixels beside a corrected one, as stcal 1.20's kernel
    (romancal 1.1's LinearityStep calls it) leaves and flags them."""
    stcal_linearity = pytest.importorskip("stcal.linearity.linearity")
    data = ramp([10, 20, 30], [10, 20, 30], [10, 20, 30], [10, 20, 30], [10, 20, 30])
    coeffs = planes([5, 0, 1e-3], [0, 0, 0], [0, np.nan, 0], [1, 2, 0], [1, 2, 1e-3])
    groupdq = np.zeros(data.shape, np.uint8)
    groupdq[2, 0, 4] = SAT
    lin_dq = np.array([[0, 0, 0, NO_LIN_CORR, DEAD]], np.uint32)
    ours, our_pixeldq = run(data, coeffs, groupdq=groupdq, lin_dq=lin_dq)
    theirs, their_pixeldq, _ = stcal_linearity.linearity_correction(
        data[None].copy(), groupdq[None].copy(), np.zeros((1, 5), np.uint32), coeffs.copy(), lin_dq.copy(),
        {"SATURATED": SAT, "NO_LIN_CORR": NO_LIN_CORR, "DO_NOT_USE": 1})
    np.testing.assert_allclose(ours, theirs[0], rtol=1e-6)
    np.testing.assert_array_equal(our_pixeldq, their_pixeldq)


# ---------------------------------------------------------------- resultant-aware (romancal 1.1)


def read_level_run(data, coeffs, inverse, read_pattern, *, groupdq=None, inl=None, lin_dq=None):
    n = data.shape[2]
    return linearity.correct_linearity_by_reads(
        data, np.zeros(data.shape, np.uint8) if groupdq is None else groupdq, np.zeros((1, n), np.uint32),
        coeffs, np.zeros((1, n), np.uint32) if lin_dq is None else lin_dq, inverse, read_pattern, inl=inl,
        flags=FLAGS, group_flags={"DO_NOT_USE": 1})


def test_read_level_correction_of_a_quadratic_response_by_hand():
    """Raw reads F = s - 1e-3 s^2 of a linear signal s = 10 r; the reference F_c = F + 1e-3 F^2 and its
    inverse F = F_c - 1e-3 F_c^2 (both to first order in 1e-3). Resultant 3 averages reads 3 and 4:
    the read-level correction averages the corrected reads, not the polynomial of their mean."""
    coeffs, inverse = planes([0, 1, 1e-3]), planes([0, 1, -1e-3])
    read_pattern = [[1], [2], [3, 4], [5]]
    signal = {r: 10.0 * r for r in range(1, 6)}
    raw = {r: s - 1e-3 * s**2 for r, s in signal.items()}
    data = ramp([raw[1], raw[2], (raw[3] + raw[4]) / 2, raw[5]])
    corrected, pixeldq, groupdq = read_level_run(data, coeffs, inverse, read_pattern)

    def lin(f):
        return f + 1e-3 * f**2

    def inv(f):
        return f - 1e-3 * f**2

    # By hand, following the documented recipe with the last usable resultant the 3rd (index 2).
    first, last = lin(raw[1]), lin((raw[3] + raw[4]) / 2)
    rate = (last - first) / (3.5 - 1.0)
    expected = []
    for reads, value in zip(read_pattern, data[:, 0, 0], strict=True):
        rebuilt = np.array([inv(first + rate * (r - 1.0)) for r in reads])
        rebuilt += value - rebuilt.mean()
        expected.append(np.mean(lin(rebuilt)))
    np.testing.assert_allclose(corrected[:, 0, 0], expected, rtol=1e-6)
    assert not pixeldq.any() and not groupdq.any()
    # Single-read resultants get exactly the classic correction.
    np.testing.assert_allclose(corrected[[0, 1, 3], 0, 0], lin(data[[0, 1, 3], 0, 0].astype(np.float64)),
                               rtol=1e-6)


def test_read_level_integral_nonlinearity_is_interpolated_per_channel():
    """Identity polynomials; an INL table of +2 DN at 0 rising to +4 DN at 200 DN in channel 1 and
    -1 DN flat in channel 2: a single-read resultant of 50 DN becomes 50 + 2.5 in columns 0-127 and
    50 - 1 in columns 128-255."""
    identity = np.zeros((2, 1, 256), np.float32)
    identity[1] = 1.0
    inl = linearity.integral_nonlinearity(np.array([0, 200], np.uint16),
                                          [np.array([2.0, 4.0]), np.array([-1.0, -1.0])])
    data = np.full((2, 1, 256), 50.0, np.float32)
    corrected, _, _ = read_level_run(data, identity, identity, [[1], [2]], inl=inl)
    np.testing.assert_allclose(corrected[:, 0, :128], 52.5)
    np.testing.assert_allclose(corrected[:, 0, 128:], 49.0)


def numpy_read_level(data, saturated, linearize, unlinearize, read_pattern, grid, tables):
    """The read-level correction written array at a time with numpy (np.interp for the INL):
    the independent version the compiled kernel must match bit for bit (the polynomials by
    linearity.evaluate_polynomial, numpy's Horner scheme)."""
    polynomial = evaluate_polynomial
    observed = data.astype(np.float64)
    mean_read = np.array([np.mean(reads) for reads in read_pattern])
    linear = np.where(saturated, observed, polynomial(linearize, observed))
    last = np.maximum((~saturated).sum(axis=0) - 2, 1)
    first = linear[0]
    rate = (np.take_along_axis(linear, last[None], axis=0)[0] - first) / (mean_read[last] - mean_read[0])
    corrected = np.empty(data.shape, np.float32)
    for k, reads in enumerate(read_pattern):
        since_first = np.asarray(reads, np.float64) - mean_read[0]
        raw = polynomial(unlinearize[:, None], first + rate * since_first[:, None, None])
        raw += observed[k] - raw.mean(axis=0)
        for channel, start in enumerate(range(0, data.shape[2], linearity.INL_CHANNEL_COLUMNS)):
            columns = slice(start, start + linearity.INL_CHANNEL_COLUMNS)
            raw[..., columns] += np.interp(raw[..., columns], grid, tables[channel])
        corrected[k] = np.where(saturated[k], observed[k], polynomial(linearize[:, None], raw).mean(axis=0))
    return corrected


def test_read_level_kernel_is_the_numpy_correction_bit_for_bit():
    """The compiled read-level kernel against :func:`numpy_read_level` on IMG_UNEVEN_6's reads:
    cubic LINEARITY and quintic INVERSELINEARITY polynomials that vary by pixel, a random INL on
    romancal's grid (0-65535 DN by 256, the last step 255; values from below it to above it, on
    its points, NaN, inf), saturation from several resultants on, identity polynomials where a
    pixel has no correction; 300 columns (a partial third channel)."""
    rng = np.random.default_rng(5)
    read_pattern = [[1], [2, 3], [4, 5, 6, 7], list(range(8, 16)), list(range(16, 24)), [24]]
    shape = (6, 8, 300)
    rate = rng.uniform(-5.0, 3000.0, shape[1:])
    mean_read = np.array([np.mean(reads) for reads in read_pattern])
    data = (rng.uniform(-500.0, 8000.0, shape[1:]) + rate * mean_read[:, None, None]).astype(np.float32)
    data[:, 0, :6] = np.array([np.nan, np.inf, -np.inf, -0.0, 65535.0, 0.0])[:, None]
    data[:, 1, :257] = np.append(np.arange(0, 65536, 256), 65535).astype(np.float32)  # the grid's points
    saturated = np.zeros(shape, bool)
    saturated[3:, 2, :100] = True
    saturated[1:, 3, :50] = True
    saturated[:, 4, :5] = True
    linearize = np.stack([rng.normal(0, 5, shape[1:]), rng.normal(1, 0.01, shape[1:]),
                          rng.normal(0, 1e-6, shape[1:]), rng.normal(0, 1e-11, shape[1:])])
    unlinearize = np.stack([rng.normal(0, 5, shape[1:]), rng.normal(1, 0.01, shape[1:]),
                            *(rng.normal(0, 10.0 ** -(3 * n), shape[1:]) for n in range(2, 6))])
    uncorrectable, uninvertible = np.zeros(shape[1:], bool), np.zeros(shape[1:], bool)
    uncorrectable[5, 7:9] = uninvertible[5, 8:10] = True  # one, the other or both
    identity = np.zeros((6, *shape[1:]))
    identity[1] = 1.0
    grid = np.append(np.arange(0, 65536, 256), 65535).astype(np.float64)
    tables = [rng.normal(0.0, 3.0, grid.size) for _ in range(3)]
    tables[1][:10] = 0.0  # a flat stretch: equal neighbours
    inl = linearity.integral_nonlinearity(grid.astype(np.uint16), tables)

    reads = np.concatenate([np.asarray(reads, np.float64) for reads in read_pattern])
    out = np.empty(shape, np.float32)
    linearity.correct_pixels_by_reads(data, saturated, linearize.astype(np.float32), uncorrectable,
                                      unlinearize.astype(np.float32), uninvertible, reads,
                                      np.cumsum([0, *(len(reads) for reads in read_pattern)]), mean_read,
                                      inl.grid, inl.tables, inl.slopes, linearity.INL_CHANNEL_COLUMNS, out)
    # The references' float32 coefficients in float64, the identity where they give no correction.
    linearize = np.where(uncorrectable, identity[:4], linearize.astype(np.float32).astype(np.float64))
    unlinearize = np.where(uninvertible, identity, unlinearize.astype(np.float32).astype(np.float64))
    expected = numpy_read_level(data, saturated, linearize, unlinearize, read_pattern, grid, tables)
    np.testing.assert_array_equal(out.view(np.int32), expected.view(np.int32))


def test_read_level_result_can_overwrite_the_input(monkeypatch):
    """Written into ``data`` itself (the step's buffer when it is writeable), block by block, the
    read-level correction is the one it writes into a new array."""
    monkeypatch.setattr(blocks, "BLOCK_VALUES", 12)  # one row per block
    rng = np.random.default_rng(3)
    shape = (4, 3, 3)
    data = (100.0 + 50.0 * np.arange(4)[:, None, None] + rng.normal(0, 5, shape)).astype(np.float32)
    original = data.copy()
    coeffs = np.broadcast_to(planes([0, 1, 1e-3]), (3, *shape[1:])).copy()
    inverse = np.broadcast_to(planes([0, 1, -1e-3]), (3, *shape[1:])).copy()

    def corrected(out):
        return linearity.correct_linearity_by_reads(
            data, np.zeros(shape, np.uint8), np.zeros(shape[1:], np.uint32), coeffs,
            np.zeros(shape[1:], np.uint32), inverse, [[1], [2], [3, 4], [5]], flags=FLAGS,
            group_flags={"DO_NOT_USE": 1}, out=out)[0]

    expected = corrected(None)
    assert not np.array_equal(expected, original)
    assert corrected(data) is data
    np.testing.assert_array_equal(data, expected)


def test_integral_nonlinearity_refuses_a_table_it_cannot_interpolate():
    with pytest.raises(ValueError, match="rise strictly"):
        linearity.integral_nonlinearity(np.array([0.0, 10.0, 10.0]), [np.zeros(3)])
    with pytest.raises(ValueError, match="the grid 2"):
        linearity.integral_nonlinearity(np.array([0.0, 10.0]), [np.zeros(3)])
    one_channel = linearity.integral_nonlinearity(np.array([0.0, 10.0]), [np.zeros(2)])
    identity = np.zeros((2, 1, 200))
    identity[1] = 1.0
    with pytest.raises(ValueError, match="1 channels, the data 200 columns"):
        read_level_run(np.zeros((2, 1, 200), np.float32), identity, identity, [[1], [2]], inl=one_channel)


def test_read_level_uncorrectable_inverse_flags_no_lin_corr_and_keeps_the_data():
    """A NaN inverse coefficient: identity reads, the classic polynomial of each single read
    still applies (as stcal), and NO_LIN_CORR is set."""
    coeffs = planes([0, 1, 0], [0, 1, 0])
    inverse = planes([0, 1, 0], [0, 1, np.nan])
    data = ramp([10, 20, 30], [10, 20, 30])
    corrected, pixeldq, _ = read_level_run(data, coeffs, inverse, [[1], [2], [3]])
    np.testing.assert_allclose(corrected, data)
    assert pixeldq.tolist() == [[0, NO_LIN_CORR]]


def test_read_level_implausible_values_are_clipped_and_flagged():
    coeffs = planes([0, 1, 1.0])  # F_c = F + F^2: 2000 DN -> ~4e6
    data = ramp([10, 2000])
    corrected, _, groupdq = read_level_run(data, coeffs, planes([0, 1, 0]), [[1], [2]])
    assert corrected[1, 0, 0] == 1e6 and groupdq[1, 0, 0] == 1 and groupdq[0, 0, 0] == 0


def test_read_level_correction_removes_the_averaging_error_of_long_resultants(detector):
    """The simulator's nonlinearity through its own LINEARITY and INVERSELINEARITY references, against
    the linear twin (injected truth), IMG_UNEVEN_6: the documented correction leaves > 0.1 % on
    the long resultants (the test above), the read-level one < 0.05 % from 2000 DN."""
    table = ma_table("IMG_UNEVEN_6")
    non_linear, twin = linear_twins(detector, table)
    _, checked, reference = corrected_twin(detector, non_linear, table.nresultants)
    inverse = inverse_linearity_reference_arrays(detector, np.random.default_rng(0))
    saturated = saturated_resultants(non_linear.first_saturated_resultant, table.nresultants)
    corrected, _, _ = linearity.correct_linearity_by_reads(
        non_linear.resultants.astype(np.float32), np.where(saturated, np.uint8(SAT), np.uint8(0)),
        np.zeros(detector.shape, np.uint32), reference["coeffs"], reference["dq"], inverse["coeffs"],
        table.read_pattern_lists())
    signal = (twin.resultants - detector.bias.astype(np.float64))[checked]
    error = (corrected - twin.resultants)[checked]
    bright = signal >= 2000.0
    assert bright.sum() > 300
    assert (np.abs(error[bright]) / signal[bright]).max() < 5e-4


def test_simulated_inverse_linearity_inverts_the_linearity_reference(detector):
    """INVERSELINEARITY(LINEARITY(F)) = F from bias to saturation, to a tenth of a DN (both polynomials
    are float32 coefficients of raw DN about 10^4)."""
    reference = linearity_reference_arrays(detector, np.random.default_rng(0))
    inverse = inverse_linearity_reference_arrays(detector, np.random.default_rng(0))
    usable = ~np.isnan(reference["coeffs"]).any(axis=0) & detector.photosensitive
    raw = detector.bias + np.linspace(0.0, 1.0, 9)[:, None, None] * (
        detector.saturation_threshold - detector.bias)
    round_trip = evaluate_polynomial(inverse["coeffs"].astype(np.float64),
                                     evaluate_polynomial(reference["coeffs"].astype(np.float64), raw))
    assert np.abs(round_trip - raw)[:, usable].max() < 0.1


def test_script_resultant_aware_reads_the_two_references(tmp_path, ramp_file):
    """--resultant-aware: the script reads INVERSELINEARITY and INTEGRALNONLINEARITY, records both,
    and gives the kernel's result."""
    shape = TINY_SHAPE[1:]
    coeffs = np.stack([np.zeros(shape), np.ones(shape), np.full(shape, 1e-5)]).astype(np.float32)
    inverse_coeffs = np.stack([np.zeros(shape), np.ones(shape), np.full(shape, -1e-5)]).astype(np.float32)
    lin_path = linearity_file(tmp_path / "roman_wfi_linearity_0001.asdf", coeffs, np.zeros(shape, np.uint32))
    inverse = datamodels.InverselinearityRefModel.create_fake_data(shape=coeffs.shape)
    inverse.coeffs, inverse.dq = inverse_coeffs, np.zeros(shape, np.uint32)
    inverse_path = tmp_path / "roman_wfi_inverselinearity_0001.asdf"
    inverse.to_asdf(inverse_path)
    inl = references.make_reference("integralnonlinearity", build_detector("WFI01", shape, 1),
                                    useafter="2027-01-01T00:00:00")
    inl.inl_table.science_channel_01.correction = np.full(inl.value.size, 3.0)
    inl_path = tmp_path / "roman_wfi_integralnonlinearity_0001.asdf"
    inl.to_asdf(inl_path)
    out = tmp_path / f"{EXPO}_linearity.asdf"
    assert linearity.cli.run(linearity.main, [
        str(ramp_file), str(out), "--override-linearity", str(lin_path), "--resultant-aware", "true",
        "--override-inverselinearity", str(inverse_path),
        "--override-integralnonlinearity", str(inl_path)]) == 0
    with rdm.open(ramp_file) as before, rdm.open(out) as after:
        inl_correction = linearity.integral_nonlinearity(inl.value, [np.full(inl.value.size, 3.0)])
        expected, _, _ = linearity.correct_linearity_by_reads(
            np.asarray(before.data), np.asarray(before.groupdq), np.asarray(before.pixeldq), coeffs,
            np.zeros(shape, np.uint32), inverse_coeffs, [list(r) for r in before.meta.exposure.read_pattern],
            inl=inl_correction)
        np.testing.assert_array_equal(after.data, expected)
        provenance = after.meta.provenance["linearity"]["references"]
        assert provenance["inverselinearity"]["file"] == inverse_path.name
        assert provenance["integralnonlinearity"]["file"] == inl_path.name


@pytest.mark.peer
def test_read_level_correction_as_romancal(tmp_path, detector):
    """romancal 1.1's LinearityStep (stcal 1.20's read-level path) on a simulated IMG_UNEVEN_6 ramp with
    the simulator's LINEARITY, INVERSELINEARITY and INTEGRALNONLINEARITY (with a non-zero table)."""
    romancal_linearity = pytest.importorskip("romancal.linearity")
    table = ma_table("IMG_UNEVEN_6")
    non_linear, _ = linearity_twins_with_noise(detector, table)
    saturated = saturated_resultants(non_linear.first_saturated_resultant, table.nresultants)
    model = datamodels.RampModel.create_fake_data(shape=non_linear.resultants.shape)
    model.data = non_linear.resultants.astype(np.float32)
    model.groupdq = np.where(saturated, np.uint8(SAT), np.uint8(0))
    model.pixeldq = np.zeros(detector.shape, np.uint32)
    model.meta.exposure.read_pattern = table.read_pattern_lists()
    paths = {}
    for reftype in ("linearity", "inverselinearity", "integralnonlinearity"):
        reference = references.make_reference(reftype, detector, useafter="2027-01-01T00:00:00")
        if reftype == "integralnonlinearity":
            reference.inl_table.science_channel_01.correction = np.linspace(-2.0, 2.0, reference.value.size)
        paths[reftype] = tmp_path / f"roman_wfi_{reftype}_0001.asdf"
        reference.to_asdf(paths[reftype])
    with rdm.open(paths["linearity"]) as lin, rdm.open(paths["inverselinearity"]) as inv, \
            rdm.open(paths["integralnonlinearity"]) as inl:
        ours, our_pixeldq, _ = linearity.correct_linearity_by_reads(
            model.data, model.groupdq, model.pixeldq, np.asarray(lin.coeffs), np.asarray(lin.dq),
            np.asarray(inv.coeffs), table.read_pattern_lists(),
            inl=linearity.inl_from_reference(inl, detector.shape[1]))
    step = romancal_linearity.LinearityStep(**{f"override_{r}": str(p) for r, p in paths.items()})
    theirs = step.process(model)  # run() would also ask a CRDS server for its context
    np.testing.assert_allclose(ours, theirs.data, rtol=2e-7, atol=2e-3)
    np.testing.assert_array_equal(our_pixeldq, theirs.pixeldq)


def linearity_twins_with_noise(detector, table):
    """A simulated non-linear ramp with read noise (and its linear twin), rates from dark to saturating."""
    rate = np.geomspace(1.0, 2.5 * np.median(detector.full_well) / table.exposure_time, detector.bias.size)
    rate = detector.electron_rate(rate.reshape(detector.shape))
    return (simulate_ramp(rate, detector.science_readout(), table, 5, effects=[nonlinear_response(detector)],
                          workers=1),
            simulate_ramp(rate, detector.science_readout(), table, 5, workers=1))


def test_script_without_integral_nonlinearity_when_it_is_n_a(tmp_path, ramp_file):
    """override_integralnonlinearity N/A (romancal's "no such reference"): the read-level correction
    without INL, and no INTEGRALNONLINEARITY in the provenance."""
    shape = TINY_SHAPE[1:]
    coeffs = np.stack([np.zeros(shape), np.ones(shape), np.full(shape, 1e-5)]).astype(np.float32)
    lin_path = linearity_file(tmp_path / "roman_wfi_linearity_0001.asdf", coeffs, np.zeros(shape, np.uint32))
    inverse = datamodels.InverselinearityRefModel.create_fake_data(shape=coeffs.shape)
    inverse.coeffs, inverse.dq = coeffs * np.float32([1, 1, -1])[:, None, None], np.zeros(shape, np.uint32)
    inverse_path = tmp_path / "roman_wfi_inverselinearity_0001.asdf"
    inverse.to_asdf(inverse_path)
    out = tmp_path / f"{EXPO}_linearity.asdf"
    assert linearity.cli.run(linearity.main, [
        str(ramp_file), str(out), "--override-linearity", str(lin_path), "--resultant-aware", "true",
        "--override-inverselinearity", str(inverse_path), "--override-integralnonlinearity", "N/A"]) == 0
    with rdm.open(ramp_file) as before, rdm.open(out) as after:
        expected, _, _ = linearity.correct_linearity_by_reads(
            np.asarray(before.data), np.asarray(before.groupdq), np.asarray(before.pixeldq), coeffs,
            np.zeros(shape, np.uint32), inverse.coeffs, [list(r) for r in before.meta.exposure.read_pattern])
        np.testing.assert_array_equal(after.data, expected)
        assert set(after.meta.provenance["linearity"]["references"]) == {"linearity", "inverselinearity"}
