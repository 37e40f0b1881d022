"""The association checkpoint: grouping by program, optical element and sky overlap; names; user files."""

import json

from romanpipe.association import ASSOCIATION_NAME_RE, read_association

import numpy as np
import pandas as pd
import pytest
from astropy.time import Time
from roman_datamodels import datamodels

import associate

SIDE = 0.125  # deg, about a detector


def cal_file(folder, name, *, ra, dec, element="F158", program=1, start="2027-03-01T00:00:00",
             s_region=None):
    """A _cal product's metadata: a footprint SIDE degrees across at (ra, dec), or ``s_region``."""
    image = datamodels.ImageModel.create_fake_data(shape=(2, 2))
    image.meta.instrument.optical_element = element
    image.meta.observation.program = program
    image.meta.exposure.start_time = Time(start)
    half = SIDE / 2
    corners = [(ra - half, dec - half), (ra + half, dec - half), (ra + half, dec + half),
               (ra - half, dec + half)]
    square = "POLYGON ICRS " + " ".join(f"{a:.6f} {d:.6f}" for a, d in corners)
    image.meta.wcsinfo.s_region = s_region or square
    path = folder / "exposures" / f"{name}_cal.asdf"
    path.parent.mkdir(exist_ok=True)
    image.to_asdf(path)
    return path


@pytest.fixture
def campaign(tmp_path):
    paths = [
        cal_file(tmp_path, "e1_WFI01", ra=10.0, dec=0.0, start="2027-03-01T00:00:00"),
        cal_file(tmp_path, "e2_WFI01", ra=10.1, dec=0.0, start="2027-03-01T00:05:00"),  # overlaps e1
        cal_file(tmp_path, "e3_WFI01", ra=10.2, dec=0.05, start="2027-03-01T00:10:00"),  # overlaps e2 only
        cal_file(tmp_path, "e4_WFI10", ra=12.0, dec=1.0, start="2027-03-01T00:15:00"),  # far away
        cal_file(tmp_path, "e5_WFI01", ra=10.0, dec=0.0, element="F087", start="2027-03-01T01:00:00"),
        cal_file(tmp_path, "e6_WFI01", ra=10.0, dec=0.0, program=2, start="2027-03-02T00:00:00"),
    ]
    return tmp_path, paths


def run_index(folder, paths, *extra):
    output = folder / "associations.csv"
    status = associate.cli.run(associate.main, ["index", "--cal", *map(str, paths), "--output",
                                                str(output), *extra])
    assert status == 0
    return pd.read_csv(output)


def members(row):
    return [m["expname"] for m in json.loads(row.tree)["products"][0]["members"]]


def test_groups_follow_program_element_and_chains_of_overlap(campaign):
    folder, paths = campaign
    table = run_index(folder, paths, "--grouping", "overlap")
    groups = [sorted(name.split("/")[-1].split("_cal")[0] for name in members(row))
              for row in table.itertuples()]
    assert groups == [["e1_WFI01", "e2_WFI01", "e3_WFI01"], ["e4_WFI10"], ["e5_WFI01"], ["e6_WFI01"]]
    assert table["asn"].tolist()[0] == "r00001-a3001_20270301t000000_image_001"
    assert table["product"].tolist() == ["r00001-a3001_f158", "r00001-a3002_f158", "r00001-a3003_f087",
                                         "r00002-a3004_f158"]
    assert all(ASSOCIATION_NAME_RE.match(name + "_asn.json") for name in table["asn"])


def test_same_inputs_give_the_same_index(campaign):
    folder, paths = campaign
    first = run_index(folder, paths, "--grouping", "overlap")
    second = run_index(folder, list(reversed(paths)), "--grouping", "overlap")
    pd.testing.assert_frame_equal(first, second)


