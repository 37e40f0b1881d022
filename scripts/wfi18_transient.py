"""wfi18_transient: fit and remove the transient in the first read of detector WFI18.

romancal 1.1's WFI18TransientStep (romancal documentation 1.1, "wfi18_transient"). WFI18's
first read carries a strongly temperature-dependent transient, so it is fitted in every
exposure:

1. the first resultant's true value is extrapolated back from resultants 2 and 3
   (their rate times the gap in mean read time), and the residual is the first
   resultant less that estimate (science pixels only);
2. per row, the sigma-clipped (3 sigma) mean residual of the weakly illuminated pixels,
   those whose resultant 5 - resultant 4 is at most the row's median;
3. ``a exp(-t / tau_a) + b exp(-t / tau_b)`` is fitted to those row means against the
   row's mean read time t (``romanpipe.readpattern.pixel_read_times``), starting from
   romancal's guess (1.1 and -0.1 times the first row's residual; the read times of rows
   300 and 1000, or the last row of a smaller array);
4. the model at each pixel's read time is subtracted from the first resultant.

With fewer than 5 resultants, a failed fit or ``mask_rows``, the first 1000 rows of the
first resultant are flagged DO_NOT_USE and WFI18_TRANSIENT in GROUPDQ instead. Any other
detector's ramp passes through unchanged, with ``cal_step.wfi18_transient`` N/A (and one
log line).

    python scripts/wfi18_transient.py r..._dark_decay.asdf r..._wfi18_transient.asdf [--mask-rows]
"""

from __future__ import annotations

import logging
import warnings

from romanpipe import cli, dqflags
from romanpipe.detector import BORDER
from romanpipe.errors import InputFileError
from romanpipe.products import COMPLETE
from romanpipe.readpattern import mean_read_times, pixel_read_times
from romanpipe.steprun import StepRun, run_script

import numpy as np
from roman_datamodels import datamodels

log = logging.getLogger("wfi18_transient")

STEP = "wfi18_transient"
INPUT_MODELS = (datamodels.RampModel,)
DETECTOR = "WFI18"
NOT_APPLICABLE = "N/A"
MIN_RESULTANTS = 5
MASKED_ROWS = 1000
CLIP_SIGMA = 3.0
# Rows whose read times start the fit's two time constants (romancal's empirical guess).
GUESS_ROWS = (300, 1000)


def mask_affected_rows(groupdq: np.ndarray, *, flags=dqflags.group) -> np.ndarray:
    """A new GROUPDQ with the first MASKED_ROWS rows of the first resultant DO_NOT_USE | WFI18_TRANSIENT."""
    flagged = np.array(groupdq, copy=True)
    flagged[0, :MASKED_ROWS, :] |= np.uint8(flags["DO_NOT_USE"] | flags["WFI18_TRANSIENT"])
    return flagged


def double_exponential(t, a, b, tau_a, tau_b):
    """``a exp(-t / tau_a) + b exp(-t / tau_b)``."""
    return a * np.exp(-t / tau_a) + b * np.exp(-t / tau_b)


def row_residuals(science: np.ndarray, resultant_times: np.ndarray) -> np.ndarray:
    """Sigma-clipped mean per row of the first resultant's residual over its weakly lit pixels.

    science (nres >= 5, nrows, ncols) float, the science pixels; resultant_times the mean
    read time of each resultant (s).
    """
    from astropy.stats import sigma_clipped_stats

    gaps = np.diff(resultant_times)
    rate = (science[2].astype(np.float64) - science[1]) / gaps[1]
    residual = science[0] - (science[1] - rate * gaps[0])
    # Another pair of resultants picks the weakly lit pixels, so their noise is independent.
    lit = science[4].astype(np.float64) - science[3]
    bright = lit > np.median(lit, axis=1, keepdims=True)
    mean, _, _ = sigma_clipped_stats(residual, mask=bright, sigma=CLIP_SIGMA, axis=1)
    return np.asarray(mean, dtype=np.float64)


def fit_transient(row_times: np.ndarray, residuals: np.ndarray) -> np.ndarray | None:
    """(a, b, tau_a, tau_b) fitted to the row residuals, or None when the fit fails."""
    from scipy import optimize

    last = len(row_times) - 1
    guess = [residuals[0] * 1.1, residuals[0] * -0.1,
             row_times[min(GUESS_ROWS[0], last)], row_times[min(GUESS_ROWS[1], last)]]
    try:
        with warnings.catch_warnings():
            # An ill-determined covariance does not make the fitted values wrong.
            warnings.filterwarnings("ignore", "Covariance of the parameters could not be estimated",
                                    optimize.OptimizeWarning)
            parameters, _ = optimize.curve_fit(double_exponential, row_times, residuals, p0=guess)
    except (ValueError, RuntimeError) as err:
        log.warning("the transient fit failed (%s): masking the affected rows instead", err)
        return None
    return parameters


def correct_transient(data, groupdq, read_pattern, frame_time: float, *, mask_rows: bool = False,
                      flags=dqflags.group):
    """(data float32, groupdq) of a WFI18 ramp with its first-read transient removed or masked.

    data (nres, nrows, ncols) DN with the reference border; groupdq the same shape.
    Inputs are not modified.
    """
    if data.ndim != 3 or groupdq.shape != data.shape:
        raise ValueError(f"data {data.shape} and groupdq {groupdq.shape} are not one ramp")
    if mask_rows or data.shape[0] < MIN_RESULTANTS:
        log.info("masking the first %d rows of the first resultant (%s)", MASKED_ROWS,
                 "mask_rows" if mask_rows else f"{data.shape[0]} resultants, the fit needs {MIN_RESULTANTS}")
        return np.asarray(data, dtype=np.float32), mask_affected_rows(groupdq, flags=flags)
    inner = (slice(None), slice(BORDER, -BORDER), slice(BORDER, -BORDER))
    science = np.asarray(data[inner], dtype=np.float64)
    pixel_times = pixel_read_times(data.shape[1:], frame_time, int(DETECTOR[3:]))[inner[1:]]
    row_times = pixel_times.mean(axis=1)
    parameters = fit_transient(row_times, row_residuals(science, mean_read_times(read_pattern, frame_time)))
    if parameters is None:
        return np.asarray(data, dtype=np.float32), mask_affected_rows(groupdq, flags=flags)
    log.info("transient fit: a=%.4g DN, b=%.4g DN, tau_a=%.4g s, tau_b=%.4g s", *parameters)
    corrected = np.array(data, dtype=np.float32, copy=True)
    corrected[0][inner[1:]] = science[0] - double_exponential(pixel_times, *parameters)
    return corrected, np.asarray(groupdq)


def run(ramp, step: StepRun):
    """Correct WFI18's first-read transient in ``ramp`` (updated and returned); other detectors: N/A."""
    detector = str(ramp.meta.instrument.detector).upper()
    if detector != DETECTOR:
        log.info("%s is not %s: the ramp is unchanged (cal_step N/A)", detector, DETECTOR)
        return ramp, NOT_APPLICABLE
    exposure = ramp.meta.exposure
    try:
        ramp.data, ramp.groupdq = correct_transient(
            np.asarray(ramp.data), np.asarray(ramp.groupdq), [list(reads) for reads in exposure.read_pattern],
            float(exposure.frame_time), mask_rows=step.parameters["mask_rows"])
    except ValueError as err:
        raise InputFileError(step.input, str(err)) from None
    return ramp, COMPLETE


def main(argv=None) -> None:
    run_script(STEP, __doc__, INPUT_MODELS, run, argv)


if __name__ == "__main__":
    cli.run_and_exit(main)
