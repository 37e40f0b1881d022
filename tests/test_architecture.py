"""Rules of the architecture that code review alone would not hold."""

import ast
import re
import subprocess
import sys
from pathlib import Path

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
    common = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    modules = set(re.findall(r"^from (romanpipe(?:\.\w+)?) import", common, re.MULTILINE))
    modules |= {f"romanpipe.{name}" for name in re.findall(r"^from romanpipe import (\w+)", common,
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


def test_every_rule_has_log_and_conda():
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text()
        for rule in re.split(r"^(?=(?:rule|checkpoint) )", text, flags=re.MULTILINE)[1:]:
            name = rule.split()[1].rstrip(":")
            assert "log:" in rule, f"{smk.name}: rule {name} has no log"
            assert "conda:" in rule, f"{smk.name}: rule {name} has no conda env"
