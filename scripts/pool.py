"""pool: one table of every Level 1 exposure's metadata and selected references.

The workflow's checkpoint runs this once per campaign (again when inputs or the
CRDS context change) so that the Snakefile never opens thousands of files at
parse time. Each input is validated; a bad one goes to the quarantine table with
a one-line reason and the campaign continues without it.

    python scripts/pool.py --uncal-dir uncal \
        --step-reftypes '{"dq_init": ["mask"], "flat_field": ["flat"]}' \
        --output results/pool.csv --quarantine results/quarantine.csv

Each exposure gets the references of the steps (among those given) that apply to
its exposure type, so a prism exposure is not quarantined for want of a FLAT; an
exposure whose _cal gets a source catalog (an image) also gets source_catalog's.
Ground-test (TvacModel) files are read like ScienceRawModel ones; their exposure
types are recorded in the science schemas' names (romanpipe.exposure_types.science_exposure_type).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
from pathlib import Path

from romanpipe import cli, refs
from romanpipe.asdf_blocks import check_blocks
from romanpipe.detector import BORDER, matching_science_area
from romanpipe.errors import InputFileError, PipelineError
from romanpipe.exposure_types import applicable_steps, makes_catalog, science_exposure_type
from romanpipe.files import atomic_path, workdir_relative
from romanpipe.inputs import InputListError, discover_inputs
from romanpipe.naming import split_suffix
from romanpipe.pool_table import CONTEXT_COLUMN, QUARANTINE_COLUMNS, pool_columns, reference_column
from romanpipe.products import open_level1, open_model
from romanpipe.steps import CALIBRATED_IMAGE_STEPS

import numpy as np
import pandas as pd
from roman_datamodels import datamodels

log = logging.getLogger("pool")

# The model each reference type must be, as the steps open it.
REFERENCE_MODELS = {
    "mask": datamodels.MaskRefModel,
    "saturation": datamodels.SaturationRefModel,
    "refpix": datamodels.RefpixRefModel,
    "linearity": datamodels.LinearityRefModel,
    "inverselinearity": datamodels.InverselinearityRefModel,
    "integralnonlinearity": datamodels.IntegralnonlinearityRefModel,
    "darkdecaysignal": datamodels.DarkdecaysignalRefModel,
    "dark": datamodels.DarkRefModel,
    "gain": datamodels.GainRefModel,
    "readnoise": datamodels.ReadnoiseRefModel,
    "distortion": datamodels.DistortionRefModel,
    "flat": datamodels.FlatRefModel,
    "photom": datamodels.WfiImgPhotomRefModel,
    "epsf": datamodels.EpsfRefModel,
    "apcorr": datamodels.ApcorrRefModel,
}
# References applied to the Level 2 image, which has lost the detector's reference border:
# they may cover the science pixels only or the whole readout (romanpipe.detector).
IMAGE_REFTYPES = frozenset({"flat"})
# The arrays that carry a reference's values, by reference model; NaN flags single bad pixels,
# but a reference without one finite value is unusable.
REFERENCE_VALUE_ARRAYS = ("data", "coeffs", "dark_slope")
# Arrays laid over the detector's pixels: their last two axes must fit the exposure's.
REFERENCE_PIXEL_ARRAYS = ("data", "dq", "coeffs", "dark_slope", "err")


def exposure_record(path: Path) -> dict:
    """Metadata of one Level 1 file, after checking that it is whole and usable."""
    check_blocks(path)
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


@functools.cache
def reference_pixel_shapes(reftype: str, path: str) -> dict[str, tuple[int, ...]]:
    """The shapes of a usable reference's pixel arrays; InputFileError saying why it is unusable.

    Checked once per reference file, however many exposures select it: every block
    readable, the model the step opens, at least one finite value.
    """
    check_blocks(path)
    expected = REFERENCE_MODELS.get(reftype)
    with open_model(path, (expected,) if expected else None) as model:
        # APCORR's ``data`` is its table of rows, not an array.
        arrays = {name: model[name] for name in {*REFERENCE_VALUE_ARRAYS, *REFERENCE_PIXEL_ARRAYS}
                  if name in model and hasattr(model[name], "shape")}
        for name in REFERENCE_VALUE_ARRAYS:
            if name in arrays and not np.isfinite(np.asarray(arrays[name])).any():
                raise InputFileError(Path(path).name, f"{name} holds no finite value")
        return {name: tuple(np.shape(arrays[name])) for name in REFERENCE_PIXEL_ARRAYS
                if name in arrays and np.ndim(arrays[name]) >= 2}


@functools.cache
def element_rows(reftype: str, path: str) -> dict[str, None]:
    """The optical elements a (checked) reference of one row per element has rows for, as dict keys."""
    with open_model(path, (REFERENCE_MODELS[reftype],)) as model:
        return dict.fromkeys(model[refs.ELEMENT_TABLES[reftype]])


def reference_problem(reftype: str, path: str, record: dict) -> str | None:
    """Why the ``reftype`` reference at ``path`` cannot calibrate the exposure of ``record`` (its
    pixels ny x nx; for PHOTOM and APCORR, its optical element), or None."""
    ny, nx = record["ny"], record["nx"]
    try:
        shapes = reference_pixel_shapes(reftype, path)
    except InputFileError as err:
        return f"reference {Path(path).name}: {err.problem}"
    if reftype in refs.ELEMENT_TABLES:
        try:
            refs.element_row(element_rows(reftype, path), record["optical_element"], reftype)
        except LookupError as err:
            return f"reference {Path(path).name}: {err}"
    for name, shape in shapes.items():
        if reftype in IMAGE_REFTYPES:
            image_shape = (ny - 2 * BORDER, nx - 2 * BORDER)
            try:
                matching_science_area(np.broadcast_to(np.float32(0), shape), image_shape)
            except ValueError as err:
                return f"reference {Path(path).name}: {name} {err}"
        elif shape[-2:] != (ny, nx):
            return (f"reference {Path(path).name}: {name} has shape {shape}, the exposure "
                    f"{ny} x {nx} pixels")
    return None


def selected_references(record: dict, step_reftypes: dict[str, list[str]],
                        overrides: dict[str, dict[str, str]]) -> dict[str, str]:
    """CRDS's picks for the exposure, by reference type, after checking them and the overrides
    of its steps; InputFileError naming a bad one."""
    steps = applicable_steps(record["exposure_type"])
    if makes_catalog(record["exposure_type"]):
        steps += CALIBRATED_IMAGE_STEPS
    needed = sorted({reftype for step in steps for reftype in step_reftypes.get(step, ())})
    selection = refs.best_references(refs.selection_parameters(record), needed) if needed else {}
    given = {(reftype, file) for step in steps for reftype, file in overrides.get(step, {}).items()}
    for reftype, reference in sorted(set(selection.items()) | given):
        problem = reference_problem(reftype, reference, record)
        if problem:
            raise InputFileError(record["path"], f"its {reftype.upper()} {problem}")
    return {reftype: workdir_relative(path) for reftype, path in selection.items()}


def rejection_reason(path: Path, err: Exception) -> str:
    """One line naming the file and the problem, whatever raised."""
    if isinstance(err, InputFileError):
        text = str(err)
    elif isinstance(err, PipelineError | LookupError):
        text = f"{path}: {err}"
    else:  # not foreseen: the exception's type says more than its message alone
        text = f"{path}: {type(err).__name__}: {err}"
    return " ".join(text.split())


def build_pool(paths: list[Path], step_reftypes: dict[str, list[str]],
               overrides: dict[str, dict[str, str]] | None = None,
               rejected_by_name: list[tuple[str, str, str]] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pool, quarantine): valid exposures with their references, rejected ones with reasons.

    ``step_reftypes`` maps each step that runs to the reference types CRDS selects for it;
    a reference column is empty for an exposure whose type does not run that step.
    ``overrides`` maps steps to the reference files the configuration gives them
    (``override_<reftype>``): checked like CRDS's picks, never asked of CRDS, so a campaign
    whose every reference is overridden needs no CRDS cache. Any failure while checking one
    input rejects that input only. ``rejected_by_name`` are the inputs discovery already
    refused (romanpipe.inputs): they lead the quarantine table.
    """
    overrides = overrides or {}
    reftypes = sorted({reftype for types in step_reftypes.values() for reftype in types})
    rows = []
    rejected = [dict(zip(QUARANTINE_COLUMNS, entry, strict=True)) for entry in rejected_by_name]
    for entry in rejected:
        log.warning("quarantined %s", entry["reason"])
    for path in paths:
        try:
            record = exposure_record(path)
            selection = selected_references(record, step_reftypes, overrides)
            record.update({reference_column(r): selection.get(r, "") for r in reftypes})
            rows.append(record)
        except Exception as err:  # noqa: BLE001 - a bad input of any kind must not stop the campaign
            reason = rejection_reason(path, err)
            log.warning("quarantined %s", reason)
            rejected.append({"exposure": split_suffix(path)[0], "path": str(path), "reason": reason})
    pool = pd.DataFrame(rows, columns=pool_columns(reftypes))
    pool[CONTEXT_COLUMN] = refs.current_context() if reftypes else ""
    return pool, pd.DataFrame(rejected, columns=QUARANTINE_COLUMNS)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="pool.py", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--uncal-dir")
    source.add_argument("--exposure-list")
    parser.add_argument("--step-reftypes", type=json.loads, default={},
                        help="JSON object: step -> reference types CRDS selects for it (steps that run)")
    parser.add_argument("--overrides", type=json.loads, default={},
                        help="JSON object: step -> {reftype: file} given instead of CRDS's selection")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--quarantine", type=Path, required=True)
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)
    cli.setup_logging(args.verbose)

    try:
        inputs = discover_inputs(args.uncal_dir, args.exposure_list)
    except InputListError as err:
        raise PipelineError(str(err)) from None
    pool, quarantine = build_pool([Path(p) for p in inputs.exposures.values()], args.step_reftypes,
                                  args.overrides, inputs.rejected)
    log.info("%d exposures in the pool, %d quarantined", len(pool), len(quarantine))
    for table, path in ((quarantine, args.quarantine), (pool, args.output)):
        with atomic_path(path) as staging:
            table.to_csv(staging, index=False)


if __name__ == "__main__":
    cli.run_and_exit(main)
