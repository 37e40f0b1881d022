"""config/romancal-1.1.yaml through the workflow: romancal 1.1's chain on a tiny simulated campaign
with the dark decay signal injected, against the simulated truth."""

import os
import subprocess
import sys
from pathlib import Path

import asdf
import numpy as np
import pytest
import roman_datamodels as rdm
import yaml
from roman_datamodels import datamodels

from wfisim.campaign import CampaignConfig, simulate_campaign

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("workflow")]


def run_preset_to_cal(out: Path) -> None:
    """The campaign's workflow.yaml then the preset, to _cal (as `make demo-romancal11` runs it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRDS_")}
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(out),
         "--cores", "2", "--config", "target=cal", "--configfile", str(out / "workflow.yaml"),
         str(ROOT / "config" / "romancal-1.1.yaml")],
        capture_output=True, text=True, env=env, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def preset_run(tmp_path_factory):
    """WFI01 and WFI18, one F158 exposure each, 64 x 64, dark decay simulated."""
    out = tmp_path_factory.mktemp("romancal11")
    simulate_campaign(CampaignConfig.from_mapping({
        "detectors": ["WFI01", "WFI18"], "filters": ["F158"], "exposures_per_filter": 1, "size": 64,
        "stars": 10, "saturating_stars": 1, "seed": 5, "dark_decay_signal": True}), out)
    run_preset_to_cal(out)
    return out


def test_preset_runs_romancal_11_steps_and_the_dark_on_the_rate(preset_run):
    """The ramp steps of romancal 1.1 ran in its order: no _jump, and _darkcurrent is the rate image
    after ramp fitting; wfi18_transient acted on WFI18 only; every product records its steps."""
    exposures = preset_run / "results" / "exposures"
    assert not list(exposures.glob("*_jump.asdf"))
    for detector, transient in (("WFI01", "N/A"), ("WFI18", "COMPLETE")):
        [cal] = exposures.glob(f"*_{detector}_cal.asdf")
        with rdm.open(cal) as model:
            steps = model.meta.cal_step
            assert (steps.dark_decay, steps.wfi18_transient, steps.linearity, steps.ramp_fit, steps.dark) == (
                "COMPLETE", transient, "COMPLETE", "COMPLETE", "COMPLETE")
            assert model.meta.provenance["linearity"]["parameters"]["resultant_aware"] is True
            assert model.meta.provenance["ramp_fit"]["parameters"]["algorithm"] == "likely"
            assert set(model.meta.provenance["linearity"]["references"]) == {
                "linearity", "inverselinearity", "integralnonlinearity"}
        log = (preset_run / "logs" / "ramp_fit" / f"{cal.name.removesuffix('_cal.asdf')}.log").read_text()
        assert "fitted with its dark in it" in log


def test_dark_subtracted_rates_match_the_truth(preset_run):
    """The rate after dark_current (ImageModel) against the injected rate: pulls centred, ERR right."""
    for path in sorted((preset_run / "results" / "exposures").glob("*_darkcurrent.asdf")):
        expo = path.name.removesuffix("_darkcurrent.asdf")
        with rdm.open(path) as model, asdf.open(preset_run / "truth" / f"{expo}_truth.asdf") as truth:
            assert isinstance(model, datamodels.ImageModel)
            inner = (slice(4, -4), slice(4, -4))
            rate = np.asarray(truth["rate_e_per_s"])[inner]
            gain = np.asarray(truth["detector"]["gain_e_per_dn"])[inner]
            dead = np.asarray(truth["detector"]["dead"])[inner]
            clean = (np.asarray(model.dq) == 0) & ~dead
            assert clean.mean() > 0.95
            pull = (np.asarray(model.data, np.float64) - rate / gain)[clean] / np.asarray(model.err,
                                                                                      np.float64)[clean]
            assert abs(np.median(pull)) < 0.15
            assert 0.9 < np.std(pull) < 1.15
            assert np.mean(np.abs(pull) < 4) > 0.995


def test_preset_runs_on_the_demo_campaign(tmp_path):
    """config/demo_campaign.yaml (both detectors, both filters and the prism) at 64 x 64 with one
    dither per filter: every exposure's _cal made by romancal 1.1's chain, the likely fit and the
    read-by-read linearity used, dark_decay with its DARKDECAYSIGNAL on every exposure, wfi18_transient
    not applicable (WFI01, WFI02), the dark on the rate; the prism stops after assign_wcs."""
    demo = yaml.safe_load((ROOT / "config" / "demo_campaign.yaml").read_text())
    demo.update(size=64, exposures_per_filter=1, dithers=demo["dithers"][:1])
    simulate_campaign(CampaignConfig.from_mapping(demo), tmp_path)
    run_preset_to_cal(tmp_path)
    cals = sorted((tmp_path / "results" / "exposures").glob("*_cal.asdf"))
    assert len(cals) == 2 * 3
    types = []
    for cal in cals:
        with rdm.open(cal) as model:
            steps, provenance = model.meta.cal_step, model.meta.provenance
            types.append(model.meta.exposure.type)
            assert (steps.dark_decay, steps.wfi18_transient, steps.ramp_fit, steps.dark) == (
                "COMPLETE", "N/A", "COMPLETE", "COMPLETE"), cal.name
            assert provenance["ramp_fit"]["parameters"]["algorithm"] == "likely"
            assert provenance["linearity"]["parameters"]["resultant_aware"] is True
            assert set(provenance["dark_decay"]["references"]) == {"darkdecaysignal"}
            imaging = model.meta.exposure.type == "WFI_IMAGE"
            assert (steps.flat_field, steps.photom) == (("COMPLETE" if imaging else "SKIPPED",) * 2)
    assert sorted(types) == ["WFI_IMAGE"] * 4 + ["WFI_SPECTRAL"] * 2
