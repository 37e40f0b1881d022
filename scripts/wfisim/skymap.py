"""The SKYCELLS reference for any sky area: a part of one fixed tessellation of the whole sky.

The tessellation follows romancal 1.1's sky map (see ``romanpipe.skycells``) and depends on
four numbers only, so every area cut from it with the same numbers has the same regions and
cells, named and placed alike: two campaigns' mosaics line up pixel for pixel.

- Declination bands ``region_deg`` tall from -90; the two polar bands are one region each,
  tangent at the pole; every other band is cut in RA into equal regions no wider on the sky
  (at the band's edge nearest the equator) than ``region_deg``, tangent at their centre.
- Each region projects onto a grid of ``pixel_scale`` arcsec pixels, +X towards +RA and +Y
  north at the tangent point (romancal's orientation 0), the tangent point at the centre
  pixel of a grid just covering the region's RA/Dec box.
- Cells of ``nxy_skycell`` pixels tile the region's grid from its pixel 0 in steps of
  ``nxy_skycell - border`` pixels, so neighbours share ``border`` columns or rows; a region
  keeps the cells whose centre lies in its RA/Dec box.

``make_skycells`` writes only the regions and cells that reach into the requested RA/Dec box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from romanpipe.skycells import cell_name, grid_wcs

import numpy as np
from astropy.time import Time
from roman_datamodels import datamodels

from .references import AUTHOR, ORIGIN

EDGE_SAMPLES = 64
SKYCELLS_PEDIGREE = "GROUND"  # the only pedigree rad's SKYCELLS schema allows


@dataclass(frozen=True)
class Tessellation:
    """The four numbers that fix the whole sky map."""

    pixel_scale: float = 0.055  # arcsec per pixel
    nxy_skycell: int = 1200
    border: int = 40
    region_deg: float = 4.0

    def __post_init__(self) -> None:
        if not 0 <= self.border < self.nxy_skycell:
            raise ValueError(f"border {self.border} must be >= 0 and below nxy_skycell {self.nxy_skycell}")
        bands = 180.0 / self.region_deg
        if abs(bands - round(bands)) > 1e-9 or round(bands) < 3:
            raise ValueError(f"region_deg {self.region_deg} must divide 180 into 3 or more bands")

    @property
    def step(self) -> int:
        return self.nxy_skycell - self.border

    @property
    def n_bands(self) -> int:
        return round(180.0 / self.region_deg)

    def band_regions(self, band: int) -> int:
        """How many regions band ``band`` (0 at the south pole) is cut into."""
        if band in (0, self.n_bands - 1):
            return 1
        dec_low, dec_high = self.band_limits(band)
        nearest_equator = 0.0 if dec_low < 0 < dec_high else min(abs(dec_low), abs(dec_high))
        return max(1, math.ceil(360.0 * math.cos(math.radians(nearest_equator)) / self.region_deg))

    def band_limits(self, band: int) -> tuple[float, float]:
        return -90.0 + band * self.region_deg, -90.0 + (band + 1) * self.region_deg


def region_box(tess: Tessellation, band: int, slice_: int) -> tuple[float, float, float, float, float, float]:
    """(ra_min, ra_max, dec_min, dec_max, ra_tangent, dec_tangent) of one region."""
    dec_low, dec_high = tess.band_limits(band)
    if band == 0:
        return 0.0, 360.0, dec_low, dec_high, 0.0, -90.0
    if band == tess.n_bands - 1:
        return 0.0, 360.0, dec_low, dec_high, 0.0, 90.0
    width = 360.0 / tess.band_regions(band)
    ra_low = slice_ * width
    return ra_low, ra_low + width, dec_low, dec_high, ra_low + width / 2, (dec_low + dec_high) / 2


def _box_edges(ra_min, ra_max, dec_min, dec_max) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0.0, 1.0, EDGE_SAMPLES)
    ra = np.concatenate([ra_min + (ra_max - ra_min) * t, np.full_like(t, ra_max),
                         ra_max - (ra_max - ra_min) * t, np.full_like(t, ra_min)])
    dec = np.concatenate([np.full_like(t, dec_min), dec_min + (dec_max - dec_min) * t,
                          np.full_like(t, dec_max), dec_max - (dec_max - dec_min) * t])
    return ra, dec


def _projected(tess: Tessellation, ra_t, dec_t, ra, dec) -> tuple[np.ndarray, np.ndarray]:
    """Pixel offsets from the tangent point of sky positions, in the region's grid."""
    relative = grid_wcs(ra_t, dec_t, 0.0, 0.0, 0.0, tess.pixel_scale / 3600.0, (1, 1))
    x, y = relative.backward_transform(ra, dec)
    return np.asarray(x), np.asarray(y)


def _overlap(low1, high1, low2, high2):
    low, high = max(low1, low2), min(high1, high2)
    return (low, high) if low < high else None


