"""Per-pixel truth of one H4RG detector: bias, gain, noise, dark current, defects, full well.

A :class:`DetectorModel` is built deterministically from a seed and the
detector's name, so every exposure of a campaign and every reference file made
for it describe the same detector. Its 4-pixel border and the amp33 output are
reference pixels: they are read like the rest but collect no charge.

The saturation *level* is what a full pixel reads (bias + full well / gain). The
saturation *threshold* that goes into the SATURATION reference sits a few
single-read noise sigmas below it: a resultant of a full pixel scatters around
the level, and a threshold at the level itself would miss half of them.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .ramps import Readout

BORDER = 4  # reference-pixel border on every side (pixels)
FULL_FRAME_SIZE = 4096
FULL_AMP33_WIDTH = 128
SATURATION_MARGIN_SIGMA = 5.0  # threshold = level - this many single-read noise sigmas


def amp33_width(ncols: int) -> int:
    """128 columns at full size; a proportional (at least 4) width for small test arrays."""
    return FULL_AMP33_WIDTH if ncols >= FULL_FRAME_SIZE else max(4, ncols // 32)


@dataclass(frozen=True)
class DetectorParameters:
    """The distributions detector truth is drawn from (units in the names)."""

    bias_dn: float = 10_000.0
    bias_scatter_dn: float = 600.0
    gain_e_per_dn: float = 2.0
    gain_scatter: float = 0.05
    gain_limits: tuple[float, float] = (1.8, 2.2)
    read_noise_dn: float = 6.0
    read_noise_scatter_dn: float = 0.3
    read_noise_limits: tuple[float, float] = (5.0, 7.0)
    dark_current_e_per_s: float = 0.005  # median of a lognormal
    dark_current_log_scatter: float = 0.5
    full_well_e: float = 85_000.0
    full_well_scatter: float = 0.015  # relative
    # Defect fractions of the light-sensitive pixels; a tiny test array still gets one of each.
    dead_fraction: float = 5e-4
    hot_fraction: float = 5e-4
    ad_floor_fraction: float = 2e-4
    hot_dark_current_e_per_s: tuple[float, float] = (50.0, 2_000.0)  # log-uniform
    ad_floor_bias_dn: tuple[float, float] = (-3_000.0, -1_000.0)  # so those pixels read 0 DN


@dataclass(frozen=True, eq=False)
class DetectorModel:
    """Truth of one detector; arrays are (nrows, ncols) of the full readout, border included."""

    name: str
    seed: int
    bias: np.ndarray  # DN
    gain: np.ndarray  # e/DN
    read_noise: np.ndarray  # DN per read
    dark_current: np.ndarray  # e/s; 0 on reference and dead pixels
    full_well: np.ndarray  # e
    dead: np.ndarray  # bool: no response to light or dark current
    hot: np.ndarray  # bool: dark current far above the rest
    ad_floor: np.ndarray  # bool: bias below 0 DN, so the pixel sits at the A/D floor
    amp33_bias: np.ndarray  # DN, (nrows, amp33 width)
    amp33_read_noise: np.ndarray  # DN per read
    border: int = BORDER
    # The one gain (e/DN) the flat-fielded, photometrically calibrated data refer to (wfisim.flat).
    nominal_gain: float = DetectorParameters.gain_e_per_dn

    @property
    def shape(self) -> tuple[int, int]:
        return self.bias.shape

    @cached_property
    def reference_pixels(self) -> np.ndarray:
        """True on the border of reference pixels."""
        return border_mask(self.shape, self.border)

    @cached_property
    def photosensitive(self) -> np.ndarray:
        return ~self.reference_pixels & ~self.dead

    @property
    def saturation_level(self) -> np.ndarray:
        """DN a pixel at full well reads, noise aside (float32)."""
        return (self.bias + self.full_well / self.gain).astype(np.float32)

    @property
    def saturation_threshold(self) -> np.ndarray:
        """DN at which a resultant counts as saturated: the SATURATION reference's data."""
        return (self.saturation_level - SATURATION_MARGIN_SIGMA * self.read_noise).astype(np.float32)

    def electron_rate(self, photon_rate: np.ndarray) -> np.ndarray:
        """Charge rate (e/s) the pixels collect from a photo-electron rate image plus dark current."""
        if photon_rate.shape != self.shape:
            raise ValueError(f"rate image {photon_rate.shape} does not match detector {self.shape}")
        return np.where(self.photosensitive, photon_rate, 0.0) + self.dark_current

    def science_readout(self) -> Readout:
        return Readout("science", self.bias, self.gain, self.read_noise, self.full_well)

    def amp33_readout(self) -> Readout:
        # No charge ever reaches amp33, so its gain and full well only have to be harmless.
        ones = np.ones_like(self.amp33_bias)
        return Readout("amp33", self.amp33_bias, ones, self.amp33_read_noise,
                       np.full_like(self.amp33_bias, np.inf))


