"""The DQ flag table and the bit-spec forms of the romancal documentation, section
"Parameter Specification"."""

from romanpipe.dqflags import FLAG_NAMES, good_pixel_mask, interpret_bit_spec, pixel

import numpy as np
import pytest

# The documented table (section "Data Quality Flags"): bit number -> name.
DOCUMENTED_TABLE = {
    0: "DO_NOT_USE", 1: "SATURATED", 2: "JUMP_DET", 3: "DROPOUT", 4: "GW_AFFECTED_DATA",
    5: "PERSISTENCE", 6: "AD_FLOOR", 7: "OUTLIER", 8: "UNRELIABLE_ERROR", 9: "NON_SCIENCE",
    10: "DEAD", 11: "HOT", 12: "WARM", 13: "LOW_QE", 15: "TELEGRAPH", 16: "NONLINEAR",
    17: "BAD_REF_PIXEL", 18: "NO_FLAT_FIELD", 19: "NO_GAIN_VALUE", 20: "NO_LIN_CORR",
    21: "NO_SAT_CHECK", 22: "UNRELIABLE_BIAS", 23: "UNRELIABLE_DARK", 24: "UNRELIABLE_SLOPE",
    25: "UNRELIABLE_FLAT", 26: "RESERVED_5", 27: "RESERVED_6", 28: "UNRELIABLE_RESET",
    29: "RESERVED_7", 30: "OTHER_BAD_PIXEL", 31: "REFERENCE_PIXEL",
}


@pytest.mark.parametrize(("bit", "name"), sorted(DOCUMENTED_TABLE.items()))
def test_every_flag_of_the_documented_table_has_its_bit(bit, name):
    assert FLAG_NAMES[name] == 2**bit
    assert pixel[name] == 2**bit


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("12", 12),
        ("4+8", 12),
        ("4, 8", 12),
        ("4,8", 12),
        ("JUMP_DET, DROPOUT", 12),
        ("~4+8", ~12),
        ("~4,8", ~12),
        ("~DO_NOT_USE+NON_SCIENCE", ~513),
        ("LOW_QE+NON_LINEAR", 8192 + 65536),  # the docs' spelling of NONLINEAR
        ("8192,65536", 73728),
        ("73728", 73728),
        ("0", 0),
        (None, None),
        ("None", None),
        ("~0", -1),
    ],
)
def test_bit_spec_forms(spec, expected):
    assert interpret_bit_spec(spec) == expected


def test_unknown_flag_name_is_an_error_naming_it():
    with pytest.raises(ValueError, match="NOT_A_FLAG"):
        interpret_bit_spec("NOT_A_FLAG+4")


def test_good_pixel_mask_semantics():
    dq = np.array([0, 1, 2, 4, 6, 3, 12, 512, 513], dtype=np.uint32)
    # "6": only pixels whose flags are within {2, 4} are good.
    assert good_pixel_mask(dq, "6").tolist() == [1, 0, 1, 1, 1, 0, 0, 0, 0]
    # "~DO_NOT_USE+NON_SCIENCE": anything but those two bits is good.
    assert good_pixel_mask(dq, "~DO_NOT_USE+NON_SCIENCE").tolist() == [1, 0, 1, 1, 1, 0, 1, 0, 0]
    # "0": every flagged pixel is bad.
    assert good_pixel_mask(dq, "0").tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0]
    # None and "~0": DQ is not used at all.
    assert good_pixel_mask(dq, None).all()
    assert good_pixel_mask(dq, "~0").all()
