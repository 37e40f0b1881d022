"""Photometric calibration: the PHOTOM reference and the flux units the truth records.

A flat-fielded WFI image is in DN/s of the detector's ``nominal_gain`` (see
``wfisim.flat``): ``rate_e_per_s / nominal_gain``. PHOTOM's ``photmjsr`` turns
DN/s into surface brightness (MJy/sr); per filter

    photmjsr = MJY_PER_E_PER_S[filter] * nominal_gain / PIXEL_AREA_SR

where ``MJY_PER_E_PER_S = 3631e-6 MJy * 10**(-0.4 * AB_ZERO_POINT)`` is the flux
density of a source giving 1 e/s (approximate AB zero points of the WFI filters)
and ``PIXEL_AREA_SR`` is the nominal 0.11" x 0.11" pixel (``pixelareasr``, the same
for every filter and detector; distortion changes the true pixel area across a
detector by up to a few per cent, which PHOTOM does not describe, as in romancal).
Hence a star of ``F`` e/s is ``F / nominal_gain`` DN/s and, summing its calibrated
pixels (MJy/sr x pixelareasr), ``F / nominal_gain * photmjsr * PIXEL_AREA_SR`` MJy
(:func:`electron_rate_to_mjy`); a sky of ``S`` e/s per pixel is ``S / nominal_gain
* photmjsr`` MJy/sr. ``uncertainty`` is 1 % of ``photmjsr``.

The PHOTOM reference (one per detector; CRDS selects it by detector only) has a
row for every optical element the schema knows: the eight imaging filters with
numbers, ``GRISM`` and ``PRISM`` with null ``photmjsr``/``uncertainty``/
``pixelareasr`` but a collecting area and an effective-area curve, and ``DARK``
all null.
"""

from __future__ import annotations

import math

import numpy as np

from .detector import DetectorModel
from .scene import PIVOT_WAVELENGTH_UM

JANSKY_AB_ZERO = 3631.0
AB_ZERO_POINT = {  # AB magnitude of a source giving 1 photo-electron per second (approximate)
    "F062": 26.4, "F087": 26.0, "F106": 26.4, "F129": 26.4,
    "F146": 27.6, "F158": 26.4, "F184": 25.9, "F213": 25.6,
}
PIXEL_AREA_SR = (0.11 / 3600.0 * math.pi / 180.0) ** 2
COLLECTING_AREA_M2 = 3.60  # primary mirror less the central obscuration
RELATIVE_UNCERTAINTY = 0.01
THROUGHPUT = 0.6  # of the effective-area curves: flat across each band
SPECTRAL_BANDS_UM = {"GRISM": (1.00, 1.93), "PRISM": (0.75, 1.80)}
NO_PHOTOMETRY = ("DARK",)


def mjy_per_electron_rate(optical_element: str) -> float:
    """Flux density (MJy) of a point source giving 1 e/s in ``optical_element``."""
    return JANSKY_AB_ZERO * 1e-6 * 10.0 ** (-0.4 * AB_ZERO_POINT[optical_element.upper()])


def photmjsr(optical_element: str, nominal_gain: float) -> float:
    """MJy/sr per DN/s of a flat-fielded image."""
    return mjy_per_electron_rate(optical_element) * nominal_gain / PIXEL_AREA_SR


def electron_rate_to_dn(rate_e_per_s, nominal_gain: float):
    return np.asarray(rate_e_per_s, dtype=float) / nominal_gain


def electron_rate_to_mjy(rate_e_per_s, optical_element: str, nominal_gain: float):
    """Point-source flux (MJy) of a star of ``rate_e_per_s``: what the calibrated pixels sum to."""
    return (electron_rate_to_dn(rate_e_per_s, nominal_gain) * photmjsr(optical_element, nominal_gain)
            * PIXEL_AREA_SR)


def _band(low_um: float, high_um: float, area_m2: float) -> dict:
    wavelength = np.linspace(low_um, high_um, 16, dtype=np.float32)
    return {"wavelength": wavelength,
            "effective_area": np.full(wavelength.shape, THROUGHPUT * area_m2, dtype=np.float32)}


def photom_reference_arrays(detector: DetectorModel, rng: np.random.Generator) -> dict:
    """PHOTOM ``phot_table`` of ``detector`` (module docstring)."""
    table = {}
    for element, pivot in PIVOT_WAVELENGTH_UM.items():
        value = photmjsr(element, detector.nominal_gain)
        table[element] = {"photmjsr": value, "uncertainty": RELATIVE_UNCERTAINTY * value,
                          "pixelareasr": PIXEL_AREA_SR, "collecting_area": COLLECTING_AREA_M2,
                          **_band(0.9 * pivot, 1.1 * pivot, COLLECTING_AREA_M2)}
    for element, (low, high) in SPECTRAL_BANDS_UM.items():
        table[element] = {"photmjsr": None, "uncertainty": None, "pixelareasr": None,
                          "collecting_area": COLLECTING_AREA_M2, **_band(low, high, COLLECTING_AREA_M2)}
    for element in NO_PHOTOMETRY:
        table[element] = dict.fromkeys(("photmjsr", "uncertainty", "pixelareasr", "collecting_area",
                                        "wavelength", "effective_area"))
    return {"phot_table": table}
