"""flat_field: divide a Level 2 image by the FLAT reference and propagate its errors.

Seed, "Flatfield Correction": flat pixels that are NaN or zero get NO_FLAT_FIELD
and the value 1.0 (as does any pixel the reference already flags NO_FLAT_FIELD);
data and ERR are divided by the flat; VAR_POISSON and VAR_RNOISE by its square;
VAR_FLAT = data_flattened^2 * (flat_err / flat)^2 (the romancal documentation's lost formula, section
"Flatfield Correction", as in
romancal: the relative error of the flat applied to the corrected signal); ERR
becomes sqrt(VAR_POISSON + VAR_RNOISE + VAR_FLAT); the flat's DQ is OR-ed in. A FLAT
covering the whole readout (4096 x 4096, as its section "FLAT Reference File" describes it) loses its
reference border to match the image.
``include_var_flat=False`` leaves VAR_FLAT zero and ERR without it (romancal's
default; ours follows the documentation).

    python scripts/flat_field.py r..._assignwcs.asdf r..._flat.asdf --override-flat F
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from romanpipe import cli, dqflags
from romanpipe.detector import matching_science_area
from romanpipe.errors import InputFileError
from romanpipe.products import COMPLETE, as_float16, open_model
from romanpipe.steprun import StepRun, run_script

import numpy as np
from roman_datamodels import datamodels

log = logging.getLogger("flat_field")

STEP = "flat_field"
INPUT_MODELS = (datamodels.ImageModel,)


@dataclass(frozen=True)
class FlatFielded:
    data: np.ndarray
    dq: np.ndarray
    err: np.ndarray
    var_poisson: np.ndarray
    var_rnoise: np.ndarray
    var_flat: np.ndarray


def apply_flat(data, dq, var_poisson, var_rnoise, flat, flat_err, flat_dq, *,
               include_var_flat=True, flags=dqflags.pixel) -> FlatFielded:
    """Flat-fielded arrays (float32, uint32); no input is modified."""
    if flat.shape != data.shape:
        raise ValueError(f"FLAT has shape {flat.shape}, the image {data.shape}")
    no_flat = np.uint32(flags["NO_FLAT_FIELD"])
    flat = np.asarray(flat, dtype=np.float32)
    unusable = ~np.isfinite(flat) | (flat == 0) | ((flat_dq & no_flat) != 0)
    flat = np.where(unusable, np.float32(1.0), flat)
    flat_err = np.where(unusable | ~np.isfinite(flat_err), np.float32(0.0), flat_err).astype(np.float32)
    flat_dq = flat_dq.astype(np.uint32) | np.where(unusable, no_flat, np.uint32(0))

    corrected = np.asarray(data, dtype=np.float32) / flat
    flat_squared = flat * flat
    var_poisson = np.asarray(var_poisson, dtype=np.float32) / flat_squared
    var_rnoise = np.asarray(var_rnoise, dtype=np.float32) / flat_squared
    if include_var_flat:
        var_flat = corrected * corrected * (flat_err / flat) ** 2
    else:
        var_flat = np.zeros_like(corrected)
    err = np.sqrt(var_poisson + var_rnoise + var_flat)
    return FlatFielded(corrected, dq | flat_dq, err, var_poisson, var_rnoise, var_flat)


def run(image, step: StepRun):
    """``image`` (an ImageModel) divided by the FLAT reference, its errors propagated (a new model)."""
    flat_path = step.reference("flat")
    with open_model(flat_path, (datamodels.FlatRefModel,)) as reference:
        shape = np.shape(image.data)
        try:
            flat, flat_err, flat_dq = (matching_science_area(np.asarray(reference[name]), shape)
                                       for name in ("data", "err", "dq"))
            result = apply_flat(np.asarray(image.data), np.asarray(image.dq),
                                np.asarray(image.var_poisson), np.asarray(image.var_rnoise),
                                flat, flat_err, flat_dq, include_var_flat=step.parameters["include_var_flat"])
        except ValueError as err:
            raise InputFileError(flat_path, str(err)) from None
    output = image.copy()
    output.data = result.data
    output.dq = result.dq
    # The Level 2 schema stores errors and variances as float16.
    for name in ("err", "var_poisson", "var_rnoise", "var_flat"):
        output[name] = as_float16(getattr(result, name))
    log.info("%d pixels without a flat value",
             int(np.count_nonzero(result.dq & dqflags.pixel.NO_FLAT_FIELD)))
    return output, COMPLETE


def main(argv=None) -> None:
    run_script(STEP, __doc__, INPUT_MODELS, run, argv)


if __name__ == "__main__":
    cli.run_and_exit(main)
