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
from romanpipe.exposure_types import (  # noqa: E402
    DARK_TYPES,
    EXPOSURE_STEPS,
    MOSAIC_TYPES,
    applicable_steps,
)
from romanpipe import refs  # noqa: E402
from romanpipe.steps import STEP_REFTYPES  # noqa: E402

validate(config, os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml"))

RESULTS = config["results_dir"]
LOGS = config["logs_dir"]
BENCHMARKS = os.path.join(LOGS, "benchmarks")
# CRDS_PATH from the environment wins over the config, as crds users expect; every job
# (local or on SLURM) then gets the same cache through the shell prefix.
CRDS_PATH = str(refs.configure_crds(os.path.abspath(config["crds"]["path"])).cache_dir)
# numba's compiled kernels are cached with the results, not next to the scripts, unless the
# environment names a cache (an installation's, shared by campaigns: kernels compile once).
NUMBA_CACHE = os.path.abspath(os.environ.get("NUMBA_CACHE_DIR") or os.path.join(RESULTS, ".cache", "numba"))
# source_detection's Roman PSF, built once per detector and filter for the campaign (or
# for every campaign of an installation that names its own folder).
PSF_CACHE = os.path.abspath(os.environ.get("ROMANPIPE_PSF_CACHE") or os.path.join(RESULTS, ".cache", "psf"))
shell.prefix(
    f"set -euo pipefail; export CRDS_PATH={shlex.quote(CRDS_PATH)}; "
    f"export NUMBA_CACHE_DIR={shlex.quote(NUMBA_CACHE)}; "
    f"export ROMANPIPE_PSF_CACHE={shlex.quote(PSF_CACHE)}; "
)

# Under --software-deployment-method conda each rule's env provides `python`; otherwise
# the scripts run with the interpreter that runs Snakemake (the project's venv).
PYTHON = (
    "python" if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method else sys.executable
)


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


CAL_PRODUCT = os.path.join(RESULTS, "exposures", "{expo}_cal.asdf")

# Steps whose products are 3-D ramps that only the next step reads.
RAMP_INTERMEDIATE_STEPS = EXPOSURE_STEPS[: EXPOSURE_STEPS.index("ramp_fit")]


# The exposure-level step whose product is the configured target; None for cal and i2d.
TARGET_STEP = {STEP_SUFFIX[s]: s for s in EXPOSURE_STEPS}.get(config["target"])


def within_target(step):
    """Whether ``step`` is at or before the configured target (for cal and i2d: every step)."""
    return TARGET_STEP is None or EXPOSURE_STEPS.index(step) <= EXPOSURE_STEPS.index(TARGET_STEP)


def partial_target_step():
    """The ramp step whose product is the configured target, if the target is a ramp."""
    if TARGET_STEP not in RAMP_INTERMEDIATE_STEPS:
        return None
    up_to = RAMP_INTERMEDIATE_STEPS.index(TARGET_STEP)
    enabled = [s for s in RAMP_INTERMEDIATE_STEPS[: up_to + 1] if is_enabled(s)]
    return enabled[-1] if enabled else None


def step_output(step):
    """A step's product: a ramp between two steps is temporary unless the config keeps it."""
    path = product(step)
    if (
        step in RAMP_INTERMEDIATE_STEPS
        and not config["keep_ramp_intermediates"]
        and step != partial_target_step()
    ):
        return temp(path)
    return path


def is_enabled(step):
    # The two-point jump step runs only when ramp fitting does not detect jumps itself.
    if step == "jump" and config["ramp_fit"]["use_ramp_jump_detection"]:
        return False
    return not config[step].get("skip", False)


def upstream_product(step):
    """Input of ``step``: the product of the nearest earlier step that runs, or the Level 1 file."""
    earlier = [s for s in EXPOSURE_STEPS[: EXPOSURE_STEPS.index(step)] if is_enabled(s)]
    return product(earlier[-1]) if earlier else uncal_path


def skipped_before(step):
    """Steps skipped since the previous product: the next product records them as SKIPPED."""
    skipped = []
    for earlier in reversed(EXPOSURE_STEPS[: EXPOSURE_STEPS.index(step)]):
        if is_enabled(earlier):
            break
        skipped.append(earlier)
    return f"--mark-skipped {' '.join(reversed(skipped))}" if skipped else ""


def uncal_path(wildcards):
    try:
        return EXPOSURES[wildcards.expo]
    except KeyError:
        raise WorkflowError(f"unknown exposure {wildcards.expo!r}: not among the inputs") from None


def override(step, reftype):
    """The reference file the config gives ``step`` for ``reftype`` (``override_<reftype>``), or None."""
    return config[step].get(f"override_{reftype}") or None


def pipeline_steps():
    """The exposure-level steps this campaign runs: enabled and up to the target."""
    return [step for step in EXPOSURE_STEPS if is_enabled(step) and within_target(step)]


def crds_reftypes():
    """Step -> the reference types CRDS selects for it: those the config does not override.

    Only the steps that run need references: a skipped step's, or one after a partial
    target, must not quarantine an exposure.
    """
    return {
        step: [reftype for reftype in STEP_REFTYPES[step] if not override(step, reftype)]
        for step in pipeline_steps()
        if step in STEP_REFTYPES
    }


def override_references():
    """Step -> {reftype: file} of the overrides of the steps that run (the pool checks them)."""
    return {
        step: {reftype: override(step, reftype) for reftype in STEP_REFTYPES[step] if override(step, reftype)}
        for step in pipeline_steps()
        if step in STEP_REFTYPES
    }


def crds_context_file():
    """The operational context's .pmap, an input of the pool: a new context reruns the pool,
    which reselects references. None needed when every reference is overridden."""
    selected = [
        f"{step}.override_{reftype}" for step, reftypes in crds_reftypes().items() for reftype in reftypes
    ]
    if not selected:
        return []
    context = refs.current_context()
    if not context:
        raise WorkflowError(
            f"no CRDS context in {CRDS_PATH}: build a cache (make demo), set CRDS_SERVER_URL, "
            f"or give every reference file ({', '.join(selected)})"
        )
    return os.path.join(CRDS_PATH, "mappings", "roman", context)


@functools.lru_cache(maxsize=8)
def _read_table(path, mtime, index_col):
    """A checkpoint's CSV table, read once per version of the file."""
    return pd.read_csv(path, index_col=index_col, dtype=str, keep_default_na=False)


@functools.lru_cache(maxsize=1)
def _complete_pool_path():
    # Snakemake only ever adds to its set of created checkpoint outputs, so once
    # checkpoints.pool.get() has returned it returns the same for the rest of the run:
    # asking again (~0.1 ms, three times per job) costs minutes on a large campaign's plan.
    # An incomplete pool raises, which lru_cache does not keep, so the next call asks again.
    return checkpoints.pool.get().output.pool


def pool_table():
    path = _complete_pool_path()
    return _read_table(path, os.path.getmtime(path), "exposure")


@functools.lru_cache(maxsize=8)
def _records(path, mtime):
    return _read_table(path, mtime, "exposure").to_dict("index")


def pool_record(expo):
    """One exposure's row of the pool as a dict: input functions run once per job, and a
    dict lookup costs a hundredth of a DataFrame's."""
    path = _complete_pool_path()
    return _records(path, os.path.getmtime(path))[expo]


def reference(step, reftype):
    """Input function: the step's reference for an exposure (config override, else the pool's CRDS pick)."""
    if override(step, reftype):
        return override(step, reftype)

    def crds_selection(wildcards):
        record = pool_record(wildcards.expo)
        if f"ref_{reftype}" not in record:
            raise WorkflowError(
                f"no {reftype.upper()} reference in the pool for {step}: the pool selects "
                f"references for the enabled steps up to the target ({config['target']})"
            )
        return record[f"ref_{reftype}"]

    crds_selection.__name__ = f"crds_{reftype}"
    return crds_selection


def tweakreg_catalog_files():
    """Local catalog files tweakreg reads (abs_refcat unless a Gaia service, catfile): a new one reruns it."""
    settings = config["tweakreg"]
    refcat = settings["abs_refcat"] or ""
    files = [refcat] if refcat and not refcat.upper().startswith("GAIA") else []
    return files + ([settings["catfile"]] if settings["catfile"] else [])


def step_parameters(step):
    """The step's config block as JSON, so a changed value is a changed param (and reruns)."""
    return json.dumps(config[step], sort_keys=True)


def parameter_file():
    return [config["parameter_file"]] if config["parameter_file"] else []


def parameter_file_option():
    """A string, not a function of the job: Snakemake spends ~0.1 ms on every callable of every job."""
    path = config["parameter_file"]
    return f"--parameter-file {shlex.quote(path)}" if path else ""


def dark_output_option(wildcards):
    """dark_current.dark_output set (to anything): each exposure also keeps its frame-averaged dark.

    One file name in the config cannot serve every exposure, so the workflow names it.
    """
    if not config["dark_current"]["dark_output"]:
        return ""
    path = os.path.join(RESULTS, "exposures", f"{wildcards.expo}_darkframes.asdf")
    return f"--dark-output {shlex.quote(path)}"


def exposure_type(expo):
    return pool_record(expo)["exposure_type"]


def last_step(expo, up_to=EXPOSURE_STEPS[-1]):
    """The last step that runs for this exposure's type, at or before ``up_to``."""
    applicable = applicable_steps(exposure_type(expo))
    candidates = EXPOSURE_STEPS[: EXPOSURE_STEPS.index(up_to) + 1]
    return [s for s in candidates if s in applicable and is_enabled(s)][-1]


def cal_input(wildcards):
    """Input of the _cal product: the last product of the exposure type's chain."""
    return product(last_step(wildcards.expo)).format(expo=wildcards.expo)


def not_applicable_option(wildcards):
    """Steps of the full chain that this exposure type does not run, recorded as SKIPPED."""
    applicable = applicable_steps(exposure_type(wildcards.expo))
    skipped = [s for s in EXPOSURE_STEPS if s not in applicable]
    return f"--mark-skipped {' '.join(skipped)}" if skipped else ""


def exposure_target(expo):
    """The configured target of one exposure: its _cal, or the last product up to a partial target."""
    if TARGET_STEP is None:
        return CAL_PRODUCT.format(expo=expo)
    return product(last_step(expo, up_to=TARGET_STEP)).format(expo=expo)


def exposure_products(wildcards):
    """Every valid exposure's target product; quarantined inputs make none."""
    return [exposure_target(expo) for expo in pool_table().index]


def final_mosaics(wildcards):
    """The mosaics, when the target is i2d.

    A separate input function from the exposures': while the association checkpoint
    is pending, Snakemake holds back only this function's files.
    """
    return mosaic_products() if config["target"] == "i2d" else []


# High-level processing: one chain of steps per association.
MOSAIC_STEPS = ["flux", "skymatch", "outlier_detection", "resample"]
ASSOCIATION_INDEX = os.path.join(RESULTS, "associations.csv")
ASSOCIATION_DIR = os.path.join(RESULTS, "associations")
ASSOCIATION_FILE = os.path.join(ASSOCIATION_DIR, "{asn}_asn.json")
MOSAIC_PRODUCT = os.path.join(RESULTS, "mosaics", "{product}_i2d.asdf")


wildcard_constraints:
    asn=r"[^/]+",
    product=r"[^/]+",


def imaging_cal_products(wildcards):
    """The _cal products that go on to mosaics (imaging exposures)."""
    pool = pool_table()
    return [
        CAL_PRODUCT.format(expo=expo)
        for expo in pool.index
        if pool.loc[expo, "exposure_type"] in MOSAIC_TYPES
    ]


def user_associations_option():
    user_dir = config["associations"]["user_dir"]
    return f"--user-dir {shlex.quote(user_dir)}" if user_dir else ""


def association_index():
    path = checkpoints.associations.get().output[0]
    return _read_table(path, os.path.getmtime(path), "asn")


def association_of(wildcards):
    """The association a high-level job works on (resample's wildcard is the product it makes)."""
    if hasattr(wildcards, "asn"):
        return wildcards.asn
    index = association_index()
    matches = index.index[index["product"] == wildcards.product]
    if len(matches) != 1:
        raise WorkflowError(f"no association makes the product {wildcards.product!r}")
    return matches[0]


def association_tree(wildcards):
    asn = association_of(wildcards)
    try:
        return association_index().loc[asn, "tree"]
    except KeyError:
        raise WorkflowError(f"no association {asn!r} in {ASSOCIATION_INDEX}") from None


def association_members(wildcards):
    """The members' _cal products (paths in the tree are relative to the associations folder)."""
    tree = json.loads(association_tree(wildcards))
    return [
        os.path.normpath(os.path.join(ASSOCIATION_DIR, member["expname"]))
        for product in tree["products"]
        for member in product["members"]
    ]


def mosaic_asn(step):
    suffix = STEP_SUFFIX[step]
    return os.path.join(RESULTS, "mosaics", "{asn}", f"{{asn}}_{suffix}_asn.json")


def mosaic_upstream(step):
    """Input association of a high-level step: the nearest earlier step's, or the association file."""
    earlier = [s for s in MOSAIC_STEPS[: MOSAIC_STEPS.index(step)] if is_enabled(s)]
    return mosaic_asn(earlier[-1]) if earlier else ASSOCIATION_FILE


def resample_input(wildcards):
    return mosaic_upstream("resample").format(asn=association_of(wildcards))


def mosaic_products():
    return [MOSAIC_PRODUCT.format(product=product) for product in association_index()["product"]]


# Ground-test (TVAC) products (groundtest.smk).
DARK_REFERENCE = os.path.join(RESULTS, "references", "{detector}_{kind}.asdf")
DIAGNOSTICS_DIR = os.path.join(RESULTS, "diagnostics", "{expo}")
DIAGNOSTIC_FIGURES = (
    "difference_frames_full",
    "difference_frames_cutout",
    "saturation_frames",
    "relative_slope_neighbours",
)


wildcard_constraints:
    detector=r"WFI\d\d",


def dark_exposures(wildcards):
    """The raw files of one detector's dark exposures (the TVAC tutorial fits the darks unprocessed)."""
    pool = pool_table()
    darks = pool.index[pool["exposure_type"].isin(DARK_TYPES) & (pool["detector"] == wildcards.detector)]
    if len(darks) == 0:
        raise WorkflowError(f"no dark exposure of {wildcards.detector} in the pool")
    return [EXPOSURES[expo] for expo in darks]


def groundtest_products(wildcards):
    """The references and figures config.groundtest asks for."""
    settings = config["groundtest"]
    pool = pool_table()
    is_dark = pool["exposure_type"].isin(DARK_TYPES)
    products = []
    if settings["dark_references"]:
        products += [
            DARK_REFERENCE.format(detector=detector, kind=kind)
            for detector in sorted(set(pool.loc[is_dark, "detector"]))
            for kind in ("superbias", "dark")
        ]
    if settings["diagnostics"]:
        products += [
            os.path.join(DIAGNOSTICS_DIR.format(expo=expo), f"{figure}.png")
            for expo in pool.index[~is_dark]
            for figure in DIAGNOSTIC_FIGURES
        ]
    return products


def useafter_option():
    useafter = config["groundtest"]["useafter"]
    return f"--useafter {shlex.quote(useafter)}" if useafter else ""


def frames_option():
    frames = config["groundtest"]["frames"]
    return f"--frames {' '.join(map(str, frames))}" if frames else ""


# The report's products (report.smk).
def quicklook_images(wildcards):
    """A quicklook of every _cal, when the target is cal or i2d."""
    if config["target"] not in ("cal", "i2d"):
        return []
    return [os.path.join(RESULTS, "quicklook", f"{expo}_cal.png") for expo in pool_table().index]


def quicklook_mosaics(wildcards):
    """A quicklook of every mosaic (held back, alone, while the association checkpoint is pending)."""
    if config["target"] != "i2d":
        return []
    return [
        os.path.join(RESULTS, "quicklook", f"{product}_i2d.png") for product in association_index()["product"]
    ]
