"""The ``romanpipe`` command (steps, run, params) and the step scripts' by-hand arguments."""

import logging
import subprocess
import sys
from pathlib import Path

from romanpipe import command, params
from romanpipe.naming import STEP_SUFFIX
from romanpipe.steprun import parse_step_args

import asdf
import numpy as np
import pytest
import roman_datamodels as rdm
import yaml

from conftest import EXPO

ROMANPIPE = Path(sys.executable).with_name("romanpipe")


def test_the_console_script_is_installed_and_lists_every_step_on_one_line():
    listed = subprocess.run([str(ROMANPIPE), "steps"], capture_output=True, text=True, check=True).stdout
    lines = listed.splitlines()
    assert [line.split()[0] for line in lines] == list(STEP_SUFFIX)
    assert lines[0].split()[:3] == ["dq_init", "dqinit", "exposure"]
    assert "turn a Level 1 exposure into a RampModel" in lines[0]
    assert lines[-2].split()[:3] == ["resample", "resample", "association"]
    assert lines[-1].split()[:3] == ["source_catalog", "cat", "image"]


def run_dq_init(level1_file: Path, output: Path, mask_file: Path) -> None:
    assert command.main(["run", "dq_init", str(level1_file), str(output), "--override-mask",
                         str(mask_file)]) == 0


def test_run_writes_the_named_output(tmp_path, level1_file, mask_file):
    output = tmp_path / "out" / "ramp.asdf"
    run_dq_init(level1_file, output, mask_file)
    with rdm.open(output) as ramp:
        assert ramp.meta.cal_step.dq_init == "COMPLETE"
        assert ramp.pixeldq[5, 6] & 1024  # the MASK's DEAD pixel


def test_run_without_output_names_the_product_as_strun(tmp_path, level1_file, mask_file, monkeypatch):
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    assert command.main(["run", "dq_init", str(level1_file), "--override-mask", str(mask_file)]) == 0
    assert [p.name for p in Path().iterdir()] == [f"{EXPO}_dqinit.asdf"]


def write_step_file(path: Path, step: str, parameters: dict) -> Path:
    path.write_text(yaml.safe_dump({"class": "romancal.step.X", "name": step, "parameters": parameters}))
    return path


def test_output_dir_and_suffix_of_the_parameter_file_name_the_product(tmp_path, level1_file, mask_file,
                                                                       saturation_file, caplog):
    ramp = tmp_path / "ramp_dqinit.asdf"
    run_dq_init(level1_file, ramp, mask_file)
    pfile = write_step_file(tmp_path / "sat.yaml", "saturation", {
        "n_pix_grow_sat": 1, "output_dir": str(tmp_path / "products"), "suffix": "sat1",
        "save_results": True, "pre_hooks": ["my.hook"], "input_dir": "", "output_ext": ".asdf"})
    with caplog.at_level(logging.WARNING):
        assert command.main(["run", "saturation", str(ramp), "--parameter-file", str(pfile),
                             "--override-saturation", str(saturation_file)]) == 0
    assert [p.name for p in (tmp_path / "products").iterdir()] == ["ramp_sat1.asdf"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    # One line names each parameter that has no meaning here; defaults ("" and .asdf) are not noise.
    assert warnings == [f"{pfile}: stpipe parameter(s) ignored (no meaning for a run of one step): "
                        "pre_hooks=['my.hook'], save_results=True"]


def test_a_named_output_wins_over_output_dir_which_is_then_reported(tmp_path, level1_file, mask_file, caplog):
    pfile = write_step_file(tmp_path / "dq.yaml", "dq_init", {"output_dir": "elsewhere", "skip": False})
    output = tmp_path / "ramp.asdf"
    with caplog.at_level(logging.WARNING):
        assert command.main(["run", "dq_init", str(level1_file), str(output), "--parameter-file", str(pfile),
                             "--override-mask", str(mask_file)]) == 0
    assert output.is_file() and not (tmp_path / "elsewhere").exists()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"{pfile}: stpipe parameter(s) ignored (no meaning for a run of one step): output_dir='elsewhere'"]


def test_an_association_needs_an_output(tmp_path, capsys):
    association = tmp_path / "x_asn.json"
    association.write_text("{}")
    assert command.main(["run", "skymatch", str(association)]) == 1
    assert "an association input needs an OUTPUT" in capsys.readouterr().err


def test_run_of_an_unknown_step_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        command.main(["run", "saturations", "x.asdf"])
    assert exit_.value.code == 2
    assert "unknown step 'saturations'" in capsys.readouterr().err


def test_params_prints_the_resolved_parameters(tmp_path, capsys):
    pfile = write_step_file(tmp_path / "sat.yaml", "saturation", {"n_pix_grow_sat": 2, "backup": 1})
    assert command.main(["params", "saturation", "--parameter-file", str(pfile), "--backup", "3"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == {
        "class": "romancal.step.SaturationStep", "name": "saturation",
        "parameters": {"skip": False, "override_saturation": None, "n_pix_grow_sat": 2, "backup": 3}}


@pytest.mark.parametrize("name", ["ramp_fit.asdf", "ramp_fit.yaml"])
def test_saved_parameters_read_back_as_a_parameter_file(tmp_path, name):
    saved = tmp_path / name
    assert command.main(["params", "ramp_fit", "--algorithm", "ols", "--threshold-intercept", "6.5",
                         "--save-parameters", str(saved)]) == 0
    if saved.suffix == ".asdf":
        with asdf.open(saved) as af:
            assert (af["class"], af["name"]) == ("romancal.step.RampFitStep", "rampfit")
    values = params.resolve("ramp_fit", parameter_file=saved)
    assert (values["algorithm"], values["threshold_intercept"]) == ("ols", 6.5)
    assert values == {**params.step_defaults("ramp_fit"), "algorithm": "ols", "threshold_intercept": 6.5}


def test_params_carries_the_stpipe_settings_of_the_file(tmp_path):
    pfile = write_step_file(tmp_path / "sat.yaml", "saturation", {"suffix": "sat", "n_pix_grow_sat": 1})
    saved = tmp_path / "saved.yaml"
    assert command.main(["params", "saturation", "--parameter-file", str(pfile),
                         "--save-parameters", str(saved)]) == 0
    assert yaml.safe_load(saved.read_text())["parameters"]["suffix"] == "sat"
    assert params.stpipe_settings(saved, "saturation") == {"suffix": "sat"}


def test_parsing_a_skipped_step_writes_nothing(tmp_path, level1_file):
    """A parser parses: the pass-through of a skipped step is steprun.pass_on_skipped."""
    output = tmp_path / "skipped.asdf"
    args, values = parse_step_args("saturation", "", [str(level1_file), str(output), "--skip", "true"])
    assert values["skip"] is True and args.output == output
    assert not output.exists()


def test_a_skipped_step_by_hand_passes_its_input_on(tmp_path, level1_file, mask_file):
    ramp, output = tmp_path / "ramp.asdf", tmp_path / "skipped.asdf"
    run_dq_init(level1_file, ramp, mask_file)
    assert command.main(["run", "saturation", str(ramp), str(output), "--skip", "true"]) == 0
    with rdm.open(ramp) as before, rdm.open(output) as after:
        assert after.meta.cal_step.saturation == "SKIPPED"
        np.testing.assert_array_equal(after.groupdq, before.groupdq)
