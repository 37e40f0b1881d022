"""The output grid of a resampling step: a TAN GWCS around its inputs, and its Level 3 wcsinfo.

The romancal documentation, section "Resample": the grid covers every input's
footprint at the first input's orientation and pixel scale unless told otherwise
(``pixel_scale_ratio``, ``pixel_scale``, ``rotation``, ``crpix``, ``crval``,
``output_shape``), or is read from an ASDF file (``output_wcs``). The grid's
transform is analytic both ways, so mapping inputs onto it needs no iterative inverse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy import coordinates
from astropy import units as u
from astropy.modeling import models as astmodels
from gwcs import coordinate_frames as cf
from gwcs import wcs as gwcs_wcs

from .footprints import bounding_box_limits, footprint_points, polygon_s_region


def local_frame(wcs, x: float, y: float, tangent_point: tuple[float, float] | None = None):
    """Sky position, Jacobian and pixel scale of ``wcs`` at pixel (x, y).

    The Jacobian maps pixel offsets to the plane tangent at ``tangent_point``
    (default: the position itself), in degrees, in the frame of
    ``Pix2Sky_TAN | RotateNative2Celestial(ra, dec, 180)`` (x towards +RA, y
    towards +Dec): at the tangent point it is the CD matrix of a TAN WCS with
    the same local scale, orientation and parity. The scale is always the true
    local one (measured in the position's own tangent plane).
    """
    ra, dec = (float(v) for v in wcs(x, y, with_bounding_box=False))
    step = 0.5
    sky = wcs(np.array([x - step, x + step, x, x]), np.array([y, y, y - step, y + step]),
              with_bounding_box=False)

    def jacobian_in(point):
        to_plane = astmodels.RotateCelestial2Native(*point, 180.0) | astmodels.Sky2Pix_TAN()
        px, py = to_plane(*sky)
        return np.array([[px[1] - px[0], px[3] - px[2]], [py[1] - py[0], py[3] - py[2]]]) / (2 * step)

    own = jacobian_in((ra, dec))
    scale = math.sqrt(abs(np.linalg.det(own)))
    jacobian = own if tangent_point is None else jacobian_in(tangent_point)
    return (ra, dec), jacobian, scale


def bounding_box_center(wcs, shape) -> tuple[float, float]:
    (x0, x1), (y0, y1) = bounding_box_limits(wcs, shape)
    return 0.5 * (x0 + x1), 0.5 * (y0 + y1)



def sky_center(ra: np.ndarray, dec: np.ndarray) -> tuple[float, float]:
    """Centre of the box enclosing the points' unit vectors (robust to uneven sampling)."""
    ra_r, dec_r = np.deg2rad(ra), np.deg2rad(dec)
    xyz = np.stack([np.cos(dec_r) * np.cos(ra_r), np.cos(dec_r) * np.sin(ra_r), np.sin(dec_r)])
    mid = 0.5 * (xyz.max(axis=1) + xyz.min(axis=1))
    ra0 = math.degrees(math.atan2(mid[1], mid[0])) % 360.0
    dec0 = math.degrees(math.atan2(mid[2], math.hypot(mid[0], mid[1])))
    return ra0, dec0


def tan_wcs(crpix: Sequence[float], crval: Sequence[float], cd: np.ndarray,
            shape: tuple[int, int]) -> gwcs_wcs.WCS:
    """A TAN GWCS: pixel (x, y) -> CD . (pixel - crpix) in the tangent plane at crval -> ICRS.

    ``shape`` is (ny, nx); the bounding box is the array's pixel edges. The
    inverse is analytic.
    """
    cd = np.asarray(cd, dtype=np.float64)
    transform = (astmodels.Shift(-float(crpix[0])) & astmodels.Shift(-float(crpix[1]))
                 | astmodels.AffineTransformation2D(matrix=cd)
                 | astmodels.Pix2Sky_TAN()
                 | astmodels.RotateNative2Celestial(float(crval[0]), float(crval[1]), 180.0))
    transform.name = "detector_to_world"
    detector = cf.Frame2D(name="detector", axes_order=(0, 1), unit=(u.pix, u.pix))
    world = cf.CelestialFrame(reference_frame=coordinates.ICRS(), name="world", unit=(u.deg, u.deg))
    wcs = gwcs_wcs.WCS([(detector, transform), (world, None)])
    ny, nx = shape
    wcs.bounding_box = ((-0.5, nx - 0.5), (-0.5, ny - 0.5))
    wcs.pixel_shape = (nx, ny)
    return wcs


def orientation_matrix(jacobian: np.ndarray, rotation: float | None) -> np.ndarray:
    """Unit-scale CD matrix: the reference's own orientation (``rotation`` None) or +Y at ``rotation``.

    ``rotation`` is the position angle of the output's +Y axis east of north
    in degrees; the reference image's parity is kept either way.
    """
    if rotation is None:
        left, _, right = np.linalg.svd(jacobian)
        return left @ right          # the rotation (and parity) closest to the Jacobian
    parity = 1.0 if np.linalg.det(jacobian) > 0 else -1.0
    theta = math.radians(rotation)
    # Columns: where +X and +Y point in the (east, north) tangent plane.
    return np.array([[parity * math.cos(theta), math.sin(theta)],
                     [-parity * math.sin(theta), math.cos(theta)]])


def make_output_wcs(wcs_list: Sequence, shapes: Sequence[tuple[int, int]], *,
                    pixel_scale_ratio: float = 1.0, pixel_scale: float | None = None,
                    rotation: float | None = None, crpix: Sequence[float] | None = None,
                    crval: Sequence[float] | None = None,
                    output_shape: Sequence[int] | None = None) -> tuple[gwcs_wcs.WCS, float]:
    """The output grid covering every input's footprint, and its pixel scale ratio.

    Orientation and scale come from the first input at the centre of its
    bounding box (``pixel_scale`` in arcsec, else ``pixel_scale_ratio`` times
    the input scale; ``rotation`` overrides the orientation). ``crval`` defaults
    to the centre of all footprints; ``output_shape`` is (nx, ny). Without
    ``crpix`` the reference pixel is where ``crval`` lands, with the footprints
    starting at pixel edge -0.5, or the image centre when ``output_shape`` is given.
    """
    if not wcs_list:
        raise ValueError("no input images")
    footprints = [footprint_points(wcs, shape) for wcs, shape in zip(wcs_list, shapes, strict=True)]
    ra = np.concatenate([f[0] for f in footprints])
    dec = np.concatenate([f[1] for f in footprints])
    if crval is None:
        crval = sky_center(ra, dec)
    # The first input's orientation where it is, expressed in the output's tangent plane.
    _, jacobian, input_scale = local_frame(wcs_list[0], *bounding_box_center(wcs_list[0], shapes[0]),
                                           tangent_point=tuple(crval))
    scale = pixel_scale / 3600.0 if pixel_scale is not None else input_scale * pixel_scale_ratio
    cd = scale * orientation_matrix(jacobian, rotation)

    # Footprint in output pixels relative to crval (crpix 0), with the analytic inverse.
    relative = tan_wcs((0.0, 0.0), crval, cd, (1, 1))
    u_pix, v_pix = relative.backward_transform(ra, dec)
    if not (np.all(np.isfinite(u_pix)) and np.all(np.isfinite(v_pix))):
        raise ValueError("an input footprint does not project onto the output tangent plane")

    if output_shape is not None:
        nx, ny = (int(n) for n in output_shape)
        if crpix is None:
            crpix = ((nx - 1) / 2.0, (ny - 1) / 2.0)
    elif crpix is None:
        crpix = (-0.5 - u_pix.min(), -0.5 - v_pix.min())
        nx = math.ceil(u_pix.max() - u_pix.min() - 1e-6)
        ny = math.ceil(v_pix.max() - v_pix.min() - 1e-6)
    else:
        nx = math.ceil(u_pix.max() + crpix[0] + 0.5 - 1e-6)
        ny = math.ceil(v_pix.max() + crpix[1] + 0.5 - 1e-6)
    if nx < 1 or ny < 1:
        raise ValueError(f"the output grid would be {nx} x {ny} pixels: no input falls on it")
    return tan_wcs(crpix, crval, cd, (ny, nx)), scale / input_scale


def load_output_wcs(path: str | Path, output_shape: Sequence[int] | None = None) -> gwcs_wcs.WCS:
    """The GWCS stored under ``wcs`` in an ASDF file, with its array shape set.

    The shape comes from ``output_shape`` (nx, ny), else the WCS's pixel_shape,
    else its bounding box; without any of them ValueError (the romancal documentation,
    section "Resample").
    """
    import asdf

    with asdf.open(path, lazy_load=False, memmap=False) as af:
        if "wcs" not in af.tree:
            raise ValueError("no GWCS under the key 'wcs'")
        wcs = af.tree["wcs"]
    if output_shape is not None:
        wcs.pixel_shape = tuple(int(n) for n in output_shape)
    elif wcs.pixel_shape is None:
        if wcs.bounding_box is None:
            raise ValueError("the WCS has neither pixel_shape nor bounding_box: give output_shape")
        (_, x1), (_, y1) = wcs.bounding_box.bounding_box(order="F")
        wcs.pixel_shape = (int(x1 + 0.5 + 1e-9), int(y1 + 0.5 + 1e-9))
    return wcs


def wcsinfo(wcs, shape: tuple[int, int]) -> dict:
    """The Level 3 ``meta.wcsinfo`` of a mosaic grid (schema l3_wcsinfo), measured from its WCS.

    The reference pixel is the TAN grid's (``tan_wcs``), or the image centre for another WCS.
    """
    ny, nx = shape
    center = ((nx - 1) / 2.0, (ny - 1) / 2.0)
    crpix = tan_crpix(wcs) or center
    (ra_ref, dec_ref), jac_ref, scale_ref = local_frame(wcs, *crpix)
    (ra, dec), jac, scale = local_frame(wcs, *center)
    corners_x = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5])
    corners_y = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
    corner_ra, corner_dec = wcs(corners_x, corners_y, with_bounding_box=False)
    return {
        "ra_ref": ra_ref, "dec_ref": dec_ref, "x_ref": float(crpix[0]), "y_ref": float(crpix[1]),
        "pixel_scale_ref": scale_ref, "pixel_scale": scale, "projection": "TAN",
        "s_region": polygon_s_region(corner_ra, corner_dec),
        "image_shape": [int(nx), int(ny)], "ra": ra, "dec": dec,
        "orientation": _position_angle(jac), "orientation_ref": _position_angle(jac_ref),
        "skycell_name": None,
        "rotation_matrix": orientation_matrix(jac_ref, None).tolist(),
    }


def tan_crpix(wcs) -> tuple[float, float] | None:
    """The reference pixel of a TAN grid made by ``tan_wcs`` (None for another WCS)."""
    transform = wcs.forward_transform
    if getattr(transform, "name", None) != "detector_to_world":
        return None
    return (-float(transform.offset_0.value), -float(transform.offset_1.value))


def _position_angle(jacobian: np.ndarray) -> float:
    """Position angle (deg, east of north) of +Y from a tangent-plane Jacobian."""
    return math.degrees(math.atan2(jacobian[0, 1], jacobian[1, 1])) % 360.0
