"""flat_field: hand-computed values for every rule of the romancal documentation, and the CLI."""

from romanpipe.detector import matching_science_area

import numpy as np
import pytest
import roman_datamodels as rdm
from roman_datamodels import datamodels

import flat_field
from conftest import EXPO
from flat_field import apply_flat

NO_FLAT_FIELD = 2**18
HOT = 2**11
FLAGS = {"NO_FLAT_FIELD": NO_FLAT_FIELD}


def run(flat, flat_err=None, flat_dq=None, data=None, **kwargs):
    flat = np.array([flat], np.float32)
    data = np.full(flat.shape, 10.0, np.float32) if data is None else np.array([data], np.float32)
    flat_err = np.zeros(flat.shape, np.float32) if flat_err is None else np.array([flat_err], np.float32)
    flat_dq = np.zeros(flat.shape, np.uint32) if flat_dq is None else np.array([flat_dq], np.uint32)
    return apply_flat(data, np.zeros(flat.shape, np.uint32), np.full(flat.shape, 4.0, np.float32),
                      np.full(flat.shape, 9.0, np.float32), flat, flat_err, flat_dq, flags=FLAGS, **kwargs)


def test_data_err_and_variances_scale_with_the_flat():
    result = run([2.0], flat_err=[0.1])
    assert result.data[0, 0] == pytest.approx(5.0)
    assert result.var_poisson[0, 0] == pytest.approx(1.0)   # 4 / 2^2
    assert result.var_rnoise[0, 0] == pytest.approx(2.25)   # 9 / 2^2
    assert result.var_flat[0, 0] == pytest.approx(25.0 * 0.0025)  # 5^2 * (0.1 / 2)^2
    assert result.err[0, 0] == pytest.approx(np.sqrt(1.0 + 2.25 + 0.0625))


def test_nan_and_zero_flat_pixels_get_no_flat_field_and_are_left_alone():
    result = run([np.nan, 0.0, 1.25], flat_err=[np.nan, 0.2, 0.0])
    assert (result.dq[0] & NO_FLAT_FIELD).tolist() == [NO_FLAT_FIELD, NO_FLAT_FIELD, 0]
    assert result.data[0].tolist() == pytest.approx([10.0, 10.0, 8.0])
    assert result.var_flat[0, :2].tolist() == [0.0, 0.0]
    assert np.isfinite(result.err).all()


def test_reference_dq_is_or_ed_and_its_no_flat_field_pixels_reset_to_one():
    result = run([2.0, 2.0], flat_dq=[HOT, NO_FLAT_FIELD])
    assert result.dq[0].tolist() == [HOT, NO_FLAT_FIELD]
    assert result.data[0].tolist() == pytest.approx([5.0, 10.0])


def test_without_var_flat_err_holds_only_the_scaled_variances():
    result = run([2.0], flat_err=[0.1], include_var_flat=False)
    assert result.var_flat[0, 0] == 0.0
    assert result.err[0, 0] == pytest.approx(np.sqrt(3.25))


def test_inputs_are_not_modified():
    flat = np.array([[0.0, 2.0]], np.float32)
    data = np.array([[3.0, 4.0]], np.float32)
    apply_flat(data, np.zeros((1, 2), np.uint32), data.copy(), data.copy(), flat,
               np.zeros((1, 2), np.float32), np.zeros((1, 2), np.uint32), flags=FLAGS)
    assert flat.tolist() == [[0.0, 2.0]] and data.tolist() == [[3.0, 4.0]]


def test_flattened_uniform_sky_is_flat_to_the_noise():
    rng = np.random.default_rng(3)
    shape = (200, 200)
    yy, xx = np.mgrid[:200, :200] / 200.0
    flat = ((1.0 + 0.04 * np.sin(3 * xx) * np.cos(2 * yy)) * rng.normal(1.0, 0.015, shape)).astype(np.float32)
    sky_rate, exposure_time = 50.0, 100.0
    data = (rng.poisson(sky_rate * flat * exposure_time) / exposure_time).astype(np.float32)
    variance = (data / exposure_time).astype(np.float32)
    result = apply_flat(data, np.zeros(shape, np.uint32), variance, np.zeros(shape, np.float32), flat,
                        np.zeros(shape, np.float32), np.zeros(shape, np.uint32), flags=FLAGS)
    pulls = (result.data - sky_rate) / result.err
    assert abs(pulls.mean()) < 0.02 and pulls.std() == pytest.approx(1.0, abs=0.02)
    before = (data - sky_rate) / np.sqrt(variance)
    assert before.std() > 1.5  # the flat's structure dominated before


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        apply_flat(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint32), np.zeros((2, 2)),
                   np.zeros((2, 2)), np.ones((3, 3), np.float32), np.zeros((3, 3)),
                   np.zeros((3, 3), np.uint32))


