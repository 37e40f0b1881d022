"""Drizzling Level 2 images onto a common sky grid and blotting a mosaic back.

Shared by the resample and outlier_detection steps (seed, "Resample" and
"Outlier Detection"): the output grid (a TAN GWCS covering every input at the
first input's orientation and scale unless told otherwise), the pixel map from
each input to that grid (input GWCS forward, output inverse, evaluated a block
of rows at a time), drizzle weights, the co-add of data, weight, context and
variances with ``drizzle.resample.Drizzle``, and blotting back with
``drizzle.resample.blot_image``. The ``tophat`` kernel, which drizzle 2.2's C
code no longer has, is done here in numpy (a circle of diameter ``pixfrac``
input pixels around each input pixel's centre).

Variances follow romancal 1.1: each variance array is drizzled as its square
root with the data's weights, squared, and combined across inputs with the
square of a per-input weight (inverse resampled read-noise variance for ``ivm``,
the exposure time for ``exptime``); ``err`` is the square root of the summed
variances.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy import coordinates
from astropy import units as u
from astropy.modeling import models as astmodels
from astropy.stats import sigma_clip
from drizzle.resample import Drizzle, blot_image
from drizzle.utils import decode_context
from gwcs import coordinate_frames as cf
from gwcs import wcs as gwcs_wcs

from . import dqflags
from .errors import ParameterError, PipelineError

__all__ = [
    "KERNELS", "VARIANCES", "OutputTooLargeError", "Exposure", "Mosaic", "Scratch", "scratch_space",
    "decode_context", "make_output_wcs", "tan_wcs", "load_output_wcs", "local_frame", "pixel_map",
    "drizzle_weight", "resample", "blot", "weight_threshold", "check_memory", "mosaic_bytes",
    "wcsinfo", "parse_pair", "parse_fillval", "exposure_group", "exposure_from_model", "mosaic_model",
]

log = logging.getLogger(__name__)

KERNELS = ("square", "gaussian", "point", "tophat", "turbo", "lanczos2", "lanczos3")
VARIANCES = ("var_rnoise", "var_poisson", "var_flat")
CONTEXT_BITS = 32
# Pixels of an input evaluated through its GWCS at once: bounds the temporaries
# of the transform chain (~1 M pixels, tens of MB) whatever the image size.
PIXMAP_BLOCK = 1 << 20
PLACEHOLDER = -999999


class OutputTooLargeError(PipelineError):
    """The resampled output would take more than ``allowed_memory`` of the available memory."""


@dataclass(frozen=True)
class Exposure:
    """One Level 2 image as the resampler needs it; arrays may be memory-mapped (read lazily)."""

    name: str
    data: np.ndarray
    dq: np.ndarray
    wcs: gwcs_wcs.WCS
    err: np.ndarray | None = None
    variances: dict[str, np.ndarray] = field(default_factory=dict)
    exposure_time: float = 1.0
    sky_level: float = 0.0      # background recorded but not subtracted: removed before drizzling
    group: str = ""             # images of one exposure (all detectors) share a group

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(np.shape(self.data))

    def read_noise_variance(self) -> np.ndarray | None:
        """VAR_RNOISE, or err^2 minus the other variances when it was not stored (rad 1.1 allows that)."""
        if "var_rnoise" in self.variances:
            return np.asarray(self.variances["var_rnoise"], dtype=np.float32)
        if self.err is None:
            return None
        variance = np.square(np.asarray(self.err, dtype=np.float32))
        for name in ("var_poisson", "var_flat"):
            if name in self.variances:
                variance -= np.asarray(self.variances[name], dtype=np.float32)
        return variance


@dataclass
class Mosaic:
    """Arrays and WCS of a resampled product (NaN where no input contributed unless filled)."""

    data: np.ndarray
    weight: np.ndarray
    wcs: gwcs_wcs.WCS
    context: np.ndarray | None = None
    err: np.ndarray | None = None
    variances: dict[str, np.ndarray] = field(default_factory=dict)
    members: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    exposure_time: float = 0.0       # mean over pixels with data of the summed exposure times
    max_exposure_time: float = 0.0
    pixel_scale_ratio: float = 1.0


class Scratch:
    """Where large work arrays live: RAM (``in_memory``) or memory-mapped files in a folder."""

    def __init__(self, directory: Path | None):
        self.directory = directory
        self._count = 0

    def array(self, shape, dtype, fill) -> np.ndarray:
        if self.directory is None:
            return np.full(shape, fill, dtype=dtype)
        self._count += 1
        array = np.lib.format.open_memmap(self.directory / f"work{self._count}.npy", mode="w+",
                                          dtype=dtype, shape=tuple(shape))
        array[...] = fill
        return array


@contextmanager
def scratch_space(in_memory: bool, near: Path | None = None):
    """A Scratch in RAM, or in a private folder beside ``near`` removed afterwards."""
    if in_memory:
        yield Scratch(None)
        return
    with tempfile.TemporaryDirectory(prefix=".drizzle.", dir=near) as folder:
        yield Scratch(Path(folder))


# --------------------------------------------------------------------------- parameters

def parse_pair(value, kind=float, name="value") -> tuple | None:
    """``None``, a 2-list, or the seed's command-line form ``"a, b"`` as a tuple of ``kind``."""
    if value is None:
        return None
    parts = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    try:
        pair = tuple(kind(part) for part in parts)
    except (TypeError, ValueError):
        raise ParameterError(f"{name}: expected two comma-separated numbers, got {value!r}") from None
    if len(pair) != 2:
        raise ParameterError(f"{name}: expected two values, got {value!r}")
    return pair


