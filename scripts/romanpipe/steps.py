"""The steps: what each one reads, its romancal class, and its script as a module.

Each step is a script, ``scripts/<step>.py``, beside this package (the workflow runs it,
a user runs it by hand). The Python API and the ``romanpipe`` command import the same
scripts as modules, from that folder; importing this module loads none of them (the
workflow imports it at every Snakemake start).
"""

from __future__ import annotations

import ast
import importlib
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import ParameterError
from .naming import STEP_SUFFIX

SCRIPTS_DIR = Path(__file__).resolve().parents[1]

STEPS = tuple(STEP_SUFFIX)
# Steps whose script takes one image or an association (the others take one or the other).
IMAGE_OR_ASSOCIATION_STEPS = ("tweakreg", "flux")
# Steps that take one calibrated image (a _cal; a mosaic later) and make a product beside it.
CALIBRATED_IMAGE_STEPS = ("source_catalog",)

# The reference types each step reads (linearity also reads INVERSELINEARITY and
# INTEGRALNONLINEARITY with resultant_aware, source_catalog EPSF with fit_psf: OPTIONAL_REFTYPES).
STEP_REFTYPES = {
    "dq_init": ["mask"],
    "saturation": ["saturation"],
    "refpix": ["refpix"],
    "dark_decay": ["darkdecaysignal"],
    "linearity": ["linearity"],
    "dark_current": ["dark"],
    "jump": ["gain", "readnoise"],
    "ramp_fit": ["gain", "readnoise", "dark"],
    "assign_wcs": ["distortion"],
    "flat_field": ["flat"],
    "photom": ["photom"],
    "source_catalog": ["apcorr"],
}

# Reference types a step reads only when the parameter named here is on.
OPTIONAL_REFTYPES = {
    "linearity": {"inverselinearity": "resultant_aware", "integralnonlinearity": "resultant_aware"},
    "source_catalog": {"epsf": "fit_psf"},
}


# An optional reference overridden by this value is not used (as CRDS's N/A in romancal).
NOT_APPLICABLE = "N/A"


def step_reftypes(step: str, parameters: dict[str, Any]) -> list[str]:
    """The reference types ``step`` reads with ``parameters`` (its config block): an optional one
    when its switch is on and its override is not N/A."""
    optional = OPTIONAL_REFTYPES.get(step, {})
    return STEP_REFTYPES.get(step, []) + [
        reftype for reftype, switch in optional.items()
        if parameters.get(switch) and str(parameters.get(f"override_{reftype}")).upper() != NOT_APPLICABLE]


# The romancal class each step follows, as a parameter file's ``class`` names it.
ROMANCAL_CLASS = {
    "dq_init": "romancal.step.DQInitStep",
    "saturation": "romancal.step.SaturationStep",
    "refpix": "romancal.step.RefPixStep",
    "dark_decay": "romancal.step.DarkDecayStep",
    "wfi18_transient": "romancal.step.WFI18TransientStep",
    "linearity": "romancal.step.LinearityStep",
    "dark_current": "romancal.step.DarkCurrentStep",
    "jump": "romancal.step.JumpStep",
    "ramp_fit": "romancal.step.RampFitStep",
    "assign_wcs": "romancal.step.AssignWcsStep",
    "flat_field": "romancal.step.FlatFieldStep",
    "photom": "romancal.step.PhotomStep",
    "source_detection": "romancal.step.SourceCatalogStep",
    "tweakreg": "romancal.step.TweakRegStep",
    "flux": "romancal.step.FluxStep",
    "skymatch": "romancal.step.SkyMatchStep",
    "outlier_detection": "romancal.step.OutlierDetectionStep",
    "resample": "romancal.step.ResampleStep",
    "source_catalog": "romancal.step.SourceCatalogStep",
}


def checked_step(step: str) -> str:
    """``step`` if it is one of ours, else a ParameterError that lists them."""
    if step not in STEP_SUFFIX:
        raise ParameterError(f"unknown step {step!r} (steps: {', '.join(STEPS)})")
    return step


def script_path(step: str) -> Path:
    return SCRIPTS_DIR / f"{checked_step(step)}.py"


@cache
def summary(step: str) -> str:
    """The first line of the step script's docstring, without the leading ``<step>:``."""
    docstring = ast.get_docstring(ast.parse(script_path(step).read_text())) or ""
    return docstring.split("\n", 1)[0].removeprefix(f"{step}:").strip()


def step_module(step: str) -> ModuleType:
    """The step's script as a module (imported once, under its own name, as the tests do).

    The scripts folder goes at the end of ``sys.path`` if it is not there (an editable
    install puts it there): tweakreg imports another script.
    """
    path = script_path(step)
    if str(SCRIPTS_DIR) not in sys.path:
        sys.path.append(str(SCRIPTS_DIR))
    module = importlib.import_module(step)
    if Path(module.__file__).resolve() != path:
        raise ImportError(f"module {step!r} is {module.__file__}, not the step script {path}")
    return module
