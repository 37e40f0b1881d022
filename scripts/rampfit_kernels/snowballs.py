"""snowballs: flag large jump events (snowballs) around new saturated cores, resultant by resultant.

romancal 1.1 runs this inside its ``likely`` ramp fit when ``expand_large_events`` is set
(stcal 1.20, ``jump.flag_large_events``; the romancal documentation, section "Jump
Detection", describes snowballs: a cosmic ray deposits so much charge that the core
saturates and a halo of smaller jumps surrounds it). Our own code of that algorithm, for
each resultant k >= 1:

* regions: 8-connected areas of a mask, with the area of the region with its holes filled;
  each described by the ellipse of its second moments (pixel centres as unit point masses,
  as scikit-image's ``regionprops``): centroid, full axes 4 sqrt(lambda) - 1 (lambda the
  inertia tensor's eigenvalues; the "- 1" is stcal's) and the angle between the row axis and
  the major axis, 0.5 atan2(-2 b, c - a) of the tensor [[a, b], [b, c]].
* new saturated cores: regions of pixels saturated in k but not in k - 1 with an area of at
  least ``min_sat_area``; jump events: regions of JUMP_DET in k of at least ``min_jump_area``.
* with ``sat_required_snowball`` an event is a snowball when the centre of a new core of k,
  or of k + 1, lies inside its ellipse, or when its centre lies within ``edge_size`` pixels
  of the frame's edge (the core may be off the detector); every new core whose minor axis
  exceeds ``min_sat_radius_extend`` is grown by ``sat_expand`` pixels on each side and
  flagged SATURATED, instead of JUMP_DET, from k to the last resultant. Without it every
  event is a snowball.
* each snowball's ellipse is enlarged (minor axis times ``expand_factor``, major axis plus
  the same number of pixels; each full axis at most MAX_EXTENDED_WIDTH) and every pixel
  inside it that is not saturated in k is flagged JUMP_DET in k.

Ellipses are drawn as scikit-image's ``draw.ellipse`` draws them (stcal's choice): centre
rounded to a pixel (half to even), semi-axes rounded, pixels strictly inside. Resultants are
processed in order, so a core grown in k is no new core in k + 1.

Where we differ from stcal 1.20, deliberately: the cubes hold only JUMP_DET and SATURATED
(stcal overwrites the whole group DQ of a grown core with SATURATED, erasing a DO_NOT_USE
there too); the edge test uses each axis's own length (stcal uses the number of rows for
both); inputs are not modified.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import ndimage

# stcal's cap on an enlarged ellipse's full axis, in pixels (not a romancal parameter).
MAX_EXTENDED_WIDTH = 200
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class SnowballParameters:
    """romancal 1.1's RampFitStep parameters of snowball flagging, with its defaults.

    ``edge_size`` counts from the edge of the frame the masks cover; ``sat_expand`` is
    added to each side of a core (romancal's meaning: it doubles the value for stcal, which
    adds it to the full axes).
    """

    min_jump_area: float = 6.0
    min_sat_area: float = 1.0
    expand_factor: float = 1.9
    sat_required_snowball: bool = True
    min_sat_radius_extend: float = 0.5
    sat_expand: int = 2
    edge_size: int = 0


class Ellipse(NamedTuple):
    """A region's moment ellipse: centroid (pixels), full axes (the moment lengths minus 1),
    the angle from the row axis to the major axis (degrees, counter-clockwise)."""

    row: float
    col: float
    minor: float
    major: float
    angle: float


def find_ellipses(mask: np.ndarray, min_area: float) -> list[Ellipse]:
    """The moment ellipses of the 8-connected regions of ``mask`` whose filled area is at least
    ``min_area``, in raster order of their first pixel."""
    if not mask.any():  # labelling a full frame costs ~0.5 s even when it is empty
        return []
    labels, _ = ndimage.label(mask, structure=EIGHT_CONNECTED)
    ellipses = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        # The filled area is at most the bounding box's: most regions (single cosmic-ray
        # pixels) are left out without filling.
        if (box[0].stop - box[0].start) * (box[1].stop - box[1].start) < min_area:
            continue
        region = labels[box] == index
        if np.count_nonzero(ndimage.binary_fill_holes(region, EIGHT_CONNECTED)) < min_area:
            continue
        rows, cols = np.nonzero(region)
        count = float(rows.size)
        raw = _moments(region, (0.0, 0.0))
        central = _moments(region, (raw[1, 0] / raw[0, 0], raw[0, 1] / raw[0, 0]))
        # The inertia tensor [[a, b], [b, c]] as regionprops forms it (its rounding decides
        # which pixels on an ellipse's edge are drawn): a = mu02 / mu00 computed as
        # (mu20 + mu02 - mu20) / mu00.
        second = central[2, 0] + central[0, 2]
        a, c = (second - central[2, 0]) / central[0, 0], (second - central[0, 2]) / central[0, 0]
        b = -central[1, 1] / central[0, 0]
        small, large = np.clip(np.linalg.eigvalsh(np.array([[a, b], [b, c]])), 0.0, None)
        if a - c == 0:
            orientation = math.pi / 4.0 if b < 0 else -math.pi / 4.0
        else:
            orientation = 0.5 * math.atan2(-2 * b, c - a)
        # The centroid from whole-frame coordinates, as regionprops (the same rounding).
        ellipses.append(Ellipse(float((rows + box[0].start).sum() / count),
                                float((cols + box[1].start).sum() / count),
                                4.0 * math.sqrt(small) - 1.0, 4.0 * math.sqrt(large) - 1.0,
                                float(np.degrees(orientation))))
    return ellipses


def _moments(region: np.ndarray, center) -> np.ndarray:
    """Moments mu_pq (p, q <= 3) of a boolean region about ``center`` (row, col), summed in
    scikit-image's order (a contraction per axis), so that they round the same way."""
    moments = region.astype(np.float64)
    orders = np.arange(4, dtype=np.float64)
    for axis, length in enumerate(region.shape):
        powers = (np.arange(length, dtype=np.float64) - center[axis])[:, np.newaxis] ** orders
        labels = [0, 1]
        labels[axis] = 2
        output = [0, 1]
        output[axis] = 3
        moments = np.einsum(moments, labels, powers, [2, 3], output, optimize="greedy")
    return moments


