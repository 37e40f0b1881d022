"""Product names: the romancal documentation's exposure naming scheme and suffix replacement rule."""

from pathlib import Path

from romanpipe.naming import exposure_name, parse_exposure_name, product_name, split_suffix

import pytest

EXPO = "r0008308002010007027_06311_0019_WFI01"


def test_exposure_name_matches_the_documented_example():
    name = exposure_name(program=83, execution_plan=8, pass_=2, segment=10, observation=7,
                         visit=27, visit_file_group=6, visit_file_sequence=3,
                         visit_file_activity="11", exposure=19, detector="wfi01")
    assert name == EXPO


def test_parse_exposure_name_fields():
    fields = parse_exposure_name(f"{EXPO}_uncal.asdf")
    assert fields["program"] == "00083"
    assert fields["execution_plan"] == "08"
    assert fields["pass"] == "002"
    assert fields["segment"] == "010"
    assert fields["observation"] == "007"
    assert fields["visit"] == "027"
    assert fields["visit_file_group"] == "06"
    assert fields["visit_file_sequence"] == "3"
    assert fields["visit_file_activity"] == "11"
    assert fields["exposure"] == "0019"
    assert fields["detector"] == "WFI01"


def test_parse_rejects_other_names():
    with pytest.raises(ValueError, match="not a Roman exposure name"):
        parse_exposure_name("TVAC2_TOHOTQUAL_WFISAT_20240506204523_WFI11_uncal.asdf")


@pytest.mark.parametrize(
    ("name", "suffix", "expected"),
    [
        (f"{EXPO}_uncal.asdf", "dqinit", f"{EXPO}_dqinit.asdf"),  # known suffix replaced
        (f"{EXPO}_dqinit.asdf", "saturation", f"{EXPO}_saturation.asdf"),
        (f"{EXPO}_cal.asdf", "outlier_detection", f"{EXPO}_outlier_detection.asdf"),
        (f"{EXPO}_outlier_detection.asdf", "resample", f"{EXPO}_resample.asdf"),
        (f"{EXPO}_outlier_i2d.asdf", "i2d", f"{EXPO}_i2d.asdf"),
        ("foo.asdf", "cleanup", "foo_cleanup.asdf"),  # the documented stpipe example
        (f"{EXPO}_mine.asdf", "dqinit", f"{EXPO}_mine_dqinit.asdf"),  # unknown suffix kept
        ("TVAC2_TOHOTQUAL_WFISAT_20240506204523_WFI11_uncal.asdf", "linearity",
         "TVAC2_TOHOTQUAL_WFISAT_20240506204523_WFI11_linearity.asdf"),
    ],
)
def test_product_name_replaces_known_suffix_and_appends_unknown(name, suffix, expected):
    assert product_name(Path("data") / name, suffix) == Path("data") / expected


def test_split_suffix():
    assert split_suffix(f"a/b/{EXPO}_saturation.asdf") == (EXPO, "saturation")
    assert split_suffix(f"{EXPO}.asdf") == (EXPO, None)
