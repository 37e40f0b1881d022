"""dq_init: kernel on hand-made arrays, and the script on tiny Roman files."""

from romanpipe.dqflags import pixel

import astropy.units as u
import numpy as np
import pytest
import roman_datamodels as rdm
from roman_datamodels import datamodels

import dq_init
from conftest import EXPO, make_level1

REF = int(pixel.REFERENCE_PIXEL)


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
