"""romanpipe: run a step, list the steps, resolve a step's parameters (romancal's strun).

    romanpipe steps                                   the steps, one line each
    romanpipe run STEP INPUT [OUTPUT] [--param value ...]
    romanpipe params STEP [--parameter-file F] [--param value ...] [--save-parameters FILE]

``run`` is the step's script (``scripts/<step>.py``) with the same arguments: without OUTPUT
the product is named as strun names it (the input's name with the step's suffix, in the
current folder, or as the parameter file's ``output_dir``, ``output_file`` and ``suffix``
say). ``params`` writes the parameters a run would use, resolved as a run resolves them, in
the step-file form (``class``, ``name``, ``parameters``) that ``--parameter-file`` and
romancal read: ASDF when FILE ends in ``.asdf``, else YAML (printed without FILE).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from . import cli
from . import params as step_params
from . import steps as step_catalog
from .errors import EXIT_SUCCESS
from .exposure_types import EXPOSURE_STEPS
from .naming import STEP_SUFFIX


def main(argv: Sequence[str] | None = None) -> int:
    """The ``romanpipe`` console script; its exit status."""
    parser = argparse.ArgumentParser(prog="romanpipe", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("steps", help="list the steps, one line each")
    for command, summary in (("run", "run one step (romanpipe run STEP --help)"),
                             ("params", "a step's resolved parameters (romanpipe params STEP --help)")):
        # Everything after STEP belongs to the step's own parser.
        subparser = commands.add_parser(command, add_help=False, help=summary)
        subparser.add_argument("step", metavar="STEP")
        subparser.add_argument("arguments", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "steps":
        sys.stdout.write(step_list())
        return EXIT_SUCCESS
    if args.step not in STEP_SUFFIX:
        parser.error(f"unknown step {args.step!r}; `romanpipe steps` lists them")
    if args.command == "run":
        return cli.run(step_catalog.step_module(args.step).main, args.arguments)
    return cli.run(lambda argv: write_parameters(args.step, argv), args.arguments)


def step_list() -> str:
    """One line per step: its name, the suffix of its product, what it takes and what it does."""
    lines = []
    for step in step_catalog.STEPS:
        takes = ("image or association" if step in step_catalog.IMAGE_OR_ASSOCIATION_STEPS
                 else "image" if step in step_catalog.CALIBRATED_IMAGE_STEPS
                 else "exposure" if step in EXPOSURE_STEPS else "association")
        lines.append(f"{step:<18} {STEP_SUFFIX[step]:<18} {takes:<21} {step_catalog.summary(step)}\n")
    return "".join(lines)


def write_parameters(step: str, argv: Sequence[str]) -> None:
    """``romanpipe params STEP``: resolve the step's parameters and write them as a step parameter file."""
    parser = argparse.ArgumentParser(prog=f"romanpipe params {step}",
                                     description="the parameters a run of the step would use")
    parser.add_argument("--save-parameters", type=Path, metavar="FILE",
                        help="write them to FILE (.asdf: ASDF, else YAML) instead of printing them")
    step_params.add_step_arguments(parser, step)
    args = parser.parse_args(argv)
    cli.setup_logging(args.verbose, args.quiet)
    values = step_params.resolve_parameters(step, args)
    # The file's stpipe settings (output_dir, suffix, ...) belong to the step's parameters too:
    # they travel on into the file written.
    if args.parameter_file is not None:
        values.update(step_params.stpipe_settings(args.parameter_file, step))
    tree = {"class": step_catalog.ROMANCAL_CLASS[step], "name": step_params.ROMANCAL_NAME.get(step, step),
            "parameters": values}
    path = args.save_parameters
    if path is None:
        sys.stdout.write(yaml.safe_dump(tree, sort_keys=False))
    elif path.suffix.lower() == ".asdf":
        import asdf

        asdf.AsdfFile(tree).write_to(path)
    else:
        path.write_text(yaml.safe_dump(tree, sort_keys=False))
