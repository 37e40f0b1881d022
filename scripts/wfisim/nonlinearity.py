"""Classic detector nonlinearity: the simulated response and the LINEARITY reference that undoes it.

A pixel's read-out signal falls short of the charge it holds as the charge
grows (the pixel's capacitance changes with its voltage). Per pixel, with
``m`` the measured signal above bias and ``s = charge / gain`` the linear
signal (both DN), the response is defined by its inverse, a known polynomial:

    s = P(m) = m + a2 m^2 + a3 m^3,    a2, a3 >= 0

so a full pixel reads ``full_well_deficit`` (a few per cent) below linear.
:class:`NonlinearResponse` is the ramp effect: it replaces the linear signal of
every kept read by ``m = P^-1(s)`` (Newton's method), computed from the charge,
so the bias and the read noise the electronics add are not distorted.

The LINEARITY reference is applied to raw DN. In Roman no superbias is
subtracted before the linearity step, so the data still carry the per-pixel
bias ``b`` (~10^4 DN). The reference's polynomial is therefore
``F_c = b + P(F - b)`` written as a polynomial in raw DN ``F``: the Taylor shift
of ``P`` by ``-b``, exact for a polynomial, so it inverts the response over the
whole range from bias to saturation, up to the float32 rounding of the
coefficients (checked in tests/test_linearity.py). The bias stays in the
corrected data, where the later steps expect it.

Both come from :func:`nonlinear_response`, which draws the per-pixel
coefficients from the detector's seed and name, so every exposure of a
campaign and its LINEARITY reference describe the same pixels.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from math import comb

from romanpipe.dqflags import pixel

import numpy as np

from .detector import SATURATION_MARGIN_SIGMA, DetectorModel, detector_key
from .ramps import Chunk, RampEffect

# Pixels per detector whose LINEARITY coefficients are unknown (NaN) or flagged NO_LIN_CORR.
UNCORRECTED_LINEARITY_FRACTION = 1e-4
NEWTON_TOLERANCE_DN = 1e-9
NEWTON_MAX_ITERATIONS = 20  # converges in about 4 from a few per cent of nonlinearity


@dataclass(frozen=True)
class NonlinearityParameters:
    """The distributions the per-pixel nonlinearity is drawn from."""

    full_well_deficit: float = 0.06  # fraction a full pixel reads below linear (median)
    full_well_deficit_scatter: float = 0.1  # relative
    cubic_share: float = 0.3  # share of the cubic term in the correction at full well


@dataclass(frozen=True, eq=False)
class NonlinearResponse(RampEffect):
    """The non-linear response of the science array of one detector.

    ``linearization`` (ncoeffs, nrows, ncols), float64: coefficients of P,
    lowest order first (``[0] = 0``, ``[1] = 1``), in DN above bias.
    """

    gain: np.ndarray  # e/DN
    linearization: np.ndarray

    def linear_signal(self, measured: np.ndarray, rows: slice = slice(None)) -> np.ndarray:
        """``s = P(m)`` for the pixels of ``rows``."""
        return _polynomial(self.linearization[:, rows], measured)

    def measured_signal(self, linear: np.ndarray, rows: slice = slice(None)) -> np.ndarray:
        """``m = P^-1(s)`` for the pixels of ``rows``, by Newton's method.

        P is increasing and convex for m >= 0 and P(m) >= m, so starting from
        ``m = s`` the iterates decrease monotonically onto the root.
        """
        coefficients = self.linearization[:, rows]
        derivative = np.stack([n * coefficients[n] for n in range(1, len(coefficients))])
        measured = np.array(linear, dtype=np.float64)
        for _ in range(NEWTON_MAX_ITERATIONS):
            step = (_polynomial(coefficients, measured) - linear) / _polynomial(derivative, measured)
            measured -= step
            if np.max(np.abs(step), initial=0.0) <= NEWTON_TOLERANCE_DN:
                return measured
        raise RuntimeError(f"nonlinearity inversion did not converge in {NEWTON_MAX_ITERATIONS} steps")

    def add_signal(self, chunk: Chunk, read_number: int, charge: np.ndarray, dn: np.ndarray) -> None:
        if chunk.readout != "science":  # amp33 collects no charge and has its own shape
            return
        linear = charge / self.gain[chunk.rows]
        dn += self.measured_signal(linear, chunk.rows) - linear


def nonlinear_response(detector: DetectorModel,
                       parameters: NonlinearityParameters = NonlinearityParameters()) -> NonlinearResponse:
    """The nonlinearity of ``detector``, the same for every call with the same detector."""
    p = parameters
    stream = [detector.seed, detector_key(detector.name), zlib.crc32(b"nonlinearity")]
    rng = np.random.default_rng(np.random.SeedSequence(stream))
    deficit = p.full_well_deficit * (1.0 + p.full_well_deficit_scatter * rng.standard_normal(detector.shape))
    deficit = np.clip(deficit, 0.0, 0.5)
    gain = detector.gain.astype(np.float64)
    full_linear = detector.full_well.astype(np.float64) / gain
    full_measured = full_linear * (1.0 - deficit)
    # P(full_measured) = full_linear fixes the sum of the relative quadratic and cubic terms at full well.
    excess = full_linear / full_measured - 1.0
    quadratic = (1.0 - p.cubic_share) * excess / full_measured
    cubic = p.cubic_share * excess / full_measured**2
    linearization = np.stack([np.zeros(detector.shape), np.ones(detector.shape), quadratic, cubic])
    return NonlinearResponse(gain=gain, linearization=linearization)


def raw_dn_coefficients(linearization: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Coefficients c_n (lowest first, float64) of ``F_c = b + P(F - b)`` as a polynomial in raw DN F.

    Taylor shift: c_n = sum_{k >= n} a_k C(k, n) (-b)^(k - n), plus b in c_0.
    """
    bias = bias.astype(np.float64)
    shifted = np.zeros(linearization.shape)
    for k, a_k in enumerate(linearization):
        for n in range(k + 1):
            shifted[n] += a_k * comb(k, n) * (-bias) ** (k - n)
    shifted[0] += bias
    return shifted


