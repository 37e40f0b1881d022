"""saturation kernel: hand-computed flags for every rule of the romancal documentation's description."""

import numpy as np
import pytest
import roman_datamodels as rdm

import dq_init
import saturation
from conftest import EXPO
from saturation import dilution_factors, flag_saturation

SAT = 2
DNU = 1
AD_FLOOR = 64
DEAD = 1024
NO_SAT_CHECK = 2**21
FLAGS = {"SATURATED": SAT, "DO_NOT_USE": DNU, "AD_FLOOR": AD_FLOOR, "NO_SAT_CHECK": NO_SAT_CHECK}

# Resultants of 1, 2, 4 and 1 reads: dilution factors 1, 2.5/3, 5.5/7, 1.
READ_PATTERN = [[1], [2, 3], [4, 5, 6, 7], [8]]


def ramp(*pixels):
    """A (4, 1, n) ramp from per-pixel resultant lists."""
    return np.array(pixels, dtype=np.float32).T[:, None, :]


def run(data, thresholds, sat_dq=None, **kwargs):
    n = data.shape[2]
    sat_dq = np.zeros((1, n), np.uint32) if sat_dq is None else sat_dq
    return flag_saturation(data, np.zeros(data.shape, np.uint8), np.zeros((1, n), np.uint32),
                           np.array([thresholds], np.float32), sat_dq, READ_PATTERN,
                           flags=FLAGS, **kwargs)


def test_dilution_factors_are_mean_over_max_read_time():
    assert dilution_factors(READ_PATTERN) == pytest.approx([1.0, 2.5 / 3, 5.5 / 7, 1.0])


def test_first_saturated_resultant_and_all_later_are_flagged():
    # 850 >= 1000 * 2.5/3 = 833.3 in resultant 1; later values dip below but stay flagged.
    gdq, _ = run(ramp([100, 850, 700, 900]), [1000])
    assert (gdq[:, 0, 0] & SAT).tolist() == [0, SAT, SAT, SAT]


def test_dilution_case_resultant_below_threshold_is_flagged():
    # 790 < 1000 but >= 1000 * 5.5/7 = 785.7: the late reads of resultant 2 saturated.
    gdq, _ = run(ramp([100, 800, 790, 990]), [1000])
    assert (gdq[:, 0, 0] & SAT).tolist() == [0, 0, SAT, SAT]


def test_unsaturated_ramp_is_not_flagged():
    gdq, pdq = run(ramp([100, 800, 780, 999]), [1000])
    assert not gdq.any() and not pdq.any()


def test_nan_threshold_never_saturates_and_flags_no_sat_check():
    # stcal gives such pixels the threshold 65536: even the A/D converter's largest value is below.
    gdq, pdq = run(ramp([100, 60000, 65535, 65535]), [np.nan])
    assert not (gdq & SAT).any()
    assert pdq[0, 0] == NO_SAT_CHECK


def test_no_sat_check_pixel_at_the_ad_limit_is_neither_flagged_nor_grown():
    data = np.full((4, 3, 3), 100, np.float32)
    data[:, 1, 1] = 65535
    sat_dq = np.zeros((3, 3), np.uint32)
    sat_dq[1, 1] = NO_SAT_CHECK
    gdq, pdq = flag_saturation(data, np.zeros(data.shape, np.uint8), np.zeros((3, 3), np.uint32),
                               np.full((3, 3), 1000, np.float32), sat_dq, READ_PATTERN,
                               n_pix_grow_sat=1, flags=FLAGS)
    assert not gdq.any()
    assert pdq.tolist() == [[0, 0, 0], [0, NO_SAT_CHECK, 0], [0, 0, 0]]


def test_unchecked_pixel_still_gets_a_saturated_neighbours_growth_and_the_ad_floor():
    # As stcal: growth marks charge spilled from a checked neighbour; values <= 0 are A/D floor.
    data = np.full((4, 1, 2), 100, np.float32)
    data[3, 0, 0] = 5000
    data[1, 0, 1] = 0
    gdq, _ = flag_saturation(data, np.zeros(data.shape, np.uint8), np.zeros((1, 2), np.uint32),
                             np.array([[1000, np.nan]], np.float32), np.zeros((1, 2), np.uint32),
                             READ_PATTERN, n_pix_grow_sat=1, flags=FLAGS)
    assert gdq[:, 0, 1].tolist() == [0, AD_FLOOR | DNU, 0, SAT]