def parse_fillval(fillval: str | float | None) -> float | None:
    """None for ``INDEF`` (leave pixels without input as NaN), else the number."""
    if fillval is None or (isinstance(fillval, str) and fillval.strip().upper() in ("", "INDEF")):
        return None
    try:
        return float(fillval)
    except ValueError:
        raise ParameterError(f"fillval: expected INDEF or a number, got {fillval!r}") from None


# --------------------------------------------------------------------------- memory

def mosaic_bytes(shape: tuple[int, int], n_inputs: int, with_variances: bool = True) -> int:
    """Bytes of a resampled product and its accumulators (what ``allowed_memory`` is checked against)."""
    planes = (max(n_inputs, 1) - 1) // CONTEXT_BITS + 1
    per_pixel = 4 + 4 + 4 * planes                   # data, weight, context
    if with_variances:
        per_pixel += 4 + 4 * len(VARIANCES)          # err and the variances
        per_pixel += 8 * len(VARIANCES) + 8 + 4      # sums and weights, one drizzled variance, W_i
    return int(np.prod(shape)) * per_pixel


def check_memory(nbytes: int, allowed_memory: float | None, what: str) -> None:
    """Raise OutputTooLargeError when ``nbytes`` exceeds the allowed fraction of available memory.

    ``allowed_memory`` None falls back to the environment variable
    DMODEL_ALLOWED_MEMORY; when neither is set no check is made (seed).
    """
    if allowed_memory is None:
        setting = os.environ.get("DMODEL_ALLOWED_MEMORY", "").strip()
        if not setting:
            return
        try:
            allowed_memory = float(setting)
        except ValueError:
            raise ParameterError(f"DMODEL_ALLOWED_MEMORY={setting!r} is not a number") from None
    import psutil

    available = psutil.virtual_memory().available + psutil.swap_memory().free
    if nbytes > allowed_memory * available:
        raise OutputTooLargeError(
            f"{what} needs {nbytes / 2**20:.1f} MiB, more than allowed_memory={allowed_memory:g} "
            f"of the {available / 2**20:.0f} MiB available")


# --------------------------------------------------------------------------- WCS

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
    else its bounding box; without any of them ValueError (seed).
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


