"""The dark decay signal of romancal 1.1 (its DarkDecayStep): the ramp effect and its reference.

Each detector's pixels read ``A exp(-t / tau)`` DN more than their charge says, with t the
time since the middle of the first read: read r of a pixel at ``(r - 1.5) frame_time +
t_pixel`` (``romanpipe.readpattern.pixel_read_times``, the readout model the step uses).
A (about 0.4 DN) and tau (about 23 s, romancal documentation 1.1, "dark_decay") are drawn
per detector from its seed. The DARKDECAYSIGNAL reference holds every simulated
detector's pair in one ``decay_table`` (CRDS selects it by time only).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cached_property

from romanpipe.readpattern import pixel_read_times

import numpy as np

from .detector import DetectorModel, detector_key
from .ramps import Chunk, RampEffect

FIRST_READ_OFFSET = 1.5
AMPLITUDE_DN = (0.3, 0.5)
TIME_CONSTANT_S = (18.0, 28.0)


def decay_parameters(detector: DetectorModel) -> tuple[float, float]:
    """(amplitude DN, time constant s) of ``detector``, the same for every call."""
    rng = np.random.default_rng([detector.seed, detector_key(detector.name), zlib.crc32(b"dark_decay")])
    return float(rng.uniform(*AMPLITUDE_DN)), float(rng.uniform(*TIME_CONSTANT_S))


@dataclass(frozen=True, eq=False)
class DarkDecaySignal(RampEffect):
    """Adds the decay signal to every kept read of the science array."""

    shape: tuple[int, int]
    sca: int
    amplitude: float
    time_constant: float
    frame_time: float

    @classmethod
    def of(cls, detector: DetectorModel, frame_time: float) -> DarkDecaySignal:
        amplitude, time_constant = decay_parameters(detector)
        return cls(detector.shape, int(detector.name[3:]), amplitude, time_constant, frame_time)

    @cached_property
    def pixel_map(self) -> np.ndarray:
        return self.amplitude * np.exp(-pixel_read_times(self.shape, self.frame_time, self.sca)
                                       / self.time_constant)

    def signal(self, read_number: int, rows: slice = slice(None)) -> np.ndarray:
        """The decay signal (DN) of read ``read_number`` for the pixels of ``rows``."""
        factor = np.exp(-(read_number - FIRST_READ_OFFSET) * self.frame_time / self.time_constant)
        return self.pixel_map[rows] * factor

    def add_signal(self, chunk: Chunk, read_number: int, charge: np.ndarray, dn: np.ndarray) -> None:
        if chunk.readout != "science":
            return
        dn += self.signal(read_number, chunk.rows)


def darkdecaysignal_table(detectors, *, simulated: bool = True) -> dict:
    """The DARKDECAYSIGNAL ``decay_table``: {detector name: {amplitude, time_constant}}.

    ``simulated`` false: the campaign's ramps carry no decay signal, so the amplitudes are 0.
    """
    table = {}
    for detector in detectors:
        amplitude, time_constant = decay_parameters(detector)
        table[detector.name] = {"amplitude": amplitude if simulated else 0.0, "time_constant": time_constant}
    return table
