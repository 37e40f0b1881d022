"""Cosmic rays: random charge deposits, spread onto the four neighbours by inter-pixel capacitance.

Hits are a Poisson process in time and over the array: during each read interval
(one frame time) a chunk of pixels receives Poisson(rate x frame time x pixels)
hits, each at a uniformly drawn pixel. A hit deposits E electrons drawn
log-uniformly between the limits of ``electrons_range``: every decade of
amplitude is equally common, from below a single read's noise to a large
fraction of the full well, so jump detection is exercised at every amplitude.
Inter-pixel capacitance shows a fraction ``ipc_fraction`` of the hit on each of
the four nearest neighbours; the hit pixel keeps the rest. Charge added at read
``k`` arrives between reads k-1 and k, so it first shows in read k (a hit at read 1
only raises the start of the ramp).

Everything is drawn from the chunk's own random stream, so the hits do not
depend on the number of worker threads. Each chunk records its hits in the
effect's truth; :meth:`CosmicRays.truth` returns them sorted, whatever order the
chunks ran in. Use one ``CosmicRays`` per simulated exposure.

A chunk only sees its own rows: a neighbour in the next chunk's first row (or
the previous chunk's last) does not get its IPC share of a hit.

    rays = CosmicRays.from_flux(5.0, collecting=detector.photosensitive)
    ramp = simulate_ramp(rate, detector.science_readout(), table, seed, effects=[rays])
    hits = rays.truth()  # {"row", "col", "read", "electrons"}, one entry per hit
"""

from __future__ import annotations

import threading

import numpy as np

from .ramps import Chunk, RampEffect

# Galactic cosmic rays at L2 hit about 5 times per cm^2 per second (the JWST planning figure).
L2_FLUX_PER_CM2_S = 5.0
H4RG10_PIXEL_PITCH_UM = 10.0
# Capacitive coupling of an H4RG-10 pixel to each of its four nearest neighbours: about 2 %.
H4RG10_IPC_FRACTION = 0.02
SCIENCE_READOUT = "science"
_NEIGHBOUR_OFFSETS = ((-1, 0), (1, 0), (0, -1), (0, 1))


class CosmicRays(RampEffect):
    """Cosmic-ray hits (``rate_per_pixel_s`` per pixel per second) added to the charge of each read."""

    def __init__(self, rate_per_pixel_s: float, *, electrons_range: tuple[float, float] = (50.0, 50_000.0),
                 ipc_fraction: float = H4RG10_IPC_FRACTION, collecting: np.ndarray | None = None):
        """``collecting``: True where pixels collect charge (e.g. the detector's photosensitive
        pixels; None: all); a hit elsewhere leaves nothing."""
        low, high = electrons_range
        if rate_per_pixel_s < 0 or not 0 < low <= high or not 0 <= ipc_fraction < 0.25:
            raise ValueError(f"cosmic rays: need rate >= 0, 0 < electrons_range[0] <= [1] and "
                             f"0 <= ipc_fraction < 0.25; got {rate_per_pixel_s}, {electrons_range}, "
                             f"{ipc_fraction}")
        self.rate_per_pixel_s = float(rate_per_pixel_s)
        self.electrons_range = (float(low), float(high))
        self.ipc_fraction = float(ipc_fraction)
        self.collecting = collecting
        self._lock = threading.Lock()
        self._hits_by_chunk: dict[int, list[tuple[np.ndarray, ...]]] = {}  # by first row

    @classmethod
    def from_flux(cls, rate_per_cm2_s: float = L2_FLUX_PER_CM2_S, *,
                  pixel_pitch_um: float = H4RG10_PIXEL_PITCH_UM, **options) -> CosmicRays:
        """Hits from a flux per cm^2 per second on pixels of ``pixel_pitch_um``."""
        pixel_area_cm2 = (pixel_pitch_um * 1e-4) ** 2
        return cls(rate_per_cm2_s * pixel_area_cm2, **options)

    def add_charge(self, chunk: Chunk, read_number: int, charge: np.ndarray) -> None:
        if chunk.readout != SCIENCE_READOUT:  # amp33 has no pixels that collect charge
            return
        hits = self._chunk_record(chunk, read_number)
        nrows, ncols = chunk.shape
        rng = chunk.rng
        count = rng.poisson(self.rate_per_pixel_s * chunk.frame_time * nrows * ncols)
        if count == 0:
            return
        rows, cols = np.divmod(rng.integers(0, nrows * ncols, count), ncols)
        low, high = self.electrons_range
        electrons = low * (high / low) ** rng.random(count)
        collecting = None if self.collecting is None else self.collecting[chunk.rows]
        if collecting is not None:
            if collecting.shape != chunk.shape:
                raise ValueError(f"cosmic rays: collecting mask {self.collecting.shape} does not cover "
                                 f"rows {chunk.rows.start}-{chunk.rows.stop - 1} of {ncols} columns")
            landed = collecting[rows, cols]
            rows, cols, electrons = rows[landed], cols[landed], electrons[landed]
        # add.at, not +=: two hits on one pixel in one read must both count.
        np.add.at(charge, (rows, cols), electrons * (1.0 - 4 * self.ipc_fraction))
        for row_step, col_step in _NEIGHBOUR_OFFSETS:
            near_rows, near_cols = rows + row_step, cols + col_step
            inside = (near_rows >= 0) & (near_rows < nrows) & (near_cols >= 0) & (near_cols < ncols)
            if collecting is not None:
                inside[inside] = collecting[near_rows[inside], near_cols[inside]]
            np.add.at(charge, (near_rows[inside], near_cols[inside]), electrons[inside] * self.ipc_fraction)
        hits.append((rows + chunk.rows.start, cols, np.full(rows.size, read_number), electrons))

    def _chunk_record(self, chunk: Chunk, read_number: int) -> list:
        """The chunk's own list of hits; only its thread appends to it, so only creation is locked."""
        with self._lock:
            if read_number == 1:
                if chunk.rows.start in self._hits_by_chunk:
                    raise RuntimeError(f"cosmic rays: rows from {chunk.rows.start} simulated twice; "
                                       "use one CosmicRays per exposure")
                self._hits_by_chunk[chunk.rows.start] = []
            return self._hits_by_chunk[chunk.rows.start]

    def truth(self) -> dict[str, np.ndarray]:
        """Every hit that landed: detector ``row``, ``col``, ``read`` number and ``electrons``
        deposited (the hit pixel kept ``1 - 4 * ipc_fraction`` of them), sorted by row, col, read."""
        with self._lock:
            parts = [hit for hits in self._hits_by_chunk.values() for hit in hits]
        rows, cols, reads, electrons = (np.concatenate([part[i] for part in parts]) if parts else np.empty(0)
                                        for i in range(4))
        order = np.lexsort((reads, cols, rows))
        return {"row": rows[order].astype(np.int32), "col": cols[order].astype(np.int32),
                "read": reads[order].astype(np.int32), "electrons": electrons[order].astype(np.float64)}
