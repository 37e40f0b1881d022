"""saturation: flag saturated and A/D-floor resultants.

Seed, "Saturation Detection": a resultant is SATURATED when it reaches the
pixel's threshold times the resultant's dilution factor <t>/max(t) over the reads
averaged into it (later reads can saturate while the average stays below the
threshold); that resultant and every later one are flagged. Values <= 0 DN are
flagged AD_FLOOR|DO_NOT_USE, whatever the threshold. A pixel whose threshold is NaN
or flagged NO_SAT_CHECK is never saturated by its own values (as stcal, which gives it
the threshold 65536, above anything the 16-bit A/D converter produces): it gets
NO_SAT_CHECK in PIXELDQ, with the rest of the reference's DQ, and only the growth
of a saturated neighbour (``n_pix_grow_sat``) can still flag it.

    python scripts/saturation.py r..._dqinit.asdf r..._saturation.asdf [--n-pix-grow-sat N]
"""

from __future__ import annotations

import logging

from romanpipe import cli, dqflags
from romanpipe.errors import InputFileError
from romanpipe.products import COMPLETE, open_model
from romanpipe.steprun import StepRun, run_script

import numpy as np
from roman_datamodels import datamodels
from scipy.ndimage import binary_dilation

log = logging.getLogger("saturation")

STEP = "saturation"
INPUT_MODELS = (datamodels.RampModel,)
# The threshold of unchecked pixels: one above the 16-bit A/D converter's largest value.
UNCHECKED_THRESHOLD = 65536.0


def dilution_factors(read_pattern) -> np.ndarray:
    """<t>/max(t) for each resultant; read numbers stand in for times (frame time cancels)."""
    if not read_pattern:
        raise ValueError("meta.exposure.read_pattern is empty: cannot compute dilution factors")
    return np.array([np.mean(reads) / np.max(reads) for reads in read_pattern], dtype=np.float64)


def flag_saturation(data, groupdq, pixeldq, sat_thresh, sat_dq, read_pattern, *,
                    n_pix_grow_sat=0, backup=0, flags=dqflags.pixel):
    """New GROUPDQ and PIXELDQ with saturation and A/D-floor flags. Inputs are not modified.

    data (nres, ny, nx) DN; groupdq (nres, ny, nx); pixeldq, sat_thresh, sat_dq (ny, nx);
    read_pattern: list of the read numbers in each resultant.
    """
    nresultants = data.shape[0]
    if len(read_pattern) != nresultants:
        raise ValueError(f"read_pattern has {len(read_pattern)} resultants, the data {nresultants}")
    if sat_thresh.shape != data.shape[1:]:
        raise ValueError(f"SATURATION data has shape {sat_thresh.shape}, the ramp {data.shape[1:]}")
    saturated = np.uint8(flags["SATURATED"])
    floor = np.uint8(flags["AD_FLOOR"] | flags["DO_NOT_USE"])
    no_sat_check = np.uint32(flags["NO_SAT_CHECK"])

    unchecked = np.isnan(sat_thresh) | ((sat_dq & no_sat_check) != 0)
    threshold = np.where(unchecked, UNCHECKED_THRESHOLD, sat_thresh).astype(np.float32)
    dilution = dilution_factors(read_pattern)

    new_groupdq = groupdq.copy()
    reached = np.zeros(data.shape[1:], dtype=bool)
    grow = np.ones((2 * n_pix_grow_sat + 1,) * 2, dtype=bool) if n_pix_grow_sat else None
    for k in range(nresultants):
        plane = data[k]
        diluted = np.where(unchecked, threshold, threshold * np.float32(dilution[k]))
        reached |= plane >= diluted
        flagged = binary_dilation(reached, structure=grow) if grow is not None else reached
        new_groupdq[k][flagged] |= saturated
        new_groupdq[k][plane <= 0] |= floor

    # "backup": also flag the multi-read resultant before each saturated one.
    for _ in range(backup):
        for k in range(nresultants - 1):
            if len(read_pattern[k]) > 1:
                new_groupdq[k] |= new_groupdq[k + 1] & saturated

    new_pixeldq = pixeldq | sat_dq.astype(np.uint32) | np.where(unchecked, no_sat_check, 0).astype(np.uint32)
    return new_groupdq, new_pixeldq


def run(ramp, step: StepRun):
    """Flag ``ramp`` (a RampModel, updated and returned) with the SATURATION reference."""
    parameters = step.parameters
    with open_model(step.reference("saturation"), (datamodels.SaturationRefModel,)) as reference:
        try:
            ramp.groupdq, ramp.pixeldq = flag_saturation(
                np.asarray(ramp.data), np.asarray(ramp.groupdq), np.asarray(ramp.pixeldq),
                np.asarray(reference.data, dtype=np.float32), np.asarray(reference.dq),
                [list(reads) for reads in ramp.meta.exposure.read_pattern],
                n_pix_grow_sat=parameters["n_pix_grow_sat"], backup=parameters["backup"])
        except ValueError as err:
            raise InputFileError(step.input, str(err)) from None
    log.info("%d pixels saturated in the last resultant",
             int(np.count_nonzero(ramp.groupdq[-1] & dqflags.pixel.SATURATED)))
    return ramp, COMPLETE


def main(argv=None) -> None:
    run_script(STEP, __doc__, INPUT_MODELS, run, argv)


if __name__ == "__main__":
    cli.run_and_exit(main)
