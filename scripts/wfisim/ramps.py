"""The ramp generator: charge-rate image + pixel electronics + MA table -> uint16 resultants.

Physics, read by read (read ``k`` at ``k * frame_time`` after the reset):

* the charge grows by a Poisson draw of ``rate * frame_time`` electrons (skipped
  reads that no resultant keeps still collect charge);
* the charge is capped at the pixel's full well (saturation);
* a kept read digitizes to ``charge / gain + bias + read_noise * N(0, 1)`` DN;
* a resultant is the mean of its reads, rounded and clipped to the 16-bit range
  [0, 65535]; the clip at 0 is the A/D floor.

Late reads of a multi-read resultant can saturate while the mean stays below the
saturation level (the "dilution" of the saturation step); nothing special is
needed for it, it falls out of the averaging.

The array is processed in chunks of rows, each with its own random stream keyed
by (seed, readout, chunk index), so the result is the same for any number of
worker threads. numpy's generators release the GIL while they fill arrays,
so threads overlap the expensive draws.

Later effects plug in as :class:`RampEffect` objects, called for every chunk at
every read: charge effects (cosmic rays, with their IPC) before the full-well
cap, signal effects (nonlinearity on the accumulated charge, reference-pixel
offsets and drifts, correlated noise) on the read's DN. Effects on the rate
(flat-field structure) multiply the rate image before it gets here; geometric
distortion belongs to where sources are placed on the detector.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .matables import MaTable

log = logging.getLogger(__name__)

ROWS_PER_CHUNK = 32  # part of the definition of the random streams: changing it changes the output
ADC_MAX = 65535
# Pixels expecting at most this many electrons per read draw them by inverting a per-pixel
# table of the Poisson tail, about 3x faster than Generator.poisson for sky-level means.
TABULATED_POISSON_MAX_MEAN = 8.0
_READOUT_STREAM = {"science": 0, "amp33": 1}


@dataclass(frozen=True, eq=False)
class Readout:
    """Per-pixel electronics of one array read up the ramp: the science array or amp33."""

    name: str
    bias: np.ndarray  # DN
    gain: np.ndarray  # e/DN
    read_noise: np.ndarray  # DN per read
    full_well: np.ndarray  # e


@dataclass(frozen=True)
class Chunk:
    """The block of rows one worker simulates, as effects see it."""

    readout: str
    rows: slice
    ncols: int
    frame_time: float
    rng: np.random.Generator  # the chunk's own stream: effects stay deterministic too

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows.stop - self.rows.start, self.ncols)


class RampEffect:
    """A per-read effect. Override the hooks that apply; both work in place on one chunk."""

    def add_charge(self, chunk: Chunk, read_number: int, charge: np.ndarray) -> None:
        """Add electrons collected by ``read_number`` (e.g. a cosmic ray); before the full-well cap."""

    def add_signal(self, chunk: Chunk, read_number: int, charge: np.ndarray, dn: np.ndarray) -> None:
        """Change the DN of a kept read (e.g. nonlinearity of ``charge``, reference drifts)."""


@dataclass(frozen=True, eq=False)
class Ramp:
    """The simulated resultants and where saturation set in."""

    resultants: np.ndarray  # uint16 (nresultants, nrows, ncols)
    first_saturated_resultant: np.ndarray  # int16 (nrows, ncols): first resultant with a full read, -1 none


def simulate_ramp(electron_rate: np.ndarray, readout: Readout, table: MaTable,
                  seed: int | Sequence[int], *, effects: Sequence[RampEffect] = (),
                  workers: int | None = None) -> Ramp:
    """Resultants of ``readout`` collecting ``electron_rate`` (e/s per pixel) through ``table``."""
    shape = readout.bias.shape
    if electron_rate.shape != shape:
        raise ValueError(f"rate image {electron_rate.shape} does not match the readout {shape}")
    nrows, ncols = shape
    resultants = np.empty((table.nresultants, nrows, ncols), dtype=np.uint16)
    first_saturated = np.empty(shape, dtype=np.int16)
    entropy = [seed] if np.isscalar(seed) else list(seed)
    starts = range(0, nrows, ROWS_PER_CHUNK)

    def run(chunk_index: int) -> None:
        rows = slice(starts[chunk_index], min(starts[chunk_index] + ROWS_PER_CHUNK, nrows))
        stream = np.random.SeedSequence(entropy, spawn_key=(_READOUT_STREAM[readout.name], chunk_index))
        chunk = Chunk(readout.name, rows, ncols, table.frame_time, np.random.default_rng(stream))
        _simulate_chunk(chunk, electron_rate[rows], readout, table, effects,
                        resultants[:, rows], first_saturated[rows])

    workers = min(workers or os.cpu_count() or 1, len(starts))
    if workers == 1:
        for index in range(len(starts)):
            run(index)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, range(len(starts))))  # list() re-raises a worker's exception
    log.debug("simulated %s ramp %s with %d resultants", readout.name, shape, table.nresultants)
    return Ramp(resultants, first_saturated)


def _simulate_chunk(chunk: Chunk, electron_rate, readout: Readout, table: MaTable, effects,
                    resultants_out: np.ndarray, first_saturated_out: np.ndarray) -> None:
    rows, shape, rng = chunk.rows, chunk.shape, chunk.rng
    electrons_per_frame = electron_rate.astype(np.float64) * table.frame_time
    inverse_gain = 1.0 / readout.gain[rows].astype(np.float64)
    bias = readout.bias[rows].astype(np.float64)
    read_noise = readout.read_noise[rows].astype(np.float64)
    full_well = readout.full_well[rows].astype(np.float64)

    electrons = PoissonDraws(electrons_per_frame, rng)
    charge = np.zeros(shape)
    dn = np.empty(shape)
    dn_sum = np.zeros(shape)
    noise = np.empty(shape)
    first_saturated_out[...] = -1
    kept_by = {read: index for index, reads in enumerate(table.read_pattern) for read in reads}

    for read in range(1, table.last_read + 1):
        charge += electrons.draw()
        for effect in effects:
            effect.add_charge(chunk, read, charge)
        np.minimum(charge, full_well, out=charge)
        index = kept_by.get(read)
        if index is None:
            continue
        rng.standard_normal(out=noise)
        np.multiply(charge, inverse_gain, out=dn)
        dn += bias
        noise *= read_noise
        dn += noise
        for effect in effects:
            effect.add_signal(chunk, read, charge, dn)
        dn_sum += dn
        reads = table.read_pattern[index]
        if read == reads[-1]:
            # Charge never falls, so a full last read means a full read somewhere in the resultant.
            newly_full = (charge >= full_well) & (first_saturated_out < 0)
            first_saturated_out[newly_full] = index
            dn_sum /= len(reads)
            np.rint(dn_sum, out=dn_sum)
            np.clip(dn_sum, 0, ADC_MAX, out=dn_sum)
            resultants_out[index] = dn_sum
            dn_sum[...] = 0.0


class PoissonDraws:
    """Repeated Poisson draws with a fixed mean per pixel (the electrons of one frame).

    Small means use inversion: with ``tail[j] = P(X > j)`` and ``u`` uniform,
    ``X = #{j : u < tail[j]}``. The table is cut where every tail is below 1e-16,
    so the truncation is far below anything a test could see. Larger means (stars,
    hot pixels) fall back to ``Generator.poisson``.
    """

    def __init__(self, mean: np.ndarray, rng: np.random.Generator):
        self.rng = rng
        self.large = mean > TABULATED_POISSON_MAX_MEAN
        self.large_mean = mean[self.large]
        small_mean = np.where(self.large, 0.0, mean)
        # Probabilities P(X = j) by recurrence up to where they vanish, then tails summed
        # from the far end so that small tails keep their precision.
        probabilities = [np.exp(-small_mean)]
        for count in range(1, 10 * int(TABULATED_POISSON_MAX_MEAN) + 50):
            probabilities.append(probabilities[-1] * small_mean / count)
            if count > TABULATED_POISSON_MAX_MEAN and probabilities[-1].max() < 1e-17:
                break
        tails, tail = [], np.zeros_like(small_mean)
        for probability in probabilities[:0:-1]:
            tail = tail + probability
            tails.append(tail)
        # tails[j] = P(X > j); those below the uniform draws' resolution can never count.
        self.tails = [tail for tail in tails[::-1] if tail.max() >= 1e-16]
        self.uniform = np.empty(mean.shape)
        self.above = np.empty(mean.shape, dtype=bool)
        self.counts = np.empty(mean.shape)

    def draw(self) -> np.ndarray:
        """One draw per pixel; the returned buffer is reused by the next call."""
        self.rng.random(out=self.uniform)
        self.counts[...] = 0.0
        for tail in self.tails:
            np.less(self.uniform, tail, out=self.above)
            if not self.above.any():
                break
            self.counts += self.above
        if self.large_mean.size:
            self.counts[self.large] = self.rng.poisson(self.large_mean)
        return self.counts
