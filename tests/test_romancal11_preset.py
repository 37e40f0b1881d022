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
from roman_datamodels import datamodels

from wfisim.campaign import CampaignConfig, simulate_campaign

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("workflow")]


@pytest.fixture(scope="module")
def preset_run(tmp_path_factory):
    """WFI01 and WFI18, one F158 exposure each, 64 x 64, dark decay simulated; the campaign's
    workflow.yaml then the preset, to _cal."""
    out = tmp_path_factory.mktemp("romancal11")
    simulate_campaign(CampaignConfig.from_mapping({
        "detectors": ["WFI01", "WFI18"], "filters": ["F158"], "exposures_per_filter": 1, "size": 64,
        "stars": 10, "saturating_stars": 1, "seed": 5, "dark_decay_signal": True}), out)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRDS_")}
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(out),
         "--cores", "2", "--config", "target=cal", "--configfile", str(out / "workflow.yaml"),
         str(ROOT / "config" / "romancal-1.1.yaml")],
        capture_output=True, text=True, env=env, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
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
