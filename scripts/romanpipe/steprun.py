"""What every step script does around its model-level ``run``: arguments, references, provenance.

A step script has three layers: pure array kernels; ``run(model, step: StepRun) ->
(model, status)``, the step on an open model; and ``main``, which reads its input, calls
``run`` through :func:`run_step` and writes the product (:func:`run_script`). The Python API
(:mod:`romanpipe.api`) calls the same ``run`` through :func:`run_step`, so a product made by
hand, by the workflow or in a notebook has the same arrays, cal_step and provenance.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

from . import params as step_params
from . import refs
from .association import (
    Association,
    is_association,
    listing,
    read_science_members,
    read_step_input,
    write_association,
)
from .cli import setup_logging
from .errors import InputFileError, ParameterError
from .naming import STEP_SUFFIX, product_name
from .products import COMPLETE, SKIPPED, open_model, set_cal_step, write_atomic
from .revision import code_revision, reference_sha256
from .timing import PhaseTimer

log = logging.getLogger(__name__)

# stpipe parameters that name a by-hand run's product when no OUTPUT is given.
OUTPUT_NAMING = ("output_dir", "output_file", "suffix")


def parse_step_args(step: str, description: str, argv=None,
                    extra_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
                    ) -> tuple[argparse.Namespace, dict]:
    """``<script> INPUT [OUTPUT] [--param value ...]``: parse, set up logging, resolve parameters.

    Without OUTPUT the product is named as strun names it (:func:`default_output`); stpipe
    parameters of the parameter file that this run does not use are named in one warning.
    ``extra_arguments`` adds a script's own options (inputs that are not step parameters).
    """
    parser = argparse.ArgumentParser(prog=f"{step}.py", description=description)
    parser.add_argument("input", type=Path, help="input product")
    parser.add_argument("output", type=Path, nargs="?",
                        help="output product, written atomically (default: the input's name with the "
                             "step's suffix in the current folder, or as the parameter file's "
                             "output_dir, output_file and suffix say)")
    parser.add_argument("--mark-skipped", nargs="+", default=[], metavar="STEP",
                        help="earlier steps the workflow skipped, recorded as SKIPPED")
    step_params.add_step_arguments(parser, step)
    if extra_arguments is not None:
        extra_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    values = step_params.resolve_parameters(step, args)
    settings = step_params.stpipe_settings(args.parameter_file, step) if args.parameter_file else {}
    if args.output is None:
        args.output = default_output(step, args.input, settings)
        settings = {name: value for name, value in settings.items() if name not in OUTPUT_NAMING}
    refuse_overwriting_input(args.input, args.output)
    step_params.report_ignored(args.parameter_file, settings, "no meaning for a run of one step")
    log.info("%s parameters: %s", step, values)
    return args, values


def refuse_overwriting_input(input_path: Path, output: Path) -> None:
    """A product never replaces its own input: a by-hand run with one path twice would lose it."""
    if output.resolve() == input_path.resolve() or (output.exists() and input_path.exists()
                                                    and output.samefile(input_path)):
        raise ParameterError(f"{output}: the output is the input; give another output path")


def default_output(step: str, input_path: Path, settings: dict[str, Any]) -> Path:
    """strun's product name: ``output_file``, else the input's name with ``suffix`` (default the
    step's), in ``output_dir`` (default the current folder)."""
    folder = Path(settings.get("output_dir") or ".")
    if settings.get("output_file"):
        name = Path(settings["output_file"])
        return folder / (name if name.suffix else name.with_suffix(".asdf"))
    if is_association(input_path):
        raise ParameterError(f"{input_path}: an association input needs an OUTPUT (or output_file "
                             "in the parameter file)")
    return product_name(input_path, settings.get("suffix") or STEP_SUFFIX[step], folder)


def pass_on_skipped(step: str, args: argparse.Namespace, parameters: dict) -> None:
    """A skipped step by hand, as in a pipeline: the input goes on unchanged and says so in cal_step."""
    association, paths = read_step_input(args.input)
    if association is None:
        write_product(open_model(args.input), args.output, step, args, parameters, status=SKIPPED)
    else:
        write_association_products((open_model(path) for path in paths), association, args.output, step,
                                   STEP_SUFFIX[step], args, parameters, statuses=repeat(SKIPPED))
    log.info("%s skipped: %s passed on as %s", step, args.input, args.output)


@dataclass
class StepRun:
    """One run of a step on one input: what its ``run`` needs besides the model.

    ``input`` names the input in error messages (a file, or the model's name in the API);
    ``output`` is the product's path, written or not: side products a parameter asks for
    (catalogs, ``_fitopt``) are named from it and go beside it. ``exposure`` is the input's
    ``meta``, which selects the reference files; ``references`` holds those :meth:`reference`
    returned, for the provenance.
    """

    name: str
    parameters: dict[str, Any]
    input: Path | str
    output: Path
    exposure: Any
    references: dict[str, Path] = field(default_factory=dict)

    def reference(self, reftype: str) -> Path:
        """The ``override_<reftype>`` file when given (the workflow always gives one), else CRDS's pick."""
        if reftype not in self.references:
            override = self.parameters.get(f"override_{reftype}")
            path = Path(refs.reference_path(reftype, self.exposure, override=override))
            if not path.is_file():
                raise InputFileError(path, f"{reftype.upper()} reference file not found")
            log.info("using %s reference %s", reftype.upper(), path)
            self.references[reftype] = path
        return self.references[reftype]


# A step's model-level function: the input model -> (the product, its cal_step status).
StepFunction = Callable[[Any, StepRun], tuple[Any, str]]


def run_step(run: StepFunction, model, step: StepRun, mark_skipped: Sequence[str] = (),
             timer: PhaseTimer | None = None):
    """``run`` on ``model``, then the product's cal_step and provenance recorded (not written);
    ``timer`` times the two phases."""
    timer = timer or PhaseTimer()
    with timer.phase("step"):
        product, status = run(model, step)
    with timer.phase("provenance"):
        record_step(product, step.name, step.parameters, step.references, status, mark_skipped)
    return product


def run_script(step: str, doc: str, input_models: tuple[type, ...], run: StepFunction, argv=None) -> None:
    """The ``main`` of an exposure-level step script: parse, then :func:`run_on_file`, or
    :func:`pass_on_skipped` when the step is skipped."""
    args, parameters = parse_step_args(step, doc.split("\n\n")[0], argv)
    if parameters.get("skip"):
        pass_on_skipped(step, args, parameters)
    else:
        run_on_file(step, run, input_models, args, parameters)


# What a high-level step does with its input: an association and its science members, or
# (flux, tweakreg) one product; each gets the parsed arguments and the resolved parameters.
AssociationHandler = Callable[[Association, list[Path], argparse.Namespace, dict[str, Any]], None]
ImageHandler = Callable[[argparse.Namespace, dict[str, Any]], None]


def run_association_script(step: str, doc: str, on_association: AssociationHandler,
                           on_image: ImageHandler | None = None, argv=None,
                           extra_arguments: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    """The ``main`` of a high-level step script: parse, :func:`pass_on_skipped` when the step is
    skipped, else read INPUT and hand it on. A step with ``on_image`` also takes one product
    (:func:`read_step_input` decides); one without takes associations only
    (:func:`read_science_members`). An association without science members ends the step the
    same way in both (exit status 64). ``extra_arguments`` as :func:`parse_step_args`."""
    args, parameters = parse_step_args(step, doc.split("\n\n")[0], argv, extra_arguments)
    if parameters.get("skip"):
        pass_on_skipped(step, args, parameters)
        return
    if on_image is None:
        association, members = read_science_members(args.input)
    else:
        association, members = read_step_input(args.input)
        if association is None:
            on_image(args, parameters)
            return
    on_association(association, members, args, parameters)


def run_on_file(step: str, run: StepFunction, input_models: tuple[type, ...], args: argparse.Namespace,
                parameters: dict[str, Any]) -> None:
    """Read INPUT (one of ``input_models``), ``run`` the step, write OUTPUT; log where the
    process's time went (:mod:`romanpipe.timing`)."""
    timer = PhaseTimer()
    with timer.phase("read"):
        model = open_model(args.input, input_models)
    with model:
        product = run_step(run, model, StepRun(step, parameters, args.input, args.output, model.meta),
                           args.mark_skipped, timer)
        with timer.phase("write"):
            write_atomic(product, args.output)
    timer.log(step)


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
        "references": {reftype: {"file": Path(path).name, "sha256": reference_sha256(path)}
                       for reftype, path in references.items()},
    }
    model.meta["provenance"] = provenance


def record_step(model, step: str, parameters: dict[str, Any], references: dict[str, Path] | None = None,
                status: str = COMPLETE, mark_skipped: Iterable[str] = ()) -> None:
    """Record cal_step (this step and any the workflow skipped before it) and provenance."""
    for skipped in mark_skipped:
        set_cal_step(model, skipped, SKIPPED)
    set_cal_step(model, step, status)
    record_provenance(model, step, parameters, references)


def write_product(model, output: Path, step: str, args: argparse.Namespace,
                  parameters: dict[str, Any], references: dict[str, Path] | None = None,
                  status: str = COMPLETE) -> Path:
    """Record cal_step and provenance (:func:`record_step`), then write atomically."""
    record_step(model, step, parameters, references, status, args.mark_skipped)
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
