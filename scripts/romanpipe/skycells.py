"""The sky map: projection regions split into sky cells, each cell a fixed TAN grid on the sky.

As romancal 1.1's sky map (its ``skycell`` package and rad's SKYCELLS reference schema):
the sky is cut into projection regions, each a gnomonic (TAN) projection about its own
tangent point onto one pixel grid; each region's grid is tiled into square sky cells of
``nxy_skycell`` pixels that overlap their neighbours by ``skycell_border_pixels``. A cell's
WCS is its region's projection shifted by a whole number of pixels, so two cells of a
region share the pixels where they overlap exactly, and two campaigns resampled onto the
same cell line up pixel for pixel. The SKYCELLS reference (made by ``wfisim.skymap``,
delivered through the CRDS cache) holds the regions and cells as the rad schema's tables:

``projection_regions``: index, ra/dec_tangent, ra/dec_min/max, orientat, x/y_tangent, nx, ny,
    skycell_start, skycell_end (the region's cells are rows start..end-1 of ``skycells``)
``skycells``: name, ra/dec_center, orientat, x/y_tangent (the region's tangent point in the
    cell's 0-based pixel coordinates), ra/dec_corn1..4

A cell is named as romancal names it: the region's tangent point rounded to whole degrees
and the cell's place in the region, e.g. ``270p65x48y69`` (RA 270, Dec +65, column 48, row 69).
:meth:`SkyMap.cells_touching` answers which cells a footprint (``s_region``) touches, with
spherical-geometry polygons (candidates first found by a k-d tree of the cells' centres).
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from scipy.spatial import KDTree
from spherical_geometry import vector as sgv
from spherical_geometry.polygon import SphericalPolygon

from .errors import InputFileError
from .footprints import s_region_vertices
from .output_grid import tan_wcs

REFTYPE = "skycells"
# Pixels drawn around a cell while drizzling and cropped after: drizzle fills an output pixel
# only from input pixels centred on the output grid, so without them a cell's outermost pixels
# would miss part of the light their neighbour (which holds them inside) receives. 8 covers
# input pixels up to 4 cell pixels wide with every kernel (lanczos3 reaches 3 pixels).
DRIZZLE_MARGIN = 8
CORNERS = 4
CELL_NAME_RE = re.compile(r"^(?P<ra>\d{3})(?P<sign>[pm])(?P<dec>\d{2})x(?P<column>\d{2,})y(?P<row>\d{2,})$")


def cell_name(ra_tangent: float, dec_tangent: float, column: int, row: int) -> str:
    """romancal's sky-cell name: region tangent point in whole degrees, then the cell's column and row."""
    sign = "p" if round(dec_tangent) >= 0 else "m"
    return f"{round(ra_tangent) % 360:03d}{sign}{abs(round(dec_tangent)):02d}x{column:02d}y{row:02d}"


def _cell_name_match(name: str) -> re.Match:
    match = CELL_NAME_RE.match(name)
    if not match:
        raise ValueError(f"{name!r} is not a sky-cell name like 270p65x48y69")
    return match


def cell_place(name: str) -> tuple[int, int]:
    """(column, row) of a cell in its projection region, from its name; ValueError for another name."""
    match = _cell_name_match(name)
    return int(match["column"]), int(match["row"])


def cell_region(name: str) -> str:
    """The projection region part of a cell's name (``270p65`` of ``270p65x48y69``); ValueError
    for another name."""
    return name[: _cell_name_match(name).end("dec")]


def product_cell(product: str) -> str | None:
    """The sky cell of a sky-cell product (``r00001_p_full_270p65x48y69_f158``: romancal 1.1's
    ``r<program>_<release>_<type>_<cell>_<optical element>``), or None for another name."""
    fields = product.split("_")
    return fields[3] if len(fields) == 5 and CELL_NAME_RE.match(fields[3]) else None


def cell_selector(patterns: Iterable[str]) -> Callable[[str], bool]:
    """Whether a cell is among ``patterns``: names, or fnmatch patterns such as ``270p65x*y4?``.
    Names are looked up in a set: a group of a thousand named cells is asked about every cell
    of a survey."""
    patterns = list(patterns)
    names = frozenset(p for p in patterns if not any(c in p for c in "*?["))
    globs = [re.compile(fnmatch.translate(p)) for p in patterns if p not in names]
    return lambda cell: cell in names or any(g.match(cell) for g in globs)


def rotation_matrix(orientat: float) -> np.ndarray:
    """The cells' pixel -> tangent-plane rotation (romancal: +X towards +RA at orientat 0, +Y north)."""
    theta = math.radians(orientat)
    return np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])


