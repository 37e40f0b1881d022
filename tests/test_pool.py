"""The pool: metadata and references of every input, bad inputs quarantined with a reason."""

from romanpipe import crds_cache

import numpy as np
import pandas as pd
import pytest
from astropy.time import Time
from roman_datamodels import datamodels

import pool
from conftest import make_level1

EXPO = "r0000101001001001001_01101_{:04d}_{}"


@pytest.fixture
def campaign(tmp_path, crds_environment, monkeypatch):
    """Two good exposures, four bad ones, and a cache with MASK/SATURATION for WFI01-02."""
    uncal = tmp_path / "uncal"
    uncal.mkdir()
    for number, detector in ((1, "WFI01"), (2, "WFI02")):
        model = make_level1(seed=number)
        model.meta.instrument.detector = detector
        model.to_asdf(uncal / f"{EXPO.format(number, detector)}_uncal.asdf")

    good = (uncal / f"{EXPO.format(1, 'WFI01')}_uncal.asdf").read_bytes()
    (uncal / f"{EXPO.format(3, 'WFI01')}_uncal.asdf").write_bytes(good[: len(good) // 3])
    (uncal / f"{EXPO.format(4, 'WFI01')}_uncal.asdf").write_bytes(
        np.random.default_rng(0).bytes(5000))
    wrong_pattern = make_level1(read_pattern=[[1], [2, 3]])
    wrong_pattern.to_asdf(uncal / f"{EXPO.format(5, 'WFI01')}_uncal.asdf")
    no_reference = make_level1()
    no_reference.meta.instrument.detector = "WFI07"
    no_reference.to_asdf(uncal / f"{EXPO.format(6, 'WFI07')}_uncal.asdf")

    references = []
    for detector in ("WFI01", "WFI02"):
        for model_class, reftype in ((datamodels.MaskRefModel, "mask"),
                                     (datamodels.SaturationRefModel, "saturation")):
            ref = model_class.create_fake_data(shape=(16, 16))
            ref.meta.instrument.detector = detector
            ref.meta.useafter = Time("2020-01-01T00:00:00")
            path = tmp_path / f"roman_wfi_{reftype}_{len(references) + 1:04d}.asdf"
            ref.to_asdf(path)
            references.append(path)
    crds_cache.deliver(tmp_path / "crds_cache", references)
    monkeypatch.setenv("CRDS_PATH", str(tmp_path / "crds_cache"))
    return tmp_path


def test_pool_and_quarantine(campaign):
    status = pool.cli.run(pool.main, [
        "--uncal-dir", str(campaign / "uncal"),
        "--step-reftypes", '{"dq_init": ["mask"], "saturation": ["saturation"]}',
        "--output", str(campaign / "pool.csv"), "--quarantine", str(campaign / "quarantine.csv")])
    assert status == 0
    table = pd.read_csv(campaign / "pool.csv", index_col="exposure")
    assert sorted(table.index) == [EXPO.format(1, "WFI01"), EXPO.format(2, "WFI02")]
    first = table.loc[EXPO.format(1, "WFI01")]
    assert first.detector == "WFI01" and first.optical_element == "F158"
    assert first.nresultants == 3
    assert first.ref_mask.endswith("roman_wfi_mask_0001.asdf")
    assert first.ref_saturation.endswith("roman_wfi_saturation_0002.asdf")
    assert table.loc[EXPO.format(2, "WFI02")].ref_mask.endswith("roman_wfi_mask_0003.asdf")
    assert set(table.crds_context) == {"roman_0001.pmap"}

    reasons = pd.read_csv(campaign / "quarantine.csv", index_col="exposure")["reason"]
    assert sorted(reasons.index) == [EXPO.format(n, d) for n, d in
                                     ((3, "WFI01"), (4, "WFI01"), (5, "WFI01"), (6, "WFI07"))]
    assert "truncated inside its metadata tree" in reasons[EXPO.format(3, "WFI01")]
    assert "not an ASDF file" in reasons[EXPO.format(4, "WFI01")]
    assert "3 resultants but the MA table's read_pattern has 2" in reasons[EXPO.format(5, "WFI01")]
    assert "no MASK reference for detector=WFI07" in reasons[EXPO.format(6, "WFI07")]
    assert all("\n" not in reason for reason in reasons)


def keep_two_images_and_add_a_prism_exposure(campaign):
    for path in (campaign / "uncal").glob("*_000[3-6]_*"):
        path.unlink()
    spectral = make_level1(seed=7)
    spectral.meta.exposure.type = "WFI_SPECTRAL"
    spectral.meta.instrument.optical_element = "PRISM"
    spectral.to_asdf(campaign / "uncal" / f"{EXPO.format(7, 'WFI01')}_uncal.asdf")


def test_references_only_for_the_steps_of_the_exposure_type(campaign):
    """A prism exposure needs no FLAT (it stops after assign_wcs); an image without one is quarantined."""
    keep_two_images_and_add_a_prism_exposure(campaign)
    status = pool.cli.run(pool.main, [
        "--uncal-dir", str(campaign / "uncal"),
        "--step-reftypes", '{"dq_init": ["mask"], "flat_field": ["flat"]}',
        "--output", str(campaign / "pool.csv"), "--quarantine", str(campaign / "quarantine.csv")])
    assert status == 0
    table = pd.read_csv(campaign / "pool.csv", index_col="exposure", keep_default_na=False)
    assert list(table.index) == [EXPO.format(7, "WFI01")]
    assert table.loc[EXPO.format(7, "WFI01"), "ref_flat"] == ""
    assert table.loc[EXPO.format(7, "WFI01"), "ref_mask"].endswith("roman_wfi_mask_0001.asdf")
    reasons = pd.read_csv(campaign / "quarantine.csv", index_col="exposure")["reason"]
    assert all("no FLAT reference" in reasons[EXPO.format(n, d)] for n, d in ((1, "WFI01"), (2, "WFI02")))


def test_unknown_exposure_type_is_quarantined(campaign):
    for path in (campaign / "uncal").glob("*_000[3-6]_*"):
        path.unlink()
    odd = campaign / "uncal" / f"{EXPO.format(8, 'WFI01')}_uncal.asdf"
    make_level1(seed=8).to_asdf(odd)
    # No validating writer makes such a file: edit the type in place (same length, blocks unmoved).
    odd.write_bytes(odd.read_bytes().replace(b"type: WFI_IMAGE", b"type: WFI_OTHER", 1))
    status = pool.cli.run(pool.main, [
        "--uncal-dir", str(campaign / "uncal"), "--step-reftypes", '{"dq_init": ["mask"]}',
        "--output", str(campaign / "pool.csv"), "--quarantine", str(campaign / "quarantine.csv")])
    assert status == 0
    reasons = pd.read_csv(campaign / "quarantine.csv", index_col="exposure")["reason"]
    assert "WFI_OTHER" in reasons[EXPO.format(8, "WFI01")]


def test_exposures_selecting_an_all_nan_reference_are_quarantined(campaign):
    """A SATURATION reference without one finite threshold: its exposures cannot be calibrated."""
    for path in (campaign / "uncal").glob("*_000[3-6]_*"):
        path.unlink()
    bad = datamodels.SaturationRefModel.create_fake_data(shape=(16, 16))
    bad.data = np.full((16, 16), np.nan, np.float32)
    bad.meta.instrument.detector = "WFI02"
    bad.meta.useafter = Time("2021-01-01T00:00:00")
    bad_path = campaign / "roman_wfi_saturation_0005.asdf"
    bad.to_asdf(bad_path)
    crds_cache.deliver(campaign / "crds_cache", [bad_path])
    status = pool.cli.run(pool.main, [
        "--uncal-dir", str(campaign / "uncal"),
        "--step-reftypes", '{"dq_init": ["mask"], "saturation": ["saturation"]}',
        "--output", str(campaign / "pool.csv"), "--quarantine", str(campaign / "quarantine.csv")])
    assert status == 0
    assert list(pd.read_csv(campaign / "pool.csv", index_col="exposure").index) == [EXPO.format(1, "WFI01")]
    reasons = pd.read_csv(campaign / "quarantine.csv", index_col="exposure")["reason"]
    assert "SATURATION reference roman_wfi_saturation_0005.asdf: data holds no finite value" in \
        reasons[EXPO.format(2, "WFI02")]


def run_pool(campaign, step_reftypes='{"dq_init": ["mask"], "saturation": ["saturation"]}'):
    status = pool.cli.run(pool.main, [
        "--uncal-dir", str(campaign / "uncal"), "--step-reftypes", step_reftypes,
        "--output", str(campaign / "pool.csv"), "--quarantine", str(campaign / "quarantine.csv")])
    assert status == 0
    table = pd.read_csv(campaign / "pool.csv", index_col="exposure")
    return table, pd.read_csv(campaign / "quarantine.csv", index_col="exposure")["reason"]


def cached_reference(campaign, name):
    return campaign / "crds_cache" / "references" / "roman" / "wfi" / name


@pytest.mark.parametrize(("damage", "reason"), [
    # cut inside the data (the "buffer is too small" crash), inside the last block,
    # between the blocks (the last one missing), and one flipped bit in the data
    (lambda raw, blocks: raw[: blocks[0] + 200], "truncated inside data block 0"),
    (lambda raw, blocks: raw[: blocks[1] + 100], "truncated inside data block 1"),
    (lambda raw, blocks: raw[: blocks[1]], "truncated: the tree uses 2 data blocks, the file holds 1"),
    (lambda raw, blocks: raw[: blocks[0] + 90] + bytes([raw[blocks[0] + 90] ^ 1]) + raw[blocks[0] + 91:],
     "data block 0 does not match its checksum"),
])
def test_an_exposure_damaged_inside_its_data_is_quarantined_with_one_line(campaign, damage, reason):
    path = campaign / "uncal" / f"{EXPO.format(1, 'WFI01')}_uncal.asdf"
    make_level1(seed=1).to_asdf(path, all_array_storage="internal")  # data and amp33 in blocks
    raw = path.read_bytes()
    blocks = [i for i in range(len(raw)) if raw.startswith(b"\xd3BLK", i)]
    path.write_bytes(damage(raw, blocks))
    table, reasons = run_pool(campaign)
    assert EXPO.format(2, "WFI02") in table.index
    assert reasons[EXPO.format(1, "WFI01")].startswith(f"{path}: {reason}")


def test_a_reference_cut_in_half_or_of_the_wrong_model_quarantines_its_exposures_only(campaign):
    """WFI01's MASK is cut in half and WFI02's SATURATION replaced by a MASK file: each
    exposure names its own reference and the problem; nothing else stops."""
    mask = cached_reference(campaign, "roman_wfi_mask_0001.asdf")
    mask.write_bytes(mask.read_bytes()[: mask.stat().st_size // 2])
    cached_reference(campaign, "roman_wfi_saturation_0004.asdf").write_bytes(
        cached_reference(campaign, "roman_wfi_mask_0003.asdf").read_bytes())
    table, reasons = run_pool(campaign)
    assert EXPO.format(1, "WFI01") not in table.index and EXPO.format(2, "WFI02") not in table.index
    assert "its MASK reference roman_wfi_mask_0001.asdf: truncated" in reasons[EXPO.format(1, "WFI01")]
    assert ("its SATURATION reference roman_wfi_saturation_0004.asdf: is a MaskRefModel, expected "
            "SaturationRefModel") in reasons[EXPO.format(2, "WFI02")]


def test_an_exposure_smaller_than_its_references_is_quarantined(campaign):
    """The issue's 64^2 ramp against 128^2 references, at 8^2 against 16^2."""
    small = make_level1(shape=(3, 8, 8), seed=9)
    small.to_asdf(campaign / "uncal" / f"{EXPO.format(9, 'WFI01')}_uncal.asdf")
    table, reasons = run_pool(campaign)
    assert EXPO.format(1, "WFI01") in table.index
    assert reasons[EXPO.format(9, "WFI01")].endswith(
        "its MASK reference roman_wfi_mask_0001.asdf: dq has shape (16, 16), the exposure 8 x 8 pixels")


def test_an_unforeseen_error_while_checking_one_input_quarantines_that_input_only(campaign, monkeypatch):
    checked = pool.exposure_record

    def record(path):
        if "_0002_" in path.name:
            raise TypeError("buffer is too small for requested array")
        return checked(path)

    monkeypatch.setattr(pool, "exposure_record", record)
    table, reasons = run_pool(campaign)
    assert EXPO.format(1, "WFI01") in table.index
    path = campaign / "uncal" / f"{EXPO.format(2, 'WFI02')}_uncal.asdf"
    assert reasons[EXPO.format(2, "WFI02")] == f"{path}: TypeError: buffer is too small for requested array"


def test_a_reference_missing_from_the_cache_is_named(campaign):
    cached_reference(campaign, "roman_wfi_saturation_0002.asdf").unlink()
    table, reasons = run_pool(campaign)
    assert list(table.index) == [EXPO.format(2, "WFI02")]
    assert reasons[EXPO.format(1, "WFI01")].endswith(
        f"the SATURATION reference roman_wfi_saturation_0002.asdf selected by roman_0001.pmap is missing "
        f"from the CRDS cache {campaign / 'crds_cache'}")


def test_inputs_the_workflow_cannot_name_are_quarantined_with_their_reason(campaign):
    """The issue's case 4: none of these may stop the campaign or get a misleading reason."""
    uncal = campaign / "uncal"
    good = (uncal / f"{EXPO.format(1, 'WFI01')}_uncal.asdf").read_bytes()
    (uncal / "gone_uncal.asdf").symlink_to(uncal / "nowhere.asdf")
    odd_names = ["{expo}_uncal.asdf", "a;b_uncal.asdf", "a#b_uncal.asdf", "a?b_uncal.asdf",
                 "a%20b_uncal.asdf", "a\nb_uncal.asdf", "a b_uncal.asdf"]
    for name in odd_names:
        (uncal / name).write_bytes(good)
    table, reasons = run_pool(campaign)
    assert sorted(table.index) == [EXPO.format(1, "WFI01"), EXPO.format(2, "WFI02")]
    assert reasons["gone"] == (f"{uncal / 'gone_uncal.asdf'}: a dangling symbolic link "
                               "(its target does not exist)")
    assert reasons["{expo}"].endswith("braces in the path (Snakemake reads them as wildcards)")
    assert len(reasons) == 4 + 1 + len(odd_names)  # the fixture's four bad ones, and these
    for name in odd_names[1:]:
        shown = str(uncal / name).replace("\n", "\\n")
        (reason,) = [reason for reason in reasons if reason.startswith(f"{shown}: ")]
        assert "holds characters the workflow does not pass on" in reason and "\n" not in reason


def test_an_exposure_list_naming_a_missing_file(campaign):
    listed = campaign / "exposures.csv"
    present = campaign / "uncal" / f"{EXPO.format(1, 'WFI01')}_uncal.asdf"
    pd.DataFrame({"path": [str(present), str(campaign / "absent_uncal.asdf")]}).to_csv(listed, index=False)
    status = pool.cli.run(pool.main, [
        "--exposure-list", str(listed), "--step-reftypes", '{"dq_init": ["mask"]}',
        "--output", str(campaign / "pool.csv"), "--quarantine", str(campaign / "quarantine.csv")])
    assert status == 0
    assert list(pd.read_csv(campaign / "pool.csv", index_col="exposure").index) == [EXPO.format(1, "WFI01")]
    reasons = pd.read_csv(campaign / "quarantine.csv", index_col="exposure")["reason"]
    assert reasons["absent"] == f"{campaign / 'absent_uncal.asdf'}: no such file"


def test_a_photom_reference_without_the_exposures_optical_element_quarantines_it(campaign):
    """WFI01's PHOTOM has no F158 row (the exposures' filter): its exposure is quarantined naming
    the reference and the element, as the photom step would fail; WFI02's has one and goes on."""
    from test_photom import photom_reference

    references = []
    for detector, elements in (("WFI01", ("F062",)), ("WFI02", ("F062", "F158"))):
        path = photom_reference(campaign / f"photom_{detector}.asdf", elements)
        with datamodels.open(path) as model:
            reference = model.copy()
        reference.meta.instrument.detector = detector
        reference.meta.useafter = Time("2020-01-01T00:00:00")
        references.append(campaign / f"roman_wfi_photom_{len(references) + 5:04d}.asdf")
        reference.to_asdf(references[-1])
    crds_cache.deliver(campaign / "crds_cache", references)
    table, reasons = run_pool(campaign, '{"dq_init": ["mask"], "photom": ["photom"]}')
    assert list(table.index) == [EXPO.format(2, "WFI02")]
    path = campaign / "uncal" / f"{EXPO.format(1, 'WFI01')}_uncal.asdf"
    assert reasons[EXPO.format(1, "WFI01")] == (
        f"{path}: its PHOTOM reference roman_wfi_photom_0005.asdf: PHOTOM table has no row for "
        "optical element F158")


def catalog_references(folder, detector, apcorr_elements):
    """An APCORR reference of ``detector`` with rows for ``apcorr_elements`` and its F158 EPSF."""
    apcorr = datamodels.ApcorrRefModel.create_fake_data()
    radii = np.arange(1.0, 17.0)
    apcorr.data = {element: {"ee_fractions": 1 - 0.5 / radii, "ee_radii": radii,
                             "ap_corrections": radii / (radii - 0.5),
                             "sky_background_rin": None, "sky_background_rout": None}
                   for element in apcorr_elements}
    epsf = datamodels.EpsfRefModel.create_fake_data(shape=(1, 1, 1, 9, 9))
    epsf.meta.instrument.optical_element = "F158"
    paths = []
    for model in (apcorr, epsf):
        model.meta.instrument.detector = detector
        model.meta.useafter = Time("2020-01-01T00:00:00")
        paths.append(folder / f"roman_wfi_{model.meta.reftype.lower()}_{detector}.asdf")
        model.to_asdf(paths[-1])
    return paths


def test_images_get_their_catalogs_references_and_an_apcorr_without_their_filter_quarantines(campaign):
    """source_catalog's APCORR and EPSF are selected for images (their _cal get a catalog), not for a
    prism exposure; WFI01's APCORR has no F158 row: its image is quarantined naming it."""
    keep_two_images_and_add_a_prism_exposure(campaign)
    references = [*catalog_references(campaign, "WFI01", ["F062"]),
                  *catalog_references(campaign, "WFI02", ["F062", "F158"])]
    crds_cache.deliver(campaign / "crds_cache", references)
    table, reasons = run_pool(campaign, '{"dq_init": ["mask"], "source_catalog": ["apcorr", "epsf"]}')
    table = table.fillna("")
    assert sorted(table.index) == [EXPO.format(2, "WFI02"), EXPO.format(7, "WFI01")]
    image = table.loc[EXPO.format(2, "WFI02")]
    assert image.ref_apcorr.endswith("roman_wfi_apcorr_0002.asdf")
    assert image.ref_epsf.endswith("roman_wfi_epsf_0002.asdf")
    prism = table.loc[EXPO.format(7, "WFI01")]
    assert prism.ref_apcorr == prism.ref_epsf == ""
    assert reasons[EXPO.format(1, "WFI01")].endswith(
        "its APCORR reference roman_wfi_apcorr_0001.asdf: APCORR table has no row for optical element F158")
