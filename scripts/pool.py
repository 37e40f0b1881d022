"""pool: one table of every Level 1 exposure's metadata and selected references.

The workflow's checkpoint runs this once per campaign (again when inputs or the
CRDS context change) so that the Snakefile never opens thousands of files at
parse time. Each input is validated; a bad one goes to the quarantine table with
a one-line reason and the campaign continues without it.

    python scripts/pool.py --uncal-dir uncal \
        --step-reftypes '{"dq_init": ["mask"], "flat_field": ["flat"]}' \
        --output results/pool.csv --quarantine results/quarantine.csv

Each exposure gets the references of the steps (among those given) that apply to
its exposure type, so a prism exposure is not quarantined for want of a FLAT.
Ground-test (TvacModel) files are read like ScienceRawModel ones; their exposure
types are recorded in the science schemas' names (romanpipe.exposure_types.science_exposure_type).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from pathlib import Path

from romanpipe import cli, refs
from romanpipe.errors import InputFileError, PipelineError
from romanpipe.exposure_types import applicable_steps, science_exposure_type
from romanpipe.files import atomic_path
from romanpipe.naming import split_suffix
from romanpipe.products import open_level1, open_model

import numpy as np
import pandas as pd

log = logging.getLogger("pool")

POOL_COLUMNS = [
    "exposure", "path", "program", "execution_plan", "pass", "segment", "observation", "visit",
    "exposure_number", "detector", "optical_element", "exposure_type", "ma_table_name",
    "nresultants", "ny", "nx", "start_time", "ra_ref", "dec_ref", "roll_ref",
]


def exposure_record(path: Path) -> dict:
    """Metadata of one Level 1 file, after checking that it is usable."""
    model = open_level1(path)
    with model:
        meta = model.meta
        nresultants, ny, nx = model.data.shape
        read_pattern = meta.exposure.get("read_pattern") or []
        if len(read_pattern) != nresultants:
            raise InputFileError(path, f"data has {nresultants} resultants but the MA table's "
                                       f"read_pattern has {len(read_pattern)}")
        # Ground-test files use rad's TVAC names (WFI_DARK): the pool records what dq_init makes of them.
        exposure_type = science_exposure_type(str(meta.exposure.type))
        try:
            applicable_steps(exposure_type)
        except ValueError as err:
            raise InputFileError(path, str(err)) from None
        observation = meta.get("observation", {})
        return {
            "exposure": split_suffix(path)[0],
            "path": str(path),
            "program": observation.get("program", ""),
            "execution_plan": observation.get("execution_plan", ""),
            "pass": observation.get("pass", ""),
            "segment": observation.get("segment", ""),
            "observation": observation.get("observation", ""),
            "visit": observation.get("visit", ""),
            "exposure_number": observation.get("exposure", ""),
            "detector": str(meta.instrument.detector),
            "optical_element": str(meta.instrument.optical_element),
            "exposure_type": exposure_type,
            "ma_table_name": str(meta.exposure.get("ma_table_name", "")),
            "nresultants": nresultants,
            "ny": ny,
            "nx": nx,
            "start_time": meta.exposure.start_time.isot,
            "ra_ref": meta.get("wcsinfo", {}).get("ra_ref", np.nan),
            "dec_ref": meta.get("wcsinfo", {}).get("dec_ref", np.nan),
            "roll_ref": meta.get("wcsinfo", {}).get("roll_ref", np.nan),
        }


# The arrays that carry a reference's values, by reference model; NaN flags single bad pixels,
# but a reference without one finite value is unusable.
REFERENCE_VALUE_ARRAYS = ("data", "coeffs", "dark_slope")


@functools.cache
def unusable_reference(path: str) -> str | None:
    """Why the reference at ``path`` cannot be used (unreadable, no finite value), or None.

    Checked once per reference file, however many exposures select it.
    """
    try:
        with open_model(path) as model:
            for name in REFERENCE_VALUE_ARRAYS:
                if name in model and not np.isfinite(np.asarray(model[name])).any():
                    return f"reference {Path(path).name}: {name} holds no finite value"
    except PipelineError as err:
        return str(err)
    return None


def build_pool(paths: list[Path], step_reftypes: dict[str, list[str]],
               overrides: dict[str, dict[str, str]] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pool, quarantine): valid exposures with their references, rejected ones with reasons.

    ``step_reftypes`` maps each step that runs to the reference types CRDS selects for it;
    a reference column is empty for an exposure whose type does not run that step.
    ``overrides`` maps steps to the reference files the configuration gives them
    (``override_<reftype>``): checked like CRDS's picks, never asked of CRDS, so a campaign
    whose every reference is overridden needs no CRDS cache.
    """
    overrides = overrides or {}
    reftypes = sorted({reftype for types in step_reftypes.values() for reftype in types})
    rows, rejected = [], []
    for path in paths:
        try:
            record = exposure_record(path)
            steps = applicable_steps(record["exposure_type"])
            needed = sorted({reftype for step in steps for reftype in step_reftypes.get(step, ())})
            selection = refs.best_references(refs.selection_parameters(record), needed) if needed else {}
            given = {(reftype, file) for step in steps for reftype, file in overrides.get(step, {}).items()}
            for reftype, reference in sorted(set(selection.items()) | given):
                reason = unusable_reference(reference)
                if reason:
                    raise InputFileError(path, f"its {reftype.upper()} {reason}")
            record.update({f"ref_{reftype}": selection.get(reftype, "") for reftype in reftypes})
            rows.append(record)
        except (PipelineError, LookupError) as err:
            log.warning("quarantined %s: %s", path, err)
            rejected.append({"exposure": split_suffix(path)[0], "path": str(path),
                             "reason": str(err)})
    pool = pd.DataFrame(rows, columns=POOL_COLUMNS + [f"ref_{r}" for r in reftypes])
    pool["crds_context"] = refs.current_context() if reftypes else ""
    return pool, pd.DataFrame(rejected, columns=["exposure", "path", "reason"])


def input_paths(args: argparse.Namespace) -> list[Path]:
    if args.exposure_list:
        table = (pd.read_parquet(args.exposure_list) if args.exposure_list.suffix == ".parquet"
                 else pd.read_csv(args.exposure_list))
        return [Path(p) for p in table["path"]]
    return sorted(args.uncal_dir.glob("*_uncal.asdf"))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="pool.py", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--uncal-dir", type=Path)
    source.add_argument("--exposure-list", type=Path)
    parser.add_argument("--step-reftypes", type=json.loads, default={},
                        help="JSON object: step -> reference types CRDS selects for it (steps that run)")
    parser.add_argument("--overrides", type=json.loads, default={},
                        help="JSON object: step -> {reftype: file} given instead of CRDS's selection")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--quarantine", type=Path, required=True)
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)
    cli.setup_logging(args.verbose)

    pool, quarantine = build_pool(input_paths(args), args.step_reftypes, args.overrides)
    log.info("%d exposures in the pool, %d quarantined", len(pool), len(quarantine))
    for table, path in ((quarantine, args.quarantine), (pool, args.output)):
        with atomic_path(path) as staging:
            table.to_csv(staging, index=False)


if __name__ == "__main__":
    sys.exit(cli.run(main))
