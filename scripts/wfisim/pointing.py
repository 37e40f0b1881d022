"""Where a detector looks: the real WFI geometry of the Roman SIAF, attitudes, and the WCS keywords.

The 18 detectors, their places in the focal plane and their distortion come from
pysiaf's Roman SIAF (apertures ``WFI01_FULL`` ... ``WFI18_FULL`` and ``WFI_CEN``).
Chain, pixel -> sky, in the conventions of romancal's WCS (``assign_wcs``):

* **cutout**: a simulated readout of ``N x N`` pixels (4-pixel reference border
  included) is the central ``N x N`` part of the 4096 x 4096 detector. Its Level 2
  image (border trimmed, ``(N-8) x (N-8)``) has 0-based pixel ``(x, y)`` at
  1-based SIAF science pixel ``(x + o + 1, y + o + 1)``, ``o = (4088 - (N-8)) / 2``
  (``o = 0`` for a full detector). A Level 1 readout pixel is the Level 2 pixel + 4.
* **sci -> ideal**: the SIAF's ``Sci2Idl`` polynomials (degree 5) of
  ``(x_sci - XSciRef, y_sci - YSciRef)``, in arcsec; ``Idl2Sci`` is their inverse.
* **ideal -> V2/V3** (planar, as pysiaf's default ``idl_to_tel``): rotation by
  ``V3IdlYAngle`` with parity ``VIdlParity`` about ``(V2Ref, V3Ref)``.
* **V2/V3 -> sky**: the attitude matrix of a :class:`Pointing`, made from where
  ``WFI_CEN`` points and the position angle of +V3 there (pysiaf's attitude
  convention), i.e. the spherical rotation romancal builds from
  ``meta.wcsinfo`` (``v2_ref``, ``v3_ref``, ``roll_ref``, ``dec_ref``, ``ra_ref``).

:func:`distortion_model` is the first three steps as one astropy model, Level 2
pixel -> (v2, v3) arcsec, with the ``Idl2Sci`` chain as its ``.inverse``: the
DISTORTION reference holds exactly this model. The simulator itself places stars
with the forward model (its :meth:`DetectorGeometry.sky_to_pixel` refines the
polynomial inverse until the forward model maps the pixel back to the star to
better than 1e-6 pixel), so the truth is exact for the forward transform.

``meta.wcsinfo`` (:meth:`DetectorGeometry.wcsinfo`): ``aperture_name`` WFInn_FULL,
``v2_ref``/``v3_ref`` the aperture's SIAF ``V2Ref``/``V3Ref`` (arcsec), ``ra_ref``/
``dec_ref`` where that point lands on the sky (deg), ``roll_ref`` the position
angle of +V3 there (deg east of north), ``vparity`` -1, ``v3yangle`` -60 deg, and
``s_region`` the sky polygon of the Level 2 image's outer pixel edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from astropy.modeling import models

from .detector import BORDER

NOMINAL_PIXEL_SCALE_ARCSEC = 0.11  # the unit of dither offsets (ideal frame of WFI_CEN)
SCIENCE_SIZE = 4088  # light-sensitive pixels per side of a full detector
INVERSE_TOLERANCE_PIXELS = 1e-6
_INVERSE_ITERATIONS = 5


@cache
def _siaf():
    import pysiaf  # slow import (reads the SIAF XML); only geometry needs it

    return pysiaf.Siaf("Roman")


@dataclass(frozen=True)
class Aperture:
    """The SIAF numbers of one aperture used here (arcsec, deg, 1-based science pixels)."""

    name: str
    v2_ref: float
    v3_ref: float
    v3_idl_yangle: float
    vidl_parity: int
    x_sci_ref: float | None
    y_sci_ref: float | None


@cache
def aperture(name: str) -> Aperture:
    """SIAF aperture ``name`` (``WFI_CEN``, or ``WFI01`` ... ``WFI18`` for ``WFInn_FULL``)."""
    full = name.upper() if name.upper() == "WFI_CEN" else f"{detector_name(name)}_FULL"
    siaf = _siaf()[full]
    return Aperture(full, float(siaf.V2Ref), float(siaf.V3Ref), float(siaf.V3IdlYAngle),
                    int(siaf.VIdlParity), _maybe_float(siaf.XSciRef), _maybe_float(siaf.YSciRef))


def detector_name(detector: str) -> str:
    """``WFInn`` of a detector name (``WFI1``, ``wfi01``, ``WFI01_FULL`` all give ``WFI01``)."""
    number = detector.upper().removesuffix("_FULL").removeprefix("WFI")
    if not number.isdigit() or not 1 <= int(number) <= 18:
        raise ValueError(f"no WFI detector {detector!r} (WFI01 to WFI18)")
    return f"WFI{int(number):02d}"


def aperture_v2v3(detector: str) -> tuple[float, float]:
    """(v2_ref, v3_ref) in arcsec of ``WFInn_FULL`` (SIAF V2Ref, V3Ref)."""
    ref = aperture(detector)
    return ref.v2_ref, ref.v3_ref


def wfi_cen_v2v3() -> tuple[float, float]:
    ref = aperture("WFI_CEN")
    return ref.v2_ref, ref.v3_ref


def cutout_offset(size: int) -> float:
    """``o``: Level 2 pixel ``x`` of an ``size``-wide readout is full-detector science pixel ``x + o``."""
    science = size - 2 * BORDER
    if not 0 < science <= SCIENCE_SIZE:
        raise ValueError(f"readout size {size} is not between {2 * BORDER + 1} "
                         f"and {SCIENCE_SIZE + 2 * BORDER}")
    return (SCIENCE_SIZE - science) / 2.0


@cache
def distortion_model(detector: str, shape: tuple[int, int]) -> models.Model:
    """Level 2 pixel (0-based, of a ``shape`` readout's trimmed image) -> (v2, v3) arcsec, with inverse.

    ``Shift`` to the SIAF reference pixel | ``Sci2Idl`` polynomials | ideal -> V2/V3
    affine transform; ``.inverse`` runs ``Idl2Sci`` back. Bounding box: the Level 2
    image, pixel edges included. Cached: treat the returned model as read-only.
    """
    ref = aperture(detector)
    nrows, ncols = shape
    siaf = _siaf()[ref.name]
    # 0-based Level 2 x -> 1-based science X = x + o + 1 -> polynomial argument X - XSciRef.
    dx = cutout_offset(ncols) + 1.0 - ref.x_sci_ref
    dy = cutout_offset(nrows) + 1.0 - ref.y_sci_ref
    sci_to_idl_x, sci_to_idl_y = siaf.distortion_transform("sci", "idl")
    idl_to_sci_x, idl_to_sci_y = siaf.distortion_transform("idl", "sci", include_offset=False)
    idl_to_v2v3 = _idl_to_v2v3_affine(ref)

    forward = ((models.Shift(dx) & models.Shift(dy)) | models.Mapping((0, 1, 0, 1))
               | (sci_to_idl_x & sci_to_idl_y) | idl_to_v2v3)
    backward = (idl_to_v2v3.inverse | models.Mapping((0, 1, 0, 1)) | (idl_to_sci_x & idl_to_sci_y)
                | (models.Shift(-dx) & models.Shift(-dy)))
    forward.inverse = backward
    forward.inputs, forward.outputs = ("x", "y"), ("v2", "v3")
    forward.bounding_box = ((-0.5, nrows - 2 * BORDER - 0.5), (-0.5, ncols - 2 * BORDER - 0.5))
    forward.name = f"{ref.name}_distortion"
    return forward


def _idl_to_v2v3_affine(ref: Aperture) -> models.AffineTransformation2D:
    angle = np.radians(ref.v3_idl_yangle)
    parity = ref.vidl_parity
    matrix = [[parity * np.cos(angle), np.sin(angle)], [-parity * np.sin(angle), np.cos(angle)]]
    return models.AffineTransformation2D(matrix=matrix, translation=[ref.v2_ref, ref.v3_ref])


@dataclass(frozen=True, eq=False)
class Pointing:
    """Attitude of the observatory: the matrix taking V2/V3 unit vectors to ICRS unit vectors."""

    attitude: np.ndarray

    @classmethod
    def at(cls, ra: float, dec: float, pa_v3: float) -> Pointing:
        """The WFI_CEN aperture at (``ra``, ``dec``) deg, the V3 axis at ``pa_v3`` deg east of north."""
        v2, v3 = (value / 3600.0 for value in wfi_cen_v2v3())
        return cls(_rotation(3, -ra) @ _rotation(2, dec) @ _rotation(1, pa_v3)
                   @ _rotation(2, -v3) @ _rotation(3, v2))

    @property
    def ra(self) -> float:
        return float(self.v2v3_to_sky(*wfi_cen_v2v3())[0])

    @property
    def dec(self) -> float:
        return float(self.v2v3_to_sky(*wfi_cen_v2v3())[1])

    @property
    def pa_v3(self) -> float:
        """Position angle of +V3 at WFI_CEN (deg east of north)."""
        return v3_position_angle(self, *wfi_cen_v2v3())

    def v2v3_to_sky(self, v2, v3):
        """(ra, dec) deg of V2/V3 positions (arcsec)."""
        return _from_unit(_rotate(self.attitude, _to_unit(np.asarray(v2) / 3600.0, np.asarray(v3) / 3600.0)))

    def sky_to_v2v3(self, ra, dec):
        """(v2, v3) arcsec of sky positions (deg)."""
        v2, v3 = _from_unit(_rotate(self.attitude.T, _to_unit(np.asarray(ra), np.asarray(dec))))
        return (np.where(v2 > 180.0, v2 - 360.0, v2) * 3600.0, v3 * 3600.0)

    def dithered(self, dx: float, dy: float) -> Pointing:
        """After a small slew that moves the sky by (-dx, -dy) nominal pixels in WFI_CEN's ideal frame.

        Nominal pixels are 0.11"; on a detector the shift in its own pixels differs
        by the local scale and distortion (by up to ~2 %). A slew keeps the inertial
        roll: the attitude turns about the axis normal to the old and new WFI_CEN
        directions.
        """
        cen = aperture("WFI_CEN")
        delta_v2, delta_v3 = _ideal_to_v2v3(dx * NOMINAL_PIXEL_SCALE_ARCSEC, dy * NOMINAL_PIXEL_SCALE_ARCSEC,
                                            0.0, 0.0, cen)
        v2, v3 = cen.v2_ref, cen.v3_ref
        start = _to_unit(v2 / 3600.0, v3 / 3600.0)
        end = _to_unit((v2 + delta_v2) / 3600.0, (v3 + delta_v3) / 3600.0)
        return Pointing(self.attitude @ _rotation_between(start, end))

    def perturbed(self, offset_arcsec: float, direction_deg: float, roll_deg: float) -> Pointing:
        """This attitude mis-known by ``offset_arcsec`` and ``roll_deg``: a pointing error.

        WFI_CEN lands ``offset_arcsec`` away from where it lands under ``self``, in
        the direction ``direction_deg`` (from +V3 towards +V2 in the V2/V3 plane),
        and the field turns by ``roll_deg`` about WFI_CEN (positive: the position
        angle of +V3 increases).
        """
        v2, v3 = wfi_cen_v2v3()
        direction = np.radians(direction_deg)
        start = _to_unit(v2 / 3600.0, v3 / 3600.0)
        end = _to_unit((v2 + offset_arcsec * np.sin(direction)) / 3600.0,
                       (v3 + offset_arcsec * np.cos(direction)) / 3600.0)
        # Rescale the step so that the angle between the two directions is exactly the offset.
        normal = end - (end @ start) * start
        normal /= np.linalg.norm(normal)
        angle = np.radians(offset_arcsec / 3600.0)
        end = np.cos(angle) * start + np.sin(angle) * normal
        # A turn of the V frame by -roll about WFI_CEN turns the sky image by +roll.
        return Pointing(self.attitude @ _rotation_between(start, end) @ _rotation_about(start, -roll_deg))


def separation_arcsec(ra1, dec1, ra2, dec2):
    """Angular distance (arcsec) between sky positions (deg)."""
    ra1, dec1, ra2, dec2 = np.broadcast_arrays(ra1, dec1, ra2, dec2)
    one, two = _to_unit(ra1, dec1), _to_unit(ra2, dec2)
    return np.degrees(np.arctan2(np.linalg.norm(np.cross(one, two, axis=0), axis=0),
                                 np.sum(one * two, axis=0))) * 3600.0


@dataclass(frozen=True)
class DetectorGeometry:
    """Pixel <-> sky of one detector (readout ``shape``, border included) under a pointing.

    Pixels here are Level 1 *readout* pixels (0-based, border included), as the
    truth files record them; Level 2 pixel = readout pixel - 4.
    """

    detector: str
    shape: tuple[int, int]
    pointing: Pointing

    @property
    def v2v3_ref(self) -> tuple[float, float]:
        return aperture_v2v3(self.detector)

    @property
    def distortion(self) -> models.Model:
        """Level 2 pixel -> V2/V3 (the DISTORTION reference's transform)."""
        return distortion_model(detector_name(self.detector), tuple(self.shape))

    @property
    def reference_pixel(self) -> tuple[float, float]:
        """Readout pixel (x, y) of the aperture's reference point (SIAF XSciRef, YSciRef)."""
        ref = aperture(self.detector)
        nrows, ncols = self.shape
        return (ref.x_sci_ref - 1.0 - cutout_offset(ncols) + BORDER,
                ref.y_sci_ref - 1.0 - cutout_offset(nrows) + BORDER)

    def pixel_to_v2v3(self, x, y):
        return self.distortion(np.asarray(x, dtype=float) - BORDER, np.asarray(y, dtype=float) - BORDER)

    def v2v3_to_pixel(self, v2, v3):
        """Readout pixel of V2/V3 positions: the polynomial inverse, refined on the forward model."""
        v2, v3 = np.asarray(v2, dtype=float), np.asarray(v3, dtype=float)
        inverse = self.distortion.inverse
        first_x, first_y = x, y = inverse(v2, v3)
        for _ in range(_INVERSE_ITERATIONS):
            back_x, back_y = inverse(*self.distortion(x, y))
            step_x, step_y = first_x - back_x, first_y - back_y
            x, y = x + step_x, y + step_y
            if max(np.max(np.abs(step_x), initial=0.0), np.max(np.abs(step_y), initial=0.0)) \
                    < INVERSE_TOLERANCE_PIXELS:
                break
        return x + BORDER, y + BORDER

    def pixel_to_sky(self, x, y):
        return self.pointing.v2v3_to_sky(*self.pixel_to_v2v3(x, y))

    def sky_to_pixel(self, ra, dec):
        return self.v2v3_to_pixel(*self.pointing.sky_to_v2v3(ra, dec))

    def wcsinfo(self) -> dict:
        """``meta.wcsinfo``: the aperture's reference point on the sky and the V3 angle there."""
        ref = aperture(self.detector)
        ra_ref, dec_ref = self.pointing.v2v3_to_sky(ref.v2_ref, ref.v3_ref)
        nrows, ncols = self.shape
        low, high_x, high_y = BORDER - 0.5, ncols - BORDER - 0.5, nrows - BORDER - 0.5
        corners_x, corners_y = [low, high_x, high_x, low], [low, low, high_y, high_y]
        corners = np.column_stack(self.pixel_to_sky(corners_x, corners_y)).ravel()
        return {
            "aperture_name": ref.name,
            "v2_ref": ref.v2_ref, "v3_ref": ref.v3_ref,
            "vparity": ref.vidl_parity, "v3yangle": ref.v3_idl_yangle,
            "ra_ref": float(ra_ref), "dec_ref": float(dec_ref),
            "roll_ref": v3_position_angle(self.pointing, ref.v2_ref, ref.v3_ref),
            "s_region": "POLYGON ICRS " + " ".join(f"{value:.8f}" for value in corners),
        }


def pointing_metadata(pointing: Pointing) -> dict:
    """``meta.pointing`` of an exposure taken at ``pointing``."""
    ra_v1, dec_v1 = pointing.v2v3_to_sky(0.0, 0.0)
    cen = aperture("WFI_CEN")
    # pa_aperture: position angle of the aperture's ideal +y axis.
    step_v2, step_v3 = _ideal_to_v2v3(0.0, 1.0, cen.v2_ref, cen.v3_ref, cen)
    ra_up, dec_up = pointing.v2v3_to_sky(step_v2, step_v3)
    return {
        "ra_v1": float(ra_v1), "dec_v1": float(dec_v1), "pa_v3": pointing.pa_v3,
        "target_aperture": "WFI_CEN", "target_ra": pointing.ra, "target_dec": pointing.dec,
        "pa_aperture": position_angle(pointing.ra, pointing.dec, ra_up, dec_up),
        "pointing_engineering_source": "CALCULATED",
    }


def v3_position_angle(pointing: Pointing, v2: float, v3: float) -> float:
    """Position angle (deg east of north) of the +V3 direction at V2/V3 position (v2, v3)."""
    lon, lat = np.radians(v2 / 3600.0), np.radians(v3 / 3600.0)
    # d/dv3 of the V-frame unit vector, i.e. the +V3 direction, carried onto the sky.
    up = pointing.attitude @ np.array([-np.sin(lat) * np.cos(lon), -np.sin(lat) * np.sin(lon), np.cos(lat)])
    ra, dec = np.radians(pointing.v2v3_to_sky(v2, v3))
    east = np.array([-np.sin(ra), np.cos(ra), 0.0])
    north = np.array([-np.sin(dec) * np.cos(ra), -np.sin(dec) * np.sin(ra), np.cos(dec)])
    return float(np.degrees(np.arctan2(up @ east, up @ north)) % 360.0)


def position_angle(ra1, dec1, ra2, dec2) -> float:
    """Position angle (deg east of north, 0-360) of point 2 seen from point 1."""
    ra1, dec1, ra2, dec2 = np.radians([ra1, dec1, ra2, dec2])
    angle = np.arctan2(np.sin(ra2 - ra1) * np.cos(dec2),
                       np.cos(dec1) * np.sin(dec2) - np.sin(dec1) * np.cos(dec2) * np.cos(ra2 - ra1))
    return float(np.degrees(angle) % 360.0)


def _ideal_to_v2v3(ideal_x, ideal_y, v2_ref, v3_ref, ref: Aperture):
    angle = np.radians(ref.v3_idl_yangle)
    v2 = v2_ref + ref.vidl_parity * ideal_x * np.cos(angle) + ideal_y * np.sin(angle)
    v3 = v3_ref - ref.vidl_parity * ideal_x * np.sin(angle) + ideal_y * np.cos(angle)
    return v2, v3


def _maybe_float(value) -> float | None:
    return None if value is None else float(value)


def _rotation_between(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """The rotation turning unit vector ``start`` into ``end`` about their common normal."""
    axis = np.cross(start, end)
    sine = np.linalg.norm(axis)
    if sine == 0.0:
        return np.eye(3)
    return _rotation_about(axis / sine, np.degrees(np.arctan2(sine, float(start @ end))))


def _rotation_about(axis: np.ndarray, angle_deg: float) -> np.ndarray:
    """Right-handed rotation by ``angle_deg`` about unit vector ``axis`` (Rodrigues)."""
    k = axis / np.linalg.norm(axis)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    angle = np.radians(angle_deg)
    return np.eye(3) + np.sin(angle) * cross + (1.0 - np.cos(angle)) * cross @ cross


def _rotation(axis: int, angle_deg: float) -> np.ndarray:
    """Frame rotation about ``axis`` (1 = x, 2 = y, 3 = z), as in pysiaf's attitude."""
    c, s = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    if axis == 1:
        return np.array([[1, 0, 0], [0, c, s], [0, -s, c]])
    if axis == 2:
        return np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])
    return np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])


def _rotate(matrix: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``matrix`` applied to unit vectors stacked along the first axis (any trailing shape)."""
    return np.tensordot(matrix, vectors, axes=1)


def _to_unit(lon_deg, lat_deg) -> np.ndarray:
    lon, lat = np.radians(lon_deg), np.radians(lat_deg)
    return np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])


def _from_unit(vector):
    x, y, z = vector
    return np.degrees(np.arctan2(y, x)) % 360.0, np.degrees(np.arcsin(np.clip(z, -1.0, 1.0)))