def saturation_threshold(detector: DetectorModel, response: NonlinearResponse) -> np.ndarray:
    """SATURATION threshold (DN, float32) of a non-linear detector: what a full pixel reads, less margin.

    The same margin as ``DetectorModel.saturation_threshold``, applied to the
    non-linear full-well reading ``b + P^-1(full_well / gain)``.
    """
    full_linear = detector.full_well.astype(np.float64) / response.gain
    level = detector.bias + response.measured_signal(full_linear)
    return (level - SATURATION_MARGIN_SIGMA * detector.read_noise).astype(np.float32)


def linearity_reference_arrays(detector: DetectorModel, rng: np.random.Generator) -> dict:
    """LINEARITY ``coeffs`` and ``dq`` of ``detector`` (a ``references.Builder``).

    A few light-sensitive pixels get a NaN coefficient and as many others
    NO_LIN_CORR, so the step's special cases occur in simulated data.
    """
    response = nonlinear_response(detector)
    coeffs = raw_dn_coefficients(response.linearization, detector.bias).astype(np.float32)
    dq = np.zeros(detector.shape, dtype=np.uint32)
    light_sensitive = np.flatnonzero(~detector.reference_pixels)
    count = max(1, round(UNCORRECTED_LINEARITY_FRACTION * light_sensitive.size))
    unknown, flagged = np.split(rng.choice(light_sensitive, 2 * count, replace=False), 2)
    rows, cols = np.unravel_index(unknown, detector.shape)
    coeffs[rng.integers(0, len(coeffs), count), rows, cols] = np.nan
    dq.flat[flagged] |= np.uint32(pixel.NO_LIN_CORR)
    return {"coeffs": coeffs, "dq": dq}


INVERSE_DEGREE = 5
INVERSE_SAMPLES = 33
INVERSE_BLOCK_ROWS = 256


def inverse_linearity_coefficients(detector: DetectorModel) -> np.ndarray:
    """Coefficients (lowest first, float64) of ``F = b + P^-1(F_c - b)`` as a polynomial in linear DN F_c.

    The raw DN a pixel reads for a linear signal: P^-1 is fitted (least squares, degree
    INVERSE_DEGREE) to the exact inverse (Newton's method) at INVERSE_SAMPLES signals from
    0 to the pixel's full well, then shifted to raw DN as the LINEARITY polynomial is.
    """
    response = nonlinear_response(detector)
    full_linear = detector.full_well.astype(np.float64) / response.gain
    fraction = np.linspace(0.0, 1.0, INVERSE_SAMPLES)
    # One design matrix for every pixel: the signal as a fraction of the pixel's full well.
    solve = np.linalg.pinv(np.vander(fraction, INVERSE_DEGREE + 1, increasing=True))
    scaled = np.empty((INVERSE_DEGREE + 1, *detector.shape))
    for start in range(0, detector.shape[0], INVERSE_BLOCK_ROWS):
        rows = slice(start, start + INVERSE_BLOCK_ROWS)
        linear = fraction[:, None, None] * full_linear[None, rows]
        measured = response.measured_signal(linear, rows)
        scaled[:, rows] = np.tensordot(solve, measured, axes=1)
    powers = np.arange(INVERSE_DEGREE + 1)[:, None, None]
    return raw_dn_coefficients(scaled / full_linear[None] ** powers, detector.bias)


def inverse_linearity_reference_arrays(detector: DetectorModel, rng: np.random.Generator) -> dict:
    """INVERSELINEARITY ``coeffs`` and ``dq`` of ``detector`` (a ``references.Builder``): the
    raw DN of a linear signal (romancal 1.1's resultant-aware linearity rebuilds reads with it)."""
    return {"coeffs": inverse_linearity_coefficients(detector).astype(np.float32),
            "dq": np.zeros(detector.shape, dtype=np.uint32)}


def _polynomial(coefficients: np.ndarray, x: np.ndarray) -> np.ndarray:
    """sum_n coefficients[n] x^n by Horner's scheme (coefficients lowest order first)."""
    result = np.zeros(np.broadcast_shapes(coefficients.shape[1:], np.shape(x))) + coefficients[-1]
    for coefficient in coefficients[-2::-1]:
        result *= x
        result += coefficient
    return result
