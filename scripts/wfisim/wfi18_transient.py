"""WFI18's first-read transient (romancal 1.1's WFI18TransientStep corrects it): the ramp effect.

The first read of WFI18 carries ``a exp(-t / tau_a) + b exp(-t / tau_b)`` DN at the time t
the pixel is read within that frame (``romanpipe.readpattern.pixel_read_times``, the readout
model the step uses); later reads do not. Its parameters vary from exposure to exposure, so
they are given, not drawn from the detector.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from romanpipe.readpattern import pixel_read_times

import numpy as np

from .ramps import Chunk, RampEffect

WFI18 = 18


@dataclass(frozen=True, eq=False)
class FirstReadTransient(RampEffect):
    """Adds the transient to read 1 of the science array of a WFI18 readout of ``shape``."""

    shape: tuple[int, int]
    frame_time: float
    a: float
    b: float
    tau_a: float
    tau_b: float

    @cached_property
    def signal(self) -> np.ndarray:
        """The transient (DN) of every pixel in the first read."""
        t = pixel_read_times(self.shape, self.frame_time, WFI18)
        return self.a * np.exp(-t / self.tau_a) + self.b * np.exp(-t / self.tau_b)

    def add_signal(self, chunk: Chunk, read_number: int, charge: np.ndarray, dn: np.ndarray) -> None:
        if chunk.readout == "science" and read_number == 1:
            dn += self.signal[chunk.rows]
