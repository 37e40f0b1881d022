"""Step parameters: one spec (the workflow's config schema), four sources, one precedence.

Each step's parameters, their types, bounds and defaults are the step's block in
``workflow/schemas/config.schema.yaml``; Snakemake validates the config against
the same file, so the workflow and the scripts cannot disagree. A value comes
from, most significant first (the romancal documentation, section "Parameter
Precedence", with the workflow config between the parameter file and the step default):

1. the command line (``--n-pix-grow-sat 2``) or a ``run_steps`` keyword,
2. a parameter file (``--parameter-file``): YAML or the documented ASDF form (section
   "ASDF Parameter Files"), a step file (``class``, ``name``, ``parameters``) or a
   pipeline file (``steps``),
3. the workflow config, passed by the rule as ``--workflow-params JSON``,
4. the step default in the schema.

An unknown parameter is an error that names it.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import ParameterError
from .steps import ROMANCAL_CLASS

log = logging.getLogger(__name__)

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"

# stpipe's universal parameters, with stpipe's defaults: every parameter file romancal
# exports has them (and ``skip``, which only some of our steps take). A run honours those
# that mean something to it (``steprun`` names the product from output_dir, output_file and
# suffix when no OUTPUT is given); any other one set to something else than its default is
# named in one warning line (:func:`report_ignored`), never dropped silently.
STPIPE_UNIVERSAL: dict[str, Any] = {
    "pre_hooks": [], "post_hooks": [], "output_file": None, "output_dir": None, "output_ext": ".asdf",
    "output_use_model": False, "output_use_index": True, "save_results": False, "suffix": None,
    "search_output_file": True, "input_dir": "", "update_version": False,
    "save_calibrated_ramp": False, "skip": False,
}

# romancal's names for steps inside a pipeline parameter file, where they differ from ours.
ROMANCAL_STEP_NAMES = {"rampfit": "ramp_fit", "flatfield": "flat_field",
                       "source_catalog": "source_detection"}
ROMANCAL_NAME = {ours: theirs for theirs, ours in ROMANCAL_STEP_NAMES.items()}


@cache
def config_schema() -> dict:
    with open(SCHEMA_PATH) as stream:
        return yaml.safe_load(stream)


def step_schema(step: str) -> dict:
    """The JSON-schema block of one step."""
    try:
        return config_schema()["properties"][step]
    except KeyError:
        raise ParameterError(f"no parameter spec for step {step!r} in {SCHEMA_PATH}") from None


def step_defaults(step: str) -> dict[str, Any]:
    return {name: prop.get("default") for name, prop in step_schema(step)["properties"].items()}


def add_step_arguments(parser: argparse.ArgumentParser, step: str) -> None:
    """Add one ``--kebab-case`` option per schema parameter plus the shared options."""
    group = parser.add_argument_group(f"{step} parameters (defaults from the workflow schema)")
    for name, prop in step_schema(step)["properties"].items():
        group.add_argument(
            "--" + name.replace("_", "-"), dest=f"param_{name}", default=argparse.SUPPRESS,
            type=_converter(name, prop), metavar=_metavar(prop),
            help=f"{prop.get('description', '')} [default: {prop.get('default')!r}]",
        )
    parser.add_argument("--parameter-file", type=Path,
                        help="YAML or ASDF parameter file (step or pipeline form)")
    parser.add_argument("--workflow-params", default="{}",
                        help="JSON object of this step's workflow-config values")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log DEBUG messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")


def resolve_parameters(step: str, args: argparse.Namespace) -> dict[str, Any]:
    """The parameters of a script's command line (:func:`add_step_arguments`), see :func:`resolve`."""
    return resolve(step, given={key[len("param_"):]: value for key, value in vars(args).items()
                                if key.startswith("param_")},
                   parameter_file=args.parameter_file, workflow=json.loads(args.workflow_params))