def test_no_sat_check_in_reference_dq_ignores_the_threshold():
    gdq, pdq = run(ramp([100, 200, 300, 400]), [10], sat_dq=np.array([[NO_SAT_CHECK]], np.uint32))
    assert not (gdq & SAT).any()
    assert pdq[0, 0] == NO_SAT_CHECK


def test_ad_floor_flags_only_the_resultants_at_or_below_zero():
    gdq, _ = run(ramp([0, 5, -3, 7]), [1000])
    assert gdq[:, 0, 0].tolist() == [AD_FLOOR | DNU, 0, AD_FLOOR | DNU, 0]


def test_reference_dq_is_or_ed_into_pixeldq():
    _, pdq = run(ramp([1, 2, 3, 4], [1, 2, 3, 4]), [1000, 1000],
                 sat_dq=np.array([[DEAD, 0]], np.uint32))
    assert pdq.tolist() == [[DEAD, 0]]


def test_inputs_are_not_modified():
    data = ramp([100, 850, 700, 900])
    groupdq = np.zeros(data.shape, np.uint8)
    pixeldq = np.zeros((1, 1), np.uint32)
    flag_saturation(data, groupdq, pixeldq, np.array([[np.nan]], np.float32),
                    np.zeros((1, 1), np.uint32), READ_PATTERN, flags=FLAGS)
    assert not groupdq.any() and not pixeldq.any()


def test_n_pix_grow_sat_flags_the_neighbours_from_the_same_resultant():
    data = np.full((4, 3, 3), 100, np.float32)
    data[2:, 1, 1] = 5000
    gdq, _ = flag_saturation(data, np.zeros(data.shape, np.uint8), np.zeros((3, 3), np.uint32),
                             np.full((3, 3), 1000, np.float32), np.zeros((3, 3), np.uint32),
                             READ_PATTERN, n_pix_grow_sat=1, flags=FLAGS)
    assert not (gdq[:2] & SAT).any()
    assert (gdq[2:] & SAT).all()


def test_backup_flags_the_multiread_resultant_before_saturation():
    gdq, _ = run(ramp([100, 200, 300, 5000]), [1000], backup=1)
    # resultant 3 saturates; resultant 2 has 4 reads so it is flagged too; resultant 1 is not.
    assert (gdq[:, 0, 0] & SAT).tolist() == [0, 0, SAT, SAT]


def test_mismatched_read_pattern_is_an_error():
    with pytest.raises(ValueError, match="read_pattern has 2 resultants"):
        flag_saturation(ramp([1, 2, 3, 4]), np.zeros((4, 1, 1), np.uint8), np.zeros((1, 1), np.uint32),
                        np.ones((1, 1), np.float32), np.zeros((1, 1), np.uint32), [[1], [2]],
                        flags=FLAGS)


def test_script_flags_and_records_the_step(tmp_path, level1_file, mask_file, saturation_file):
    ramp_path = tmp_path / f"{EXPO}_dqinit.asdf"
    assert dq_init.cli.run(dq_init.main, [str(level1_file), str(ramp_path),
                                          "--override-mask", str(mask_file)]) == 0
    with rdm.open(ramp_path) as ramp:
        data = ramp.data.copy()
        read_pattern = [list(r) for r in ramp.meta.exposure.read_pattern]
    out = tmp_path / f"{EXPO}_saturation.asdf"
    status = saturation.cli.run(saturation.main, [str(ramp_path), str(out), "--override-saturation",
                                                  str(saturation_file)])
    assert status == 0
    # The fixture's threshold is 1500 DN everywhere: recompute the expected flags naively.
    dilution = [np.mean(r) / max(r) for r in read_pattern]
    expected = np.zeros(data.shape, bool)
    for y in range(data.shape[1]):
        for x in range(data.shape[2]):
            hit = False
            for k in range(data.shape[0]):
                hit = hit or data[k, y, x] >= 1500 * dilution[k]
                expected[k, y, x] = hit
    with rdm.open(out) as result:
        assert result.meta.cal_step.dq_init == "COMPLETE"
        assert result.meta.cal_step.saturation == "COMPLETE"
        np.testing.assert_array_equal((result.groupdq & SAT) != 0, expected)
        assert expected.any() and not expected.all()
        assert result.meta.ref_file.saturation == saturation_file.name


