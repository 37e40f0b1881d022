"""Shared plumbing of the Roman WFI workflow: model I/O, DQ flags, naming, parameters, CRDS;
the Python API ``run_steps`` (:mod:`romanpipe.api`).

Imported before roman_datamodels and asdf (ruff's import order puts it first), it makes
``yaml.safe_load`` use libyaml: at every start they read their ~60 schema manifests with
it, which in pure Python costs each step's process 0.7 s of its 1.5-2.5 s start.
"""

import yaml

if yaml.__with_libyaml__:

    def _safe_load_with_libyaml(stream):
        return yaml.load(stream, Loader=yaml.CSafeLoader)  # noqa: S506 - CSafeLoader is the safe loader

    yaml.safe_load = _safe_load_with_libyaml


def __getattr__(name: str):
    """``from romanpipe import run_steps``, the Python API, imported on first use: the
    workflow imports this package at every Snakemake start and needs none of the steps."""
    if name == "run_steps":
        from .api import run_steps

        return run_steps
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