def contains(ellipse: Ellipse, row: float, col: float) -> bool:
    """Whether (row, col) lies inside ``ellipse`` or on its edge."""
    angle = np.radians(180.0 - ellipse.angle)
    d_col, d_row = col - ellipse.col, row - ellipse.row
    along = d_col * np.cos(angle) - d_row * np.sin(angle)
    across = d_col * np.sin(angle) + d_row * np.cos(angle)
    with np.errstate(divide="ignore", invalid="ignore"):
        return bool(along**2 / (0.5 * ellipse.major) ** 2 + across**2 / (0.5 * ellipse.minor) ** 2 <= 1.0)


def ellipse_mask(shape, ellipse: Ellipse, minor: float, major: float) -> tuple[tuple, np.ndarray]:
    """(box, mask in the box) of the pixels strictly inside the ellipse of full axes ``minor``
    and ``major`` at ``ellipse``'s rounded centre and angle (major axis along the rows at 0)."""
    semi_row, semi_col = round(major / 2), round(minor / 2)
    center_row, center_col = round(ellipse.row), round(ellipse.col)
    extent = max(abs(semi_row), abs(semi_col))
    box = (slice(max(center_row - extent, 0), min(center_row + extent + 1, shape[0])),
           slice(max(center_col - extent, 0), min(center_col + extent + 1, shape[1])))
    if semi_row == 0 or semi_col == 0:
        return box, np.zeros((box[0].stop - box[0].start, box[1].stop - box[1].start), dtype=bool)
    rotation = np.radians(ellipse.angle) % np.pi
    sin, cos = np.sin(rotation), np.cos(rotation)
    d_row = (np.arange(box[0].start, box[0].stop) - center_row).astype(np.float64)[:, None]
    d_col = (np.arange(box[1].start, box[1].stop) - center_col).astype(np.float64)[None, :]
    distance = ((d_row * cos + d_col * sin) / semi_row) ** 2 + ((d_row * sin - d_col * cos) / semi_col) ** 2
    return box, distance < 1.0


def near_edge(ellipse: Ellipse, shape, edge_size: float) -> bool:
    """Whether the ellipse's centre lies within ``edge_size`` of the frame's edge."""
    return bool(min(ellipse.row, ellipse.col) < edge_size or ellipse.row > max(0, shape[0] - edge_size)
                or ellipse.col > max(0, shape[1] - edge_size))


def enlarged_axes(ellipse: Ellipse, factor: float) -> tuple[float, float]:
    """(minor, major) full axes of a snowball's flagged ellipse: the minor axis times ``factor``,
    the major axis plus as many pixels, each at most MAX_EXTENDED_WIDTH, rounded to even."""
    minor = min(ellipse.minor * factor, MAX_EXTENDED_WIDTH)
    major = min(ellipse.major + (factor - 1.0) * ellipse.minor, MAX_EXTENDED_WIDTH)
    return 2 * round(minor / 2), 2 * round(major / 2)


def flag_large_events(jumps: np.ndarray, saturated: np.ndarray,
                      parameters: SnowballParameters) -> tuple[np.ndarray, np.ndarray, int]:
    """Snowball flagging of (nresultants, nrows, ncols) boolean JUMP_DET and SATURATED cubes.

    Returns new (jumps, saturated, number of snowballs); the inputs are not modified.
    """
    if jumps.shape != saturated.shape or jumps.ndim != 3:
        raise ValueError(f"jump cube {jumps.shape} and saturation cube {saturated.shape}: expected "
                         "the same (nresultants, nrows, ncols) shape")
    jumps, saturated = jumps.copy(), saturated.copy()
    nresultants, *shape = jumps.shape
    grow = 2 * parameters.sat_expand
    total = 0
    for k in range(1, nresultants):
        events = find_ellipses(jumps[k], parameters.min_jump_area)
        if parameters.sat_required_snowball:
            cores = find_ellipses(saturated[k] & ~saturated[k - 1], parameters.min_sat_area)
            next_cores = (find_ellipses(saturated[k + 1] & ~saturated[k], parameters.min_sat_area)
                          if k + 1 < nresultants else [])
            snowballs = [event for event in events
                         if near_edge(event, shape, parameters.edge_size)
                         or any(contains(event, core.row, core.col) for core in cores + next_cores)]
            for core in cores:
                if min(core.minor, core.major) > parameters.min_sat_radius_extend:
                    box, inside = ellipse_mask(shape, core, min(core.minor + grow, MAX_EXTENDED_WIDTH),
                                               min(core.major + grow, MAX_EXTENDED_WIDTH))
                    saturated[(slice(k, None), *box)] |= inside
                    jumps[(slice(k, None), *box)] &= ~inside
        else:
            snowballs = events
        total += len(snowballs)
        for snowball in snowballs:
            box, inside = ellipse_mask(shape, snowball, *enlarged_axes(snowball, parameters.expand_factor))
            jumps[(k, *box)] |= inside & ~saturated[(k, *box)]
    return jumps, saturated, total