def wcsinfo(wcs, shape: tuple[int, int], crpix: Sequence[float] | None = None) -> dict:
    """The Level 3 ``meta.wcsinfo`` of a mosaic grid (schema l3_wcsinfo), measured from its WCS."""
    ny, nx = shape
    center = ((nx - 1) / 2.0, (ny - 1) / 2.0)
    if crpix is None:
        crpix = center
    (ra_ref, dec_ref), jac_ref, scale_ref = local_frame(wcs, *crpix)
    (ra, dec), jac, scale = local_frame(wcs, *center)
    corners_x = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5])
    corners_y = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
    corner_ra, corner_dec = wcs(corners_x, corners_y, with_bounding_box=False)
    return {
        "ra_ref": ra_ref, "dec_ref": dec_ref, "x_ref": float(crpix[0]), "y_ref": float(crpix[1]),
        "pixel_scale_ref": scale_ref, "pixel_scale": scale, "projection": "TAN",
        "s_region": "POLYGON ICRS " + " ".join(f"{r % 360.0:.9f} {d:.9f}"
                                               for r, d in zip(corner_ra, corner_dec, strict=True)),
        "image_shape": [int(nx), int(ny)], "ra": ra, "dec": dec,
        "orientation": _position_angle(jac), "orientation_ref": _position_angle(jac_ref),
        "skycell_name": None,
        "rotation_matrix": orientation_matrix(jac_ref, None).tolist(),
    }


def _position_angle(jacobian: np.ndarray) -> float:
    """Position angle (deg, east of north) of +Y from a tangent-plane Jacobian."""
    return math.degrees(math.atan2(jacobian[0, 1], jacobian[1, 1])) % 360.0


# --------------------------------------------------------------------------- pixel mapping

