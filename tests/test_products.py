"""as_float16: the Level 2 float16 arrays, converted fast and exactly as numpy would; the exposure
an image belongs to; which products carry block checksums."""

from pathlib import Path

from romanpipe.products import as_float16, carries_checksums, exposure_group, open_model, write_atomic

import asdf
import numpy as np
import pytest
import roman_datamodels as rdm
from roman_datamodels import datamodels


def test_float16_conversion_is_numpys_bit_for_bit_and_fast_path_covers_subnormals():
    rng = np.random.default_rng(3)
    magnitudes = 10.0 ** rng.uniform(-12, 5, 200_000)
    values = (magnitudes * rng.choice([-1.0, 1.0], magnitudes.size)).astype(np.float32)
    step = np.float32(2.0**-24)
    # Exact ties between two subnormals (round half to even), the largest subnormal's neighbourhood,
    # both zeros, NaN, infinities, float16 overflow.
    special = np.array([0.5, 1.5, 2.5, 1023.5, 1024.0, 1023.75], np.float32) * step
    extra = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 70000.0, 2.0**-14, -(2.0**-14)], np.float32)
    values = np.concatenate([values, special, -special, extra])
    with np.errstate(over="ignore"):
        expected = values.astype(np.float16)
    np.testing.assert_array_equal(as_float16(values).view(np.uint16), expected.view(np.uint16))
    with pytest.raises(TypeError, match="float64"):
        as_float16(values.astype(np.float64))


def test_a_file_whose_path_holds_url_characters_opens(tmp_path, mask_file):
    """asdf reads a path as a URL: ';', '#', '?' and '%' cut it short ("No such file")."""
    folder = tmp_path / "refs;2026#a?b%20c"
    folder.mkdir()
    odd = folder / "mask;1#x?y%20z.asdf"
    odd.write_bytes(mask_file.read_bytes())
    with open_model(odd, (datamodels.MaskRefModel,)) as model:
        assert model.dq[5, 6] == 1024
def test_exposure_group_is_group_id_then_observation_id_then_the_image_itself():
    """As romancal 1.1's ModelLibrary: tweakreg and outlier detection group by the same rule."""
    model = datamodels.ImageModel.create_fake_data(shape=(2, 2))
    assert model.meta.observation.observation_id == "?"           # rad's placeholder is no id
    assert exposure_group(model, "image.asdf") == "image.asdf"
    model.meta.observation.observation_id = "0000101001001001001"
    assert exposure_group(model, "image.asdf") == "0000101001001001001"
    model.meta["group_id"] = "roman00001_exposure1"
    assert exposure_group(model, "image.asdf") == "roman00001_exposure1"


def block_checksums(path) -> list[bytes]:
    """The 16-byte MD5 field of every binary block header of an ASDF file (zeros: none written).

    Header after the 4-byte magic: header size (2 bytes), flags (4), compression (4),
    allocated, used and data sizes (8 each), then the checksum (ASDF standard, "Blocks").
    """
    content = Path(path).read_bytes()
    checksums, start = [], content.find(BLOCK_MAGIC)
    while start >= 0:
        offset = start + len(BLOCK_MAGIC) + 2 + 4 + 4 + 3 * 8
        checksums.append(content[offset:offset + 16])
        start = content.find(BLOCK_MAGIC, offset)
    return checksums


BLOCK_MAGIC = b"\xd3BLK"


def test_intermediates_leave_out_block_checksums_delivered_products_keep_them(tmp_path):
    model = datamodels.ImageModel.create_fake_data(shape=(16, 16))
    model.data = np.arange(256, dtype=np.float32).reshape(16, 16)
    intermediate = write_atomic(model, tmp_path / "r0000101001001001001_01101_0001_WFI01_flat.asdf")
    delivered = write_atomic(model, tmp_path / "r0000101001001001001_01101_0001_WFI01_cal.asdf")
    by_hand = write_atomic(model, tmp_path / "image.asdf")

    assert set(block_checksums(intermediate)) == {bytes(16)}
    for path in (delivered, by_hand):
        checksums = block_checksums(path)
        assert checksums and bytes(16) not in checksums
        # asdf verifies them when asked: each is the MD5 of its block's bytes.
        with asdf.open(path, validate_checksums=True) as af:
            np.testing.assert_array_equal(af["roman"]["data"], model.data)
    # Both read back as the same valid product, named as written.
    for path in (intermediate, delivered):
        with rdm.open(path) as read:
            assert isinstance(read, datamodels.ImageModel) and read.meta.filename == path.name
            np.testing.assert_array_equal(read.data, model.data)


def test_which_products_carry_checksums():
    assert not carries_checksums("a/r0000101001001001001_01101_0001_WFI01_rampfit.asdf")
    assert not carries_checksums("mosaic/x_outlier_detection.asdf")
    assert carries_checksums("r0000101001001001001_01101_0001_WFI01_uncal.asdf")
    assert carries_checksums("x_i2d.asdf") and carries_checksums("x_resample.asdf")
    assert carries_checksums("roman_wfi_flat_0001.asdf")