def resolve(step: str, *, given: dict[str, Any] | None = None, parameter_file: Path | None = None,
            workflow: dict[str, Any] | None = None, given_by: str = "the command line") -> dict[str, Any]:
    """Merge the four sources in precedence order and validate the result.

    ``given`` are the most significant values (a script's command line, a ``run_steps``
    keyword); ``given_by`` names them in the error for an unknown one.
    """
    values = step_defaults(step)
    values.update(_checked(step, workflow or {}, "the workflow config"))
    if parameter_file is not None:
        values.update(_checked(step, read_parameter_file(Path(parameter_file), step), str(parameter_file)))
    values.update(_checked(step, given or {}, given_by, universal=False))
    try:
        jsonschema.validate(values, step_schema(step))
    except jsonschema.ValidationError as err:
        where = ".".join(map(str, err.absolute_path)) or step
        raise ParameterError(f"{step}: parameter {where}: {err.message}") from None
    return values


def stpipe_settings(parameter_file: Path, step: str) -> dict[str, Any]:
    """stpipe's universal parameters the file sets for ``step`` to other than their defaults."""
    known = step_schema(step)["properties"]
    return {name: value for name, value in read_parameter_file(Path(parameter_file), step).items()
            if name in STPIPE_UNIVERSAL and name not in known
            and value not in (STPIPE_UNIVERSAL[name], None, "", [])}


def report_ignored(parameter_file: Path, settings: dict[str, Any], why: str) -> None:
    """One warning line naming each stpipe parameter of ``settings`` that this run does not use."""
    if settings:
        log.warning("%s: stpipe parameter(s) ignored (%s): %s", parameter_file, why,
                    ", ".join(f"{name}={value!r}" for name, value in sorted(settings.items())))


def read_parameter_file(path: Path, step: str) -> dict[str, Any]:
    """Parameters for ``step`` from a step or pipeline parameter file (YAML or ASDF)."""
    tree = _load_tree(path)
    if "steps" in tree:
        for entry in tree.get("steps") or []:
            name = ROMANCAL_STEP_NAMES.get(entry.get("name"), entry.get("name"))
            if name == step:
                return _step_entry_parameters(entry, path.parent)
        return {}
    if "parameters" not in tree:
        raise ParameterError(f"{path}: a parameter file needs 'parameters' or 'steps'")
    return _step_entry_parameters(tree, path.parent)


def named_step(path: Path) -> str | None:
    """The step a step-form parameter file names (``name``, or romancal's ``class``); None for a
    pipeline file or a step file that names none of ours."""
    tree = _load_tree(Path(path))
    if "steps" in tree:
        return None
    name = ROMANCAL_STEP_NAMES.get(tree.get("name"), tree.get("name"))
    if name in ROMANCAL_CLASS:
        return name
    by_class = {cls.rsplit(".", 1)[1]: step for step, cls in ROMANCAL_CLASS.items()}
    return by_class.get(str(tree.get("class", "")).rsplit(".", 1)[-1])


def _step_entry_parameters(entry: dict, base_dir: Path) -> dict[str, Any]:
    parameters = dict(entry.get("parameters") or {})
    # A step entry may point at its own file; local values override it (the documentation).
    nested = parameters.pop("config_file", None)
    if nested:
        nested_path = Path(nested) if Path(nested).is_absolute() else base_dir / nested
        parameters = {**_step_entry_parameters(_load_tree(nested_path), nested_path.parent),
                      **parameters}
    return parameters


# A parameter file is a few kB; the workflow config a few. Bounds stop a hostile or broken
# file before it costs memory: a YAML alias bomb expands to gigabytes from a few hundred bytes.
MAX_PARAMETER_FILE_BYTES = 1 << 20
MAX_TREE_NODES = 100_000


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases: parameter files and configs have no use for them."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ParameterError(f"YAML alias *{event.anchor} at line {event.start_mark.line + 1}: "
                                 "aliases are not allowed")
        return super().compose_node(parent, index)


