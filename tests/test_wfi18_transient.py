"""wfi18_transient: an injected first-read transient fitted and removed, the masking fallbacks,
other detectors left alone, and romancal 1.1's WFI18TransientStep on the same full-frame input."""

from romanpipe.readpattern import mean_read_times, pixel_read_times

import numpy as np
import pytest
import roman_datamodels as rdm

import dq_init
import wfi18_transient
from conftest import EXPO, make_level1
from wfi18_transient import correct_transient, double_exponential

FRAME_TIME = 3.04
READ_PATTERN = [[1], [2], [3], [4, 5], [6, 7], [8]]
DO_NOT_USE, WFI18_TRANSIENT = 1, 64
GROUP_FLAGS = {"DO_NOT_USE": DO_NOT_USE, "WFI18_TRANSIENT": WFI18_TRANSIENT}


def ramp_with_transient(shape, *, transient=(40.0, -6.0, 0.25, 0.9), noise=3.0, seed=2):
    """A ramp of a few DN/s with sparse bright pixels, read noise, and the double exponential added to
    the first resultant at each pixel's read time (WFI18's timing). Returns (ramp, clean first resultant)."""
    rng = np.random.default_rng(seed)
    rate = np.full(shape, 2.0)
    rate[rng.random(shape) < 0.05] = 300.0  # stars: the fit uses the weakly lit pixels of each row
    times = mean_read_times(READ_PATTERN, FRAME_TIME)
    noise_per_resultant = noise / np.sqrt([len(reads) for reads in READ_PATTERN])
    clean = np.stack([1.0e4 + rate * t + rng.normal(0.0, n, shape)
                      for t, n in zip(times, noise_per_resultant, strict=True)])
    data = clean.copy()
    data[0] += double_exponential(pixel_read_times(shape, FRAME_TIME, 18), *transient)
    return data.astype(np.float32), clean[0]


def test_injected_transient_is_fitted_and_removed():
    """1032 x 136 pixels (the first 1024 science rows, read first on WFI18): before the correction the
    first resultant is off by up to 40 DN near the top rows; after, every row's mean is within 0.5 DN
    of the clean resultant (read noise 3 DN, ~128 pixels per row) and nothing is flagged."""
    shape = (1032, 136)
    data, clean_first = ramp_with_transient(shape)
    inner = (slice(4, -4), slice(4, -4))
    before = (data[0] - clean_first)[inner].mean(axis=1)
    assert before.max() > 30.0
    corrected, groupdq = correct_transient(data, np.zeros(data.shape, np.uint8), READ_PATTERN, FRAME_TIME,
                                           flags=GROUP_FLAGS)
    after = (corrected[0] - clean_first)[inner].mean(axis=1)
    assert np.abs(after).max() < 0.5
    np.testing.assert_array_equal(corrected[1:], data[1:])  # only the first resultant changes
    np.testing.assert_array_equal(corrected[0][:4], data[0][:4])  # nor the reference rows
    assert not groupdq.any()


@pytest.mark.parametrize("mask_rows, nresultants", [(True, 6), (False, 4)])
def test_masking_instead_of_fitting(mask_rows, nresultants):
    """mask_rows, or fewer than 5 resultants: the first 1000 rows of resultant 0 are flagged
    DO_NOT_USE | WFI18_TRANSIENT, the data unchanged."""
    data = np.ones((nresultants, 1010, 12), np.float32)
    corrected, groupdq = correct_transient(data, np.zeros(data.shape, np.uint8), READ_PATTERN[:nresultants],
                                           FRAME_TIME, mask_rows=mask_rows, flags=GROUP_FLAGS)
    np.testing.assert_array_equal(corrected, data)
    assert (groupdq[0, :1000] == DO_NOT_USE | WFI18_TRANSIENT).all()
    assert not groupdq[0, 1000:].any() and not groupdq[1:].any()


def level1_file(tmp_path, detector, shape):
    model = make_level1(shape=(6, *shape), read_pattern=READ_PATTERN)
    model.meta.instrument.detector = detector
    model.meta.exposure.frame_time = FRAME_TIME
    data, _ = ramp_with_transient(shape)
    model.data = np.clip(np.rint(data), 0, 65535).astype(np.uint16)
    model.amp33 = np.zeros((6, shape[0], 4), np.uint16)
    path = tmp_path / f"{EXPO.replace('WFI01', detector)}_uncal.asdf"
    model.to_asdf(path)
    return path


