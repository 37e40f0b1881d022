"""Associations: the romancal documentation's asn_from_list example, the naming rule, reading members back."""

import json

from romanpipe.association import (
    asn_from_list,
    association_name,
    read_association,
    read_step_input,
    write_association,
)
from romanpipe.errors import EXIT_NO_SCIENCE_DATA, InputFileError, NoScienceDataError

import numpy as np
import pytest
import roman_datamodels as rdm
from roman_datamodels import datamodels

import asn_from_list as asn_from_list_cli
import flux
import outlier_detection
import resample
import skymatch
import tweakreg

DOCUMENTED_ITEMS = {"r0000101001001001001_01101_0001_WFI01_uncal.asdf": "science",
              "r0000101001001001001_3_01101_0001_WFI01_uncal.asdf": "guide_window",
              "c": "somethingelse"}


def test_documented_level2_example():
    asn = asn_from_list(list(DOCUMENTED_ITEMS.items()), product_name="test_product", with_exptype=True)
    assert asn["asn_rule"] == "DMS_ELPP_Base"
    assert asn["products"] == [{"name": "test_product", "members": [
        {"expname": "r0000101001001001001_01101_0001_WFI01_uncal.asdf", "exptype": "science"},
        {"expname": "r0000101001001001001_3_01101_0001_WFI01_uncal.asdf", "exptype": "guide_window"},
        {"expname": "c", "exptype": "somethingelse"}]}]


def test_documented_example_keys_in_order():
    asn = asn_from_list(["img_1.asdf", "img_2.asdf"], product_name="files.asdf")
    assert list(asn) == ["asn_type", "asn_rule", "version_id", "code_version", "degraded_status", "program",
                         "constraints", "asn_id", "target", "asn_pool", "products"]
    assert [m["exptype"] for m in asn["products"][0]["members"]] == ["science", "science"]


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="rule"):
        asn_from_list(["a"], "p", rule="Asn_Lv3Image")


def test_association_name_follows_the_documented_rule():
    assert association_name(1, "o001", "20270301t000000", "image", 1) == \
        "r00001-o001_20270301t000000_image_001_asn.json"
    with pytest.raises(ValueError):
        association_name(1, "x001", "20270301t000000", "image", 1)


def test_cli_writes_members_relative_and_reads_back(tmp_path):
    output = tmp_path / "detector_asn.json"
    status = asn_from_list_cli.cli.run(asn_from_list_cli.main, [
        "-o", str(output), "--product-name", "r0000101001001001001_01101_0001_WFI_cal.asdf",
        "data/a_cal.asdf", "data/b_cal.asdf"])
    assert status == 0
    association = read_association(output)
    assert association.product_name == "r0000101001001001001_01101_0001_WFI_cal.asdf"
    assert association.members() == [tmp_path / "data/a_cal.asdf", tmp_path / "data/b_cal.asdf"]


def test_only_science_members_by_default(tmp_path):
    path = write_association(asn_from_list(list(DOCUMENTED_ITEMS.items()), "p", with_exptype=True),
                             tmp_path / "x_asn.json")
    assert [p.name for p in read_association(path).members()] == [
        "r0000101001001001001_01101_0001_WFI01_uncal.asdf"]
    assert len(read_association(path).members(exptype=None)) == 3


@pytest.mark.parametrize("content, reason", [
    ("{not json", "unreadable"),
    (json.dumps({"products": []}), "products"),
    (json.dumps({"products": [{"name": "p", "members": [{"exptype": "science"}]}]}), "expname"),
])
def test_bad_association_files_name_the_problem(tmp_path, content, reason):
    path = tmp_path / "bad_asn.json"
    path.write_text(content)
    with pytest.raises(InputFileError, match=reason):
        read_association(path)


def test_skip_on_an_association_passes_every_member_on_as_skipped(tmp_path):
    for name in ("a", "b"):
        image = datamodels.ImageModel.create_fake_data(shape=(3, 3))
        image.data = np.full((3, 3), 7.0, np.float32)
        image.to_asdf(tmp_path / f"{name}_flux.asdf")
    asn = write_association(asn_from_list(["a_flux.asdf", "b_flux.asdf"], "m"), tmp_path / "m_flux_asn.json")
    output = tmp_path / "out" / "m_skymatch_asn.json"
    assert skymatch.cli.run(skymatch.main, [str(asn), str(output), "--skip", "true"]) == 0
    members = read_association(output).members()
    assert [p.name for p in members] == ["a_skymatch.asdf", "b_skymatch.asdf"]
    for path in members:
        with rdm.open(path) as product:
            assert product.meta.cal_step.skymatch == "SKIPPED"
            assert product.data[1, 1] == 7.0


def test_step_input_is_one_product_or_an_associations_science_members(tmp_path):
    assert read_step_input(tmp_path / "a_photom.asdf") == (None, [tmp_path / "a_photom.asdf"])
    path = write_association(asn_from_list(list(DOCUMENTED_ITEMS.items()), "p", with_exptype=True),
                             tmp_path / "x_asn.JSON")
    association, members = read_step_input(path)
    assert association.path == path
    assert members == [tmp_path / "r0000101001001001001_01101_0001_WFI01_uncal.asdf"]


def association_without_science(tmp_path):
    items = [("a_photom.asdf", "guide_window"), ("b_photom.asdf", "background")]
    return write_association(asn_from_list(items, "p", with_exptype=True), tmp_path / "p_asn.json")


def test_an_association_without_science_members_is_no_science_data_naming_the_file(tmp_path):
    path = association_without_science(tmp_path)
    with pytest.raises(NoScienceDataError, match=f"{path}: the association has no science members"):
        read_step_input(path)


@pytest.mark.parametrize("step, options", [
    (flux, []), (flux, ["--skip", "true"]), (skymatch, []), (tweakreg, []), (outlier_detection, []),
    (resample, []),
])
def test_every_step_ends_on_an_association_without_science_members_the_same_way(tmp_path, caplog, step,
                                                                                 options):
    path = association_without_science(tmp_path)
    output = tmp_path / "out" / "p_step_asn.json"
    assert step.cli.run(step.main, [str(path), str(output), *options]) == EXIT_NO_SCIENCE_DATA
    assert f"{path}: the association has no science members" in caplog.text
    assert not output.parent.exists()