def make_skycells(ra_range: tuple[float, float], dec_range: tuple[float, float], *,
                  tessellation: Tessellation = Tessellation(), useafter: Time | str = "2020-01-01T00:00:00"):
    """The SKYCELLS reference (a rad SkycellsRefModel) of every cell reaching into the RA/Dec box.

    ``ra_range`` must not wrap through RA 0 (give two boxes' worth as separate files instead).
    """
    tess = tessellation
    ra_min, ra_max = (float(v) for v in ra_range)
    dec_min, dec_max = (float(v) for v in dec_range)
    if not (0.0 <= ra_min < ra_max <= 360.0 and -90.0 <= dec_min < dec_max <= 90.0):
        raise ValueError(f"RA {ra_range} / Dec {dec_range}: not a box with 0 <= ra_min < ra_max <= 360 "
                         "and -90 <= dec_min < dec_max <= 90")
    regions, cells = [], []
    index = 0
    for band in range(tess.n_bands):
        for slice_ in range(tess.band_regions(band)):
            box = region_box(tess, band, slice_)
            r_min, r_max, d_min, d_max, ra_t, dec_t = box
            inside = (_overlap(r_min, r_max, ra_min, ra_max), _overlap(d_min, d_max, dec_min, dec_max))
            if None in inside:
                index += 1
                continue
            # The region's grid: the tangent point at the centre pixel of a grid covering its box
            # (a polar cap: the circle of its edge).
            u, v = _projected(tess, ra_t, dec_t, *_box_edges(r_min, r_max, d_min, d_max))
            half_x, half_y = math.ceil(np.max(np.abs(u))), math.ceil(np.max(np.abs(v)))
            nx, ny = 2 * half_x + 1, 2 * half_y + 1
            x_t, y_t = float(half_x), float(half_y)
            columns = max(1, math.ceil((nx - tess.border) / tess.step))
            rows = max(1, math.ceil((ny - tess.border) / tess.step))
            # The cells reaching into the part of the box inside this region.
            (a_min, a_max), (b_min, b_max) = inside
            u, v = _projected(tess, ra_t, dec_t, *_box_edges(a_min, a_max, b_min, b_max))
            first = []
            for offsets, tangent, count in ((u, x_t, columns), (v, y_t, rows)):
                low, high = offsets.min() + tangent, offsets.max() + tangent
                first.append((max(0, math.ceil((low - tess.nxy_skycell + 0.5) / tess.step)),
                              min(count - 1, math.floor((high + 0.5) / tess.step))))
            start = len(cells)
            for column in range(first[0][0], first[0][1] + 1):
                for row in range(first[1][0], first[1][1] + 1):
                    cell = _cell_row(tess, ra_t, dec_t, x_t - column * tess.step, y_t - row * tess.step,
                                     cell_name(ra_t, dec_t, column, row))
                    # A region keeps the cells centred in its box: the grid's cells beyond it
                    # belong to the neighbouring regions.
                    if r_min <= cell[1] < r_max and d_min <= cell[2] < d_max:
                        cells.append(cell)
            if len(cells) > start:
                regions.append((index, ra_t, dec_t, r_min, r_max, d_min, d_max, 0.0, x_t, y_t, nx, ny,
                                start, len(cells)))
            index += 1
    if not cells:
        raise ValueError(f"RA {ra_range} / Dec {dec_range}: no sky cell reaches into this box")
    names = [cell[0] for cell in cells]
    if len(set(names)) != len(names):
        raise ValueError("two cells would share a name: choose a larger region_deg")
    model = datamodels.SkycellsRefModel.create_fake_data()
    model.meta.update({
        "reftype": "SKYCELLS", "author": AUTHOR, "origin": ORIGIN, "pedigree": SKYCELLS_PEDIGREE,
        "description": (f"Sky cells of {tess.nxy_skycell} x {tess.nxy_skycell} pixels of "
                        f"{tess.pixel_scale} arcsec, {tess.border} shared with each neighbour, in "
                        f"projection regions of {tess.region_deg} deg, for RA {ra_min:.4f}..{ra_max:.4f} "
                        f"Dec {dec_min:.4f}..{dec_max:.4f}"),
        "useafter": Time(useafter, format="isot", scale="utc"), "telescope": "ROMAN",
        "instrument": {"name": "WFI"}, "nxy_skycell": tess.nxy_skycell,
        "skycell_border_pixels": tess.border, "pixel_scale": tess.pixel_scale,
    })
    model.projection_regions = np.array(regions, dtype=model.projection_regions.dtype)
    model.skycells = np.array(cells, dtype=model.skycells.dtype)
    return model


def _cell_row(tess: Tessellation, ra_t, dec_t, x_t, y_t, name) -> tuple:
    """One row of the ``skycells`` table: name, centre, orientation, tangent pixel, corners."""
    n = tess.nxy_skycell
    wcs = grid_wcs(ra_t, dec_t, x_t, y_t, 0.0, tess.pixel_scale / 3600.0, (n, n))
    centre = (n - 1) / 2.0
    ra_c, dec_c = (float(v) for v in wcs(centre, centre, with_bounding_box=False))
    corner_ra, corner_dec = wcs(np.array([-0.5, n - 0.5, n - 0.5, -0.5]),
                                np.array([-0.5, -0.5, n - 0.5, n - 0.5]), with_bounding_box=False)
    corners = [value for pair in zip(np.asarray(corner_ra) % 360.0, corner_dec, strict=True)
               for value in (float(pair[0]), float(pair[1]))]
    return (name, ra_c % 360.0, dec_c, 0.0, x_t, y_t, *corners)
