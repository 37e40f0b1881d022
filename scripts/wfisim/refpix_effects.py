"""What the reference pixels see: amplifier offsets, drifts and correlated noise, and the REFPIX reference.

Readout timing (the WFI's, as romancal's refpix step models it): a frame is read by
32 science outputs of ``ncols / 32`` columns each and by amp33, all in step, one
pixel per pixel time. Even outputs read their columns left to right, odd outputs
right to left, amp33 left to right; every row ends with ``ROW_OVERHEAD`` idle pixel
times. The pixel in row ``r`` at position ``s`` of its output's read order is read
at pixel time ``r * (width + ROW_OVERHEAD) + s``; a frame lasts
``nrows * (width + ROW_OVERHEAD)`` pixel times.

:class:`ReferencePixelEffects` adds to the DN of every kept read, for output ``c``
(amp33 is output 32):

* an offset: the output's fixed level (``N(0, amplifier_offset_dn)``, drawn once per
  detector) plus a fresh ``N(0, offset_jump_dn)`` each read;
* a drift: a level change linear in time across the read, ``N(0, drift_dn)`` from the
  first to the last pixel time;
* correlated noise: ``coupling[c]`` times one stream of 1/f noise (rolling off as
  1/f^3 above a knee) sampled at the pixel's read time; the stream is the same for
  all outputs, amp33 and the border pixels included.

A read's values come from a random stream keyed by (seed, read number), never
from the chunk's: the science array and amp33, simulated by separate calls, see
the same stream in the same read, and a ramp simulated with and without the
effect differs by exactly the effect.

:func:`refpix_coefficients` builds the REFPIX reference that describes the noise:
for every frequency, the Wiener weights that best predict ``coupling[c]`` times
the stream from the three reference streams the step builds (left border
columns, right border columns, amp33), given the stream's spectrum and each
reference stream's white read noise. The aliases of the border streams (four
samples per row) are left out: at small sizes the knee sits far below the row
frequency, at full size those streams are 32 times noisier than amp33's and
weigh little.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from .detector import BORDER, DetectorModel, detector_key
from .ramps import Chunk, RampEffect

N_SCIENCE_OUTPUTS = 32
AMP33 = N_SCIENCE_OUTPUTS  # output index of amp33
ROW_OVERHEAD = 12  # idle pixel times at the end of each row
_ELECTRONICS_STREAM = 0x7EF1  # keys the detector's electronics draws apart from its pixel truth
REFPIX_DESCRIPTION = ("Simulated reference-pixel coefficients: per-frequency Wiener weights of the left, "
                      "right and amp33 reference streams for the correlated read noise of the simulator.")


@dataclass(frozen=True)
class ElectronicsParameters:
    """Sizes of the effects (DN per read unless said otherwise); 0 turns one off."""

    # Scatter of the outputs' fixed levels. Off by default: a fixed level is bias, which the
    # SATURATION threshold must then include; refpix keeps it (each pixel's mean comes back).
    amplifier_offset_dn: float = 0.0
    offset_jump_dn: float = 3.0  # read-to-read scatter of each output's level
    drift_dn: float = 4.0  # scatter of the level change across one read
    correlated_noise_dn: float = 5.0  # rms of the common stream over one frame, before coupling
    knee_cycles_per_pixel_time: float = 1.0 / 500.0  # 1/f below, 1/f^3 above
    coupling_range: tuple[float, float] = (0.6, 1.4)  # uniform range of the outputs' couplings


@dataclass(frozen=True, eq=False)
class ReadoutElectronics:
    """The readout electronics of one detector: timing, couplings and levels of its 33 outputs."""

    nrows: int
    width: int  # columns per science output, also amp33's width
    coupling: np.ndarray  # (33,) gain of the correlated stream in each output
    fixed_offset: np.ndarray  # (33,) DN
    parameters: ElectronicsParameters

    @property
    def row_period(self) -> int:
        return self.width + ROW_OVERHEAD

    @property
    def frame_length(self) -> int:
        """Pixel times in one frame, idle ones included."""
        return self.nrows * self.row_period

    def output_order(self, readout: str, ncols: int) -> tuple[np.ndarray, np.ndarray]:
        """Output index and position in the output's read order of each column of ``readout``."""
        if readout == "amp33":
            if ncols != self.width:
                raise ValueError(f"amp33 has {ncols} columns, the electronics read {self.width}")
            return np.full(ncols, AMP33), np.arange(ncols)
        if readout != "science":
            raise ValueError(f"no reference-pixel effects for the {readout!r} readout")
        if ncols != N_SCIENCE_OUTPUTS * self.width:
            raise ValueError(f"the science array has {ncols} columns, the electronics read "
                             f"{N_SCIENCE_OUTPUTS} x {self.width}")
        output, position = np.divmod(np.arange(ncols), self.width)
        right_to_left = output % 2 == 1
        position[right_to_left] = self.width - 1 - position[right_to_left]
        return output, position

    def noise_spectrum(self, frequencies: np.ndarray) -> np.ndarray:
        """Power of the correlated stream per pixel time and unit frequency at ``frequencies`` (> 0).

        Normalized so that a frame generated on twice its length (see
        :meth:`correlated_stream`) has the rms ``correlated_noise_dn``.
        """
        knee = self.parameters.knee_cycles_per_pixel_time
        return self._spectrum_scale() * _spectrum_shape(frequencies, knee)

    def correlated_stream(self, rng: np.random.Generator) -> np.ndarray:
        """One frame of the correlated stream (DN, float32, ``frame_length`` pixel times).

        Drawn on twice the frame's length and cut, so that it does not wrap around
        like a stream made on the frame's own length would.
        """
        length = 2 * self.frame_length
        frequencies = np.fft.rfftfreq(length)
        amplitude = np.sqrt(length * self.noise_spectrum(frequencies) / 2.0)
        size = frequencies.size
        spectrum = amplitude * (rng.standard_normal(size) + 1j * rng.standard_normal(size))
        spectrum[-1] = spectrum[-1].real * np.sqrt(2.0)  # the Nyquist term of a real stream is real
        return np.fft.irfft(spectrum, length)[:self.frame_length].astype(np.float32)

    def _spectrum_scale(self) -> float:
        length = 2 * self.frame_length
        shape = _spectrum_shape(np.fft.rfftfreq(length), self.parameters.knee_cycles_per_pixel_time)
        # Variance of a real stream from its one-sided spectrum: inner bins count twice.
        variance_per_unit = (2.0 * shape[1:-1].sum() + shape[-1]) / length
        return self.parameters.correlated_noise_dn**2 / variance_per_unit


