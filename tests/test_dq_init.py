"""dq_init: kernel on hand-made arrays, and the script on tiny Roman files."""

import logging

from romanpipe.dqflags import pixel

import astropy.units as u
import numpy as np
import pytest
import roman_datamodels as rdm
from roman_datamodels import datamodels

import dq_init
from conftest import EXPO, make_level1

REF = int(pixel.REFERENCE_PIXEL)
GW = int(pixel.GW_AFFECTED_DATA)
DNU = int(pixel.DO_NOT_USE)


def test_mask_is_or_ed_and_border_is_reference_pixel():
    mask = np.zeros((10, 10), np.uint32)
    mask[5, 5] = pixel.DEAD
    mask[0, 0] = pixel.HOT
    pixeldq, groupdq = dq_init.initialize_dq(mask, None, (2, 10, 10))
    expected = np.zeros((10, 10), np.uint32)
    expected[:4, :] = expected[-4:, :] = expected[:, :4] = expected[:, -4:] = REF
    expected[5, 5] = pixel.DEAD
    expected[0, 0] |= pixel.HOT
    np.testing.assert_array_equal(pixeldq, expected)
    assert groupdq.shape == (2, 10, 10) and groupdq.dtype == np.uint8 and not groupdq.any()
    assert mask[0, 0] == pixel.HOT  # input untouched


def test_resultant_dq_becomes_groupdq():
    resultant_dq = np.zeros((2, 10, 10), np.uint8)
    resultant_dq[1, 6, 6] = pixel.DROPOUT
    _, groupdq = dq_init.initialize_dq(None, resultant_dq, (2, 10, 10))
    np.testing.assert_array_equal(groupdq, resultant_dq)
    assert groupdq is not resultant_dq


def test_mask_of_wrong_shape_is_an_error():
    with pytest.raises(ValueError, match="MASK dq has shape"):
        dq_init.initialize_dq(np.zeros((5, 5), np.uint32), None, (2, 10, 10))


def test_ramp_model_layout():
    level1 = make_level1()
    mask = np.zeros((16, 16), np.uint32)
    ramp = dq_init.to_ramp_model(level1, mask)
    assert isinstance(ramp, datamodels.RampModel)
    assert ramp.data.dtype == np.float32
    np.testing.assert_array_equal(ramp.data, level1.data.astype(np.float32))
    np.testing.assert_array_equal(ramp.border_ref_pix_left, ramp.data[:, :, :4])
    np.testing.assert_array_equal(ramp.border_ref_pix_right, ramp.data[:, :, -4:])
    np.testing.assert_array_equal(ramp.border_ref_pix_top, ramp.data[:, :4, :])
    np.testing.assert_array_equal(ramp.border_ref_pix_bottom, ramp.data[:, -4:, :])
    assert (ramp.dq_border_ref_pix_left == REF).all()
    np.testing.assert_array_equal(ramp.amp33, level1.amp33)
    assert ramp.meta.exposure.read_pattern == [[1], [2, 3], [4]]


def test_guide_star_exposure_gets_mask_in_dq():
    level1 = make_level1()
    level1.meta.exposure.type = "WFI_WIM_TRACK"
    mask = np.zeros((16, 16), np.uint32)
    mask[8, 8] = pixel.DEAD
    ramp = dq_init.to_ramp_model(level1, mask)
    assert ramp.dq[8, 8] == pixel.DEAD
    assert ramp.pixeldq[8, 8] == 0


def test_script_writes_a_valid_ramp_model(tmp_path, level1_file, mask_file):
    out = tmp_path / f"{EXPO}_dqinit.asdf"
    assert dq_init.cli.run(dq_init.main, [str(level1_file), str(out), "--override-mask", str(mask_file)]) == 0
    with rdm.open(out) as ramp:
        assert isinstance(ramp, datamodels.RampModel)
        ramp.validate()
        assert ramp.meta.cal_step.dq_init == "COMPLETE"
        assert ramp.meta.cal_step.saturation == "INCOMPLETE"
        assert ramp.pixeldq[5, 6] == pixel.DEAD
        assert ramp.pixeldq[7, 8] == pixel.HOT
        assert ramp.meta.ref_file.mask == "roman_wfi_mask_0001.asdf"
        assert ramp.meta.provenance["dq_init"]["references"]["mask"]["file"] == mask_file.name
        assert ramp.meta.filename == out.name


def test_corrupt_input_fails_with_one_line_and_no_output(tmp_path, mask_file, caplog):
    bad = tmp_path / f"{EXPO}_uncal.asdf"
    bad.write_bytes(b"#ASDF 1.0.0\n" + bytes(range(256)) * 4)
    out = tmp_path / "out_dqinit.asdf"
    status = dq_init.cli.run(dq_init.main, [str(bad), str(out), "--override-mask", str(mask_file)])
    assert status == 1
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([bad.name, mask_file.name])
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and str(bad) in errors[0] and "\n" not in errors[0]


def test_truncated_input_fails_cleanly(tmp_path, level1_file, mask_file):
    data = level1_file.read_bytes()
    level1_file.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out_dqinit.asdf"
    assert dq_init.cli.run(dq_init.main, [str(level1_file), str(out), "--override-mask", str(mask_file)]) == 1
    assert not out.exists()


