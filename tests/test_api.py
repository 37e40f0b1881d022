"""The Python API, ``romanpipe.run_steps``, against the step scripts on a small simulated exposure."""

import json
from pathlib import Path

from romanpipe import cli, params, refs, run_steps
from romanpipe.errors import InputFileError, ParameterError
from romanpipe.exposure_types import EXPOSURE_STEPS
from romanpipe.naming import STEP_SUFFIX
from romanpipe.steps import step_module

import numpy as np
import pytest
import roman_datamodels as rdm
import yaml
from roman_datamodels import datamodels

from comparison import in_memory_differences as differences
from comparison import model_differences
from wfisim.campaign import CampaignConfig, simulate_campaign

# Even ramps, so that the chain holds every exposure-level step: the two-point jump step runs
# when ramp fitting does not detect jumps itself.
STEP_SETTINGS = {"ramp_fit": {"use_ramp_jump_detection": False}}
GROUNDTEST_CHAIN = ["dq_init", "saturation", "refpix", "linearity"]


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """One 128-pixel exposure with its references, CRDS cache and Gaia-like catalog."""
    out = tmp_path_factory.mktemp("api_campaign")
    outputs = simulate_campaign(CampaignConfig.from_mapping({
        "detectors": ["WFI01"], "filters": ["F158"], "exposures_per_filter": 1, "size": 128,
        "ma_table": "IMG_EVEN_8", "stars": 60, "saturating_stars": 1, "seed": 5,
        "cosmic_ray_flux_per_cm2_s": 500.0,
        "pointing_error": {"offset_arcsec": 1.0, "roll_deg": 0.03},
    }), out)
    settings = yaml.safe_load(outputs.workflow_config.read_text())
    return out, outputs.uncal[0], {**settings, **STEP_SETTINGS}


@pytest.fixture
def in_campaign(campaign, crds_environment, monkeypatch):
    """Inside the campaign folder (its settings hold relative paths), CRDS on its cache."""
    out, uncal, settings = campaign
    monkeypatch.chdir(out)
    monkeypatch.setenv("CRDS_PATH", str(out / "crds_cache"))
    refs.configure_crds()
    return uncal, settings


def run_scripts(uncal: Path, steps, settings: dict, folder: Path, *extra: str) -> dict[str, Path]:
    """Each step's script on the previous product, as the workflow chains them; step -> product."""
    products, source = {}, uncal
    for step in steps:
        product = folder / uncal.name.replace("_uncal", f"_{STEP_SUFFIX[step]}")
        argv = [str(source), str(product), "--workflow-params", json.dumps(settings.get(step, {})),
                *(extra if step == "saturation" else ())]
        assert cli.run(step_module(step).main, argv) == 0, step
        products[step], source = product, product
    return products


def test_every_exposure_step_gives_the_scripts_arrays(in_campaign, tmp_path):
    uncal, settings = in_campaign
    scripts = run_scripts(uncal, EXPOSURE_STEPS, settings, tmp_path / "scripts")
    api_dir = tmp_path / "api"
    model = run_steps(uncal, EXPOSURE_STEPS, output_dir=api_dir, save_intermediates=True,
                      **{step: settings[step] for step in EXPOSURE_STEPS if step in settings})
    assert isinstance(model, datamodels.ImageModel)
    assert differences(model, scripts["tweakreg"]) == []
    for product in scripts.values():
        assert model_differences(api_dir / product.name, product) == []
    assert model.meta.cal_step.tweakreg == "COMPLETE"  # aligned to the catalog, not passed on


def test_partial_pipeline_in_memory_writes_nothing(in_campaign, tmp_path):
    """The ground-test user's call: a RampModel after linearity, n_pix_grow_sat from the keyword."""
    uncal, settings = in_campaign
    scripts = run_scripts(uncal, GROUNDTEST_CHAIN, settings, tmp_path / "scripts", "--n-pix-grow-sat", "1")
    campaign_files = sorted(Path().rglob("*"))
    ramp = run_steps(str(uncal), GROUNDTEST_CHAIN, saturation={"n_pix_grow_sat": 1})
    assert sorted(Path().rglob("*")) == campaign_files
    assert isinstance(ramp, datamodels.RampModel)
    assert ramp.meta.provenance["saturation"]["parameters"]["n_pix_grow_sat"] == 1
    assert ramp.meta.cal_step.linearity == "COMPLETE" and ramp.meta.cal_step.dark == "INCOMPLETE"
    assert differences(ramp, scripts["linearity"]) == []
    # The comparison sees a changed parameter: in the flags it grows and in the provenance.
    ungrown = differences(run_steps(uncal, GROUNDTEST_CHAIN), scripts["linearity"])
    assert any("groupdq" in line for line in ungrown) and any("n_pix_grow_sat" in line for line in ungrown)