def load_yaml(path: str | Path):
    """A YAML file of bounded size without aliases; ParameterError naming the file otherwise."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_PARAMETER_FILE_BYTES:
        raise ParameterError(f"{path}: {size} bytes, more than the {MAX_PARAMETER_FILE_BYTES} a "
                             "parameter file may hold")
    with open(path) as stream:
        try:
            return yaml.load(stream, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader
        except ParameterError as err:
            raise ParameterError(f"{path}: {err}") from None


def check_tree_size(tree, source: str) -> None:
    """ParameterError when ``tree`` (loaded YAML or JSON) has more than MAX_TREE_NODES values or
    shares a node between two places (what a YAML alias makes)."""
    seen, stack, count = set(), [tree], 0
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_TREE_NODES:
            raise ParameterError(f"{source}: more than {MAX_TREE_NODES} values")
        if isinstance(node, dict | list):
            if id(node) in seen:
                raise ParameterError(f"{source}: a mapping or list used twice (a YAML alias); "
                                     "aliases are not allowed")
            seen.add(id(node))
            stack.extend(node.values() if isinstance(node, dict) else node)


def _load_tree(path: Path) -> dict:
    if not path.is_file():
        raise ParameterError(f"{path}: parameter file not found")
    try:
        if path.suffix.lower() == ".asdf":
            import asdf

            with asdf.open(path, lazy_load=False) as af:
                tree = {k: v for k, v in af.tree.items()
                        if k not in ("asdf_library", "history")}
        else:
            tree = load_yaml(path) or {}
    except ParameterError:
        raise
    except Exception as err:  # yaml and asdf raise many types
        raise ParameterError(f"{path}: unreadable parameter file ({type(err).__name__})") from None
    if not isinstance(tree, dict):
        raise ParameterError(f"{path}: a parameter file must hold a mapping")
    return tree


def _checked(step: str, values: dict[str, Any], source: str, universal: bool = True) -> dict[str, Any]:
    """The step's own parameters of ``values``; any other name is an error unless ``universal``
    allows stpipe's (which :func:`stpipe_settings` reads on its own)."""
    known = step_schema(step)["properties"]
    unknown = sorted(set(values) - set(known) - (set(STPIPE_UNIVERSAL) if universal else set()))
    if unknown:
        raise ParameterError(f"{source}: unknown parameter(s) for step {step}: "
                             f"{', '.join(_with_suggestion(name, known) for name in unknown)} "
                             f"(known: {', '.join(sorted(known))})")
    return {name: value for name, value in values.items() if name in known}


def _with_suggestion(name: str, known) -> str:
    """An unknown name with the known ones it most resembles: the prose of the romancal
    documentation calls some parameters by older names (``calc_threshold`` for ``calc_scalar_threshold``)."""
    close = difflib.get_close_matches(name, known, n=2)
    return f"{name} (did you mean {' or '.join(close)}?)" if close else name


def _types(prop: dict) -> list[str]:
    kind = prop.get("type", "string")
    return kind if isinstance(kind, list) else [kind]


def _converter(name: str, prop: dict):
    types = _types(prop)

    def convert(text: str):
        if "null" in types and text.strip().lower() in ("none", "null"):
            return None
        if "boolean" in types:
            lowered = text.strip().lower()
            if lowered in ("true", "yes", "1"):
                return True
            if lowered in ("false", "no", "0"):
                return False
            raise argparse.ArgumentTypeError(f"--{name}: expected true or false, got {text!r}")
        if "integer" in types:
            return int(text)
        if "number" in types:
            return float(text)
        return text

    convert.__name__ = "/".join(t for t in types if t != "null")
    return convert


def _metavar(prop: dict) -> str:
    if "enum" in prop:
        return "{" + ",".join(str(v) for v in prop["enum"] if v is not None) + "}"
    return "/".join(t.upper() for t in _types(prop) if t != "null")
