"""
Config validation and the helpers the rule files share. No rules here.

Exposures are found by file name only (a folder scan or a table), never by
opening files at parse time; everything read from inside the files (metadata,
selected references) comes from the pool checkpoint's table.
"""

import functools
import glob
import json
import os
import shlex
import sys

import pandas as pd
from snakemake.settings.types import DeploymentMethod
from snakemake.utils import validate

sys.path.insert(0, os.path.join(workflow.basedir, "scripts"))
from romanpipe.naming import STEP_SUFFIX, split_suffix  # noqa: E402
from romanpipe import refs  # noqa: E402
from romanpipe.cores import worker_count  # noqa: E402


validate(config, os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml"))

RESULTS = config["results_dir"]
LOGS = config["logs_dir"]
BENCHMARKS = os.path.join(LOGS, "benchmarks")
# CRDS_PATH from the environment wins over the config, as crds users expect; every job
# (local or on SLURM) then gets the same cache through the shell prefix.
CRDS_PATH = str(refs.configure_crds(os.path.abspath(config["crds"]["path"])).cache_dir)
# numba's compiled kernels are cached with the results, not next to the scripts.
NUMBA_CACHE = os.path.abspath(os.path.join(RESULTS, ".cache", "numba"))
shell.prefix(
    f"set -euo pipefail; export CRDS_PATH={shlex.quote(CRDS_PATH)}; "
    f"export NUMBA_CACHE_DIR={shlex.quote(NUMBA_CACHE)}; "
)

# Under --software-deployment-method conda each rule's env provides `python`; otherwise
# the scripts run with the interpreter that runs Snakemake (the project's venv).
PYTHON = (
    "python"
    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
    else sys.executable
)

# Ramp-level steps in pipeline order, and the reference types each one reads.
RAMP_STEPS = ["dq_init", "saturation", "refpix", "linearity", "dark_current", "jump", "ramp_fit"]
STEP_REFTYPES = {
    "dq_init": ["mask"],
    "saturation": ["saturation"],
    "refpix": ["refpix"],
    "linearity": ["linearity"],
    "dark_current": ["dark"],
    "jump": ["gain", "readnoise"],
    "ramp_fit": ["gain", "readnoise", "dark"],
}


wildcard_constraints:
    expo=r"[^/]+",


def discover_exposures():
    """Exposure name -> Level 1 path, from the exposure table or the uncal folder."""
    table = config["inputs"]["exposure_list"]
    if table:
        frame = pd.read_parquet(table) if table.endswith(".parquet") else pd.read_csv(table)
        if "path" not in frame.columns:
            raise WorkflowError(f"{table}: the exposure list needs a column 'path'")
        paths = frame["path"].astype(str).tolist()
    else:
        paths = sorted(glob.glob(os.path.join(config["inputs"]["uncal_dir"], "*_uncal.asdf")))
    if not paths:
        raise WorkflowError(
            f"no *_uncal.asdf inputs found (inputs.uncal_dir={config['inputs']['uncal_dir']!r}, "
            f"inputs.exposure_list={table!r})"
        )
    return {split_suffix(path)[0]: path for path in paths}


EXPOSURES = discover_exposures()


def step_script(step):
    """The step's script, an input of its rule so that editing it reruns the step."""
    return os.path.join(workflow.basedir, "scripts", f"{step}.py")


def product(step):
    return os.path.join(RESULTS, "exposures", f"{{expo}}_{STEP_SUFFIX[step]}.asdf")


def is_enabled(step):
    # The two-point jump step runs only when ramp fitting does not detect jumps itself.
    if step == "jump":
        return not config["ramp_fit"]["use_ramp_jump_detection"]
    return not config[step].get("skip", False)


def upstream_product(step):
    """Input of ``step``: the product of the nearest earlier step that runs, or the Level 1 file."""
    earlier = [s for s in RAMP_STEPS[: RAMP_STEPS.index(step)] if is_enabled(s)]
    return product(earlier[-1]) if earlier else uncal_path


def skipped_before(step):
    """Steps skipped since the previous product: the next product records them as SKIPPED."""
    skipped = []
    for earlier in reversed(RAMP_STEPS[: RAMP_STEPS.index(step)]):
        if is_enabled(earlier):
            break
        skipped.append(earlier)
    return f"--mark-skipped {' '.join(reversed(skipped))}" if skipped else ""


def uncal_path(wildcards):
    try:
        return EXPOSURES[wildcards.expo]
    except KeyError:
        raise WorkflowError(f"unknown exposure {wildcards.expo!r}: not among the inputs") from None


def crds_context_file():
    """The operational context's .pmap: a new context reruns the pool, which reselects references."""
    context = refs.current_context()
    if not context:
        raise WorkflowError(
            f"no CRDS context in {CRDS_PATH}: build a cache (make demo) or set CRDS_SERVER_URL"
        )
    return os.path.join(CRDS_PATH, "mappings", "roman", context)


@functools.lru_cache(maxsize=4)
def _read_pool(path, mtime):
    return pd.read_csv(path, index_col="exposure", dtype=str, keep_default_na=False)


def pool_table():
    path = checkpoints.pool.get().output.pool
    return _read_pool(path, os.path.getmtime(path))


def reference(step, reftype):
    """Input function: the step's reference for an exposure (config override, else the pool's CRDS pick)."""
    override = config[step].get(f"override_{reftype}")
    if override:
        return override

    def crds_selection(wildcards):
        return pool_table().loc[wildcards.expo, f"ref_{reftype}"]

    crds_selection.__name__ = f"crds_{reftype}"
    return crds_selection


def step_parameters(step):
    """The step's config block as JSON, so a changed value is a changed param (and reruns)."""
    return json.dumps(config[step], sort_keys=True)


def parameter_file():
    return [config["parameter_file"]] if config["parameter_file"] else []


def parameter_file_option(wildcards, input):
    return f"--parameter-file {input.parameter_file}" if config["parameter_file"] else ""


def dark_output_option(wildcards):
    """dark_current.dark_output set (to anything): each exposure also keeps its frame-averaged dark.

    One file name in the config cannot serve every exposure, so the workflow names it.
    """
    if not config["dark_current"]["dark_output"]:
        return ""
    path = os.path.join(RESULTS, "exposures", f"{wildcards.expo}_darkframes.asdf")
    return f"--dark-output {shlex.quote(path)}"


def cores_for(maximum_cores):
    """Threads for a step's maximum_cores setting (the seed's none/quarter/half/all).

    A fraction of this machine's cores: Snakemake lowers it to --cores when running
    locally, and on SLURM it becomes the job's cpus_per_task (workflow.cores does not
    exist there).
    """
    return worker_count(maximum_cores, os.cpu_count() or 1)


def ramp_memory_mb(factor):
    """A ramp step's mem_mb: 1 GB plus ``factor`` times its inputs, doubled on each retry.

    Factors from the full-detector peaks in the README (steps hold about two ramps;
    dq_init turns 2-byte raw counts into 4-byte floats); a job killed for memory
    comes back with more.
    """

    def mem_mb(wildcards, input, attempt):
        return int((1024 + factor * input.size_mb) * 2 ** (attempt - 1))

    mem_mb.__name__ = f"ramp_memory_mb_x{factor}"
    return mem_mb


def final_step():
    """The step whose product is the configured target, or the last one before it that runs."""
    suffix_step = {STEP_SUFFIX[s]: s for s in RAMP_STEPS}
    target = suffix_step[config["target"]]
    enabled = [s for s in RAMP_STEPS[: RAMP_STEPS.index(target) + 1] if is_enabled(s)]
    return enabled[-1]


def final_products(wildcards):
    """Every valid exposure's target product; quarantined inputs make none."""
    return expand(product(final_step()), expo=pool_table().index)
