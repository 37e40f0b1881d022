"""
Config validation and the helpers the rule files share. No rules here.

Exposures are found by file name only (a folder scan or a table), never by
opening files at parse time; everything read from inside the files (metadata,
selected references) comes from the pool checkpoint's table.
"""

import functools
import json
import os
import shlex
import signal
import subprocess
import sys
import typing

import pandas as pd
from snakemake.exceptions import IncompleteCheckpointException
from snakemake.io import checkpoint_target
from snakemake.logging import logger
from snakemake.settings.types import DeploymentMethod
from snakemake.utils import validate

sys.path.insert(0, os.path.join(workflow.basedir, "scripts"))
from romanpipe.naming import STEP_SUFFIX, split_suffix  # noqa: E402
from romanpipe.exposure_types import (  # noqa: E402
    DARK_TYPES,
    EXPOSURE_STEPS,
    MOSAIC_TYPES,
    applicable_steps,
    chain_steps,
    makes_catalog,
)
from romanpipe import refs  # noqa: E402
from romanpipe.pool_table import reference_column  # noqa: E402
from romanpipe.inputs import InputListError, discover_inputs, listed_paths  # noqa: E402
from romanpipe.files import workdir_relative  # noqa: E402
from romanpipe.failures import error_line, read_ledger, record_failures  # noqa: E402
from romanpipe.errors import ParameterError  # noqa: E402
from romanpipe.params import check_tree_size  # noqa: E402
from romanpipe.files import remove_staging  # noqa: E402
from romanpipe.steps import CALIBRATED_IMAGE_STEPS, OPTIONAL_REFTYPES, step_reftypes  # noqa: E402
from romanpipe import revision  # noqa: E402
from romanpipe.skycells import cell_selector, product_cell  # noqa: E402

try:
    # Before validation: a YAML alias bomb would otherwise be walked (and printed) in full.
    check_tree_size(config, "the workflow config")
except ParameterError as err:
    raise WorkflowError(str(err)) from None
