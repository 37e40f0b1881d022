"""dark_decay: subtract the decaying dark signal that the first reads of an exposure carry.

romancal 1.1's DarkDecayStep (romancal documentation 1.1, "dark_decay"): every pixel of a
detector sees a signal ``A exp(-t / tau)`` (typically 0.4 DN, tau ~ 23 s) at the time t it
is read, counted from the middle of the first read: read r of a pixel happens at
``(r - 1.5) frame_time + t_pixel`` with ``t_pixel`` when the pixel is read within a frame
(``romanpipe.readpattern.pixel_read_times``). Each resultant loses the mean of that signal
over its reads. A and tau are the detector's entry of the DARKDECAYSIGNAL reference's
``decay_table``. The exponential factorises into a pixel map and one number per resultant,
so the correction costs one 2-D map, not a cube. The ramp's DQ is unchanged.

    python scripts/dark_decay.py r..._refpix.asdf r..._dark_decay.asdf [--override-darkdecaysignal FILE]
"""

from __future__ import annotations

import logging

from romanpipe import cli
from romanpipe.blocks import output_array, reusable_buffer, rows_per_block
from romanpipe.errors import InputFileError
from romanpipe.products import COMPLETE, open_model
from romanpipe.readpattern import pixel_read_times
from romanpipe.steprun import StepRun, run_script

import numpy as np
from roman_datamodels import datamodels

log = logging.getLogger("dark_decay")

STEP = "dark_decay"
INPUT_MODELS = (datamodels.RampModel,)
# The decay amplitude is the signal at the middle of the first read: 1.5 frames before read r.
FIRST_READ_OFFSET = 1.5


def resultant_decay_factors(read_pattern, frame_time: float, time_constant: float) -> np.ndarray:
    """Per resultant, the mean over its reads of ``exp(-(r - 1.5) frame_time / tau)`` (float64)."""
    return np.array([np.mean([np.exp(-(read - FIRST_READ_OFFSET) * frame_time / time_constant)
                              for read in reads]) for reads in read_pattern])


def dark_decay_signal(shape, amplitude: float, time_constant: float, frame_time: float, read_pattern,
                      sca: int) -> tuple[np.ndarray, np.ndarray]:
    """The decay signal as ``(pixel map A exp(-t_pixel / tau), per-resultant factors)``: the
    signal of resultant k is ``map * factors[k]`` (DN)."""
    if not (np.isfinite(frame_time) and frame_time > 0):
        raise ValueError(f"meta.exposure.frame_time is {frame_time}, expected a positive time")
    if not (np.isfinite(time_constant) and time_constant > 0):
        raise ValueError(f"dark decay time constant is {time_constant}, expected a positive time")
    pixel_map = amplitude * np.exp(-pixel_read_times(shape, frame_time, sca) / time_constant)
    return pixel_map, resultant_decay_factors(read_pattern, frame_time, time_constant)


def subtract_dark_decay(data, amplitude: float, time_constant: float, frame_time: float, read_pattern,
                        sca: int, *, out=None) -> np.ndarray:
    """Data (float32) less the dark decay signal of each resultant.

    data (nres, nrows, ncols) DN; read_pattern the MA table's reads of each resultant;
    sca the detector number (1-18). out: a float32 array of the data's shape (may be
    ``data`` itself), by default a new one. Inputs are not modified otherwise.
    """
    if data.ndim != 3:
        raise ValueError(f"data has shape {data.shape}, expected (nresultants, nrows, ncols)")
    if len(read_pattern) != data.shape[0]:
        raise ValueError(f"read_pattern has {len(read_pattern)} resultants, the data {data.shape[0]}")
    pixel_map, factors = dark_decay_signal(data.shape[1:], amplitude, time_constant, frame_time,
                                           read_pattern, sca)
    corrected = output_array(data, out)
    step = rows_per_block(data.shape)
    for start in range(0, data.shape[1], step):
        rows = slice(start, start + step)
        signal = factors[:, None, None] * pixel_map[None, rows]
        # In float64, rounded once to float32, as romancal's in-place subtraction does.
        corrected[:, rows] = data[:, rows] - signal
    return corrected


def detector_decay(reference, detector: str) -> tuple[float, float]:
    """(amplitude DN, time constant s) of ``detector`` in a DARKDECAYSIGNAL reference; ValueError
    if absent."""
    table = reference.decay_table
    entry = table.get(detector) if hasattr(table, "get") else getattr(table, detector, None)
    if entry is None or entry.get("amplitude") is None or entry.get("time_constant") is None:
        raise ValueError(f"DARKDECAYSIGNAL has no amplitude and time constant for {detector}")
    return float(entry["amplitude"]), float(entry["time_constant"])


def run(ramp, step: StepRun):
    """Subtract the DARKDECAYSIGNAL reference's decay signal from ``ramp`` (a RampModel, updated
    and returned)."""
    path = step.reference("darkdecaysignal")
    detector = str(ramp.meta.instrument.detector).upper()
    exposure = ramp.meta.exposure
    with open_model(path, (datamodels.DarkdecaysignalRefModel,)) as reference:
        try:
            amplitude, time_constant = detector_decay(reference, detector)
        except ValueError as err:
            raise InputFileError(path, str(err)) from None
    data = np.asarray(ramp.data)
    read_pattern = [list(reads) for reads in exposure.read_pattern]
    try:
        ramp.data = subtract_dark_decay(data, amplitude, time_constant, float(exposure.frame_time),
                                        read_pattern, int(detector[3:]), out=reusable_buffer(data))
    except ValueError as err:
        raise InputFileError(step.input, f"{err} (reference {path.name})") from None
    log.info("%s: subtracted a dark decay of %.4g DN, time constant %.4g s", detector, amplitude,
             time_constant)
    return ramp, COMPLETE


def main(argv=None) -> None:
    run_script(STEP, __doc__, INPUT_MODELS, run, argv)


if __name__ == "__main__":
    cli.run_and_exit(main)