def test_unknown_parameter_fails(tmp_path, level1_file, mask_file):
    out = tmp_path / "out_dqinit.asdf"
    status = dq_init.cli.run(dq_init.main, [str(level1_file), str(out), "--override-mask",
                                            str(mask_file), "--no-such-option", "1"])
    assert status == 1 and not out.exists()


def test_groundtest_tvac_input_becomes_a_ramp_model(tmp_path, mask_file):
    tvac = datamodels.TvacModel.create_fake_data(shape=(3, 16, 16))
    counts = (np.arange(3 * 16 * 16).reshape(3, 16, 16) + 1000).astype(np.uint16)
    tvac.data = u.Quantity(counts, tvac.data.unit, dtype=np.uint16)
    tvac.meta.exposure.read_pattern = [[1], [2], [3]]
    tvac.meta.instrument.detector = "WFI11"
    tvac.meta.groundtest.test_name = "WFISAT"
    path = tmp_path / "TVAC2_TOHOTQUAL_WFISAT_20240506204523_WFI11_uncal.asdf"
    tvac.to_asdf(path)
    out = tmp_path / "TVAC2_TOHOTQUAL_WFISAT_20240506204523_WFI11_dqinit.asdf"
    assert dq_init.cli.run(dq_init.main, [str(path), str(out), "--override-mask", str(mask_file)]) == 0
    with rdm.open(out) as ramp:
        ramp.validate()
        np.testing.assert_array_equal(ramp.data, counts.astype(np.float32))
        assert ramp.meta.instrument.detector == "WFI11"
        assert [list(r) for r in ramp.meta.exposure.read_pattern] == [[1], [2], [3]]
        assert ramp.meta.groundtest["test_name"] == "WFISAT"
        assert ramp.pixeldq[5, 6] == pixel.DEAD


def test_exposure_without_resultants_exits_64_without_output(tmp_path, mask_file):
    empty = make_level1(shape=(0, 16, 16), read_pattern=[])
    path = tmp_path / f"{EXPO}_uncal.asdf"
    empty.to_asdf(path)
    out = tmp_path / f"{EXPO}_dqinit.asdf"
    assert dq_init.cli.run(dq_init.main, [str(path), str(out), "--override-mask", str(mask_file)]) == 64
    assert not out.exists()


# ---------------------------------------------------------------- reference read (romancal 1.1)

def level1_with_reference_read(offset=0, reference=7):
    level1 = make_level1()
    level1.reference_read = np.full(level1.data.shape[1:], reference, np.uint16)
    level1.reference_read[3, 2] = 500
    level1.reference_amp33 = np.full(level1.amp33.shape[1:], reference, np.uint16)
    level1.meta.instrument.data_encoding_offset = offset
    return level1


def test_reference_read_is_added_back_to_every_resultant_and_the_offset_removed():
    level1 = level1_with_reference_read(offset=3)
    ramp = dq_init.to_ramp_model(level1, np.zeros((16, 16), np.uint32))
    expected = level1.data.astype(np.float32) + 7 - 3
    expected[:, 3, 2] += 500 - 7
    np.testing.assert_array_equal(ramp.data, expected)
    assert ramp.data.dtype == np.float32
    np.testing.assert_array_equal(ramp.border_ref_pix_left, expected[:, :, :4])
    np.testing.assert_array_equal(ramp.amp33, level1.amp33 + 7 - 3)
    assert ramp.amp33.dtype == np.uint16


def test_consumed_level1_arrays_are_not_carried_into_the_ramp():
    level1 = level1_with_reference_read()
    level1.resultantdq = np.zeros(level1.data.shape, np.uint8)
    ramp = dq_init.to_ramp_model(level1, np.zeros((16, 16), np.uint32))
    assert not {"resultantdq", "reference_read", "reference_amp33"} & set(ramp.keys())


@pytest.mark.parametrize("reference", [None, np.zeros((0, 0), np.uint16)])
def test_null_or_empty_reference_read_adds_nothing(reference):
    level1 = make_level1()
    level1.reference_read = reference
    level1.reference_amp33 = reference
    ramp = dq_init.to_ramp_model(level1, np.zeros((16, 16), np.uint32))
    np.testing.assert_array_equal(ramp.data, level1.data.astype(np.float32))
    np.testing.assert_array_equal(ramp.amp33, level1.amp33)


def test_groundtest_reference_read_is_a_record_and_not_added():
    tvac = datamodels.TvacModel.create_fake_data(shape=(2, 16, 16))
    counts = np.full((2, 16, 16), 1000, np.uint16)
    tvac.data = u.Quantity(counts, tvac.data.unit, dtype=np.uint16)
    tvac.reference_read = u.Quantity(np.full((1, 16, 16), 900, np.uint16), tvac.data.unit, dtype=np.uint16)
    tvac.meta.exposure.read_pattern = [[1], [2]]
    ramp = dq_init.to_ramp_model(tvac, np.zeros((16, 16), np.uint32))
    np.testing.assert_array_equal(ramp.data, counts.astype(np.float32))


