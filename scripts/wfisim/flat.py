"""Flat field: the true response of each pixel, and the FLAT reference that divides it out.

The **true flat** ``Q`` (:func:`true_flat`) of a detector and optical element is a
photon-to-electron response relative to the detector's mean, drawn from a stream
keyed by (campaign seed, detector, optical element):

* large-scale structure: four cosine modes of one period across the simulated
  array (along x, along y and both diagonals), random phases, 4 % rms together;
* pixel-to-pixel: independent Gaussian, 1.5 % rms;
* normalised to mean 1 over the light-sensitive pixels; 1 on reference pixels.

The simulator multiplies the photo-electron rate of the scene (sky and stars) by
``Q``. The pixels then digitise ``Q * rate / gain`` DN/s, with the per-pixel gain of
the detector truth (~5 % scatter). The pipeline works in DN/s and never divides by
the gain, so the **FLAT reference** (:func:`flat_reference_arrays`) carries the gain
structure too:

    FLAT.data = Q * nominal_gain / gain      (light-sensitive pixels; 1 on reference pixels)

so that ``DN/s / FLAT.data = rate / nominal_gain``: a flat-fielded image is the
scene in e/s divided by the detector's one ``nominal_gain`` (``DetectorModel.
nominal_gain``, 2 e/DN), which PHOTOM's ``photmjsr`` then converts (see
``wfisim.photometry``). A few pixels (1e-4 of the light-sensitive ones, at least
one of each) are NaN and a few are 0 in the reference only -- the scene did get
``Q`` there -- so that the flat-field step must flag them NO_FLAT_FIELD; the
reference's own ``dq`` is 0 everywhere. ``err`` is 0.2 % of ``data`` (0 where data
is NaN or 0).
"""

from __future__ import annotations

import zlib

import numpy as np

from .detector import DetectorModel, detector_key

PIXEL_TO_PIXEL_RMS = 0.015
LARGE_SCALE_RMS = 0.04
LARGE_SCALE_MODES = ((1, 0), (0, 1), (1, 1), (1, -1))  # periods across the array along (x, y)
RELATIVE_ERROR = 0.002
INVALID_FRACTION = 1e-4  # of the light-sensitive pixels, for each of NaN and 0
_FLAT_STREAM = 3


def true_flat(detector: DetectorModel, optical_element: str) -> np.ndarray:
    """``Q``: the relative photon response of every pixel (float32, readout shape)."""
    element_key = zlib.crc32(optical_element.upper().encode())
    rng = np.random.default_rng([detector.seed, detector_key(detector.name), _FLAT_STREAM, element_key])
    nrows, ncols = detector.shape
    y, x = np.mgrid[0:nrows, 0:ncols]
    # Each cosine has rms amplitude / sqrt(2); the modes are orthogonal over the array.
    amplitude = LARGE_SCALE_RMS * np.sqrt(2.0 / len(LARGE_SCALE_MODES))
    large = np.ones(detector.shape)
    for (kx, ky), phase in zip(LARGE_SCALE_MODES, rng.uniform(0, 2 * np.pi, len(LARGE_SCALE_MODES)),
                               strict=True):
        large += amplitude * np.cos(2 * np.pi * (kx * x / ncols + ky * y / nrows) + phase)
    flat = large * (1.0 + PIXEL_TO_PIXEL_RMS * rng.standard_normal(detector.shape))
    light = ~detector.reference_pixels
    flat /= flat[light].mean()
    flat[~light] = 1.0
    return flat.astype(np.float32)


def flat_reference_arrays(detector: DetectorModel, rng: np.random.Generator, optical_element: str) -> dict:
    """FLAT reference ``data``, ``err``, ``dq`` for ``optical_element`` (module docstring)."""
    light = ~detector.reference_pixels
    data = np.ones(detector.shape, dtype=np.float64)
    data[light] = (true_flat(detector, optical_element)[light].astype(np.float64)
                   * detector.nominal_gain / detector.gain[light])
    data = data.astype(np.float32)
    candidates = np.flatnonzero(light)
    count = max(1, round(INVALID_FRACTION * candidates.size))
    not_a_number, zero = np.split(rng.choice(candidates, 2 * count, replace=False), 2)
    data.flat[not_a_number] = np.nan
    data.flat[zero] = 0.0
    err = np.where(np.isfinite(data), RELATIVE_ERROR * data, 0.0).astype(np.float32)
    return {"data": data, "err": err, "dq": np.zeros(detector.shape, dtype=np.uint32)}