def _spectrum_shape(frequencies: np.ndarray, knee: float) -> np.ndarray:
    """1/f below the knee, 1/f^3 above it; no power at zero frequency (that is the offset's)."""
    shape = np.zeros(frequencies.shape)
    positive = frequencies > 0
    f = frequencies[positive]
    shape[positive] = 1.0 / (f * (1.0 + (f / knee) ** 2))
    return shape


def readout_electronics(detector: DetectorModel,
                        parameters: ElectronicsParameters = ElectronicsParameters()) -> ReadoutElectronics:
    """The electronics of ``detector``, drawn from its seed and name (the same for every exposure)."""
    nrows, ncols = detector.shape
    width = ncols // N_SCIENCE_OUTPUTS
    amp33_width = detector.amp33_bias.shape[1]
    if ncols % N_SCIENCE_OUTPUTS or width < BORDER or amp33_width != width:
        raise ValueError(f"reference-pixel effects need {N_SCIENCE_OUTPUTS} outputs of at least {BORDER} "
                         f"columns and an amp33 as wide as one: the detector has {ncols} columns and an "
                         f"amp33 of {amp33_width}")
    rng = np.random.default_rng(np.random.SeedSequence(
        [detector.seed, detector_key(detector.name), _ELECTRONICS_STREAM]))
    coupling = rng.uniform(*parameters.coupling_range, N_SCIENCE_OUTPUTS + 1)
    fixed_offset = parameters.amplifier_offset_dn * rng.standard_normal(N_SCIENCE_OUTPUTS + 1)
    return ReadoutElectronics(nrows, width, coupling, fixed_offset, parameters)


@dataclass(frozen=True, eq=False)
class _ReadValues:
    offset: np.ndarray  # (33,) DN
    drift: np.ndarray  # (33,) DN from the first to the last pixel time of the frame
    stream: np.ndarray  # (frame_length,) DN


