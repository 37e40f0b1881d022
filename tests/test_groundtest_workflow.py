"""The TVAC tutorial's partial pipeline on ground-test data: config/groundtest.yaml run by Snakemake on a
small simulated TVAC set (one bright-star exposure, one dark) runs dq_init -> saturation -> refpix
-> linearity and nothing else."""

from romanpipe import refs, run_steps
from romanpipe.dqflags import pixel
from romanpipe.naming import split_suffix
from romanpipe.steps import STEP_REFTYPES

import numpy as np
import pandas as pd
import pytest
import roman_datamodels as rdm
import yaml
from roman_datamodels import datamodels

import simulate
from comparison import in_memory_differences
from test_workflow import snakemake
from wfisim.groundtest import truth_path
from wfisim.truth import read_truth

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("workflow")]

STEPS = ("dq_init", "saturation", "refpix", "linearity")
SUFFIXES = {"dqinit", "saturation", "refpix", "linearity"}


@pytest.fixture(scope="module")
def groundtest_run(tmp_path_factory):
    """128 x 128 readout: the smallest with the 32-output layout, so refpix runs too."""
    folder = tmp_path_factory.mktemp("groundtest_run")
    settings = folder / "settings.yaml"
    settings.write_text(yaml.safe_dump({"size": 128, "n_darks": 1, "seed": 3}))
    out = folder / "set"
    assert simulate.cli.run(simulate.main, ["groundtest", "--config", str(settings), "--out", str(out)]) == 0
    result = snakemake(out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def linearity_products(run):
    return sorted((run / "results" / "exposures").glob("*_linearity.asdf"))


def test_every_exposure_ends_at_linearity_and_nothing_else_runs(groundtest_run):
    uncal = sorted((groundtest_run / "uncal").glob("*_uncal.asdf"))
    assert len(uncal) == 2
    assert pd.read_csv(groundtest_run / "results" / "quarantine.csv").empty
    table = pd.read_csv(groundtest_run / "results" / "pool.csv")
    assert sorted(table["exposure_type"]) == ["WFI_IMAGE", "WFI_IM_DARK"]
    expected = [split_suffix(p)[0] for p in uncal]
    assert [split_suffix(p)[0] for p in linearity_products(groundtest_run)] == expected
    made = {split_suffix(p)[1] for p in (groundtest_run / "results" / "exposures").glob("*.asdf")}
    assert made <= SUFFIXES  # earlier ramps may be kept or removed; no dark_current, ramp_fit, ...
    ran = {p.name for p in (groundtest_run / "logs").iterdir() if p.is_dir() and p.name != "benchmarks"}
    assert ran == {*STEPS, "dark_references", "ramp_diagnostics"}


def test_dark_references_are_built_from_the_darks(groundtest_run):
    table = pd.read_csv(groundtest_run / "results" / "pool.csv")
    (dark,) = table.loc[table["exposure_type"] == "WFI_IM_DARK", "exposure"]
    references = groundtest_run / "results" / "references"
    with rdm.open(references / "WFI01_superbias.asdf") as superbias, \
            rdm.open(references / "WFI01_dark.asdf") as dark_ref:
        assert isinstance(superbias, datamodels.SuperbiasRefModel)
        assert isinstance(dark_ref, datamodels.DarkRefModel)
        assert dark in superbias.meta.description and dark in dark_ref.meta.description
        truth = read_truth(truth_path(groundtest_run / "uncal" / f"{dark}_uncal.asdf"))
        usable = (np.asarray(superbias.dq) == 0) & ~truth["hot"] & ~truth["ad_floor"]
        # one dark of 54 fitted reads of 6 DN: the intercept's error is about 0.28 x 6 DN
        residual = np.asarray(superbias.data)[usable] - truth["bias"][usable]
        assert abs(np.median(residual)) < 0.5 and np.std(residual) < 4.0


def test_diagnostic_figures_of_the_bright_exposure_are_made(groundtest_run):
    table = pd.read_csv(groundtest_run / "results" / "pool.csv")
    (bright,) = table.loc[table["exposure_type"] == "WFI_IMAGE", "exposure"]
    figures = sorted(p.name for p in (groundtest_run / "results" / "diagnostics" / bright).glob("*.png"))
    assert figures == sorted(f"{name}.png" for name in ("difference_frames_full", "difference_frames_cutout",
                                                        "saturation_frames", "relative_slope_neighbours"))
    assert [p.name for p in (groundtest_run / "results" / "diagnostics").iterdir()] == [bright]


def test_report_holds_the_diagnostics(groundtest_run):
    report = groundtest_run / "report.html"
    result = snakemake(groundtest_run, "--report", str(report))
    assert result.returncode == 0, result.stderr[-3000:]
    html = report.read_text()
    assert "relative_slope_neighbours.png" in html and "Ground test" in html


def test_cal_step_records_the_four_steps_only(groundtest_run):
    for path in linearity_products(groundtest_run):
        with rdm.open(path) as model:
            assert isinstance(model, datamodels.RampModel)
            model.validate()
            steps = dict(model.meta.cal_step)
            assert {key: steps.pop(key) for key in STEPS} == dict.fromkeys(STEPS, "COMPLETE")
            assert set(steps.values()) == {"INCOMPLETE"}
            assert set(model.meta.provenance) == set(STEPS)
            assert model.meta.ref_file.refpix.startswith("roman_wfi_refpix_")
            assert model.meta.groundtest["test_phase"] == "TVAC2"


def test_saturation_flags_of_the_bright_exposure_match_the_truth(groundtest_run):
    for path in linearity_products(groundtest_run):
        truth = read_truth(truth_path(groundtest_run / "uncal" / path.name.replace("_linearity", "_uncal")))
        if truth["scene"] != "bright":
            continue
        with rdm.open(path) as model:
            flags = (np.asarray(model.groupdq) & pixel.SATURATED) != 0
            gw_columns = (np.asarray(model.pixeldq) & pixel.GW_AFFECTED_DATA) != 0
        flagged = np.where(flags.any(axis=0), flags.argmax(axis=0), -1)
        expected = truth["first_saturated_frame"]
        assert (expected == 0).sum() >= 9
        assert np.mean(flagged == expected) >= 0.999
        # every later frame of a saturated pixel is flagged, and no frame of another pixel
        onset = np.where(flagged < 0, flags.shape[0], flagged)
        assert (flags == (np.arange(flags.shape[0])[:, None, None] >= onset)).all()
        window = truth["guide_window"]
        assert gw_columns[:, window["xstart"]:window["xstop"]].all()
        assert gw_columns.sum() == 128 * (window["xstop"] - window["xstart"])


def test_the_python_api_gives_the_workflow_product(groundtest_run, crds_environment, monkeypatch):
    """The README's notebook call on the bright exposure, given the references the pool selected
    (as the rules give them): the workflow's _linearity product, bit for bit and in its metadata."""
    monkeypatch.chdir(groundtest_run)
    monkeypatch.setenv("CRDS_PATH", str(groundtest_run / "crds_cache"))
    refs.configure_crds()
    pool = pd.read_csv(groundtest_run / "results" / "pool.csv").set_index("exposure")
    bright = pool.index[pool["exposure_type"] == "WFI_IMAGE"][0]
    overrides = {step: {f"override_{reftype}": pool.loc[bright, f"ref_{reftype}"]
                        for reftype in STEP_REFTYPES[step]} for step in STEPS}
    ramp = run_steps(groundtest_run / "uncal" / f"{bright}_uncal.asdf", STEPS, **overrides)
    assert isinstance(ramp, datamodels.RampModel)
    product = groundtest_run / "results" / "exposures" / f"{bright}_linearity.asdf"
    assert in_memory_differences(ramp, product) == []