def test_a_model_in_memory_is_left_unchanged(in_campaign, tmp_path):
    uncal, settings = in_campaign
    scripts = run_scripts(uncal, ["dq_init", "saturation"], settings, tmp_path)
    with rdm.open(uncal) as level1:
        before = np.asarray(level1.data).copy()
        ramp = run_steps(level1, ["dq_init"])
        saturated = run_steps(ramp, "saturation")
        np.testing.assert_array_equal(np.asarray(level1.data), before)
        assert "cal_step" not in level1.meta or level1.meta.cal_step.get("dq_init") != "COMPLETE"
    assert ramp.meta.cal_step.saturation == "INCOMPLETE"
    assert differences(ramp, scripts["dq_init"]) == []
    assert differences(saturated, scripts["saturation"]) == []


def test_a_skipped_step_passes_its_input_on_and_says_so(in_campaign, tmp_path):
    uncal, _ = in_campaign
    ramp = run_steps(uncal, ["dq_init", "saturation"], saturation={"skip": True}, output_dir=tmp_path)
    assert ramp.meta.cal_step.saturation == "SKIPPED"
    assert not (np.asarray(ramp.groupdq) & 2).any()  # no SATURATED flag
    # The last step's product is written even when that step was skipped.
    assert [path.name for path in tmp_path.iterdir()] == [uncal.name.replace("_uncal", "_saturation")]


def test_the_parameter_file_is_below_the_keywords(in_campaign, tmp_path):
    uncal, _ = in_campaign
    pfile = tmp_path / "sat.yaml"
    pfile.write_text(yaml.safe_dump({"class": "romancal.step.SaturationStep", "name": "saturation",
                                     "parameters": {"n_pix_grow_sat": 2, "backup": 1}}))
    ramp = run_steps(uncal, ["dq_init", "saturation"], parameter_file=pfile, saturation={"n_pix_grow_sat": 1})
    used = ramp.meta.provenance["saturation"]["parameters"]
    assert (used["n_pix_grow_sat"], used["backup"]) == (1, 1)  # the keyword, then the file
    # A saturation file: dq_init keeps its defaults.
    defaults = {name: value for name, value in params.step_defaults("dq_init").items() if value is not None}
    assert ramp.meta.provenance["dq_init"]["parameters"] == defaults


def test_override_reference_wins_over_crds(in_campaign, tmp_path):
    uncal, _ = in_campaign
    mask = datamodels.MaskRefModel.create_fake_data(shape=(128, 128))
    mask.dq = np.zeros((128, 128), np.uint32)
    mask.dq[60, 61] = 1024  # DEAD
    mask.to_asdf(tmp_path / "my_mask.asdf")
    ramp = run_steps(uncal, ["dq_init"], dq_init={"override_mask": str(tmp_path / "my_mask.asdf")})
    assert ramp.pixeldq[60, 61] & 1024
    assert ramp.meta.provenance["dq_init"]["references"]["mask"]["file"] == "my_mask.asdf"


@pytest.mark.parametrize(("steps", "keywords", "message"), [
    (["dq_init", "resample"], {}, "resample works on an association"),
    (["dq_init"], {"saturation": {"n_pix_grow_sat": 1}}, "saturation is not among the steps"),
    (["dq_init", "saturation"], {"saturation": {"n_pix_grow": 1}},
     r"run_steps\(saturation=...\).*n_pix_grow"),
    (["dq_init", "sautration"], {}, "unknown step 'sautration'"),
])
def test_bad_calls_are_named(in_campaign, steps, keywords, message):
    uncal, _ = in_campaign
    with pytest.raises(ParameterError, match=message):
        run_steps(uncal, steps, **keywords)


def test_a_step_given_the_wrong_model_names_the_input(in_campaign):
    uncal, _ = in_campaign
    with pytest.raises(InputFileError, match=f"{uncal.name}.*assign_wcs takes a ImageModel.*ScienceRawModel"):
        run_steps(uncal, ["assign_wcs"])