def grid_wcs(ra_tangent: float, dec_tangent: float, x_tangent: float, y_tangent: float,
             orientat: float, pixel_scale_deg: float, shape: tuple[int, int]):
    """The TAN grid of a projection region or one of its cells: the tangent point at pixel
    (x_tangent, y_tangent), 0-based; ``shape`` is (ny, nx)."""
    return tan_wcs((x_tangent, y_tangent), (ra_tangent, dec_tangent),
                   pixel_scale_deg * rotation_matrix(orientat), shape)


@dataclass(frozen=True)
class SkyCell:
    """One sky cell: its name, its region's projection and where the cell sits in it."""

    name: str
    ra_tangent: float
    dec_tangent: float
    x_tangent: float
    y_tangent: float
    orientat: float
    pixel_scale: float  # degrees per pixel
    nxy: int

    def wcs(self, margin: int = 0):
        """The cell's fixed grid (a TAN GWCS of nxy x nxy pixels), or that grid grown by ``margin``
        pixels on every side (the same pixels, numbered from -margin)."""
        size = self.nxy + 2 * margin
        return grid_wcs(self.ra_tangent, self.dec_tangent, self.x_tangent + margin, self.y_tangent + margin,
                        self.orientat, self.pixel_scale, (size, size))

    def wcs_info(self) -> dict:
        """The cell as romancal's sky-cell associations record it (``skycell_wcs_info``)."""
        center = (self.nxy - 1) / 2.0
        ra_center, dec_center = (float(v) for v in self.wcs()(center, center))
        return {"name": self.name, "pixel_scale": self.pixel_scale,
                "ra_projection_center": self.ra_tangent, "dec_projection_center": self.dec_tangent,
                "x0_projection": self.x_tangent, "y0_projection": self.y_tangent,
                "ra_center": ra_center, "dec_center": dec_center, "nx": self.nxy, "ny": self.nxy,
                "orientat": self.orientat, "orientat_projection_center": self.orientat}

    @classmethod
    def from_wcs_info(cls, info: dict) -> SkyCell:
        """The cell an association's ``skycell_wcs_info`` describes; ValueError when it is incomplete."""
        try:
            if int(info["nx"]) != int(info["ny"]):
                raise ValueError(f"sky cell {info['name']}: not square ({info['nx']} x {info['ny']})")
            return cls(str(info["name"]), float(info["ra_projection_center"]),
                       float(info["dec_projection_center"]), float(info["x0_projection"]),
                       float(info["y0_projection"]),
                       float(info.get("orientat_projection_center", info.get("orientat", 0.0))),
                       float(info["pixel_scale"]), int(info["nx"]))
        except (KeyError, TypeError) as err:
            raise ValueError(f"skycell_wcs_info lacks or mangles {err}") from None


def association_cell(tree: dict) -> SkyCell | None:
    """The sky cell an association is for (its ``skycell_wcs_info``), None for another association;
    ValueError for an unusable record."""
    info = tree.get("skycell_wcs_info")
    if not isinstance(info, dict):
        return None
    return SkyCell.from_wcs_info(info)