validate(config, os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml"))


def check_settings():
    """Settings the schema cannot check: files that must exist, folders that must stay inside."""
    for key in ("results_dir", "logs_dir"):
        path = config[key]
        # Absolute folders are a choice; a relative one leaving the working directory is a slip.
        if not os.path.isabs(path) and os.path.normpath(path).split(os.sep)[0] == os.pardir:
            raise WorkflowError(
                f"{key}: {path!r} leaves the working directory; give an absolute path "
                "to write there on purpose"
            )
    path = config["parameter_file"]
    if path and not os.path.isfile(path):
        raise WorkflowError(f"parameter_file: {path!r}: no such file")
    cal_list = config["inputs"]["cal_list"]
    if cal_list and not os.path.isfile(cal_list):
        raise WorkflowError(f"inputs.cal_list: {cal_list!r}: no such file")
    if cal_list and config["target"] != "i2d":
        raise WorkflowError(
            f"inputs.cal_list runs the Level 3 stage, whose target is i2d (target: {config['target']!r})"
        )
    level3 = config["level3"]
    if level3["cells"] is not None:
        grouping = config["associations"]
        if grouping["user_dir"] or grouping["grouping"] != "skycell":
            raise WorkflowError(
                "level3.cells selects sky cells: it needs associations.grouping: skycell "
                "(and no associations.user_dir)"
            )
        if not level3["group"]:
            raise WorkflowError("level3.cells needs level3.group, the name of the group's tables")


check_settings()

RESULTS = config["results_dir"]
# A group of a campaign's sky cells (level3.cells, scripts/shards.py level3): its own tables,
# so that groups run side by side never write one file.
TABLES = (
    os.path.join(RESULTS, "groups", config["level3"]["group"])
    if config["level3"]["cells"] is not None
    else RESULTS
)
PROVENANCE_TABLE = os.path.join(TABLES, "provenance.csv")
BENCHMARK_TABLE = os.path.join(TABLES, "benchmarks.csv")
# The Level 3 stage of a campaign run in shards (scripts/shards.py): the mosaics of the _cal
# products this table lists. The Level 2 rules are then not loaded (Snakefile), so the plan
# holds no Level 2 job and reads no pool.
CAL_LIST = config["inputs"]["cal_list"]
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
# What every product's provenance records, worked out once per run instead of in every job:
# the code's git revision, and each reference file's SHA-256 (kept per file version).
CHECKSUM_CACHE = os.path.abspath(os.path.join(RESULTS, ".cache", "reference_sha256"))
# The warm-start servers' sockets and logs (romanpipe.warm); ROMANPIPE_WARM_DIR= (empty) in
# the environment turns warm starts off.
WARM_DIR = os.environ.get("ROMANPIPE_WARM_DIR", os.path.abspath(os.path.join(RESULTS, ".cache", "warm")))
shell.prefix(
    f"set -euo pipefail; export CRDS_PATH={shlex.quote(CRDS_PATH)}; "
    f"export NUMBA_CACHE_DIR={shlex.quote(NUMBA_CACHE)}; "
    f"export ROMANPIPE_PSF_CACHE={shlex.quote(PSF_CACHE)}; "
    f"export {revision.CODE_REVISION_ENV}={shlex.quote(revision.code_revision())}; "
    f"export {revision.CHECKSUM_CACHE_ENV}={shlex.quote(CHECKSUM_CACHE)}; "
    f"export ROMANPIPE_WARM_DIR={shlex.quote(WARM_DIR)}; "
)

# Under --software-deployment-method conda each rule's env provides `python`; otherwise
# the scripts run with the interpreter that runs Snakemake (the project's venv). Scripts start
# through warm_start.py: in a process forked from a server that has imported the libraries
# once per run, or, when none can take the job, as `python SCRIPT` (romanpipe.warm).
PYTHON = "{} {}".format(
    "python" if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method else sys.executable,
    shlex.quote(os.path.join(workflow.basedir, "scripts", "warm_start.py")),
)


wildcard_constraints:
    expo=r"[^/]+",


def discover_exposures():
    """Exposure name -> Level 1 path, from the exposure table or the uncal folder.

    Inputs that cannot be named safely or are not there are left out here; the pool finds the
    same ones (romanpipe.inputs) and quarantines them with their reason.
    """
    table = config["inputs"]["exposure_list"]
    if CAL_LIST:
        return {}
    try:
        inputs = discover_inputs(config["inputs"]["uncal_dir"], table)
    except InputListError as err:
        raise WorkflowError(str(err)) from None
    if not inputs.exposures and not inputs.rejected:
        raise WorkflowError(
            f"no *_uncal.asdf inputs found (inputs.uncal_dir={config['inputs']['uncal_dir']!r}, "
            f"inputs.exposure_list={table!r})"
        )
    return inputs.exposures


EXPOSURES = discover_exposures()


def step_script(step):
    """The step's script, an input of its rule so that editing it reruns the step."""
    return os.path.join(workflow.basedir, "scripts", f"{step}.py")


def product(step):
    return os.path.join(RESULTS, "exposures", f"{{expo}}_{STEP_SUFFIX[step]}.asdf")


CAL_PRODUCT = os.path.join(RESULTS, "exposures", "{expo}_cal.asdf")

# The exposure-level steps of the configured chain, in the order they run (the one
# definition of each chain's order is romanpipe.exposure_types.CHAINS).
CHAIN = chain_steps(config["exposure_chain"])

# Steps whose products are 3-D ramps that only the next step reads.
RAMP_INTERMEDIATE_STEPS = CHAIN[: CHAIN.index("ramp_fit")]


# The exposure-level step whose product is the configured target; None for cal and i2d.
TARGET_STEP = {STEP_SUFFIX[s]: s for s in EXPOSURE_STEPS}.get(config["target"])
if TARGET_STEP is not None and TARGET_STEP not in CHAIN:
    raise WorkflowError(
        f"target: {config['target']!r} is made by {TARGET_STEP}, which the {config['exposure_chain']} "
        f"chain does not run ({', '.join(CHAIN)})"
    )


def steps_before(step):
    """The chain's steps that run before ``step`` (for a step outside the chain, those before
    its place among all exposure-level steps: its rule exists but no target needs it)."""
    order = CHAIN if step in CHAIN else EXPOSURE_STEPS
    return [s for s in order[: order.index(step)] if s in CHAIN]


def within_target(step):
    """Whether ``step`` is at or before the configured target (for cal and i2d: every step)."""
    return TARGET_STEP is None or CHAIN.index(step) <= CHAIN.index(TARGET_STEP)


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
    """Whether ``step`` runs: in the configured chain and not skipped."""
    if step in EXPOSURE_STEPS and step not in CHAIN:
        return False
    # The two-point jump step runs only when ramp fitting does not detect jumps itself.
    if step == "jump" and config["ramp_fit"]["use_ramp_jump_detection"]:
        return False
    return not config[step].get("skip", False)


def upstream_product(step):
    """Input of ``step``: the product of the nearest earlier step that runs, or the Level 1 file."""
    earlier = [s for s in steps_before(step) if is_enabled(s)]
    return product(earlier[-1]) if earlier else uncal_path


def skipped_before(step):
    """Steps skipped since the previous product: the next product records them as SKIPPED."""
    skipped = []
    for earlier in reversed(steps_before(step)):
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
    """The exposure-level steps this campaign runs, in the chain's order: enabled and up to the target."""
    return [step for step in CHAIN if is_enabled(step) and within_target(step)]


def catalogs_enabled():
    """Whether the imaging _cal get source catalogs: not skipped, the target is not a partial one, and
    this run makes _cal products (not a Level 3 run over a list of them, inputs.cal_list)."""
    return not config["source_catalog"]["skip"] and TARGET_STEP is None and not CAL_LIST


def reference_steps():
    """The steps that run and read references: the exposure chain's, and the catalog's."""
    return pipeline_steps() + [step for step in CALIBRATED_IMAGE_STEPS if catalogs_enabled()]


def crds_reftypes():
    """Step -> the reference types CRDS selects for it: those the config does not override.

    Only the steps that run need references: a skipped step's, or one after a partial
    target, must not quarantine an exposure.
    """
    return {
        step: [reftype for reftype in step_reftypes(step, config[step]) if not override(step, reftype)]
        for step in reference_steps()
        if step_reftypes(step, config[step])
    }


def override_references():
    """Step -> {reftype: file} of the overrides of the steps that run (the pool checks them)."""
    return {
        step: {
            reftype: override(step, reftype)
            for reftype in step_reftypes(step, config[step])
            if override(step, reftype)
        }
        for step in reference_steps()
        if step_reftypes(step, config[step])
    }


def crds_context_file():
    """The operational context's .pmap, an input of the pool: a new context reruns the pool,
    which reselects references. None needed when every reference is overridden."""
    selected = [
        f"{step}.override_{reftype}" for step, reftypes in crds_reftypes().items() for reftype in reftypes
    ]
    if not selected:
        return []
    return context_pmap(f"give every reference file ({', '.join(selected)})")


def context_pmap(alternative):
    """The operational context's .pmap (relative to the working directory); WorkflowError
    saying what to do instead (``alternative``) when the cache has none."""
    context = refs.current_context()
    if not context:
        raise WorkflowError(
            f"no CRDS context in {CRDS_PATH}: build a cache (make demo), set CRDS_SERVER_URL, "
            f"or {alternative}"
        )
    return workdir_relative(os.path.join(CRDS_PATH, "mappings", "roman", context))


def pool_step_reftypes():
    """JSON: step -> the reference types CRDS selects for it (changing which steps run reruns
    this cheap job)."""
    return json.dumps(crds_reftypes(), sort_keys=True)


def pool_overrides():
    """JSON: step -> {reftype: file} of the overrides the pool checks instead of asking CRDS."""
    return json.dumps(override_references(), sort_keys=True)


def override_files():
    """The overridden reference files, inputs of the pool: a changed one reruns it."""
    return sorted({path for files in override_references().values() for path in files.values()})


def pool_sources_option():
    """The pool's inputs: the exposure table, else the folder to scan (quoted for the shell)."""
    table = config["inputs"]["exposure_list"]
    if table:
        return f"--exposure-list {shlex.quote(table)}"
    return f"--uncal-dir {shlex.quote(config['inputs']['uncal_dir'])}"


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


POOL_QUARANTINE = os.path.join(RESULTS, "quarantine.csv")
FAILURE_LEDGER = os.path.join(RESULTS, "failed.csv")
QUARANTINE_REPORT = os.path.join(RESULTS, "quarantine_report.csv")


def quarantine_report():
    """The quarantine report (the Level 3 stage has no pool: its shards have theirs)."""
    return [] if CAL_LIST else QUARANTINE_REPORT


def failure_ledger_file():
    """The failure ledger as an input, when a run has written one (a new entry remakes the table)."""
    return [FAILURE_LEDGER] if os.path.exists(FAILURE_LEDGER) else []


def failure_ledger_option():
    return f"--ledger {shlex.quote(FAILURE_LEDGER)}" if os.path.exists(FAILURE_LEDGER) else ""


@functools.lru_cache(maxsize=8)
def _failed(ledger_mtime, pool_path):
    return frozenset(read_ledger(FAILURE_LEDGER, pool_path))


def failed_exposures():
    """Exposures that failed after the pool in an earlier run (romanpipe.failures): left out."""
    pool_path = _complete_pool_path()
    mtime = os.path.getmtime(FAILURE_LEDGER) if os.path.exists(FAILURE_LEDGER) else None
    return _failed(mtime, pool_path)


def campaign_table():
    """The pool's exposures that the campaign goes on with: the pool's, less the failed ones."""
    pool = pool_table()
    failed = failed_exposures()
    return pool.drop(index=[expo for expo in pool.index if expo in failed]) if failed else pool


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

    column = reference_column(reftype)

    def crds_selection(wildcards):
        record = pool_record(wildcards.expo)
        if column not in record:
            raise WorkflowError(
                f"no {reftype.upper()} reference in the pool for {step}: the pool selects "
                f"references for the enabled steps up to the target ({config['target']})"
            )
        return record[column]

    crds_selection.__name__ = f"crds_{reftype}"
    return crds_selection


def optional_reftypes(step):
    """The optional reference types the step's parameters switch on (romanpipe.steps.OPTIONAL_REFTYPES),
    e.g. linearity's with resultant_aware."""
    return [r for r in step_reftypes(step, config[step]) if r in OPTIONAL_REFTYPES.get(step, {})]


def optional_references(step):
    """Input function: {reftype: file} of the step's optional references (optional_reftypes)."""
    optional = optional_reftypes(step)

    def references(wildcards):
        files = {}
        for reftype in optional:
            selection = reference(step, reftype)
            files[reftype] = selection if isinstance(selection, str) else selection(wildcards)
        return files

    return references


def optional_reference_options(step):
    """Params function: ``--override-<reftype> FILE`` (quoted) for each optional reference the
    job has as an input (see optional_references)."""
    optional = optional_reftypes(step)

    def options(wildcards, input):
        # A job planned before the pool checkpoint counts as complete has the checkpoint's
        # placeholder for inputs, without these names (a SLURM job's own Snakemake plans so);
        # Snakemake plans it again from the pool's table before it runs.
        present = input.keys()
        return " ".join(
            f"--override-{reftype} {shlex.quote(input[reftype])}"
            for reftype in optional
            if reftype in present
        )

    return options


def tweakreg_catalog_files():
    """Local catalog files tweakreg reads (abs_refcat unless a Gaia service, catfile): a new one reruns it."""
    settings = config["tweakreg"]
    refcat = settings["abs_refcat"] or ""
    files = [refcat] if refcat and not refcat.upper().startswith("GAIA") else []
    return files + ([settings["catfile"]] if settings["catfile"] else [])


# Pool columns that name an exposure: its detectors' rows differ only in ``detector``.
EXPOSURE_KEYS = ["program", "execution_plan", "pass", "segment", "observation", "visit", "exposure_number"]


@functools.lru_cache(maxsize=8)
def _exposure_detectors(path, mtime, failed):
    table = _read_table(path, mtime, "exposure")
    groups = {}
    for expo, key in zip(table.index, table[EXPOSURE_KEYS].itertuples(index=False, name=None)):
        if expo not in failed:
            groups.setdefault(key, []).append(expo)
    return {expo: members for members in groups.values() for expo in members}


def other_detectors(expo):
    """The campaign's images of the other detectors of ``expo``'s exposure (failed ones left out)."""
    path = _complete_pool_path()
    members = _exposure_detectors(path, os.path.getmtime(path), failed_exposures()).get(expo, [expo])
    return [other for other in members if other != expo]


def tweakreg_exposure_images(wildcards):
    """tweakreg's inputs of the other detectors of the exposure, aligned with this one as one group
    (tweakreg.align_exposure); none when each detector is aligned alone."""
    upstream = upstream_product("tweakreg")
    if not config["tweakreg"]["align_exposure"] or callable(upstream):
        return []
    return [upstream.format(expo=other) for other in other_detectors(wildcards.expo)]


def exposure_images_option(wildcards, input):
    images = list(input.exposure_images)
    return "--exposure-images " + " ".join(shlex.quote(str(image)) for image in images) if images else ""


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


def last_step(expo, up_to=CHAIN[-1]):
    """The last step that runs for this exposure's type, at or before ``up_to``."""
    applicable = applicable_steps(exposure_type(expo), config["exposure_chain"])
    candidates = CHAIN[: CHAIN.index(up_to) + 1]
    return [s for s in candidates if s in applicable and is_enabled(s)][-1]


def cal_input(wildcards):
    """Input of the _cal product: the last product of the exposure type's chain."""
    return product(last_step(wildcards.expo)).format(expo=wildcards.expo)


def not_applicable_option(wildcards):
    """Steps of the full chain that this exposure type does not run, recorded as SKIPPED."""
    applicable = applicable_steps(exposure_type(wildcards.expo), config["exposure_chain"])
    skipped = [s for s in CHAIN if s not in applicable]
    return f"--mark-skipped {' '.join(skipped)}" if skipped else ""


def exposure_target(expo):
    """The configured target of one exposure: its _cal, or the last product up to a partial target."""
    if TARGET_STEP is None:
        return CAL_PRODUCT.format(expo=expo)
    return product(last_step(expo, up_to=TARGET_STEP)).format(expo=expo)


def exposure_products(wildcards):
    """Every valid exposure's target product; quarantined inputs make none (and the Level 3
    stage calibrates none)."""
    if CAL_LIST:
        return []
    return [exposure_target(expo) for expo in campaign_table().index]


SOURCE_CATALOG = os.path.join(RESULTS, "exposures", "{expo}_cat.parquet")
SEGMENTATION_MAP = os.path.join(RESULTS, "exposures", "{expo}_segm.asdf")


def has_catalog(expo):
    """Whether an exposure's _cal gets a catalog (catalogs_enabled, and an imaging exposure)."""
    return catalogs_enabled() and makes_catalog(exposure_type(expo))


def source_catalogs(wildcards):
    """The catalog of every imaging exposure's _cal, unless source_catalog.skip, a partial target
    or a Level 3 run (which has no pool to list exposures from)."""
    if not catalogs_enabled():
        return []
    return [SOURCE_CATALOG.format(expo=expo) for expo in campaign_table().index if has_catalog(expo)]


def cal_catalog(wildcards):
    """The catalog a _cal's quicklook draws, when it has one."""
    return [SOURCE_CATALOG.format(expo=wildcards.expo)] if has_catalog(wildcards.expo) else []


def cal_catalog_option(wildcards):
    return " ".join(f"--catalog {shlex.quote(path)}" for path in cal_catalog(wildcards))


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
    """The _cal products that go on to mosaics (imaging exposures that did not fail), or those
    inputs.cal_list names."""
    if CAL_LIST:
        return listed_cal_products()
    pool = campaign_table()
    return [
        CAL_PRODUCT.format(expo=expo)
        for expo in pool.index
        if pool.loc[expo, "exposure_type"] in MOSAIC_TYPES
    ]


@functools.lru_cache(maxsize=1)
def listed_cal_products():
    try:
        return listed_paths(None, CAL_LIST)
    except InputListError as err:
        raise WorkflowError(str(err)) from None


def cal_products_option(wildcards, input):
    """The association checkpoint's _cal products: the list file in the Level 3 stage (a survey's
    products do not fit on a command line), else each product (quoted)."""
    if CAL_LIST:
        return f"--cal-list {shlex.quote(CAL_LIST)}"
    return "--cal " + " ".join(shlex.quote(path) for path in input.cal)


def left_out_option(wildcards):
    """The imaging exposures that failed after the pool, with their reasons: the association
    checkpoint lists them in its log (they are in no association). None in the Level 3 stage:
    the shards' failures never reach its list."""
    if CAL_LIST:
        return ""
    pool_path = _complete_pool_path()
    pool = pool_table()
    ledger = read_ledger(FAILURE_LEDGER, pool_path)
    left_out = {
        expo: row["reason"]
        for expo, row in sorted(ledger.items())
        if expo in pool.index and pool.loc[expo, "exposure_type"] in MOSAIC_TYPES
    }
    return f"--left-out {shlex.quote(json.dumps(left_out))}" if left_out else ""


def association_options():
    """The checkpoint's grouping: the user's association files, or sky cells (from the
    config's SKYCELLS file, else CRDS's), or chains of overlapping footprints."""
    settings = config["associations"]
    if settings["user_dir"]:
        return f"--user-dir {shlex.quote(settings['user_dir'])}"
    options = f"--grouping {shlex.quote(settings['grouping'])}"
    if settings["grouping"] == "skycell" and settings["skycells"]:
        options += f" --skycells {shlex.quote(settings['skycells'])}"
    return options


def skycells_source():
    """What the sky cells come from, an input of the association checkpoint: the config's
    SKYCELLS file, else the CRDS context (a new one reruns the checkpoint, which reselects)."""
    settings = config["associations"]
    if settings["user_dir"] or settings["grouping"] != "skycell":
        return []
    if settings["skycells"]:
        return settings["skycells"]
    return context_pmap("set associations.skycells to a SKYCELLS file (or grouping: overlap)")


def _association_index_version():
    """The association index's path and modification time, once its checkpoint is complete."""
    associations = checkpoints.associations.get()
    path = associations.output[0]
    if not os.path.exists(path):
        # Planned with the previous run's index, the checkpoint is running again (a changed _cal):
        # Snakemake removed its output and still counts it created. The jobs wait for the new one.
        raise IncompleteCheckpointException(associations.rule, checkpoint_target(path))
    return path, os.path.getmtime(path)


class AssociationLookup(typing.NamedTuple):
    """The index's associations, looked up per job: association -> tree and members' _cal
    products, product -> association. Built once per version of the index (a survey's Level 3
    stage asks for them in every job of every cell)."""

    trees: dict
    members: dict
    association_of_product: dict


def association_lookup():
    return _association_lookup(*_association_index_version())


@functools.lru_cache(maxsize=2)
def _association_lookup(path, mtime):
    index = _read_table(path, mtime, "asn")
    trees = dict(zip(index.index, index["tree"]))
    # Paths in the tree are relative to the associations folder.
    members = {
        asn: [
            os.path.normpath(os.path.join(ASSOCIATION_DIR, member["expname"]))
            for product in json.loads(tree)["products"]
            for member in product["members"]
        ]
        for asn, tree in trees.items()
    }
    association_of_product = {}
    for asn, product in zip(index.index, index["product"]):
        association_of_product.setdefault(product, []).append(asn)
    return AssociationLookup(trees, members, association_of_product)


def association_of(wildcards):
    """The association a high-level job works on (resample's wildcard is the product it makes)."""
    if hasattr(wildcards, "asn"):
        return wildcards.asn
    matches = association_lookup().association_of_product.get(wildcards.product, [])
    if len(matches) != 1:
        raise WorkflowError(f"no association makes the product {wildcards.product!r}")
    return matches[0]


def _known_association(wildcards, table):
    asn = association_of(wildcards)
    try:
        return table[asn]
    except KeyError:
        raise WorkflowError(f"no association {asn!r} in {ASSOCIATION_INDEX}") from None


def association_tree(wildcards):
    return _known_association(wildcards, association_lookup().trees)


def association_members(wildcards):
    """The members' _cal products."""
    return list(_known_association(wildcards, association_lookup().members))


def mosaic_asn(step):
    suffix = STEP_SUFFIX[step]
    return os.path.join(RESULTS, "mosaics", "{asn}", f"{{asn}}_{suffix}_asn.json")


def mosaic_upstream(step):
    """Input association of a high-level step: the nearest earlier step's, or the association file."""
    earlier = [s for s in MOSAIC_STEPS[: MOSAIC_STEPS.index(step)] if is_enabled(s)]
    return mosaic_asn(earlier[-1]) if earlier else ASSOCIATION_FILE


def resample_input(wildcards):
    return mosaic_upstream("resample").format(asn=association_of(wildcards))


def level3_products():
    """The index's products this run makes: every one, or those of the cells level3.cells names."""
    return _level3_products(*_association_index_version())


@functools.lru_cache(maxsize=2)
def _level3_products(path, mtime):
    products = list(_read_table(path, mtime, "asn")["product"])
    cells = config["level3"]["cells"]
    if cells is None:
        return products
    selected = cell_selector(cells)
    return [product for product in products if selected(product_cell(product) or "")]


def mosaic_products():
    return [MOSAIC_PRODUCT.format(product=product) for product in level3_products()]


# Level 3 catalogs (catalog.smk): one per mosaic, and one per sky cell mosaicked in several filters.
MOSAIC_CATALOG = os.path.join(RESULTS, "mosaics", "{product}_cat.parquet")
MOSAIC_SEGMENTATION = os.path.join(RESULTS, "mosaics", "{product}_segm.asdf")
MULTIBAND_CATALOG = os.path.join(RESULTS, "multiband", "{cell}_cat.parquet")
MULTIBAND_SEGMENTATION = os.path.join(RESULTS, "multiband", "{cell}_segm.asdf")


wildcard_constraints:
    cell=r"[^/]+",


def level3_catalogs_wanted():
    return config["target"] == "i2d" and not config["source_catalog"]["skip"]


def mosaic_catalogs(wildcards):
    """The catalog of every mosaic (held back, as the mosaics, while the association checkpoint is pending)."""
    if not level3_catalogs_wanted():
        return []
    return [MOSAIC_CATALOG.format(product=product) for product in level3_products()]


def multiband_cells():
    """Sky cell -> its mosaics' products, for the cells mosaicked in more than one filter.

    Sky-cell products are named ``r<program>_<release>_<type>_<cell>_<filter>``: the name
    without its filter names the cell's multiband catalog. Only sky cells share one grid
    across filters (overlap groups and the user's associations do not).
    """
    settings = config["associations"]
    if not level3_catalogs_wanted() or settings["user_dir"] or settings["grouping"] != "skycell":
        return {}
    cells = {}
    for product in level3_products():
        cells.setdefault(product.rpartition("_")[0], []).append(product)
    return {cell: sorted(products) for cell, products in cells.items() if len(products) > 1}


def multiband_catalogs(wildcards):
    return [MULTIBAND_CATALOG.format(cell=cell) for cell in multiband_cells()]


def mosaic_catalog(wildcards):
    """The catalog a mosaic's quicklook draws, when catalogs are made."""
    return [MOSAIC_CATALOG.format(product=wildcards.product)] if level3_catalogs_wanted() else []


def mosaic_catalog_option(wildcards):
    return " ".join(f"--catalog {shlex.quote(path)}" for path in mosaic_catalog(wildcards))


def multiband_mosaics(wildcards):
    try:
        products = multiband_cells()[wildcards.cell]
    except KeyError:
        raise WorkflowError(f"no sky cell {wildcards.cell!r} mosaicked in more than one filter") from None
    return [MOSAIC_PRODUCT.format(product=product) for product in products]


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
    pool = campaign_table()
    darks = pool.index[pool["exposure_type"].isin(DARK_TYPES) & (pool["detector"] == wildcards.detector)]
    if len(darks) == 0:
        raise WorkflowError(f"no dark exposure of {wildcards.detector} in the pool")
    return [EXPOSURES[expo] for expo in darks]


def groundtest_products(wildcards):
    """The references and figures config.groundtest asks for."""
    settings = config["groundtest"]
    if CAL_LIST:
        return []
    pool = campaign_table()
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
    if config["target"] not in ("cal", "i2d") or CAL_LIST:
        return []
    return [os.path.join(RESULTS, "quicklook", f"{expo}_cal.png") for expo in campaign_table().index]


def quicklook_multiband(wildcards):
    """A quicklook of every multiband catalog: its detection image, its sources."""
    return [os.path.join(RESULTS, "quicklook", f"{cell}_multiband.png") for cell in multiband_cells()]


def quicklook_mosaics(wildcards):
    """A quicklook of every mosaic (held back, alone, while the association checkpoint is pending)."""
    if config["target"] != "i2d":
        return []
    return [os.path.join(RESULTS, "quicklook", f"{product}_i2d.png") for product in level3_products()]


# A run that ends with failed jobs (onerror in the Snakefile).
SECOND_PASS_VARIABLE = "ROMANPIPE_SECOND_PASS"
# Options under which a second pass would redo more than the first asked for.
_FORCING_OPTIONS = (
    "-F",
    "--forceall",
    "-f",
    "--force",
    "-R",
    "--forcerun",
    "--until",
    "-U",
    "--omit-from",
    "-O",
    "--touch",
    "-t",
)


def exposure_chain(expo):
    """The rules that make an exposure's target, in order: (rule, product, log)."""
    applicable = applicable_steps(exposure_type(expo), config["exposure_chain"])
    steps = [s for s in CHAIN if s in applicable and is_enabled(s) and within_target(s)]
    chain = [(s, product(s).format(expo=expo)) for s in steps]
    if config["target"] in ("cal", "i2d"):
        chain.append(("cal", CAL_PRODUCT.format(expo=expo)))
    return [(rule, path, os.path.join(LOGS, rule, f"{expo}.log")) for rule, path in chain]


def exposure_failures():
    """Ledger rows of the exposures whose chain stopped at a job that logged an error.

    A job killed from outside (a lost node, out of memory, Ctrl-C) logs no error line
    and is not among them: it reruns next time.
    """
    pool = pool_table()
    failures = []
    for expo in pool.index:
        # Snakemake deletes a failed job's output (and keeps what was made downstream before).
        for rule, path, log in exposure_chain(expo):
            reason = None if os.path.exists(path) else error_line(log)
            if reason:
                failures.append(
                    {
                        "exposure": expo,
                        "path": pool.loc[expo, "path"],
                        "step": rule,
                        "reason": f"{rule} failed: {reason}",
                    }
                )
                break
    return failures


def remove_spent_ramps(failed=()):
    """Temporary ramps no job will read: those of exposures that failed, and those of exposures
    whose ramp chain is done (``_rampfit`` made). Snakemake defers deleting temporary files
    while a checkpoint is pending, and a run that stops early (killed, or failed with the
    association checkpoint still waiting) never gets to delete them."""
    if config["keep_ramp_intermediates"]:
        return
    try:
        pool = pool_table()
    except (IncompleteCheckpointException, FileNotFoundError):
        return  # no pool yet: no ramp either
    kept = partial_target_step()
    for expo in pool.index:
        if expo not in failed and not os.path.exists(product("ramp_fit").format(expo=expo)):
            continue
        for step in RAMP_INTERMEDIATE_STEPS:
            path = product(step).format(expo=expo)
            if step != kept and os.path.exists(path):
                os.remove(path)
                logger.info(f"removed the temporary ramp {path}: no job reads it any more")


# Signals Snakemake received during this run: a run the operator stopped gets no second pass.
STOP_SIGNALS = []


def note_stop_signals():
    """Remember SIGINT and SIGTERM, then let Snakemake handle them as before."""
    for number in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(number)

        def handler(signum, frame, previous=previous):
            STOP_SIGNALS.append(signum)
            if callable(previous):
                return previous(signum, frame)
            if previous != signal.SIG_DFL:  # ignored, or set outside Python: leave it so
                return None
            signal.signal(signum, signal.SIG_DFL)
            return os.kill(os.getpid(), signum)

        try:
            signal.signal(number, handler)
        except ValueError:  # not the main thread: Snakemake's own handling stays
            return


def remove_leftovers():
    """What killed or failed runs left behind: staging files (writes cut short) and the
    temporary ramps of exposures that failed. Runs as the run starts, before any job."""
    note_stop_signals()
    # A group of cells (level3.cells) leaves the sweep to the associations' run before it: other
    # groups may be writing in RESULTS now.
    swept = remove_staging(RESULTS) if os.path.isdir(RESULTS) and config["level3"]["cells"] is None else []
    for path in swept:
        logger.info(f"removed {path}, left by an interrupted write")
    if CAL_LIST:
        return  # the Level 3 stage makes no ramp
    try:
        remove_spent_ramps(failed_exposures())
    except (IncompleteCheckpointException, FileNotFoundError):
        pass  # no pool yet: no ramp either


def after_failed_run():
    """Record the exposures that failed and, once, run again without them, so that every
    association is built from the members that reached _cal. Snakemake exits non-zero."""
    if CAL_LIST:
        return  # the Level 3 stage: no exposure to record
    try:
        pool_path = _complete_pool_path()
    except IncompleteCheckpointException:
        return  # the pool itself did not finish: nothing is known about the exposures
    new = record_failures(FAILURE_LEDGER, pool_path, exposure_failures())
    remove_staging(RESULTS)
    remove_spent_ramps(failed_exposures())
    if not new:
        return
    logger.error(
        f"{len(new)} exposure(s) failed after the pool and are left out of the campaign "
        f"(see {FAILURE_LEDGER}): {', '.join(new)}"
    )
    command = sys.argv[1:]
    launched = os.path.basename(sys.argv[0]) == "snakemake" or sys.argv[0].endswith(
        os.path.join("snakemake", "__main__.py")
    )
    if (
        os.environ.get(SECOND_PASS_VARIABLE)
        or not launched
        or STOP_SIGNALS
        or any(arg.split("=")[0] in _FORCING_OPTIONS for arg in command)
    ):
        logger.error("Run the same command again to build the associations of the other members.")
        return
    logger.error("Running again without them, to build the associations of the members that reached _cal.")
    subprocess.run(
        [sys.executable, "-m", "snakemake", *command, "--nolock"],
        cwd=workflow.workdir_init,
        env={**os.environ, SECOND_PASS_VARIABLE: "1"},
        check=False,
    )