@pytest.fixture
def mask(tmp_path):
    from roman_datamodels import datamodels

    def make(shape):
        model = datamodels.MaskRefModel.create_fake_data(shape=shape)
        model.dq = np.zeros(shape, np.uint32)
        path = tmp_path / "roman_wfi_mask_0001.asdf"
        model.to_asdf(path)
        return path

    return make


@pytest.mark.parametrize("detector", ["WFI01", "WFI18"])
def test_script_corrects_wfi18_and_passes_other_detectors_through(tmp_path, mask, detector):
    shape = (1032, 40)
    uncal = level1_file(tmp_path, detector, shape)
    ramp = tmp_path / "ramp_dqinit.asdf"
    assert dq_init.cli.run(dq_init.main, [str(uncal), str(ramp), "--override-mask", str(mask(shape))]) == 0
    out = tmp_path / "ramp_wfi18_transient.asdf"
    assert wfi18_transient.cli.run(wfi18_transient.main, [str(ramp), str(out)]) == 0
    with rdm.open(ramp) as before, rdm.open(out) as after:
        changed = np.asarray(after.data) != np.asarray(before.data)
        if detector == "WFI18":
            assert after.meta.cal_step.wfi18_transient == "COMPLETE"
            # The science pixels of the rows read first change; the reference border and the later
            # resultants do not.
            assert changed[0][4:200, 4:-4].all() and not changed[1:].any()
            assert not changed[0][:4].any() and not changed[0][:, :4].any()
        else:
            assert after.meta.cal_step.wfi18_transient == "N/A"
            assert not changed.any()


@pytest.mark.peer
def test_same_correction_as_romancal_on_a_full_frame():
    """romancal 1.1's correct_anomaly (which needs a 4096 x 4096 frame) on the same WFI18 ramp: the
    corrected first resultants agree to 0.05 DN (the fits differ only by float rounding)."""
    romancal_transient = pytest.importorskip("romancal.wfi18_transient.wfi18_transient")
    from roman_datamodels import datamodels

    data, _ = ramp_with_transient((4096, 4096))
    ours, _ = correct_transient(data, np.zeros(data.shape, np.uint8), READ_PATTERN, FRAME_TIME)
    model = datamodels.RampModel.create_fake_data(shape=(6, 1, 1))
    model.data = data.copy()
    model.groupdq = np.zeros(data.shape, np.uint8)
    model.meta.exposure.frame_time = FRAME_TIME
    model.meta.exposure.read_pattern = READ_PATTERN
    theirs = romancal_transient.correct_anomaly(model)
    assert not np.asarray(theirs.groupdq).any()
    np.testing.assert_allclose(ours[0], np.asarray(theirs.data)[0], atol=0.05)


def test_the_simulators_transient_is_removed_from_a_simulated_wfi18_ramp():
    """wfisim's FirstReadTransient in a simulated WFI18 ramp (IMG_UNEVEN_6: the first resultant is read
    1 alone) against its twin without it, same seed, read noise 6 DN: before the step the first resultant
    differs by up to 40 DN; after it, every row's mean difference is within 1 DN (the fit of noisy row
    residuals, 128 pixels a row) and typically within 0.3 DN, the other resultants untouched."""
    from wfisim.detector import build_detector
    from wfisim.matables import ma_table
    from wfisim.ramps import simulate_ramp
    from wfisim.wfi18_transient import FirstReadTransient

    detector = build_detector("WFI18", (1032, 136), 8)
    table = ma_table("IMG_UNEVEN_6")
    transient = FirstReadTransient(detector.shape, table.frame_time, 40.0, -6.0, 0.25, 0.9)
    rate = detector.electron_rate(np.full(detector.shape, 3.0))
    with_transient, twin = (simulate_ramp(rate, detector.science_readout(), table, 9, effects=effects,
                                          workers=1).resultants.astype(np.float32)
                            for effects in ([transient], []))
    inner = (slice(4, -4), slice(4, -4))
    assert (with_transient[0] - twin[0])[inner].mean(axis=1).max() > 30.0
    corrected, groupdq = correct_transient(with_transient, np.zeros(with_transient.shape, np.uint8),
                                           table.read_pattern_lists(), table.frame_time, flags=GROUP_FLAGS)
    row_error = np.abs((corrected[0] - twin[0])[inner].mean(axis=1))
    assert row_error.max() < 1.0 and np.median(row_error) < 0.3
    np.testing.assert_array_equal(corrected[1:], with_transient[1:])
    assert not groupdq.any()
