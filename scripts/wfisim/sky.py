"""The campaign's sky: one star catalog with proper motions, and the Gaia-like catalog of it.

Every star has a true position at epoch 2016.0 (:data:`REF_EPOCH`, Gaia DR3's), a
proper motion (``pmra`` includes cos(dec), as Gaia's; mas/yr), a ``source_id`` and
a flux in photo-electrons per second (the same in every filter; what a pixel of
flat-field response 1 collects from the whole star). An exposure sees each star at
its position propagated to the exposure's start (:meth:`FieldCatalog.at_epoch`):
the unit vector moves along the tangent plane by ``pm * dt`` and is renormalised
(zero parallax and radial velocity).

The Gaia-like catalog (:func:`gaia_like_table`) is what Gaia would list of this
sky: stars with ``phot_g_mean_mag`` <= the faint limit (default 21), where
``G = 25 - 2.5 log10(flux_e_per_s)`` -- a made-up but monotonic link, so that the
faintest stars of a campaign are missing from it. Columns:

``source_id`` (int64), ``ra``, ``dec`` (deg, ICRS, at ``ref_epoch``, each with a
Gaussian error drawn from ``ra_error``/``dec_error`` added), ``ra_error``,
``dec_error`` (mas; ``ra_error`` is along the great circle, i.e. of ra*cos(dec)),
``pmra``, ``pmdec`` (mas/yr, exact: the true proper motions), ``ref_epoch``
(2016.0, Julian year), ``phot_g_mean_mag``. The position errors grow with G:
``0.02 mas * 10**(0.2 (G - 13))`` for G > 13 (0.8 mas at G = 21), 0.02 mas brighter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table

REF_EPOCH = 2016.0  # Julian year
G_ZERO_POINT = 25.0  # G of a star giving 1 e/s
GAIA_FAINT_LIMIT_G = 21.0
MAS_PER_DEG = 3.6e6


@dataclass(frozen=True, eq=False)
class FieldCatalog:
    """Stars on the sky: positions (deg, at ``ref_epoch``), fluxes (e/s), proper motions (mas/yr)."""

    ra: np.ndarray
    dec: np.ndarray
    flux: np.ndarray
    pmra: np.ndarray | None = None  # includes cos(dec); None: no motion
    pmdec: np.ndarray | None = None
    source_id: np.ndarray | None = None  # None: 1, 2, 3, ...
    ref_epoch: float = REF_EPOCH

    def __post_init__(self) -> None:
        count = len(self.flux)
        defaults = {"pmra": np.zeros(count), "pmdec": np.zeros(count), "source_id": np.arange(1, count + 1)}
        for name in ("ra", "dec", "flux", "pmra", "pmdec", "source_id"):
            value = defaults[name] if getattr(self, name) is None else getattr(self, name)
            dtype = np.int64 if name == "source_id" else float
            object.__setattr__(self, name, np.asarray(value, dtype=dtype))
        columns = (self.ra, self.dec, self.pmra, self.pmdec, self.source_id)
        if not all(len(column) == count for column in columns):
            raise ValueError("catalog columns differ in length")

    def __len__(self) -> int:
        return len(self.flux)

    def at_epoch(self, epoch: float) -> tuple[np.ndarray, np.ndarray]:
        """True (ra, dec) in deg at ``epoch`` (Julian year)."""
        return propagate(self.ra, self.dec, self.pmra, self.pmdec, epoch - self.ref_epoch)

    def table(self) -> Table:
        """Every star with its true values: the campaign's ``truth/sky_catalog.ecsv``."""
        return Table({"source_id": self.source_id, "ra": self.ra, "dec": self.dec,
                      "pmra": self.pmra, "pmdec": self.pmdec, "ref_epoch": np.full(len(self), self.ref_epoch),
                      "flux_e_per_s": self.flux, "phot_g_mean_mag": g_magnitude(self.flux)},
                     meta={"description": "wfisim sky truth: positions at ref_epoch, no errors"})


def propagate(ra, dec, pmra, pmdec, years):
    """Positions (deg) moved by proper motions (mas/yr, pmra with cos(dec)) over ``years``."""
    ra_rad, dec_rad = np.radians(ra), np.radians(dec)
    position = np.array([np.cos(dec_rad) * np.cos(ra_rad), np.cos(dec_rad) * np.sin(ra_rad), np.sin(dec_rad)])
    east = np.array([-np.sin(ra_rad), np.cos(ra_rad), np.zeros_like(ra_rad)])
    north = np.array([-np.sin(dec_rad) * np.cos(ra_rad), -np.sin(dec_rad) * np.sin(ra_rad), np.cos(dec_rad)])
    to_rad = np.radians(1.0 / MAS_PER_DEG) * years
    moved = position + to_rad * (np.asarray(pmra) * east + np.asarray(pmdec) * north)
    moved /= np.linalg.norm(moved, axis=0)
    return (np.degrees(np.arctan2(moved[1], moved[0])) % 360.0,
            np.degrees(np.arcsin(np.clip(moved[2], -1.0, 1.0))))


def g_magnitude(flux_e_per_s) -> np.ndarray:
    return G_ZERO_POINT - 2.5 * np.log10(np.asarray(flux_e_per_s, dtype=float))


def position_error_mas(g_mag) -> np.ndarray:
    return 0.02 * 10.0 ** (0.2 * np.maximum(np.asarray(g_mag) - 13.0, 0.0))


def gaia_like_table(stars: FieldCatalog, rng: np.random.Generator, *,
                    faint_limit_g: float = GAIA_FAINT_LIMIT_G) -> Table:
    """The stars Gaia would see, with Gaia DR3's column names and units (module docstring)."""
    g_mag = g_magnitude(stars.flux)
    seen = g_mag <= faint_limit_g
    error = position_error_mas(g_mag[seen])
    dec = stars.dec[seen] + rng.standard_normal(seen.sum()) * error / MAS_PER_DEG
    ra = stars.ra[seen] + rng.standard_normal(seen.sum()) * error / MAS_PER_DEG / np.cos(np.radians(dec))
    table = Table({
        "source_id": stars.source_id[seen], "ra": ra % 360.0, "dec": dec, "ra_error": error,
        "dec_error": error.copy(), "pmra": stars.pmra[seen], "pmdec": stars.pmdec[seen],
        "ref_epoch": np.full(seen.sum(), stars.ref_epoch), "phot_g_mean_mag": g_mag[seen],
    }, meta={"description": f"wfisim Gaia-like catalog: stars with G <= {faint_limit_g}"})
    units = {"ra": "deg", "dec": "deg", "ra_error": "mas", "dec_error": "mas", "pmra": "mas / yr",
             "pmdec": "mas / yr", "ref_epoch": "yr", "phot_g_mean_mag": "mag"}
    for name, unit in units.items():
        table[name].unit = unit
    return table