class ReferencePixelEffects(RampEffect):
    """Offsets, drifts and correlated noise of the readout, for the science array and amp33 alike.

    Pass the same object to both ``simulate_ramp`` calls of an exposure: it keeps
    each kept read's values (a frame of the correlated stream, float32) until it
    is dropped, so that both readouts see them.
    """

    def __init__(self, electronics: ReadoutElectronics, seed):
        self.electronics = electronics
        self._entropy = [seed] if np.isscalar(seed) else list(seed)
        self._reads: dict[int, _ReadValues] = {}
        self._lock = threading.Lock()

    def read_values(self, read_number: int) -> _ReadValues:
        """The offsets, drifts and correlated stream of one read (drawn once, then kept)."""
        with self._lock:
            if read_number not in self._reads:
                electronics, parameters = self.electronics, self.electronics.parameters
                stream = np.random.SeedSequence([*self._entropy, _ELECTRONICS_STREAM, read_number])
                rng = np.random.default_rng(stream)
                jump = parameters.offset_jump_dn * rng.standard_normal(N_SCIENCE_OUTPUTS + 1)
                drift = parameters.drift_dn * rng.standard_normal(N_SCIENCE_OUTPUTS + 1)
                self._reads[read_number] = _ReadValues(electronics.fixed_offset + jump, drift,
                                                       electronics.correlated_stream(rng))
            return self._reads[read_number]

    def add_signal(self, chunk: Chunk, read_number: int, charge: np.ndarray, dn: np.ndarray) -> None:
        electronics = self.electronics
        values = self.read_values(read_number)
        output, position = electronics.output_order(chunk.readout, chunk.ncols)
        rows = np.arange(chunk.rows.start, chunk.rows.stop)
        read_time = rows[:, None] * electronics.row_period + position[None, :]
        fraction_of_frame = read_time / (electronics.frame_length - 1) - 0.5
        dn += values.offset[output] + values.drift[output] * fraction_of_frame
        dn += electronics.coupling[output] * values.stream[read_time]


def refpix_coefficients(detector: DetectorModel,
                        parameters: ElectronicsParameters = ElectronicsParameters()) -> dict[str, np.ndarray]:
    """gamma, zeta, alpha (32, frame_length // 2 + 1) complex128 describing ``detector``'s correlated noise.

    For output ``c`` and reference stream ``i`` (left, right, amp33) with coupling
    ``k_i`` and white-noise power ``N_i``, the Wiener weight at a frequency with
    stream power ``S`` is ``k_c (S k_i / N_i) / (1 + S sum_j k_j^2 / N_j)``. A
    reference stream holding ``m`` of every ``row_period`` samples, scaled up to
    full strength, carries ``N_i = sigma_i^2 row_period / m``. The weights are
    divided by the step's normalization (2 x bins / frame length).
    """
    electronics = readout_electronics(detector, parameters)
    length = electronics.frame_length
    frequencies = np.fft.rfftfreq(length)
    power = electronics.noise_spectrum(frequencies)
    # A frame's mean wanders as much as its slowest oscillation: the zero-frequency bin
    # gets the power of the first one (the stream itself has none at zero frequency).
    power[0] = power[1]
    period = electronics.row_period
    # White noise of each reference stream per pixel time; the border streams hold
    # BORDER samples of each row, amp33's holds ``width`` (its idle ones interpolated).
    reference_noise = np.array([
        np.median(detector.read_noise[:, :BORDER]) ** 2 * period / BORDER,
        np.median(detector.read_noise[:, -BORDER:]) ** 2 * period / BORDER,
        np.median(detector.amp33_read_noise) ** 2 * period / electronics.width,
    ])
    reference_coupling = electronics.coupling[[0, N_SCIENCE_OUTPUTS - 1, AMP33]]
    information = power[None, :] * (reference_coupling / reference_noise)[:, None]  # (3, nfreq)
    shrink = 1.0 + (information * reference_coupling[:, None]).sum(axis=0)
    per_reference = information / shrink  # weight per unit coupling of the output
    step_normalization = 2.0 * frequencies.size / length
    weights = electronics.coupling[:N_SCIENCE_OUTPUTS, None, None] * per_reference[None] / step_normalization
    gamma, zeta, alpha = (weights[:, i, :].astype(np.complex128) for i in range(3))
    return {"gamma": gamma, "zeta": zeta, "alpha": alpha}


def fits_readout_layout(shape: tuple[int, int]) -> bool:
    """Whether 32 outputs (and amp33) can read an array of ``shape``: what the refpix step needs."""
    nrows, ncols = shape
    return ncols % N_SCIENCE_OUTPUTS == 0 and ncols >= 4 * N_SCIENCE_OUTPUTS and nrows >= 2 * BORDER


def build_refpix_reference(detector: DetectorModel, rng: np.random.Generator) -> dict:
    """The REFPIX builder for ``wfisim.references.REFERENCE_KINDS`` (deterministic: ``rng`` is unused)."""
    return refpix_coefficients(detector)