def detector_key(name: str) -> int:
    """A stable integer for a detector name, to seed its random streams (Python's hash() is salted)."""
    return zlib.crc32(name.upper().encode())


def build_detector(name: str, shape: tuple[int, int], seed: int,
                   parameters: DetectorParameters = DetectorParameters()) -> DetectorModel:
    """The detector called ``name`` of the campaign with ``seed``, as (nrows, ncols) readout."""
    nrows, ncols = shape
    if min(shape) <= 2 * BORDER:
        raise ValueError(f"detector shape {shape} leaves no pixels inside the {BORDER}-pixel border")
    p = parameters
    rng = np.random.default_rng(np.random.SeedSequence([seed, detector_key(name)]))

    def scattered(mean, scatter, size, limits=None):
        values = rng.normal(mean, scatter, size)
        return np.clip(values, *limits) if limits else values

    bias = scattered(p.bias_dn, p.bias_scatter_dn, shape)
    gain = scattered(p.gain_e_per_dn, p.gain_e_per_dn * p.gain_scatter, shape, p.gain_limits)
    read_noise = scattered(p.read_noise_dn, p.read_noise_scatter_dn, shape, p.read_noise_limits)
    full_well = p.full_well_e * (1.0 + p.full_well_scatter * rng.standard_normal(shape))
    dark_current = p.dark_current_e_per_s * np.exp(p.dark_current_log_scatter * rng.standard_normal(shape))

    # Defects sit on distinct light-sensitive pixels.
    interior = np.flatnonzero(~border_mask(shape))
    counts = [max(1, round(fraction * interior.size))
              for fraction in (p.dead_fraction, p.hot_fraction, p.ad_floor_fraction)]
    chosen = rng.choice(interior, size=sum(counts), replace=False)
    dead_idx, hot_idx, floor_idx = np.split(chosen, np.cumsum(counts)[:-1])
    dead, hot, ad_floor = (_mask_from_indices(shape, idx) for idx in (dead_idx, hot_idx, floor_idx))

    low, high = p.hot_dark_current_e_per_s
    dark_current[hot] = np.exp(rng.uniform(np.log(low), np.log(high), hot.sum()))
    bias[ad_floor] = rng.uniform(*p.ad_floor_bias_dn, ad_floor.sum())
    dark_current[dead | border_mask(shape)] = 0.0

    width = amp33_width(ncols)
    amp33_bias = scattered(p.bias_dn, p.bias_scatter_dn, (nrows, width))
    amp33_read_noise = scattered(p.read_noise_dn, p.read_noise_scatter_dn, (nrows, width),
                                 p.read_noise_limits)

    f32 = np.float32
    return DetectorModel(
        name=name.upper(), seed=seed, bias=bias.astype(f32), gain=gain.astype(f32),
        read_noise=read_noise.astype(f32), dark_current=dark_current.astype(f32),
        full_well=full_well.astype(f32), dead=dead, hot=hot, ad_floor=ad_floor,
        amp33_bias=amp33_bias.astype(f32), amp33_read_noise=amp33_read_noise.astype(f32),
        nominal_gain=p.gain_e_per_dn,
    )


def border_mask(shape: tuple[int, int], border: int = BORDER) -> np.ndarray:
    """True on the ``border`` outermost rows and columns: the reference pixels."""
    mask = np.ones(shape, dtype=bool)
    mask[border:-border, border:-border] = False
    return mask


def _mask_from_indices(shape, flat_indices) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask.flat[flat_indices] = True
    return mask