def test_skipped_steps_are_recorded(tmp_path, level1_file, mask_file, saturation_file):
    ramp_path = tmp_path / "x_dqinit.asdf"
    dq_init.cli.run(dq_init.main, [str(level1_file), str(ramp_path), "--override-mask", str(mask_file)])
    out = tmp_path / "x_saturation.asdf"
    assert saturation.cli.run(saturation.main, [str(ramp_path), str(out), "--override-saturation",
                                                str(saturation_file), "--mark-skipped", "refpix"]) == 0
    with rdm.open(out) as result:
        assert result.meta.cal_step.refpix == "SKIPPED"


def test_skip_passes_the_input_on_unchanged_and_records_it(tmp_path, level1_file, mask_file, saturation_file):
    ramp_path = tmp_path / "x_dqinit.asdf"
    dq_init.cli.run(dq_init.main, [str(level1_file), str(ramp_path), "--override-mask", str(mask_file)])
    out = tmp_path / "x_saturation.asdf"
    assert saturation.cli.run(saturation.main, [str(ramp_path), str(out), "--override-saturation",
                                                str(saturation_file), "--skip", "true"]) == 0
    with rdm.open(out) as result, rdm.open(ramp_path) as ramp:
        assert result.meta.cal_step.saturation == "SKIPPED"
        np.testing.assert_array_equal(result.groupdq, ramp.groupdq)
        np.testing.assert_array_equal(result.data, ramp.data)


@pytest.mark.peer
def test_unchecked_pixels_as_romancal_on_single_read_resultants():
    """Single-read resultants (no dilution, where our rule and stcal's agree): NaN and NO_SAT_CHECK
    thresholds, the A/D limit, the A/D floor and the growth flag the same resultants as romancal 1.1."""
    romancal_saturation = pytest.importorskip("romancal.saturation.saturation")
    from roman_datamodels import datamodels

    read_pattern = [[1], [2], [3], [4]]
    data = np.full((4, 5, 5), 100, np.float32)
    data[:, 1, 1] = [100, 65535, 65535, 65535]  # NO_SAT_CHECK at the A/D limit
    data[:, 3, 3] = [100, 65535, 65535, 65535]  # NaN threshold at the A/D limit
    data[2:, 2, 3] = 5000  # a checked pixel that saturates, next to the NaN one
    data[1, 4, 0] = 0  # A/D floor
    thresholds = np.full((5, 5), 1000, np.float32)
    thresholds[3, 3] = np.nan
    sat_dq = np.zeros((5, 5), np.uint32)
    sat_dq[1, 1] = NO_SAT_CHECK

    ramp_model = datamodels.RampModel.create_fake_data(shape=data.shape)
    ramp_model.data = data.copy()
    ramp_model.groupdq = np.zeros(data.shape, np.uint8)
    ramp_model.pixeldq = np.zeros((5, 5), np.uint32)
    ramp_model.meta.exposure.read_pattern = read_pattern
    reference = datamodels.SaturationRefModel.create_fake_data(shape=(5, 5))
    reference.data = thresholds.copy()
    reference.dq = sat_dq.copy()
    theirs = romancal_saturation.flag_saturation(ramp_model, reference, n_pix_grow_sat=1)

    gdq, pdq = flag_saturation(data, np.zeros(data.shape, np.uint8), np.zeros((5, 5), np.uint32),
                               thresholds, sat_dq, read_pattern, n_pix_grow_sat=1)
    np.testing.assert_array_equal(gdq, theirs.groupdq)
    np.testing.assert_array_equal(pdq, theirs.pixeldq)
    assert (gdq[2:, 3, 3] & SAT).all()  # the growth reached the NaN pixel, as romancal's
