"""as_float16: the Level 2 float16 arrays, converted fast and exactly as numpy would; the exposure
an image belongs to."""

from romanpipe.products import as_float16, exposure_group, open_model

import numpy as np
import pytest
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