def test_amp33_outside_the_uint16_range_is_clipped_with_a_warning(caplog):
    # romancal's uint16 sum would wrap 65000 + 1000 around to 464.
    level1 = level1_with_reference_read(reference=1000)
    level1.amp33[0, 0, 0] = 65000
    with caplog.at_level(logging.WARNING, logger="dq_init"):
        ramp = dq_init.to_ramp_model(level1, np.zeros((16, 16), np.uint32))
    assert ramp.amp33[0, 0, 0] == 65535
    assert ramp.amp33[0, 0, 1] == level1.amp33[0, 0, 1] + 1000
    assert "1 amp33 samples outside 0..65535" in caplog.text


def test_reference_read_of_another_shape_fails_in_one_line_naming_the_file(tmp_path, mask_file, caplog):
    level1 = level1_with_reference_read()
    level1.reference_read = np.zeros((8, 8), np.uint16)
    path = tmp_path / f"{EXPO}_uncal.asdf"
    level1.to_asdf(path)
    out = tmp_path / f"{EXPO}_dqinit.asdf"
    assert dq_init.cli.run(dq_init.main, [str(path), str(out), "--override-mask", str(mask_file)]) == 1
    assert not out.exists()
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and str(path) in errors[0] and "reference read has shape (8, 8)" in errors[0]


# ---------------------------------------------------------------- guide window, resultant DQ (romancal 1.1)

def test_expand_gw_flagging_grows_the_do_not_use_window_clipped_to_the_array():
    # romancal's test_dqinit_gw_expansion: columns keep GW_AFFECTED_DATA only; the grown
    # window gets DO_NOT_USE and GW_AFFECTED_DATA.
    bits = dq_init.guide_window_flags((10, 12), (3, 6, 2, 4), expand=2)
    expected = np.zeros((10, 12), np.uint32)
    expected[:, 3:6] = GW
    expected[0:6, 1:8] |= GW | DNU
    np.testing.assert_array_equal(bits, expected)
    at_the_edge = dq_init.guide_window_flags((10, 12), (0, 2, 8, 10), expand=3)
    assert ((at_the_edge[5:10, 0:5] & DNU) != 0).all() and np.count_nonzero(at_the_edge & DNU) == 25


def test_script_expands_the_guide_window_and_keeps_dropout_in_groupdq(tmp_path, mask_file):
    level1 = make_level1()
    level1.meta.guide_star.update({"window_xstart": 6, "window_xstop": 8, "window_ystart": 7,
                                   "window_ystop": 9})
    level1.resultantdq = np.zeros(level1.data.shape, np.uint8)
    level1.resultantdq[1, 12, 12] = pixel.DROPOUT
    path = tmp_path / f"{EXPO}_uncal.asdf"
    level1.to_asdf(path)
    out = tmp_path / f"{EXPO}_dqinit.asdf"
    assert dq_init.cli.run(dq_init.main, [str(path), str(out), "--override-mask", str(mask_file),
                                          "--expand-gw-flagging", "1"]) == 0
    with rdm.open(out) as ramp:
        assert ramp.meta.provenance["dq_init"]["parameters"]["expand_gw_flagging"] == 1
        do_not_use = (ramp.pixeldq & DNU) != 0
        expected = np.zeros((16, 16), bool)
        expected[6:10, 5:9] = True
        np.testing.assert_array_equal(do_not_use, expected)
        assert ramp.groupdq[1, 12, 12] == pixel.DROPOUT
        assert np.count_nonzero(ramp.groupdq) == 1
        assert "resultantdq" not in ramp


@pytest.mark.peer
def test_same_ramp_as_romancal_with_reference_read_guide_window_and_dropout():
    romancal_dq_init = pytest.importorskip("romancal.dq_init.dq_initialization")
    level1 = level1_with_reference_read(offset=3)
    level1.meta.guide_star.update({"window_xstart": 6, "window_xstop": 8, "window_ystart": 7,
                                   "window_ystop": 9})
    level1.resultantdq = np.zeros(level1.data.shape, np.uint8)
    level1.resultantdq[1, 12, 12] = pixel.DROPOUT
    mask = datamodels.MaskRefModel.create_fake_data(shape=(16, 16))
    mask.dq = np.zeros((16, 16), np.uint32)
    mask.dq[5, 6] = pixel.DEAD

    ours = dq_init.to_ramp_model(level1.copy(), np.asarray(mask.dq), expand_gw_flagging=2)
    theirs = romancal_dq_init.do_dqinit(level1.copy(), mask, expand_gw_flagging=2)
    np.testing.assert_array_equal(ours.data, theirs.data)
    np.testing.assert_array_equal(ours.amp33, theirs.amp33)
    np.testing.assert_array_equal(ours.groupdq, theirs.groupdq)
    # Our one difference (README): the 4-pixel border is also REFERENCE_PIXEL.
    np.testing.assert_array_equal(ours.pixeldq & ~np.uint32(REF), theirs.pixeldq)
    assert not {"resultantdq", "reference_read", "reference_amp33"} & (set(ours.keys()) | set(theirs.keys()))
