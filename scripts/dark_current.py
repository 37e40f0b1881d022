"""dark_current: subtract from each resultant the dark current accumulated by its mean read time.

Seed, "Dark Current Subtraction", with the DARK reference of roman_datamodels
1.1, which holds a dark rate (``dark_slope``, DN/s) instead of a dark cube per
MA table: the frame-averaged dark of resultant k is ``dark_slope * t_k``, with
``t_k = frame_time * mean(read numbers of resultant k)`` the mean time of its
reads after the reset (read j happens j frame times after it; the dark grows
linearly, so the mean of the reads' darks is the dark at their mean time). It
is subtracted resultant by resultant; NaN rates count as zero (no subtraction),
the reference DQ is OR-ed into PIXELDQ. A RampModel has no ERR array, so there
is none to modify. ``--dark-output FILE`` also writes the frame-averaged dark,
a RampModel whose data are the per-resultant dark (DN) and whose PIXELDQ is the
reference's DQ. Ramp fitting reads the same DARK reference for the dark rate;
this step records it in the product's provenance.

On a count-rate image (an ImageModel: the romancal-1.1 chain runs this step after ramp
fitting, as romancal 1.1 does) the dark rate itself is subtracted from the rate, over the
science pixels (NaN rates count as zero), and the reference DQ is OR-ed into DQ; ERR is
unchanged (romancal 1.1 does not add the dark's uncertainty either). ``dark_output``
applies to ramps only.

The ramp is processed a block of rows at a time (romanpipe.blocks) into one
output array (an lz4-compressed input, romancal's default, is decompressed into
a private buffer and corrected in place instead): about two ramps in all.
The frame-averaged dark, when asked for, is written and freed before the ramp
is read.

    python scripts/dark_current.py r..._linearity.asdf r..._darkcurrent.asdf [--override-dark FILE]
        [--dark-output r..._dark.asdf]
    python scripts/dark_current.py r..._rampfit.asdf r..._darkcurrent.asdf [--override-dark FILE]
"""

from __future__ import annotations

import copy
import logging

from romanpipe import cli
from romanpipe.blocks import output_array, reusable_buffer, rows_per_block
from romanpipe.detector import matching_science_area
from romanpipe.errors import InputFileError
from romanpipe.products import COMPLETE, open_model, write_atomic
from romanpipe.readpattern import mean_read_times
from romanpipe.steprun import StepRun, record_provenance, run_script

import numpy as np
from roman_datamodels import datamodels

log = logging.getLogger("dark_current")

STEP = "dark_current"
INPUT_MODELS = (datamodels.RampModel, datamodels.ImageModel)


def subtract_dark_rate(rate, dq, dark_slope, dark_dq):
    """(rate float32 less the dark rate, new DQ) of a count-rate image; NaN dark rates count as 0.

    rate, dq (nrows, ncols) DN/s; dark_slope, dark_dq of the same shape (the science pixels).
    Inputs are not modified.
    """
    if dark_slope.shape != rate.shape:
        raise ValueError(f"DARK dark_slope covers {dark_slope.shape} pixels, the image {rate.shape}")
    if dq.shape != rate.shape or dark_dq.shape != rate.shape:
        raise ValueError(f"DQ arrays {dq.shape} and {dark_dq.shape} do not fit the image {rate.shape}")
    dark = np.nan_to_num(np.asarray(dark_slope, dtype=np.float32), nan=0.0)
    return (np.asarray(rate, dtype=np.float32) - dark), dq.astype(np.uint32) | dark_dq.astype(np.uint32)


def run_on_rate(image, step: StepRun, dark_path):
    """Subtract the DARK reference's dark rate from a count-rate ImageModel (updated and returned)."""
    if step.parameters["dark_output"]:
        log.warning("dark_output applies to a ramp: no frame-averaged dark for a rate image")
    with open_model(dark_path, (datamodels.DarkRefModel,)) as reference:
        try:
            dark_slope = matching_science_area(np.asarray(reference.dark_slope), image.data.shape)
            dark_dq = matching_science_area(np.asarray(reference.dq), image.data.shape)
            image.data, image.dq = subtract_dark_rate(np.asarray(image.data), np.asarray(image.dq),
                                                      dark_slope, dark_dq)
        except ValueError as err:
            raise InputFileError(step.input, f"{err} (reference {dark_path.name})") from None
    log.info("subtracted a dark rate of median %.4g DN/s from the rate image",
             float(np.nanmedian(dark_slope)))
    return image, COMPLETE


