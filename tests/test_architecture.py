"""Rules of the architecture that code review alone would not hold."""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"romancal", "stcal", "stpipe"}


def pipeline_sources():
    yield ROOT / "Snakefile"
    yield from (ROOT / "workflow").rglob("*.smk")
    yield from (ROOT / "scripts").rglob("*.py")


def imported_top_modules(path: Path) -> set[str]:
    """Top-level modules imported by a Python file or by the Python inside a Snakemake file."""
    text = path.read_text()
    if path.suffix == ".py":
        tree = ast.parse(text)
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
                if node.args and isinstance(node.args[0], ast.Constant):
                    names.add(str(node.args[0].value).split(".")[0])
        return names
    return set(re.findall(r"^\s*(?:from|import)\s+([A-Za-z_][\w]*)", text, re.MULTILINE))


def test_pipeline_code_never_imports_the_peer():
    offenders = {str(p.relative_to(ROOT)): sorted(imported_top_modules(p) & FORBIDDEN)
                 for p in pipeline_sources() if imported_top_modules(p) & FORBIDDEN}
    assert offenders == {}


def test_the_import_check_sees_an_import(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text("import numpy\nfrom stcal.ramp_fitting import ols_cas22\n")
    assert "stcal" in imported_top_modules(sample)



def main_guard_body(path: Path) -> list[str]:
    """The statements under a script's ``if __name__ == "__main__":``, as source text."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test):
            return [ast.unparse(statement) for statement in node.body]
    return []


def test_every_script_ends_through_run_and_exit():
    """One way out for every program (romanpipe.cli.run_and_exit): the exit statuses of the
    romancal documentation, logs and streams flushed, then no interpreter teardown."""
    # warm_start.py is not a program of its own but a launcher: it passes on the exit status
    # of the script it runs (romanpipe.warm) and must not import romanpipe's package to start.
    scripts = sorted(path for path in (ROOT / "scripts").glob("*.py") if path.name != "warm_start.py")
    endings = {path.name: main_guard_body(path) for path in scripts}
    assert len(endings) >= 25
    assert {name: body for name, body in endings.items() if body != ["cli.run_and_exit(main)"]} == {}


def test_no_script_imports_another_script():
    """What two steps share lives in romanpipe: a script that imports another's drags its
    dependencies and start-up along, and hides where the shared code is."""
    scripts = {path.stem: path for path in (ROOT / "scripts").glob("*.py")}
    offenders = {name: sorted(imported_top_modules(path) & (scripts.keys() - {name}))
                 for name, path in scripts.items() if imported_top_modules(path) & (scripts.keys() - {name})}
    assert offenders == {}

def test_the_workflow_loads_without_crds_or_roman_datamodels():
    """Snakemake starts again for every rule of a SLURM group job: importing these two made
    each start 1.8 s slower (README, per-job overhead of the profile)."""
    rules = "\n".join(path.read_text() for path in (ROOT / "workflow" / "rules").glob("*.smk"))
    modules = set(re.findall(r"^from (romanpipe(?:\.\w+)?) import", rules, re.MULTILINE))
    modules |= {f"romanpipe.{name}" for name in re.findall(r"^from romanpipe import (\w+)", rules,
                                                           re.MULTILINE)}
    assert "romanpipe.refs" in modules and "romanpipe.product_sizes" in modules
    loaded = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT / 'scripts')!r}); "
         f"import {', '.join(sorted(modules))}; print(sorted(sys.modules))"],
        capture_output=True, text=True, check=True).stdout
    assert "'crds'" not in loaded and "'roman_datamodels'" not in loaded


def test_conda_env_pins_equal_pyproject_pins():
    pyproject = (ROOT / "pyproject.toml").read_text()
    pins = {name.lower().replace("_", "-"): version
            for name, version in re.findall(r'"([A-Za-z0-9_.-]+)==([^"]+)"', pyproject)}
    for env_file in (ROOT / "envs").glob("*.yaml"):
        env = yaml.safe_load(env_file.read_text())
        entries = []
        for dep in env["dependencies"]:
            if isinstance(dep, dict):
                entries += [tuple(d.split("==")) for d in dep.get("pip", [])]
            elif "=" in dep and not dep.startswith("python"):
                name, version = (part.strip() for part in dep.split("=", 1))
                entries.append((name, version))
        for name, version in entries:
            key = name.lower().replace("_", "-")
            assert key in pins, f"{env_file.name}: {name} is not pinned in pyproject.toml"
            assert pins[key] == version, f"{env_file.name}: {name}={version}, pyproject {pins[key]}"


# Loads the workflow with Snakemake's API (in its own process: loading configures CRDS and
# the shell for the process) and reports what each rule that runs something declares.
RULES_PROBE = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings

with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
    workflow = api.workflow(resource_settings=ResourceSettings(), config_settings=ConfigSettings(),
                            storage_settings=StorageSettings(), snakefile=Path(sys.argv[1]),
                            workdir=Path(sys.argv[2]))._workflow
    print(json.dumps({rule.name: {"log": bool(rule.log), "conda": rule.conda_env is not None,
                                  "benchmark": rule.benchmark is not None,
                                  "log_path": str(rule.log[0]) if rule.log else None,
                                  "benchmark_path": str(rule.benchmark) if rule.benchmark else None,
                                  "resources": sorted(rule.resources)}
                      for rule in workflow.rules if not rule.norun}))
"""
@pytest.fixture(scope="module")
def workflow_rules(tmp_path_factory):
    """Rule name -> what it declares, from the workflow loaded on a one-file campaign (inputs are
    found by name and the CRDS context is read from the cache's server_config)."""
    workdir = tmp_path_factory.mktemp("campaign")
    (workdir / "uncal").mkdir()
    (workdir / "uncal" / "r0000101001001001001_01101_0001_WFI01_uncal.asdf").touch()
    (workdir / "crds_cache" / "config" / "roman").mkdir(parents=True)
    (workdir / "crds_cache" / "config" / "roman" / "server_config").write_text(
        repr({"operational_context": "roman_0001.pmap"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRDS_")}
    result = subprocess.run([sys.executable, "-c", RULES_PROBE, str(ROOT / "Snakefile"), str(workdir)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_rule_has_log_and_conda(workflow_rules):
    assert {name for name, rule in workflow_rules.items() if not (rule["log"] and rule["conda"])} == set()


def lacking_benchmark_or_resources(rule: dict) -> bool:
    """No benchmark record, or no memory and runtime for the scheduler (SLURM's mem and time)."""
    return not rule["benchmark"] or not {"mem_mb", "runtime"} <= set(rule["resources"])


def test_every_rule_has_a_benchmark_and_resources(workflow_rules):
    """Every job's record reaches results/benchmarks.csv, and every job asks SLURM for its
    memory and time instead of the profile's fallbacks."""
    assert "dq_init" in workflow_rules and "benchmarks" in workflow_rules
    assert {name for name, rule in workflow_rules.items() if lacking_benchmark_or_resources(rule)} == set()


def test_every_jobs_log_and_benchmark_share_their_path(workflow_rules):
    """benchmark_table pairs a warm worker (known by its job's log) with the job's benchmark
    record by this path: logs/<x>.log <-> logs/benchmarks/<x>.tsv. A rule that names them
    apart loses its worker's CPU and memory from the report (the quicklooks did)."""
    logs = Path("logs")
    apart = {name: (rule["log_path"], rule["benchmark_path"]) for name, rule in workflow_rules.items()
             if Path(rule["log_path"]).relative_to(logs).with_suffix(".tsv")
             != Path(rule["benchmark_path"]).relative_to(logs / "benchmarks")}
    assert "quicklook_cal" in workflow_rules and apart == {}


def test_every_per_exposure_step_runs_inside_the_slurm_profiles_exposure_job():
    """A step missing from the profile's group becomes a SLURM job of its own per exposure
    (its fixed overhead paid again; make test-slurm counts the jobs)."""
    from romanpipe.exposure_types import EXPOSURE_STEPS
    from romanpipe.steps import CALIBRATED_IMAGE_STEPS

    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    grouped = {entry.split("=")[0] for entry in profile["groups"] if entry.endswith("=exposure")}
    assert set(EXPOSURE_STEPS) | set(CALIBRATED_IMAGE_STEPS) | {"cal", "quicklook_cal"} <= grouped
