"""An image's footprint on the sky: its bounding box, points along its edges, its S_REGION.

``meta.wcsinfo.s_region`` holds the footprint as ``POLYGON ICRS ra1 dec1 ra2 dec2 ...``
(degrees, the outer corners of the bounding box): assign_wcs writes it, tweakreg
rewrites it after alignment, resample writes the mosaic's, and the association
checkpoint reads it back to find overlapping images.
"""

from __future__ import annotations

import numpy as np

S_REGION_PREFIX = ("POLYGON", "ICRS")


def bounding_box_limits(wcs, shape) -> tuple[tuple[float, float], tuple[float, float]]:
    """((xmin, xmax), (ymin, ymax)) of the WCS's bounding box, or of the array's pixel edges."""
    if wcs.bounding_box is not None:
        (x0, x1), (y0, y1) = wcs.bounding_box.bounding_box(order="F")
        return (float(x0), float(x1)), (float(y0), float(y1))
    ny, nx = shape
    return (-0.5, nx - 0.5), (-0.5, ny - 0.5)


def footprint_points(wcs, shape, per_edge: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """RA, Dec of points along the edges of an image (distortion bends the edges)."""
    (x0, x1), (y0, y1) = bounding_box_limits(wcs, shape)
    t = np.linspace(0.0, 1.0, per_edge, endpoint=False)
    x = np.concatenate([x0 + (x1 - x0) * t, np.full_like(t, x1), x1 - (x1 - x0) * t, np.full_like(t, x0)])
    y = np.concatenate([np.full_like(t, y0), y0 + (y1 - y0) * t, np.full_like(t, y1), y1 - (y1 - y0) * t])
    ra, dec = wcs(x, y, with_bounding_box=False)
    return np.asarray(ra), np.asarray(dec)


def polygon_s_region(ra, dec) -> str:
    """``POLYGON ICRS`` of the vertices (degrees; RA wrapped into [0, 360))."""
    return " ".join(S_REGION_PREFIX) + " " + " ".join(
        f"{r % 360.0:.9f} {d:.9f}" for r, d in zip(ra, dec, strict=True))


def s_region(wcs) -> str:
    """``POLYGON ICRS`` of the outer corners of the WCS's bounding box."""
    corners = wcs.footprint(center=False)
    return polygon_s_region(corners[:, 0], corners[:, 1])


def s_region_vertices(region: str) -> tuple[np.ndarray, np.ndarray]:
    """RA and Dec of the vertices of a ``POLYGON ICRS`` S_REGION; ValueError for any other text."""
    words = region.split()
    if tuple(words[:2]) != S_REGION_PREFIX or len(words) < 8 or len(words) % 2:
        raise ValueError(f"{region[:60]!r} is not a POLYGON ICRS footprint of three or more vertices")
    vertices = np.array(words[2:], dtype=float).reshape(-1, 2)
    return vertices[:, 0], vertices[:, 1]