def test_written_association_has_the_documented_layout_and_resolves_members(campaign):
    folder, paths = campaign
    row = next(run_index(folder, paths, "--grouping", "overlap").itertuples())
    output = folder / "associations" / f"{row.asn}_asn.json"
    assert associate.cli.run(associate.main, ["write", "--tree", row.tree, "--output", str(output)]) == 0
    association = read_association(output)
    assert association.tree["asn_type"] == "image" and association.tree["asn_rule"] == "DMS_ELPP_Base"
    assert association.tree["asn_id"] == "a3001" and association.tree["version_id"] == "20270301t000000"
    assert [p.resolve() for p in association.members()] == [p.resolve() for p in paths[:3]]


def test_user_associations_are_used_as_given_with_members_repointed(campaign):
    folder, paths = campaign
    user = folder / "mine"
    user.mkdir()
    given = {"asn_type": "image", "asn_rule": "DMS_ELPP_Base", "program": "00001", "asn_id": "o001",
             "products": [{"name": "my_mosaic_i2d.asdf", "members": [
                 {"expname": "e1_WFI01_cal.asdf", "exptype": "science"},
                 {"expname": "e4_WFI10_cal.asdf", "exptype": "science"}]}]}
    (user / "r00001-o001_20270301t000000_image_001_asn.json").write_text(json.dumps(given))
    table = run_index(folder, paths, "--user-dir", str(user))
    row = next(table.itertuples())
    assert row.product == "my_mosaic"
    tree = json.loads(row.tree)
    assert tree["asn_id"] == "o001"
    assert members(row) == ["../exposures/e1_WFI01_cal.asdf", "../exposures/e4_WFI10_cal.asdf"]


def test_a_cal_list_gives_the_same_index_as_the_command_line(campaign):
    """The Level 3 stage of a sharded campaign lists its _cal products in a table."""
    folder, paths = campaign
    table = folder / "cal.csv"
    pd.DataFrame({"path": [str(path) for path in paths[2:]]}).to_csv(table, index=False)
    listed = run_index(folder, paths[:2], "--grouping", "overlap", "--cal-list", str(table))
    pd.testing.assert_frame_equal(listed, run_index(folder, paths, "--grouping", "overlap"))


def test_a_cal_list_without_paths_fails_naming_it(campaign, caplog):
    folder, paths = campaign
    table = folder / "cal.csv"
    table.write_text("file\nx_cal.asdf\n")
    status = associate.cli.run(associate.main, ["index", "--cal-list", str(table), "--output",
                                                str(folder / "a.csv")])
    assert status == 1 and not (folder / "a.csv").exists()
    assert f"{table}: the table of files needs a column 'path'" in caplog.text


def test_user_association_with_an_unknown_member_fails(campaign):
    folder, paths = campaign
    user = folder / "mine"
    user.mkdir()
    (user / "x_asn.json").write_text(json.dumps({"products": [{"name": "p", "members": [
        {"expname": "nowhere_cal.asdf"}]}]}))
    status = associate.cli.run(associate.main, ["index", "--cal", *map(str, paths), "--output",
                                                str(folder / "a.csv"), "--user-dir", str(user)])
    assert status == 1 and not (folder / "a.csv").exists()


def test_image_without_footprint_fails_naming_it(tmp_path):
    image = datamodels.ImageModel.create_fake_data(shape=(2, 2))
    image.meta.observation.program = 1
    path = tmp_path / "x_cal.asdf"
    image.to_asdf(path)
    with pytest.raises(associate.InputFileError, match="s_region"):
        associate.read_image(path)


def test_corner_order_does_not_matter_for_overlap(tmp_path):
    a = associate._polygon(tmp_path, "POLYGON ICRS 0 0 1 0 1 1 0 1")
    b = associate._polygon(tmp_path, "POLYGON ICRS 1.5 0.5 1.5 1.5 0.5 1.5 0.5 0.5")  # clockwise
    c = associate._polygon(tmp_path, "POLYGON ICRS 3 0 4 0 4 1 3 1")
    assert a.intersects_poly(b) and not a.intersects_poly(c)
    assert np.isclose(a.area(), b.area(), rtol=1e-3)  # not the whole sky outside it
