"""Parameter precedence: command line > parameter file > workflow config > step default."""

import argparse
import json

from romanpipe import params
from romanpipe.errors import ParameterError

import asdf
import pytest
import yaml


def resolve(argv, step="saturation"):
    parser = argparse.ArgumentParser()
    params.add_step_arguments(parser, step)
    return params.resolve_parameters(step, parser.parse_args(argv))


def write_yaml(path, tree):
    path.write_text(yaml.safe_dump(tree))
    return path


def test_defaults_come_from_the_schema():
    values = resolve([])
    assert values == {"skip": False, "override_saturation": None, "n_pix_grow_sat": 0, "backup": 0}


def test_workflow_config_overrides_default():
    assert resolve(["--workflow-params", json.dumps({"n_pix_grow_sat": 2})])["n_pix_grow_sat"] == 2


def test_parameter_file_overrides_workflow_config(tmp_path):
    pfile = write_yaml(tmp_path / "sat.yaml", {"class": "romancal.saturation.SaturationStep",
                                               "name": "saturation",
                                               "parameters": {"n_pix_grow_sat": 3}})
    values = resolve(["--workflow-params", '{"n_pix_grow_sat": 2, "backup": 1}',
                      "--parameter-file", str(pfile)])
    assert values["n_pix_grow_sat"] == 3
    assert values["backup"] == 1


def test_command_line_overrides_everything(tmp_path):
    pfile = write_yaml(tmp_path / "sat.yaml", {"parameters": {"n_pix_grow_sat": 3}})
    values = resolve(["--workflow-params", '{"n_pix_grow_sat": 2}', "--parameter-file", str(pfile),
                      "--n-pix-grow-sat", "4"])
    assert values["n_pix_grow_sat"] == 4


def test_asdf_pipeline_parameter_file_with_stpipe_universal_keys(tmp_path):
    path = tmp_path / "pipeline.asdf"
    tree = {
        "class": "romancal.pipeline.exposure_pipeline.ExposurePipeline",
        "name": "ExposurePipeline",
        "parameters": {"save_results": True},
        "steps": [
            {"class": "romancal.dq_init.dq_init_step.DQInitStep", "name": "dq_init",
             "parameters": {"output_dir": None, "skip": False}},
            {"class": "romancal.saturation.saturation_step.SaturationStep", "name": "saturation",
             "parameters": {"input_dir": "", "pre_hooks": [], "n_pix_grow_sat": 1}},
        ],
    }
    asdf.AsdfFile(tree).write_to(path)
    assert resolve(["--parameter-file", str(path)])["n_pix_grow_sat"] == 1


def test_pipeline_step_entry_may_point_at_its_own_file(tmp_path):
    write_yaml(tmp_path / "mysat.yaml", {"class": "x", "name": "saturation",
                                         "parameters": {"n_pix_grow_sat": 5, "backup": 2}})
    pipeline = write_yaml(tmp_path / "pipe.yaml", {"class": "p", "steps": [
        {"name": "saturation", "parameters": {"config_file": "mysat.yaml", "backup": 1}}]})
    values = resolve(["--parameter-file", str(pipeline)])
    assert (values["n_pix_grow_sat"], values["backup"]) == (5, 1)  # local values win


def test_unknown_parameter_in_file_is_named(tmp_path):
    pfile = write_yaml(tmp_path / "sat.yaml", {"parameters": {"n_pix_grow": 1}})
    with pytest.raises(ParameterError, match="n_pix_grow") as err:
        resolve(["--parameter-file", str(pfile)])
    assert str(pfile) in str(err.value)


def test_unknown_parameter_names_the_known_one_it_resembles(tmp_path):
    """The prose of the romancal documentation says calc_threshold; the parameter is calc_scalar_threshold."""
    pfile = write_yaml(tmp_path / "sd.yaml", {"parameters": {"calc_threshold": True}})
    suggestion = r"calc_threshold \(did you mean \w+ or calc_scalar_threshold\?\)"
    with pytest.raises(ParameterError, match=suggestion):
        resolve(["--parameter-file", str(pfile)], step="source_detection")


def test_unknown_parameter_in_workflow_config_is_named():
    with pytest.raises(ParameterError, match="threshold"):
        resolve(["--workflow-params", '{"threshold": 1}'])


def test_out_of_bounds_value_is_rejected():
    with pytest.raises(ParameterError, match="n_pix_grow_sat"):
        resolve(["--n-pix-grow-sat", "-1"])


def test_missing_parameter_file_is_a_clear_error(tmp_path):
    with pytest.raises(ParameterError, match="not found"):
        resolve(["--parameter-file", str(tmp_path / "nope.yaml")])


def test_nullable_override_from_command_line():
    assert resolve(["--override-saturation", "none"])["override_saturation"] is None
    assert resolve(["--override-saturation", "ref.asdf"])["override_saturation"] == "ref.asdf"


def test_a_parameter_file_with_an_alias_bomb_is_refused_in_one_line(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb.write_text("\n".join(lines) + "\nparameters:\n  n_pix_grow_sat: *a8\n")
    with pytest.raises(ParameterError) as raised:
        params.read_parameter_file(bomb, "saturation")
    assert str(raised.value) == f"{bomb}: YAML alias *a0 at line 2: aliases are not allowed"


def test_a_parameter_file_too_big_is_refused(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("parameters:\n  n_pix_grow_sat: 1\n" + "# padding\n" * 200_000)
    with pytest.raises(ParameterError, match=r"big.yaml: \d+ bytes, more than the 1048576"):
        params.read_parameter_file(big, "saturation")


def test_a_shared_node_in_a_loaded_config_is_refused():
    shared = {"a": 1}
    with pytest.raises(ParameterError, match="a mapping or list used twice"):
        params.check_tree_size({"x": shared, "y": shared}, "the workflow config")
    params.check_tree_size({"x": {"a": 1}, "y": {"a": 1}}, "the workflow config")


def test_a_step_refuses_to_write_over_its_input(tmp_path):
    from romanpipe.steprun import parse_step_args

    product = tmp_path / "x_dqinit.asdf"
    product.write_bytes(b"")
    with pytest.raises(ParameterError, match="the output is the input"):
        parse_step_args("saturation", "", [str(product), str(tmp_path / "." / "x_dqinit.asdf")])


@pytest.mark.parametrize(("step", "option", "value"), [
    ("ramp_fit", "--threshold-intercept", "-5"),  # the case: 14,396 of 14,400 pixels jumped
    ("ramp_fit", "--threshold-constant", "-1"),
    ("source_detection", "--peakmax", "0"),
    ("source_detection", "--scalar-threshold", "-2"),
    ("resample", "--rotation", "400"),
])
def test_numeric_parameters_out_of_their_bounds_are_refused(step, option, value):
    with pytest.raises(ParameterError, match=f"{step}: parameter {option[2:].replace('-', '_')}"):
        resolve([option, value], step)
