"""The DARK reference of a simulated detector: its dark rate in DN/s, hot pixels flagged.

roman_datamodels 1.1's DarkRefModel holds a dark *rate* (``dark_slope``, DN/s)
with its uncertainty, not a dark cube per MA table. The simulator's pixels
collect ``dark_current`` e/s (hot pixels included) and digitize ``charge / gain``,
so the rate is ``dark_current / gain``, taken from the truth without
measurement error: tests then see only the step's own errors. The uncertainty
is what a master dark would have if it were measured as the mean of
:data:`MASTER_DARK_EXPOSURES` up-the-ramp fits of :data:`MASTER_DARK_READS`
evenly spaced reads: for ``N`` reads ``t_f`` apart, an unweighted fit of a
ramp with read noise ``sigma`` (DN) and rate ``f`` (DN/s) has the variance

    12 sigma^2 / (N (N^2 - 1) t_f^2)  +  6 (N^2 + 1) f / (5 N (N^2 - 1) t_f gain)

(white read noise, and the correlated Poisson noise of a growing charge).
CRDS selects DARK by detector and exposure type: :data:`DARK_REFERENCE_META`.
"""

from __future__ import annotations

from romanpipe.dqflags import pixel

import numpy as np

from .detector import DetectorModel
from .matables import FULL_FRAME_TIME

MASTER_DARK_EXPOSURES = 20
MASTER_DARK_READS = 55

# Selector metadata: the DARK rmap matches meta.exposure.type (through p_exptype), and the
# DarkRefModel schema requires an optical element; darks are taken behind the DARK element.
# Science exposures of both modes take the same dark (and read noise) reference.
SCIENCE_EXPOSURE_TYPES = "WFI_IMAGE|WFI_SPECTRAL|"
DARK_REFERENCE_META = {
    "exposure": {"type": "WFI_IMAGE", "p_exptype": SCIENCE_EXPOSURE_TYPES},
    "instrument": {"optical_element": "DARK"},
}


def master_dark_slope_error(detector: DetectorModel, frame_time: float = FULL_FRAME_TIME) -> np.ndarray:
    """Standard error (DN/s, float32) of the dark rate from a master dark (see the module docstring)."""
    n = MASTER_DARK_READS
    gain = detector.gain.astype(np.float64)
    rate_dn = detector.dark_current / gain
    read_noise_term = 12.0 * detector.read_noise.astype(np.float64) ** 2 / (n * (n**2 - 1) * frame_time**2)
    # Poisson variance in DN^2 is (electrons) / gain^2 = rate_dn / gain per second.
    poisson_term = 6.0 * (n**2 + 1) * rate_dn / (5.0 * n * (n**2 - 1) * frame_time * gain)
    return np.sqrt((read_noise_term + poisson_term) / MASTER_DARK_EXPOSURES).astype(np.float32)


def dark_reference_arrays(detector: DetectorModel, rng: np.random.Generator) -> dict:
    """DARK ``dark_slope``, ``dark_slope_error`` (DN/s) and ``dq`` of ``detector`` (a ``references.Builder``).

    HOT pixels are flagged HOT; the MASK already marks them DO_NOT_USE, this
    reference only says why their dark is large.
    """
    dq = np.zeros(detector.shape, dtype=np.uint32)
    dq[detector.hot] |= np.uint32(pixel.HOT)
    return {
        "dark_slope": (detector.dark_current / detector.gain).astype(np.float32),
        "dark_slope_error": master_dark_slope_error(detector),
        "dq": dq,
    }
