"""What every step script does around its kernel: arguments, references, provenance.

A script's ``main`` reads its input, calls its pure kernel and writes its
product; this module holds the parts that would otherwise be written once per
script.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
from collections.abc import Iterable
from functools import cache
from itertools import repeat
from pathlib import Path
from typing import Any

from . import params as step_params
from . import refs
from .association import Association, listing, read_association, write_association
from .cli import setup_logging
from .errors import InputFileError, StepSkipped
from .naming import STEP_SUFFIX, product_name
from .products import COMPLETE, SKIPPED, file_sha256, open_model, set_cal_step, write_atomic

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


def parse_step_args(step: str, description: str, argv=None) -> tuple[argparse.Namespace, dict]:
    """``<script> INPUT OUTPUT [--param value ...]``: parse, set up logging, resolve parameters."""
    parser = argparse.ArgumentParser(prog=f"{step}.py", description=description)
    parser.add_argument("input", type=Path, help="input product")
    parser.add_argument("output", type=Path, help="output product (written atomically)")
    parser.add_argument("--mark-skipped", nargs="+", default=[], metavar="STEP",
                        help="earlier steps the workflow skipped, recorded as SKIPPED")
    step_params.add_step_arguments(parser, step)
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    values = step_params.resolve_parameters(step, args)
    log.info("%s parameters: %s", step, values)
    if values.get("skip"):
        # By hand as in a pipeline: the input goes on unchanged and says so in cal_step.
        if args.input.suffix == ".json":
            association = read_association(args.input)
            write_association_products((open_model(path) for path in association.members()), association,
                                       args.output, step, STEP_SUFFIX[step], args, values,
                                       statuses=repeat(SKIPPED))
        else:
            write_product(open_model(args.input), args.output, step, args, values, status=SKIPPED)
        raise StepSkipped(f"{step} skipped: {args.input} passed on as {args.output}")
    return args, values


def reference_file(reftype: str, parameters: dict[str, Any], model) -> Path:
    """The ``override_<reftype>`` file when given (the workflow always gives one), else CRDS's pick."""
    override = parameters.get(f"override_{reftype}")
    path = Path(refs.reference_path(reftype, model.meta, override=override))
    if not path.is_file():
        raise InputFileError(path, f"{reftype.upper()} reference file not found")
    log.info("using %s reference %s", reftype.upper(), path)
    return path


@cache
def code_revision() -> str:
    """The git revision of the code that ran, with ``+dirty`` for uncommitted edits."""
    try:
        rev = subprocess.run(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty=+dirty",
                              "--abbrev=12"], capture_output=True, text=True, check=True,
                             timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = "unknown"
    return rev or "unknown"


def record_provenance(model, step: str, parameters: dict[str, Any],
                      references: dict[str, Path] | None = None) -> None:
    """Write what produced this product into it (ccdproc-style): code, parameters, references."""
    references = references or {}
    for reftype, path in references.items():
        if reftype in model.meta.get("ref_file", {}):
            model.meta.ref_file[reftype] = Path(path).name
    if references and "ref_file" in model.meta and "crds" in model.meta.ref_file:
        model.meta.ref_file.crds.context = refs.current_context() or "N/A"
    provenance = dict(model.meta.get("provenance", {}))
    provenance[step] = {
        "code_revision": code_revision(),
        "crds_context": (refs.current_context() or "N/A") if references else "",
        "parameters": {k: v for k, v in parameters.items() if v is not None},
        "references": {reftype: {"file": Path(path).name, "sha256": file_sha256(path)}
                       for reftype, path in references.items()},
    }
    model.meta["provenance"] = provenance


def write_product(model, output: Path, step: str, args: argparse.Namespace,
                  parameters: dict[str, Any], references: dict[str, Path] | None = None,
                  status: str = COMPLETE) -> Path:
    """Record cal_step (this step and any the workflow skipped), provenance, then write atomically."""
    for skipped in args.mark_skipped:
        set_cal_step(model, skipped, SKIPPED)
    set_cal_step(model, step, status)
    record_provenance(model, step, parameters, references)
    return write_atomic(model, output)


def write_association_products(models: Iterable, association: Association, output: Path, step: str,
                               suffix: str, args: argparse.Namespace, parameters: dict[str, Any],
                               references: dict[str, Path] | None = None,
                               statuses: Iterable[str] | None = None) -> Path:
    """A high-level step's outputs: one product per member beside ``output``, then ``output``.

    ``models`` (a list, or a generator so that one member at a time is in memory) are in
    the order of ``association.members()``; each member's product is named from its input
    with ``suffix`` and its cal_step records its entry of ``statuses`` (default COMPLETE).
    The output association, written last, lists them with the input's metadata, so a
    reader that finds it finds every member.
    """
    members = association.members()
    statuses = repeat(COMPLETE) if statuses is None else statuses
    written = [write_product(model, product_name(member, suffix, output.parent), step, args,
                             parameters, references, status=status)
               for model, member, status in zip(models, members, statuses, strict=False)]
    if len(written) != len(members):
        raise ValueError(f"{len(written)} products for {len(members)} members of {association.path}")
    return write_association(listing(association, written), output)
