"""linearity: correct each resultant for the classic non-linear response of the detector.

Seed, "Linearity Correction": every resultant F (DN) becomes
F_c = sum_n c_n F^n with all the coefficient planes of the LINEARITY reference
(Horner's scheme). Pixels with a NaN coefficient, a linear coefficient c_1 of 0
(all-zero coefficients among them: the polynomial would flatten the ramp), or
NO_LIN_CORR in the reference DQ are left uncorrected and get NO_LIN_CORR in PIXELDQ,
as stcal does; resultants
flagged SATURATED in GROUPDQ are left as they are; the reference DQ is OR-ed
into PIXELDQ. A RampModel has no ERR array, so there is none to modify.

The ramp is corrected a block of rows at a time (romanpipe.blocks) into one
output array: our products are stored uncompressed, so the input is
a read-only memory map and the step holds about two ramps in all. An
lz4-compressed input (romancal's default) is decompressed into a private
buffer, which is then corrected in place instead.

    python scripts/linearity.py r..._saturation.asdf r..._linearity.asdf [--override-linearity FILE]
"""

from __future__ import annotations

import logging

from romanpipe import cli, dqflags
from romanpipe.blocks import output_array, reusable_buffer, rows_per_block
from romanpipe.errors import InputFileError
from romanpipe.products import COMPLETE, open_model
from romanpipe.steprun import StepRun, run_script

import numpy as np
from roman_datamodels import datamodels

log = logging.getLogger("linearity")

STEP = "linearity"
INPUT_MODELS = (datamodels.RampModel,)
def evaluate_polynomial(coeffs: np.ndarray, values: np.ndarray) -> np.ndarray:
    """sum_n coeffs[n] * values^n by Horner's scheme, in float64.

    coeffs (ncoeffs, ...) lowest order first, broadcasting against ``values``.
    """
    result = np.empty(np.broadcast_shapes(coeffs.shape[1:], values.shape))
    result[...] = coeffs[-1]
    for coefficient in coeffs[-2::-1]:
        result *= values
        result += coefficient
    return result


def uncorrectable_pixels(coeffs: np.ndarray, lin_dq: np.ndarray, *, flags=dqflags.pixel) -> np.ndarray:
    """True where the reference gives no correction: a NaN coefficient, a zero linear one, or NO_LIN_CORR."""
    return (np.isnan(coeffs).any(axis=0) | (coeffs[1] == 0)
            | ((lin_dq & np.uint32(flags["NO_LIN_CORR"])) != 0))


def correct_linearity(data, groupdq, pixeldq, coeffs, lin_dq, *, flags=dqflags.pixel, out=None):
    """Data (float32) and new PIXELDQ after the linearity correction.

    data (nres, nrows, ncols) DN (any array, e.g. memory-mapped); groupdq (nres, nrows, ncols);
    pixeldq, lin_dq (nrows, ncols); coeffs (ncoeffs, nrows, ncols), lowest order first.
    out: a float32 array of the data's shape to write the corrected data into, which
    may be ``data`` itself (each block is read before it is written); by default a
    new array. Inputs are not modified, except ``data`` when it is passed as ``out``.
    """
    if data.ndim != 3:
        raise ValueError(f"data has shape {data.shape}, expected (nresultants, nrows, ncols)")
    if groupdq.shape != data.shape:
        raise ValueError(f"groupdq has shape {groupdq.shape}, the data {data.shape}")
    if pixeldq.shape != data.shape[1:]:
        raise ValueError(f"pixeldq has shape {pixeldq.shape}, the data {data.shape[1:]}")
    if coeffs.ndim != 3 or coeffs.shape[0] < 2 or coeffs.shape[1:] != data.shape[1:]:
        raise ValueError(f"LINEARITY coeffs have shape {coeffs.shape}, expected "
                         f"(ncoeffs >= 2, {data.shape[1]}, {data.shape[2]})")
    if lin_dq.shape != data.shape[1:]:
        raise ValueError(f"LINEARITY dq has shape {lin_dq.shape}, the data {data.shape[1:]}")
    saturated = np.uint8(flags["SATURATED"])
    uncorrectable = uncorrectable_pixels(coeffs, lin_dq, flags=flags)

    corrected = output_array(data, out)
    step = rows_per_block(data.shape)
    for start in range(0, data.shape[1], step):
        rows = slice(start, start + step)
        observed = np.asarray(data[:, rows], dtype=np.float64)
        linearized = evaluate_polynomial(np.asarray(coeffs[:, rows], dtype=np.float64), observed)
        keep = ((groupdq[:, rows] & saturated) != 0) | uncorrectable[rows]
        # NaN coefficients give NaN here; the observed value replaces them.
        np.copyto(linearized, observed, where=keep)
        corrected[:, rows] = linearized

    no_lin_corr = np.where(uncorrectable, np.uint32(flags["NO_LIN_CORR"]), np.uint32(0))
    new_pixeldq = pixeldq.astype(np.uint32) | lin_dq.astype(np.uint32) | no_lin_corr
    return corrected, new_pixeldq


def run(ramp, step: StepRun):
    """Correct ``ramp`` (a RampModel, updated and returned) with the LINEARITY reference's polynomials."""
    linearity_path = step.reference("linearity")
    data = np.asarray(ramp.data)
    with open_model(linearity_path, (datamodels.LinearityRefModel,)) as reference:
        try:
            ramp.data, ramp.pixeldq = correct_linearity(
                data, np.asarray(ramp.groupdq), np.asarray(ramp.pixeldq),
                np.asarray(reference.coeffs), np.asarray(reference.dq), out=reusable_buffer(data))
        except ValueError as err:
            raise InputFileError(step.input, f"{err} (reference {linearity_path.name})") from None
    log.info("%d pixels without linearity correction (NO_LIN_CORR)",
             int(np.count_nonzero(ramp.pixeldq & dqflags.pixel.NO_LIN_CORR)))
    return ramp, COMPLETE


def main(argv=None) -> None:
    run_script(STEP, __doc__, INPUT_MODELS, run, argv)


if __name__ == "__main__":
    cli.run_and_exit(main)