class SkyMap:
    """A SKYCELLS reference read into memory: its regions, its cells, and which cells a footprint touches."""

    def __init__(self, meta: dict, regions: np.ndarray, cells: np.ndarray, path: Path | None = None):
        self.path = path
        self.nxy = int(meta["nxy_skycell"])
        self.border = int(meta["skycell_border_pixels"])
        self.pixel_scale = float(meta["pixel_scale"]) / 3600.0
        self.regions = regions
        self.cells = cells
        self._row_of = {str(name): row for row, name in enumerate(cells["name"])}
        if len(self._row_of) != len(cells):
            raise ValueError("two sky cells share a name")

    @classmethod
    def read(cls, path: str | Path) -> SkyMap:
        """Read a SKYCELLS reference (an ASDF file of rad's schema); InputFileError naming the problem."""
        import asdf

        path = Path(path)
        try:
            with asdf.open(path, lazy_load=False, memmap=False) as af:
                return cls.from_model(af["roman"], path)
        except FileNotFoundError:
            raise InputFileError(path, "SKYCELLS reference not found") from None
        except InputFileError:
            raise
        except Exception as err:  # asdf raises many types for a damaged file
            raise InputFileError(path, f"unreadable SKYCELLS reference ({type(err).__name__})") from None

    @classmethod
    def from_model(cls, model, path: Path | None = None) -> SkyMap:
        """The sky map of a SKYCELLS tree (a SkycellsRefModel or its ASDF ``roman`` node)."""
        meta = dict(model["meta"])
        if str(meta.get("reftype", "")).upper() != REFTYPE.upper():
            raise InputFileError(path or "sky map", f"meta.reftype is {meta.get('reftype')!r}, not SKYCELLS")
        try:
            return cls(meta, np.asarray(model["projection_regions"]), np.asarray(model["skycells"]), path)
        except (KeyError, ValueError) as err:
            raise InputFileError(path or "sky map", f"not a usable sky map ({err})") from None

    @property
    def names(self) -> list[str]:
        return [str(name) for name in self.cells["name"]]

    def cell(self, name: str) -> SkyCell:
        """The named cell; KeyError when this sky map has no such cell."""
        row = self._row_of[name]
        region = self.regions[self._region_of_row(row)]
        data = self.cells[row]
        return SkyCell(name, float(region["ra_tangent"]), float(region["dec_tangent"]),
                       float(data["x_tangent"]), float(data["y_tangent"]), float(data["orientat"]),
                       self.pixel_scale, self.nxy)

    def polygon(self, name: str) -> SphericalPolygon:
        data = self.cells[self._row_of[name]]
        ra = [float(data[f"ra_corn{k}"]) for k in range(1, CORNERS + 1)]
        dec = [float(data[f"dec_corn{k}"]) for k in range(1, CORNERS + 1)]
        return SphericalPolygon.from_radec(ra, dec, center=(float(data["ra_center"]),
                                                            float(data["dec_center"])))

    def cells_touching(self, s_region: str) -> list[str]:
        """Names (sorted) of the cells whose area a ``POLYGON ICRS`` footprint overlaps; ValueError
        for a footprint that is not such a polygon."""
        ra, dec = s_region_vertices(s_region)
        footprint = SphericalPolygon.from_radec(ra, dec)
        points = _unit_vectors(ra, dec)
        center = points.mean(axis=0)
        center /= np.linalg.norm(center)
        # Chord radius that any overlapping cell's centre lies within: the footprint's and a
        # cell's half-diagonals (angles), with a margin.
        reach = math.acos(min(1.0, float(np.min(points @ center))))
        radius = 2 * math.sin(min(math.pi, 1.1 * (reach + self._cell_half_diagonal)) / 2)
        candidates = sorted(self._centres.query_ball_point(center, r=radius))
        return sorted(str(self.cells["name"][row]) for row in candidates
                      if footprint.intersects_poly(self.polygon(str(self.cells["name"][row]))))

    @cached_property
    def _centres(self) -> KDTree:
        return KDTree(_unit_vectors(self.cells["ra_center"], self.cells["dec_center"]))

    @cached_property
    def _cell_half_diagonal(self) -> float:
        """Radians: half a cell's diagonal (every cell has the same pixel size)."""
        return math.radians(self.nxy * self.pixel_scale * math.sqrt(2) / 2) * 1.01

    def _region_of_row(self, row: int) -> int:
        inside = (self.regions["skycell_start"] <= row) & (row < self.regions["skycell_end"])
        found = np.flatnonzero(inside)
        if len(found) != 1:
            raise ValueError(f"sky cell row {row} is in {len(found)} projection regions")
        return int(found[0])


def _unit_vectors(ra, dec) -> np.ndarray:
    x, y, z = sgv.lonlat_to_vector(np.asarray(ra, dtype=float), np.asarray(dec, dtype=float))
    return np.stack([x, y, z], axis=-1)
