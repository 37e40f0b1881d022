"""config/romancal-1.1.yaml against romancal 1.1's default ExposurePipeline, uncal -> cal on the same
Level 1 file and references: issue 24's goals (median |Δ|/err ≤ 0.01, 99.9th percentile ≤ 0.1, JUMP_DET
set alike on ≥ 99.9 % of the pixels), on our simulator's ramp and on a ramp romanisim reads out."""

import sys
from pathlib import Path

import pytest

from wfisim.campaign import CampaignConfig, simulate_campaign

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

pytestmark = [pytest.mark.peer, pytest.mark.slow, pytest.mark.xdist_group("workflow")]


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """One WFI01 F158 exposure, 128 x 128, IMG_UNEVEN_6, with cosmic rays and saturating stars."""
    pytest.importorskip("romancal")
    folder = tmp_path_factory.mktemp("preset_parity") / "simulator"
    simulate_campaign(CampaignConfig.from_mapping({
        "detectors": ["WFI01"], "filters": ["F158"], "exposures_per_filter": 1, "size": 128, "stars": 30,
        "saturating_stars": 2, "seed": 24, "cosmic_ray_flux_per_cm2_s": 20.0}), folder)
    return folder


@pytest.mark.parametrize("readout", ["our simulator", "romanisim"])
def test_preset_matches_romancals_default_exposure_pipeline(campaign, readout, monkeypatch):
    import measure
    import parity
    import peer

    folder = campaign if readout == "our simulator" else parity.romanisim_small_campaign(campaign)
    run = parity.preset_run(folder, measure.clean_environment())
    for name, value in peer.configure_environment(folder / "crds_cache", {}).items():
        monkeypatch.setenv(name, value)
    stats = parity.preset_parity(run)
    assert stats["pixels"] > 0.95 * 120 * 120
    assert stats["jumps"] > 20  # cosmic rays: the jump agreement is not that of two empty masks
    assert stats["median"] <= parity.PRESET_GOALS["median"]
    assert stats["p999"] <= parity.PRESET_GOALS["p999"]
    assert stats["jump_agreement"] >= parity.PRESET_GOALS["jump_agreement"]