def frame_averaged_dark(dark_slope: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Dark (DN, float32) of each resultant: rate times mean read time; NaN rates give 0.

    dark_slope (nrows, ncols) DN/s; times (nresultants,) s. Computed in float64
    a block of rows at a time, so a full detector needs no float64 cube.
    """
    dark = np.empty((len(times), *dark_slope.shape), dtype=np.float32)
    step = rows_per_block(dark.shape)
    for start in range(0, dark.shape[1], step):
        rows = slice(start, start + step)
        rate = np.nan_to_num(np.asarray(dark_slope[rows], dtype=np.float64), nan=0.0)
        dark[:, rows] = times[:, None, None] * rate
    return dark


def check_shapes(shape, pixeldq, dark_slope, dark_dq, times) -> None:
    """ValueError naming the first array that does not fit a ramp of ``shape``."""
    if len(shape) != 3:
        raise ValueError(f"data has shape {shape}, expected (nresultants, nrows, ncols)")
    if len(times) != shape[0]:
        raise ValueError(f"read_pattern has {len(times)} resultants, the data {shape[0]}")
    if pixeldq.shape != shape[1:]:
        raise ValueError(f"pixeldq has shape {pixeldq.shape}, the data {shape[1:]}")
    if dark_slope.shape != shape[1:]:
        raise ValueError(f"DARK dark_slope has shape {dark_slope.shape}, the data {shape[1:]}")
    if dark_dq.shape != shape[1:]:
        raise ValueError(f"DARK dq has shape {dark_dq.shape}, the data {shape[1:]}")


def subtract_dark(data, pixeldq, dark_slope, dark_dq, times, *, out=None):
    """Data (float32) and new PIXELDQ after dark subtraction.

    data (nres, nrows, ncols) DN (any array, e.g. memory-mapped); pixeldq, dark_slope (DN/s),
    dark_dq (nrows, ncols); times (nres,) the mean read time of each resultant (s).
    out: a float32 array of the data's shape to write the result into, which may be
    ``data`` itself; by default a new array. Inputs are not modified, except ``data``
    when it is passed as ``out``.
    """
    check_shapes(data.shape, pixeldq, dark_slope, dark_dq, times)
    subtracted = output_array(data, out)
    step = rows_per_block(data.shape)
    for start in range(0, data.shape[1], step):
        rows = slice(start, start + step)
        # The same float32 dark as --dark-output writes, so the two agree bit for bit.
        np.subtract(data[:, rows], frame_averaged_dark(dark_slope[rows], times),
                    out=subtracted[:, rows], dtype=np.float32)
    return subtracted, pixeldq.astype(np.uint32) | dark_dq.astype(np.uint32)


def dark_product(ramp, dark: np.ndarray, dark_dq: np.ndarray):
    """A RampModel of the frame-averaged dark with the exposure's metadata.

    Its border reference arrays are the dark's own border, as wide as the
    ramp's; it has no amp33 signal.
    """
    border = ramp.border_ref_pix_left.shape[-1]
    model = datamodels.RampModel.create_fake_data(shape=(dark.shape[0], 1, 1))
    model.meta = copy.deepcopy(ramp.meta)
    model.data = dark
    model.pixeldq = dark_dq.astype(np.uint32)
    model.groupdq = np.zeros(dark.shape, dtype=np.uint8)
    model.amp33 = np.zeros_like(np.asarray(ramp.amp33))
    for side, rows, cols in (("left", slice(None), slice(None, border)),
                             ("right", slice(None), slice(-border, None)),
                             ("top", slice(None, border), slice(None)),
                             ("bottom", slice(-border, None), slice(None))):
        # Copies, as dq_init makes them: asdf stores a view as a window on the whole dark's block.
        model[f"border_ref_pix_{side}"] = dark[:, rows, cols].copy()
        model[f"dq_border_ref_pix_{side}"] = model.pixeldq[rows, cols].copy()
    return model


def run(ramp, step: StepRun):
    """Subtract the DARK reference's dark from ``ramp`` (a RampModel, updated and returned), or
    its dark rate from a count-rate ImageModel (:func:`run_on_rate`)."""
    dark_path = step.reference("dark")
    if isinstance(ramp, datamodels.ImageModel):
        return run_on_rate(ramp, step, dark_path)
    exposure = ramp.meta.exposure
    with open_model(dark_path, (datamodels.DarkRefModel,)) as reference:
        dark_slope, dark_dq = np.asarray(reference.dark_slope), np.asarray(reference.dq)
        try:
            times = mean_read_times([list(reads) for reads in exposure.read_pattern],
                                    float(exposure.frame_time))
            # The lazily loaded array knows its shape: the ramp is not read yet.
            check_shapes(ramp.data.shape, np.asarray(ramp.pixeldq), dark_slope, dark_dq, times)
            if step.parameters["dark_output"]:
                # Written and released before the ramp is read, so the two never share memory.
                dark = dark_product(ramp, frame_averaged_dark(dark_slope, times), dark_dq)
                record_provenance(dark, STEP, step.parameters, {"dark": dark_path})
                write_atomic(dark, step.parameters["dark_output"])
                del dark
            data = np.asarray(ramp.data)
            ramp.data, ramp.pixeldq = subtract_dark(data, np.asarray(ramp.pixeldq), dark_slope, dark_dq,
                                                    times, out=reusable_buffer(data))
        except ValueError as err:
            raise InputFileError(step.input, f"{err} (reference {dark_path.name})") from None
        log.info("subtracted a dark of median %.4g DN/s over mean read times %.4g..%.4g s",
                 float(np.nanmedian(dark_slope)), times[0], times[-1])
    return ramp, COMPLETE


def main(argv=None) -> None:
    run_script(STEP, __doc__, INPUT_MODELS, run, argv)


if __name__ == "__main__":
    cli.run_and_exit(main)
