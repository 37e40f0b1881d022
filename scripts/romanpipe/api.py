"""The Python API: exposure-level steps on a model in memory, as the workflow runs them.

    from romanpipe import run_steps
    ramp = run_steps("r..._uncal.asdf", ["dq_init", "saturation", "refpix", "linearity"],
                     saturation={"n_pix_grow_sat": 1})

Each step is its script's ``run`` (``scripts/<step>.py``, through
:func:`romanpipe.steprun.run_step`), so a model made here has the arrays, ``meta.cal_step``
and ``meta.provenance`` of the workflow's product: the same kernels, the same parameter
precedence (a keyword > the parameter file > the step default), the same reference files
(``override_<reftype>`` when given, else CRDS's selection for the exposure).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import params as step_params
from . import steps as step_catalog
from .errors import InputFileError, ParameterError
from .exposure_types import EXPOSURE_STEPS
from .naming import STEP_SUFFIX, product_name
from .products import SKIPPED, open_model, write_atomic
from .steprun import StepRun, record_step, run_step

log = logging.getLogger(__name__)


def run_steps(input: str | Path | Any, steps: str | Sequence[str], *,
              parameter_file: str | Path | None = None, output_dir: str | Path | None = None,
              save_intermediates: bool = False, **step_parameters: Mapping[str, Any]):
    """Run exposure-level ``steps`` in order on ``input``; the last step's product (a model).

    input
        A file (``_uncal.asdf`` or any step's product) or an open model. A model passed
        in is not changed: the steps work on a copy.
    steps
        Step names (``romanpipe.exposure_types.EXPOSURE_STEPS``), or one name. A step with
        ``skip`` set passes its input on and records SKIPPED, as in the workflow.
    parameter_file
        A romancal-style pipeline parameter file (YAML or ASDF), as the scripts'
        ``--parameter-file``, or a step parameter file: it applies to the step it names.
    output_dir
        Nothing is written unless it is given: then the last product is written there as
        ``<exposure>_<suffix>.asdf`` (every step's product with ``save_intermediates``).
        Side products a parameter asks for (``save_catalogs``, ``save_opt``,
        ``save_abs_catalog``) go there too, or into the current folder, as with strun.
    **step_parameters
        One mapping per step, ``saturation={"n_pix_grow_sat": 1}``, named and checked as
        the step's parameters in the workflow config.
    """
    names = [steps] if isinstance(steps, str) else list(steps)
    _check_steps(names, step_parameters)
    model, source = _input_model(input)
    folder = Path(output_dir) if output_dir is not None else Path()
    file_step = step_params.named_step(Path(parameter_file)) if parameter_file is not None else None
    exposure_name = source if isinstance(source, Path) else Path(str(model.meta.get("filename") or "model"))
    for index, step in enumerate(names):
        step_file = parameter_file if file_step in (None, step) else None
        parameters = step_params.resolve(step, given=dict(step_parameters.get(step) or {}),
                                         parameter_file=step_file, given_by=f"run_steps({step}=...)")
        if step_file is not None:
            step_params.report_ignored(step_file, step_params.stpipe_settings(step_file, step),
                                       "run_steps writes only into its output_dir")
        output = product_name(exposure_name, STEP_SUFFIX[step], folder)
        if parameters.get("skip"):
            record_step(model, step, parameters, status=SKIPPED)
            log.info("%s skipped: its input passed on", step)
        else:
            module = step_catalog.step_module(step)
            if not isinstance(model, module.INPUT_MODELS):
                expected = " or ".join(kind.__name__ for kind in module.INPUT_MODELS)
                raise InputFileError(source, f"{step} takes a {expected}, the input of the step is a "
                                             f"{type(model).__name__}")
            model = run_step(module.run, model, StepRun(step, parameters, source, output, model.meta))
        if output_dir is not None and (save_intermediates or index == len(names) - 1):
            write_atomic(model, output)
    return model


def _check_steps(names: list[str], step_parameters: Mapping[str, Any]) -> None:
    for step in names:
        step_catalog.checked_step(step)
        if step not in EXPOSURE_STEPS:
            raise ParameterError(f"{step} works on an association of calibrated images: run it with "
                                 f"scripts/{step}.py or the workflow; run_steps takes "
                                 f"{', '.join(EXPOSURE_STEPS)}")
    for step, values in step_parameters.items():
        if step not in names:
            raise ParameterError(f"run_steps({step}=...): {step} is not among the steps {names}")
        if not isinstance(values, Mapping):
            raise ParameterError(f"run_steps({step}=...): give the step's parameters as a mapping, "
                                 f"e.g. {step}={{'skip': True}}")


def _input_model(input) -> tuple[Any, Path | str]:
    """The model to work on and how messages name it: a file is opened, a model copied."""
    if isinstance(input, str | Path):
        return open_model(input), Path(input)
    if not hasattr(input, "meta"):
        raise ParameterError(f"run_steps: the input is a {type(input).__name__}, not a file or a Roman model")
    return input.copy(), str(input.meta.get("filename") or f"the input {type(input).__name__}")