def test_cli_product_reopens_with_flat_variance(tmp_path):
    shape = (6, 5)
    image = datamodels.ImageModel.create_fake_data(shape=shape)
    image.data = np.full(shape, 8.0, np.float32)
    image.dq = np.zeros(shape, np.uint32)
    image.var_poisson = np.full(shape, 4.0, np.float16)
    image.var_rnoise = np.full(shape, 1.0, np.float16)
    image_path = tmp_path / f"{EXPO}_assignwcs.asdf"
    image.to_asdf(image_path)
    reference = datamodels.FlatRefModel.create_fake_data(shape=shape)
    reference.data = np.full(shape, 2.0, np.float32)
    reference.data[0, 0] = np.nan
    reference.err = np.full(shape, 0.2, np.float32)
    reference.dq = np.zeros(shape, np.uint32)
    flat_path = tmp_path / "roman_wfi_flat_0001.asdf"
    reference.to_asdf(flat_path)
    output = tmp_path / f"{EXPO}_flat.asdf"
    assert flat_field.cli.run(flat_field.main, [str(image_path), str(output), "--override-flat",
                                                str(flat_path)]) == 0
    with rdm.open(output) as product:
        assert product.meta.cal_step.flat_field == "COMPLETE"
        assert product.data[1, 1] == pytest.approx(4.0)
        assert float(product.var_flat[1, 1]) == pytest.approx(16 * 0.01, rel=1e-3)
        assert float(product.err[1, 1]) == pytest.approx(np.sqrt(1.0 + 0.25 + 0.16), rel=1e-3)
        assert product.dq[0, 0] & NO_FLAT_FIELD


def test_full_readout_flat_loses_its_border_other_shapes_fail():
    full = np.arange(16 * 16, dtype=np.float32).reshape(16, 16)
    np.testing.assert_array_equal(matching_science_area(full, (8, 8)), full[4:12, 4:12])
    assert matching_science_area(full, (16, 16)) is full
    with pytest.raises(ValueError, match=r"\(16, 16\)"):
        matching_science_area(full, (10, 10))


@pytest.mark.peer
def test_same_result_as_romancal_flat_field():
    """romancal's flat-field algorithm on the same image and FLAT (VAR_FLAT included on both sides)."""
    romancal_flat = pytest.importorskip("romancal.flatfield.flat_field")
    rng = np.random.default_rng(5)
    shape = (40, 30)
    image = datamodels.ImageModel.create_fake_data(shape=shape)
    image.data = rng.normal(10.0, 2.0, shape).astype(np.float32)
    image.dq = np.zeros(shape, np.uint32)
    image.var_poisson = rng.uniform(0.5, 2.0, shape).astype(np.float16)
    image.var_rnoise = rng.uniform(0.1, 0.3, shape).astype(np.float16)
    image.err = np.sqrt(image.var_poisson.astype(np.float32) + image.var_rnoise).astype(np.float16)
    reference = datamodels.FlatRefModel.create_fake_data(shape=shape)
    reference.data = rng.normal(1.0, 0.05, shape).astype(np.float32)
    reference.data[3, 4], reference.data[5, 6] = np.nan, 0.0
    reference.err = rng.uniform(0.001, 0.01, shape).astype(np.float32)
    reference.dq = np.zeros(shape, np.uint32)
    reference.dq[7, 8] = HOT
    ours = apply_flat(np.asarray(image.data), np.asarray(image.dq), np.asarray(image.var_poisson),
                      np.asarray(image.var_rnoise), np.asarray(reference.data), np.asarray(reference.err),
                      np.asarray(reference.dq))
    theirs = image.copy()
    theirs["var_flat"] = np.zeros(shape, np.float16)
    theirs.meta["cal_step"] = {"flat_field": "INCOMPLETE"}
    romancal_flat.do_flat_field(theirs, reference, include_var_flat=True)
    np.testing.assert_allclose(ours.data, theirs.data, rtol=1e-6)
    np.testing.assert_array_equal(ours.dq, theirs.dq)
    np.testing.assert_allclose(ours.var_poisson, np.asarray(theirs.var_poisson, np.float32), rtol=2e-3)
    # Where the flat has no value (NaN, 0), romancal still applies the reference's error; we
    # treat the pixel as not flat-fielded at all: no flat variance there.
    valid = np.isfinite(reference.data) & (reference.data != 0)
    np.testing.assert_allclose(ours.var_flat[valid], np.asarray(theirs.var_flat, np.float32)[valid],
                               rtol=2e-3, atol=1e-6)
    np.testing.assert_allclose(ours.err[valid], np.asarray(theirs.err, np.float32)[valid], rtol=2e-3)
    assert (ours.var_flat[~valid] == 0).all()
