"""Where a detector looks: an ideal (distortion-free) WFI geometry and the exposure's WCS keywords.

Chain, pixel -> sky, in the conventions romancal's WCS uses:

* pixel -> ideal: ``(x - x_ref, y - y_ref) * 0.11"``, the reference pixel at the
  array centre;
* ideal -> V2/V3: rotation by ``v3yangle`` with parity ``vparity`` about the
  aperture's ``(v2_ref, v3_ref)``;
* V2/V3 -> sky: the attitude matrix of the pointing, made from the WFI_CEN
  aperture's ``ra``/``dec`` and the V3 axis's position angle ``pa_v3`` there.

The aperture positions are an idealized 6 x 3 layout of the 18 detectors around
WFI_CEN, not the SIAF. A later distortion model replaces the first step; a
DISTORTION reference must describe the same pixel -> V2/V3 mapping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scene import PIXEL_SCALE_ARCSEC

V3_IDEAL_Y_ANGLE = -60.0  # deg
VPARITY = -1
WFI_CEN_V2V3 = (1546.4, -892.7)  # arcsec; 0.496 deg off the boresight
DETECTOR_PITCH_ARCSEC = (490.0, 520.0)  # centre-to-centre along ideal x (columns) and y (rows)


def aperture_v2v3(detector: str) -> tuple[float, float]:
    """(v2_ref, v3_ref) in arcsec of ``WFInn_FULL``: detectors numbered down columns of three."""
    number = int(detector.upper().removeprefix("WFI"))
    if not 1 <= number <= 18:
        raise ValueError(f"no WFI detector {detector!r} (WFI01 to WFI18)")
    column, row = divmod(number - 1, 3)
    ideal_x = (column - 2.5) * DETECTOR_PITCH_ARCSEC[0]
    ideal_y = (row - 1) * DETECTOR_PITCH_ARCSEC[1]
    return _ideal_to_v2v3(ideal_x, ideal_y, *WFI_CEN_V2V3)


@dataclass(frozen=True, eq=False)
class Pointing:
    """Attitude of the observatory: the matrix taking V2/V3 unit vectors to ICRS unit vectors."""

    attitude: np.ndarray

    @classmethod
    def at(cls, ra: float, dec: float, pa_v3: float) -> Pointing:
        """The WFI_CEN aperture at (``ra``, ``dec``) deg, the V3 axis at ``pa_v3`` deg east of north."""
        v2, v3 = (value / 3600.0 for value in WFI_CEN_V2V3)
        return cls(_rotation(3, -ra) @ _rotation(2, dec) @ _rotation(1, pa_v3)
                   @ _rotation(2, -v3) @ _rotation(3, v2))

    @property
    def ra(self) -> float:
        return float(self.v2v3_to_sky(*WFI_CEN_V2V3)[0])

    @property
    def dec(self) -> float:
        return float(self.v2v3_to_sky(*WFI_CEN_V2V3)[1])

    @property
    def pa_v3(self) -> float:
        """Position angle of +V3 at WFI_CEN (deg east of north)."""
        return v3_position_angle(self, *WFI_CEN_V2V3)

    def v2v3_to_sky(self, v2, v3):
        """(ra, dec) deg of V2/V3 positions (arcsec)."""
        return _from_unit(self.attitude @ _to_unit(np.asarray(v2) / 3600.0, np.asarray(v3) / 3600.0))

    def sky_to_v2v3(self, ra, dec):
        """(v2, v3) arcsec of sky positions (deg)."""
        v2, v3 = _from_unit(self.attitude.T @ _to_unit(np.asarray(ra), np.asarray(dec)))
        return (np.where(v2 > 180.0, v2 - 360.0, v2) * 3600.0, v3 * 3600.0)

    def dithered(self, dx: float, dy: float) -> Pointing:
        """After a small slew that shifts the sky by (-dx, -dy) pixels on every detector.

        A slew keeps the inertial roll: the attitude turns about the axis normal
        to the old and new WFI_CEN directions (holding the position angle at the
        new target fixed instead would rotate the outer detectors slightly).
        """
        delta_v2, delta_v3 = _ideal_to_v2v3(dx * PIXEL_SCALE_ARCSEC, dy * PIXEL_SCALE_ARCSEC, 0.0, 0.0)
        v2, v3 = WFI_CEN_V2V3
        start = _to_unit(v2 / 3600.0, v3 / 3600.0)
        end = _to_unit((v2 + delta_v2) / 3600.0, (v3 + delta_v3) / 3600.0)
        return Pointing(self.attitude @ _rotation_between(start, end))


@dataclass(frozen=True)
class DetectorGeometry:
    """Pixel <-> sky of one detector (readout ``shape``, border included) under a pointing."""

    detector: str
    shape: tuple[int, int]
    pointing: Pointing

    @property
    def reference_pixel(self) -> tuple[float, float]:
        nrows, ncols = self.shape
        return ((ncols - 1) / 2.0, (nrows - 1) / 2.0)

    @property
    def v2v3_ref(self) -> tuple[float, float]:
        return aperture_v2v3(self.detector)

    def pixel_to_sky(self, x, y):
        x_ref, y_ref = self.reference_pixel
        v2, v3 = _ideal_to_v2v3((np.asarray(x) - x_ref) * PIXEL_SCALE_ARCSEC,
                                (np.asarray(y) - y_ref) * PIXEL_SCALE_ARCSEC, *self.v2v3_ref)
        return self.pointing.v2v3_to_sky(v2, v3)

    def sky_to_pixel(self, ra, dec):
        v2, v3 = self.pointing.sky_to_v2v3(ra, dec)
        ideal_x, ideal_y = _v2v3_to_ideal(v2, v3, *self.v2v3_ref)
        x_ref, y_ref = self.reference_pixel
        return (ideal_x / PIXEL_SCALE_ARCSEC + x_ref, ideal_y / PIXEL_SCALE_ARCSEC + y_ref)

    def wcsinfo(self) -> dict:
        """``meta.wcsinfo``: the reference point on the sky and the V3 angle there."""
        v2_ref, v3_ref = self.v2v3_ref
        ra_ref, dec_ref = self.pointing.v2v3_to_sky(v2_ref, v3_ref)
        nrows, ncols = self.shape
        corners_x, corners_y = [-0.5, ncols - 0.5, ncols - 0.5, -0.5], [-0.5, -0.5, nrows - 0.5, nrows - 0.5]
        corners = np.column_stack(self.pixel_to_sky(corners_x, corners_y)).ravel()
        return {
            "aperture_name": f"{self.detector.upper()}_FULL",
            "v2_ref": float(v2_ref), "v3_ref": float(v3_ref),
            "vparity": VPARITY, "v3yangle": V3_IDEAL_Y_ANGLE,
            "ra_ref": float(ra_ref), "dec_ref": float(dec_ref),
            "roll_ref": v3_position_angle(self.pointing, v2_ref, v3_ref),
            "s_region": "POLYGON ICRS " + " ".join(f"{value:.8f}" for value in corners),
        }


def pointing_metadata(pointing: Pointing) -> dict:
    """``meta.pointing`` of an exposure taken at ``pointing``."""
    ra_v1, dec_v1 = pointing.v2v3_to_sky(0.0, 0.0)
    v2, v3 = WFI_CEN_V2V3
    # pa_aperture: position angle of the aperture's ideal +y axis.
    step_v2, step_v3 = _ideal_to_v2v3(0.0, 1.0, v2, v3)
    ra_up, dec_up = pointing.v2v3_to_sky(step_v2, step_v3)
    return {
        "ra_v1": float(ra_v1), "dec_v1": float(dec_v1), "pa_v3": pointing.pa_v3,
        "target_aperture": "WFI_CEN", "target_ra": pointing.ra, "target_dec": pointing.dec,
        "pa_aperture": position_angle(pointing.ra, pointing.dec, ra_up, dec_up),
        "pointing_engineering_source": "CALCULATED",
    }


def v3_position_angle(pointing: Pointing, v2: float, v3: float) -> float:
    """Position angle (deg east of north) of the +V3 direction at V2/V3 position (v2, v3)."""
    ra, dec = pointing.v2v3_to_sky(v2, v3)
    ra_up, dec_up = pointing.v2v3_to_sky(v2, v3 + 1.0)
    return position_angle(ra, dec, ra_up, dec_up)


def position_angle(ra1, dec1, ra2, dec2) -> float:
    """Position angle (deg east of north, 0-360) of point 2 seen from point 1."""
    ra1, dec1, ra2, dec2 = np.radians([ra1, dec1, ra2, dec2])
    angle = np.arctan2(np.sin(ra2 - ra1) * np.cos(dec2),
                       np.cos(dec1) * np.sin(dec2) - np.sin(dec1) * np.cos(dec2) * np.cos(ra2 - ra1))
    return float(np.degrees(angle) % 360.0)


def _ideal_to_v2v3(ideal_x, ideal_y, v2_ref, v3_ref):
    angle = np.radians(V3_IDEAL_Y_ANGLE)
    v2 = v2_ref + VPARITY * ideal_x * np.cos(angle) + ideal_y * np.sin(angle)
    v3 = v3_ref - VPARITY * ideal_x * np.sin(angle) + ideal_y * np.cos(angle)
    return v2, v3


def _v2v3_to_ideal(v2, v3, v2_ref, v3_ref):
    angle = np.radians(V3_IDEAL_Y_ANGLE)
    delta_v2, delta_v3 = v2 - v2_ref, v3 - v3_ref
    ideal_x = VPARITY * (delta_v2 * np.cos(angle) - delta_v3 * np.sin(angle))
    ideal_y = delta_v2 * np.sin(angle) + delta_v3 * np.cos(angle)
    return ideal_x, ideal_y


def _rotation_between(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """The rotation turning unit vector ``start`` into ``end`` about their common normal."""
    axis = np.cross(start, end)
    sine, cosine = np.linalg.norm(axis), float(start @ end)
    if sine == 0.0:
        return np.eye(3)
    k = axis / sine
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + sine * cross + (1.0 - cosine) * cross @ cross


def _rotation(axis: int, angle_deg: float) -> np.ndarray:
    """Frame rotation about ``axis`` (1 = x, 2 = y, 3 = z), as in pysiaf's attitude."""
    c, s = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    if axis == 1:
        return np.array([[1, 0, 0], [0, c, s], [0, -s, c]])
    if axis == 2:
        return np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])
    return np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])


def _to_unit(lon_deg, lat_deg) -> np.ndarray:
    lon, lat = np.radians(lon_deg), np.radians(lat_deg)
    return np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])


def _from_unit(vector):
    x, y, z = vector
    return np.degrees(np.arctan2(y, x)) % 360.0, np.degrees(np.arcsin(np.clip(z, -1.0, 1.0)))