def pixel_map(wcs_from, shape: tuple[int, int], wcs_to, block: int = PIXMAP_BLOCK) -> np.ndarray:
    """(ny, nx, 2) float64 positions of the pixels of an image (``wcs_from``) in ``wcs_to``'s pixels.

    The input GWCS forward and the output's inverse (analytic when it has one)
    are evaluated on whole blocks of rows, so the temporaries of the transform
    chain stay bounded. Pixels that do not map are NaN.
    """
    ny, nx = shape
    pixmap = np.empty((ny, nx, 2), dtype=np.float64)
    rows = max(1, block // max(nx, 1))
    x = np.arange(nx, dtype=np.float64)
    try:
        inverse = wcs_to.backward_transform
    except NotImplementedError:
        inverse = None
    for start in range(0, ny, rows):
        stop = min(ny, start + rows)
        xx, yy = np.meshgrid(x, np.arange(start, stop, dtype=np.float64))
        ra, dec = wcs_from(xx, yy, with_bounding_box=False)
        if inverse is not None:
            out_x, out_y = inverse(ra, dec)
        else:
            out_x, out_y = wcs_to.invert(ra, dec, with_bounding_box=False)
        pixmap[start:stop, :, 0] = out_x
        pixmap[start:stop, :, 1] = out_y
    return pixmap


# --------------------------------------------------------------------------- weights

def drizzle_weight(exposure: Exposure, weight_type: str | None, good_bits) -> np.ndarray:
    """Per-pixel drizzle weight: ivm (1/VAR_RNOISE), exptime, or 1 (None), times the DQ mask.

    Pixels whose DQ holds a bit outside ``good_bits``, or whose data or
    variance is not finite, weigh 0. Without any read-noise variance, ivm
    weighs every good pixel 1 (romancal's fallback).
    """
    good = dqflags.good_pixel_mask(np.asarray(exposure.dq), good_bits)
    good &= np.isfinite(np.asarray(exposure.data))
    if weight_type == "ivm":
        variance = exposure.read_noise_variance()
        if variance is None:
            log.warning("%s: no read-noise variance, ivm weights of 1", exposure.name)
            weight = good.astype(np.float32)
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                weight = np.where(good & (variance > 0) & np.isfinite(variance),
                                  1.0 / variance, 0.0).astype(np.float32)
    elif weight_type == "exptime":
        weight = np.where(good, np.float32(exposure.exposure_time), np.float32(0))
    elif weight_type is None:
        weight = good.astype(np.float32)
    else:
        raise ParameterError(f"weight_type: unknown value {weight_type!r} (ivm, exptime or None)")
    return weight


def weight_threshold(weight: np.ndarray, maskpt: float) -> float:
    """maskpt times the mean of the 3-sigma-clipped non-zero weights (romancal/stcal's rule)."""
    values = weight[np.isfinite(weight) & (weight > 0)]
    if values.size == 0:
        return 0.0
    clipped = sigma_clip(values, sigma=3, maxiters=5, masked=False, copy=False)
    return float(np.mean(clipped, dtype=np.float64)) * maskpt


# --------------------------------------------------------------------------- co-adding

class _Accumulator:
    """A weighted-mean image (data, weight, optional context) that inputs are drizzled into."""

    def __init__(self, scratch: Scratch, shape, kernel: str, pixfrac: float, n_inputs: int,
                 with_context: bool):
        self.shape = tuple(shape)
        self.kernel = kernel
        self.pixfrac = pixfrac
        self.img = scratch.array(self.shape, np.float32, np.nan)
        self.wht = scratch.array(self.shape, np.float32, 0.0)
        planes = (max(n_inputs, 1) - 1) // CONTEXT_BITS + 1
        self.ctx = scratch.array((planes, *self.shape), np.int32, 0) if with_context else None
        self._drizzle = None
        if kernel != "tophat":
            # INDEF: drizzle leaves pixels without weight alone (NaN here); fillval comes at the end.
            self._drizzle = Drizzle(kernel=kernel, fillval="INDEF", out_img=self.img, out_wht=self.wht,
                                    out_ctx=self.ctx, disable_ctx=not with_context)
        self.n_added = 0

    def add(self, data, pixmap, weight, pixel_scale_ratio: float) -> None:
        if self._drizzle is not None:
            self._drizzle.add_image(data, exptime=1.0, pixmap=pixmap, weight_map=weight,
                                    pixfrac=self.pixfrac, pixel_scale_ratio=pixel_scale_ratio,
                                    in_units="cps")
        else:
            self._add_tophat(data, pixmap, weight, pixel_scale_ratio)
        self.n_added += 1

    def _add_tophat(self, data, pixmap, weight, pixel_scale_ratio: float) -> None:
        """Each input pixel adds to the output pixels whose centres lie within pixfrac/2 input pixels."""
        radius = 0.5 * self.pixfrac / pixel_scale_ratio
        reach = math.ceil(radius)
        ny, nx = self.shape
        use = (weight > 0) & np.isfinite(data) & np.all(np.isfinite(pixmap), axis=-1)
        xo, yo = pixmap[..., 0][use], pixmap[..., 1][use]
        values = np.asarray(data, dtype=np.float64)[use]
        weights = np.asarray(weight, dtype=np.float64)[use]
        x_near, y_near = np.floor(xo + 0.5).astype(np.int64), np.floor(yo + 0.5).astype(np.int64)
        sum_w = np.zeros(ny * nx)
        sum_wd = np.zeros(ny * nx)
        for dy in range(-reach, reach + 1):
            for dx in range(-reach, reach + 1):
                xi, yi = x_near + dx, y_near + dy
                inside = ((xo - xi) ** 2 + (yo - yi) ** 2 <= radius * radius) & \
                    (xi >= 0) & (xi < nx) & (yi >= 0) & (yi < ny)
                index = yi[inside] * nx + xi[inside]
                sum_w += np.bincount(index, weights=weights[inside], minlength=ny * nx)
                sum_wd += np.bincount(index, weights=weights[inside] * values[inside], minlength=ny * nx)
        sum_w = sum_w.reshape(self.shape)
        sum_wd = sum_wd.reshape(self.shape)
        hit = sum_w > 0
        previous = np.where(self.wht[hit] > 0, self.img[hit], 0.0).astype(np.float64)
        total = self.wht[hit] + sum_w[hit]
        self.img[hit] = ((previous * self.wht[hit] + sum_wd[hit]) / total).astype(np.float32)
        self.wht[hit] = total.astype(np.float32)
        if self.ctx is not None:
            plane, bit = divmod(self.n_added, CONTEXT_BITS)
            self.ctx[plane][hit] |= np.int32(np.uint32(1 << bit).view(np.int32))


class _VarianceSum:
    """Σ W_i² var_i and Σ W_i over inputs, on the output grid (romancal's variance combination)."""

    def __init__(self, scratch: Scratch, shape):
        self.weighted = scratch.array(shape, np.float32, 0.0)
        self.weight = scratch.array(shape, np.float32, 0.0)
        self.seen = False

    def add(self, variance: np.ndarray, weight: np.ndarray) -> None:
        use = np.isfinite(variance) & (variance >= 0) & (weight > 0)
        with np.errstate(invalid="ignore", over="ignore"):
            np.add(self.weighted, variance * weight * weight, out=self.weighted, where=use)
        np.add(self.weight, weight, out=self.weight, where=use)
        self.seen = True

    def result(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            variance = np.where(self.weight > 0, self.weighted / np.square(self.weight), np.nan)
        return variance.astype(np.float32)


def resample(exposures: Iterable[Exposure], output_wcs, *, n_inputs: int, kernel: str = "square",
             pixfrac: float = 1.0, fillval: str | float | None = "INDEF", weight_type: str | None = "ivm",
             good_bits="~DO_NOT_USE+NON_SCIENCE", with_variances: bool = True,
             with_context: bool = True, scratch: Scratch | None = None) -> Mosaic:
    """Drizzle ``exposures`` (read one at a time) onto ``output_wcs``'s grid; inputs are not modified.

    Data are surface brightness (MJy/sr), so they are averaged with iscale 1.
    ``n_inputs`` sizes the context image. A sky level recorded but not
    subtracted is removed first. Output pixels without weight get ``fillval``
    (INDEF leaves NaN).
    """
    if kernel not in KERNELS:
        raise ParameterError(f"kernel: {kernel!r} is not one of {', '.join(KERNELS)}")
    if not 0.0 <= pixfrac <= 1.0:
        raise ParameterError(f"pixfrac: {pixfrac} is not in [0, 1]")
    if pixfrac < 0.001 and kernel != "point":
        log.info("pixfrac %g < 0.001: using the point kernel", pixfrac)
        kernel = "point"
    fill = parse_fillval(fillval)
    scratch = scratch or Scratch(None)
    shape = tuple(output_wcs.array_shape)
    _, _, output_scale = local_frame(output_wcs, *bounding_box_center(output_wcs, shape))
    science = _Accumulator(scratch, shape, kernel, pixfrac, n_inputs, with_context)
    sums = {name: _VarianceSum(scratch, shape) for name in VARIANCES} if with_variances else {}
    one_variance = _Accumulator(scratch, shape, kernel, pixfrac, 1, False) if with_variances else None
    members, groups, times, first_ratio = [], [], [], None

    for exposure in exposures:
        if science.n_added >= n_inputs:
            raise ValueError(f"more than n_inputs={n_inputs} exposures")
        pixmap = pixel_map(exposure.wcs, exposure.shape, output_wcs)
        _, _, input_scale = local_frame(exposure.wcs, *bounding_box_center(exposure.wcs, exposure.shape))
        ratio = output_scale / input_scale
        first_ratio = ratio if first_ratio is None else first_ratio
        weight = drizzle_weight(exposure, weight_type, good_bits)
        data = np.asarray(exposure.data, dtype=np.float32)
        data = np.where(np.isfinite(data), data - np.float32(exposure.sky_level), np.float32(0))
        log.info("drizzling %s (%d x %d) onto %d x %d, sky %g removed", exposure.name,
                 exposure.shape[1], exposure.shape[0], shape[1], shape[0], exposure.sky_level)
        science.add(data, pixmap, weight, ratio)
        if with_variances:
            _add_variances(exposure, pixmap, weight, ratio, weight_type, one_variance, sums)
        members.append(exposure.name)
        if exposure.group not in groups:
            groups.append(exposure.group)
        times.append(exposure.exposure_time)

    if science.n_added == 0:
        raise ValueError("no input images")
    if fill is not None:
        science.img[science.wht == 0] = fill
    mosaic = Mosaic(data=science.img, weight=science.wht, wcs=output_wcs, context=science.ctx,
                    members=members, groups=groups, pixel_scale_ratio=first_ratio)
    if with_variances:
        mosaic.variances = {name: total.result() for name, total in sums.items() if total.seen}
        stack = np.stack(list(mosaic.variances.values())) if mosaic.variances else None
        if stack is not None:
            with np.errstate(invalid="ignore"):
                err = np.sqrt(np.nansum(stack, axis=0)).astype(np.float32)
            err[np.all(np.isnan(stack), axis=0)] = np.nan
            mosaic.err = err
    if science.ctx is not None:
        mosaic.exposure_time, mosaic.max_exposure_time = _exposure_time_statistics(science.ctx, times)
    return mosaic


def _add_variances(exposure, pixmap, weight, ratio, weight_type, accumulator, sums) -> None:
    """Drizzle each variance as its square root, square it, and add it with the input's weight squared.

    The input's weight on the output grid is the inverse of its resampled
    read-noise variance (ivm, resampled first) or its exposure time.
    """
    output_weight = None
    for name in VARIANCES:
        variance = exposure.read_noise_variance() if name == "var_rnoise" else exposure.variances.get(name)
        if variance is None:
            continue
        accumulator.img[...] = np.nan
        accumulator.wht[...] = 0.0
        sigma = np.sqrt(np.clip(np.asarray(variance, dtype=np.float32), 0, None))
        accumulator.add(np.nan_to_num(sigma), pixmap, weight, ratio)
        resampled = np.square(accumulator.img)
        if output_weight is None:
            if weight_type == "ivm" and name == "var_rnoise":
                with np.errstate(divide="ignore", invalid="ignore"):
                    output_weight = np.where((resampled > 0) & np.isfinite(resampled), 1.0 / resampled,
                                             0.0).astype(np.float32)
            else:
                output_weight = np.full(accumulator.shape, exposure.exposure_time
                                        if weight_type == "exptime" else 1.0, dtype=np.float32)
        sums[name].add(resampled, output_weight)


def _exposure_time_statistics(context: np.ndarray, times: Sequence[float]) -> tuple[float, float]:
    """Mean (over pixels with data) and maximum of the summed exposure time of contributing inputs."""
    total = np.zeros(context.shape[1:], dtype=np.float64)
    unsigned = context.view(np.uint32)
    for index, exposure_time in enumerate(times):
        plane, bit = divmod(index, CONTEXT_BITS)
        total += exposure_time * ((unsigned[plane] >> np.uint32(bit)) & np.uint32(1))
    covered = total > 0
    if not covered.any():
        return 0.0, 0.0
    return float(total[covered].mean()), float(total.max())


# --------------------------------------------------------------------------- blot

def blot(median: np.ndarray, pixmap: np.ndarray, fillval: float = 0.0, interp: str = "poly5") -> np.ndarray:
    """The mosaic ``median`` interpolated back onto an input's pixels (``pixmap``: input -> mosaic).

    Quintic interpolation (drizzlepac's and JWST's default; romancal 1.1 uses
    linear) keeps the peaks of sharp stars, which linear interpolation lowers
    enough for the seed's ``scale`` 0.5 to flag their cores. Input pixels that
    do not map onto the mosaic get ``fillval``.
    """
    ny, nx = median.shape
    inside = (np.isfinite(pixmap).all(axis=-1)
              & (pixmap[..., 0] >= -0.5) & (pixmap[..., 0] <= nx - 0.5)
              & (pixmap[..., 1] >= -0.5) & (pixmap[..., 1] <= ny - 0.5))
    # tblot cannot take NaN positions: send them far outside the mosaic.
    safe = np.where(np.isfinite(pixmap), pixmap, -1e6)
    out = np.full(pixmap.shape[:2], fillval, dtype=np.float32)
    blot_image(np.ascontiguousarray(median, dtype=np.float32), safe, out_img=out, fillval=fillval,
               iscale=1.0, interp=interp)
    out[~inside] = fillval
    return out


# --------------------------------------------------------------------------- Roman models

# meta sections of the inputs tabulated in a mosaic's individual_image_meta (rad 1.1).
INDIVIDUAL_META_TABLES = (
    "background", "cal_step", "coordinates", "ephemeris", "exposure", "guide_star", "instrument",
    "observation", "photometry", "pointing", "program", "rcs", "ref_file", "velocity_aberration",
    "visit", "wcsinfo",
)
OBSERVATION_KEYS = ("execution_plan", "exposure", "observation", "pass", "program", "segment", "visit")
PROGRAM_KEYS = ("title", "investigator_name", "category", "subcategory", "science_category")
L3_CAL_STEPS = ("flux", "outlier_detection", "skymatch", "resample")


def exposure_group(model, index: int) -> str:
    """The exposure an image belongs to (its detectors share it): meta.observation.observation_id.

    Images without a real observation_id are each their own group.
    """
    observation = model.meta.get("observation", {})
    observation_id = observation.get("observation_id") if hasattr(observation, "get") else None
    if observation_id in (None, "", "?"):
        return f"member{index}"
    return str(observation_id)


def exposure_from_model(model, name: str, index: int) -> Exposure:
    """An Exposure over a Level 2 ImageModel's arrays (memory maps stay lazy); ValueError without a WCS."""
    from .products import plain_array

    wcs = model.meta.get("wcs")
    if wcs is None:
        raise ValueError("meta.wcs is not set (assign_wcs has not run)")
    exposure_meta = model.meta.get("exposure", {})
    exposure_time = _number(exposure_meta.get("exposure_time"))
    sky_level = 0.0
    background = model.meta.get("background")
    if background is not None and not background.get("subtracted", False):
        level = _number(background.get("level"))
        sky_level = level if np.isfinite(level) else 0.0
    return Exposure(
        name=name, data=plain_array(model.data), dq=plain_array(model.dq), wcs=wcs,
        err=plain_array(model.err) if "err" in model else None,
        variances={v: plain_array(model[v]) for v in VARIANCES if v in model},
        exposure_time=exposure_time if np.isfinite(exposure_time) and exposure_time > 0 else 1.0,
        sky_level=sky_level, group=exposure_group(model, index))


def mosaic_model(mosaic: Mosaic, models: Sequence, *, association_name: str, good_bits, weight_type,
                 pixfrac: float, blend: bool = True):
    """A validated-on-write rad 1.1 MosaicModel holding ``mosaic``; ``models`` are its inputs.

    ``blend`` (the seed's blendheaders) tabulates every input's metadata in
    ``individual_image_meta`` and keeps a value (observation, program, filter,
    cal_step) only where all inputs agree (else None, or INCOMPLETE for
    cal_step); without it the first input's values are used.
    """
    from astropy.time import Time
    from roman_datamodels import datamodels

    shape = mosaic.data.shape
    model = datamodels.MosaicModel.create_minimal()
    meta = model.meta
    meta.calibration_software_name = "roman-wfi-workflow"
    meta.calibration_software_version = _software_version()
    meta.product_type = "i2d"
    meta.association = {"name": str(association_name)}
    sources = list(models) if blend else list(models)[:1]

    meta.cal_step = {step: _agreed([m.meta.get("cal_step", {}).get(step, "INCOMPLETE") for m in sources],
                                   "INCOMPLETE") for step in L3_CAL_STEPS}
    meta.resample = {
        "good_bits": str(good_bits), "members": list(mosaic.members),
        "pixel_scale_ratio": float(mosaic.pixel_scale_ratio), "pixfrac": float(pixfrac),
        "pointings": len(mosaic.groups), "weight_type": str(weight_type),
    }
    meta.wcs = mosaic.wcs
    crpix = _tan_crpix(mosaic.wcs)
    meta.wcsinfo = wcsinfo(mosaic.wcs, shape, crpix)

    exposures = [m.meta.get("exposure", {}) for m in models]
    starts = [Time(e["start_time"]) for e in exposures if e.get("start_time") is not None]
    ends = [Time(e["end_time"]) for e in exposures if e.get("end_time") is not None]
    now = Time.now()
    meta.coadd_info = {
        "time_first": min(starts) if starts else now, "time_last": max(ends) if ends else now,
        "time_mean": Time(starts).mean() if starts else now,
        "exposure_time": float(mosaic.exposure_time), "max_exposure_time": float(mosaic.max_exposure_time),
    }
    filters = [m.meta.get("instrument", {}).get("optical_element") for m in sources]
    meta.instrument = {"name": "WFI", "optical_element": _agreed(filters, None)}
    observation = {key: _agreed([_placeholder_none(m.meta.get("observation", {}).get(key)) for m in sources],
                                None) for key in OBSERVATION_KEYS}
    visit_keys = ("execution_plan", "pass", "segment", "observation", "visit")
    observation["exposure_grouping"] = (
        "v{execution_plan:02d}{pass:03d}{segment:03d}{observation:03d}{visit:03d}".format(**observation)
        if all(observation[key] is not None for key in visit_keys) else None)
    meta.observation = observation
    meta.program = {key: _agreed([_placeholder_none(m.meta.get("program", {}).get(key)) for m in sources],
                                 None) for key in PROGRAM_KEYS}
    meta.statistics = _statistics(mosaic.data, mosaic.weight)
    meta.individual_image_meta = _individual_image_meta(models) if blend else {}

    model.data = np.asarray(mosaic.data, dtype=np.float32)
    model.weight = np.asarray(mosaic.weight, dtype=np.float32)
    context = mosaic.context if mosaic.context is not None else np.zeros((1, *shape), np.int32)
    model.context = np.asarray(context).view(np.uint32)
    model.err = (np.asarray(mosaic.err, dtype=np.float32) if mosaic.err is not None
                 else np.zeros(shape, np.float32))
    for name in VARIANCES:
        if name in mosaic.variances:
            model[name] = np.asarray(mosaic.variances[name], dtype=np.float32)
        elif name != "var_flat":        # var_flat is optional in the schema, the others are not
            model[name] = np.zeros(shape, np.float32)
    return model


def _software_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("roman-wfi-workflow")
    except metadata.PackageNotFoundError:
        return "unknown"


def _tan_crpix(wcs) -> tuple[float, float] | None:
    """The reference pixel of a TAN grid made by ``tan_wcs`` (None for another WCS)."""
    transform = wcs.forward_transform
    if getattr(transform, "name", None) != "detector_to_world":
        return None
    return (-float(transform.offset_0.value), -float(transform.offset_1.value))


def _number(value) -> float:
    try:
        return float(getattr(value, "value", value))
    except (TypeError, ValueError):
        return float("nan")


def _placeholder_none(value):
    """rad's placeholders (-999999, '?') as None: they are no value."""
    return None if value in (PLACEHOLDER, "?") else value


def _agreed(values: list, default):
    """The common value of all inputs, else ``default``."""
    return values[0] if values and all(v == values[0] for v in values) else default


def _statistics(data: np.ndarray, weight: np.ndarray) -> dict:
    good = (weight > 0) & np.isfinite(data)
    if not good.any():
        return {"image_median": float("nan"), "image_rms": float("nan"), "good_pixel_fraction": 0.0}
    values = np.asarray(data[good], dtype=np.float64)
    return {"image_median": float(np.median(values)),
            "image_rms": float(np.mean(np.abs(values - values.mean()))),
            "good_pixel_fraction": float(good.mean())}


def _individual_image_meta(models: Sequence) -> dict:
    """One astropy Table per meta section, one row per input (nested values as strings)."""
    from astropy.table import Table
    from astropy.time import Time

    def cell(value):
        if isinstance(value, Time):
            return value.isot
        if isinstance(value, (bool, int, float, str, np.bool_, np.integer, np.floating)):
            return value
        return str(getattr(value, "value", value)) if value is not None else None

    tables = {}
    basic = [{key: cell(value) for key, value in m.meta.items()
              if not hasattr(value, "items") and key != "wcs"} for m in models]
    for name, rows in [("basic", basic)] + [
            (section, [{key: cell(value) for key, value in m.meta.get(section, {}).items()}
                       for m in models])
            for section in INDIVIDUAL_META_TABLES if any(section in m.meta for m in models)]:
        columns = {}
        keys = sorted({key for row in rows for key in row})
        for key in keys:
            values = [row.get(key) for row in rows]
            kinds = {type(v) for v in values}
            if None in values or len(kinds) > 1 or not kinds <= {bool, int, float, str, np.bool_,
                                                                np.int64, np.float64, np.float32}:
                values = [str(v) for v in values]
            columns[key] = values
        if columns:
            tables[name] = Table(columns)
    return tables
