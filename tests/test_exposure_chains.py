"""The exposure-level chains: each order defined once, romancal 1.1's as its ExposurePipeline runs it."""

from romanpipe.exposure_types import CHAINS, EXPOSURE_STEPS, applicable_steps, chain_steps
from romanpipe.naming import STEP_SUFFIX

import pytest


def test_the_romancal_11_chain_order():
    assert chain_steps("romancal-1.1")[:8] == (
        "dq_init", "saturation", "refpix", "dark_decay", "wfi18_transient", "linearity", "ramp_fit",
        "dark_current")
    assert "jump" not in chain_steps("romancal-1.1")


def test_the_documented_chain_is_unchanged():
    assert chain_steps("documented")[:7] == (
        "dq_init", "saturation", "refpix", "linearity", "dark_current", "jump", "ramp_fit")
    assert not {"dark_decay", "wfi18_transient"} & set(chain_steps("documented"))


def test_every_chain_step_is_an_exposure_step_with_a_suffix():
    for steps in CHAINS.values():
        assert set(steps) <= set(EXPOSURE_STEPS) <= set(STEP_SUFFIX)


@pytest.mark.parametrize("chain", list(CHAINS))
def test_applicable_steps_keep_the_chain_order(chain):
    """Spectral exposures stop after assign_wcs; in the romancal-1.1 chain dark_current (on the rate)
    still applies to them, as romancal 1.1 runs it for every exposure type."""
    spectral = applicable_steps("WFI_SPECTRAL", chain)
    assert spectral == tuple(s for s in chain_steps(chain) if s not in
                             ("flat_field", "photom", "source_detection", "tweakreg"))
    assert "dark_current" in spectral
    assert applicable_steps("WFI_IMAGE", chain) == chain_steps(chain)


def test_unknown_chain_is_named():
    with pytest.raises(ValueError, match="unknown exposure chain 'x'"):
        chain_steps("x")


@pytest.mark.peer
def test_same_order_as_romancals_exposure_pipeline():
    """romancal 1.1's ExposurePipeline runs its per-exposure steps in this order (its _process_model),
    photom before flat_field; ours keeps flat_field first (photom only records conversion factors)."""
    pytest.importorskip("romancal.pipeline")
    import inspect

    from romancal.pipeline.exposure_pipeline import ExposurePipeline

    source = inspect.getsource(ExposurePipeline._process_model)
    romancal_names = {"dq_init": "dq_init", "saturation": "saturation", "refpix": "refpix",
                      "dark_decay": "dark_decay", "wfi18_transient": "wfi18_transient",
                      "linearity": "linearity", "ramp_fit": "rampfit", "dark_current": "dark_current",
                      "assign_wcs": "assign_wcs"}
    positions = [source.index(f"self.{name}.run(") for name in romancal_names.values()]
    assert positions == sorted(positions)
    assert tuple(romancal_names) == chain_steps("romancal-1.1")[:len(romancal_names)]
