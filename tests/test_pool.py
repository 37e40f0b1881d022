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
    assert "not a readable Roman ASDF file" in reasons[EXPO.format(3, "WFI01")]
    assert "not a readable Roman ASDF file" in reasons[EXPO.format(4, "WFI01")]
    assert "3 resultants but the MA table's read_pattern has 2" in reasons[EXPO.format(5, "WFI01")]
    assert "no MASK reference for detector=WFI07" in reasons[EXPO.format(6, "WFI07")]
    assert all("\n" not in reason for reason in reasons)


def test_references_only_for_the_steps_of_the_exposure_type(campaign):
    """A prism exposure needs no FLAT (it stops after assign_wcs); an image without one is quarantined."""
    for path in (campaign / "uncal").glob("*_000[3-6]_*"):
        path.unlink()
    spectral = make_level1(seed=7)
    spectral.meta.exposure.type = "WFI_SPECTRAL"
    spectral.meta.instrument.optical_element = "PRISM"
    spectral.to_asdf(campaign / "uncal" / f"{EXPO.format(7, 'WFI01')}_uncal.asdf")
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
