"""assign_wcs: attach a GWCS (detector -> v2v3 -> world) to a Level 2 image.

Seed, "Assign WCS": the DISTORTION reference's ``coordinate_distortion_transform``
maps 0-based detector pixels to the telescope frame V2/V3 (arcsec); the basic
keywords of ``meta.wcsinfo`` (ra_ref, dec_ref at v2_ref, v3_ref, and roll_ref, the
position angle of +V3 there) define the 3-D rotation from V2/V3 to ICRS. Frames
``detector``, ``v2v3``, ``world``; a bounding box over the image; the footprint goes
into ``meta.wcsinfo.s_region``. No fitting happens here: a wrong pointing in the
metadata gives a wrong WCS, which tweakreg corrects.

    python scripts/assign_wcs.py r..._rampfit.asdf r..._assignwcs.asdf --override-distortion D
"""

from __future__ import annotations

import logging

from romanpipe import cli
from romanpipe.errors import InputFileError
from romanpipe.footprints import s_region
from romanpipe.products import COMPLETE, open_model
from romanpipe.steprun import StepRun, run_script

import numpy as np
from astropy import coordinates
from astropy import units as u
from astropy.modeling import bind_bounding_box
from astropy.modeling.models import RotationSequence3D, Scale
from gwcs import coordinate_frames as cf
from gwcs import wcs as gwcs_wcs
from gwcs.geometry import CartesianToSpherical, SphericalToCartesian
from roman_datamodels import datamodels

log = logging.getLogger("assign_wcs")

STEP = "assign_wcs"
INPUT_MODELS = (datamodels.ImageModel,)
WCSINFO_KEYS = ("v2_ref", "v3_ref", "roll_ref", "ra_ref", "dec_ref")


def v2v3_to_sky(wcsinfo) -> RotationSequence3D:
    """V2/V3 (arcsec) -> (ra, dec) deg: the attitude that puts (v2_ref, v3_ref) at (ra_ref, dec_ref).

    The Euler sequence z(v2_ref) y(-v3_ref) x(roll_ref) y(dec_ref) z(-ra_ref) brings the
    reference point to the V1 axis, rolls it, then moves it to its place on the sky.
    """
    v2_ref, v3_ref = wcsinfo["v2_ref"] / 3600.0, wcsinfo["v3_ref"] / 3600.0
    rotation = RotationSequence3D(
        [v2_ref, -v3_ref, wcsinfo["roll_ref"], wcsinfo["dec_ref"], -wcsinfo["ra_ref"]], axes_order="zyxyz")
    transform = ((Scale(1 / 3600.0) & Scale(1 / 3600.0)) | SphericalToCartesian(wrap_lon_at=180)
                 | rotation | CartesianToSpherical(wrap_lon_at=360))
    transform.name = "v2v3_to_sky"
    return transform


def build_wcs(distortion, wcsinfo, shape: tuple[int, int]) -> gwcs_wcs.WCS:
    """The exposure's GWCS from a detector -> V2/V3 transform and the pointing keywords.

    ``distortion`` is not modified (a copy gets the bounding box); ``shape`` is the
    image's (rows, columns); pixel centres are integers, edges at -0.5.
    """
    missing = [key for key in WCSINFO_KEYS if not np.isfinite(_number(wcsinfo.get(key)))]
    if missing:
        raise ValueError(f"meta.wcsinfo has no valid {', '.join(missing)}")
    detector_to_v2v3 = distortion.copy()
    nrows, ncols = shape
    bind_bounding_box(detector_to_v2v3, ((-0.5, ncols - 0.5), (-0.5, nrows - 0.5)), order="F")
    detector = cf.Frame2D(name="detector", axes_order=(0, 1), unit=(u.pix, u.pix))
    v2v3 = cf.Frame2D(name="v2v3", axes_order=(0, 1), axes_names=("v2", "v3"),
                      unit=(u.arcsec, u.arcsec))
    world = cf.CelestialFrame(reference_frame=coordinates.ICRS(), name="world")
    wcs = gwcs_wcs.WCS([(detector, detector_to_v2v3), (v2v3, v2v3_to_sky(wcsinfo)), (world, None)])
    wcs.bounding_box = ((-0.5, ncols - 0.5), (-0.5, nrows - 0.5))
    return wcs


def assign_wcs(model, distortion):
    """The image with ``meta.wcs`` and ``meta.wcsinfo.s_region`` set (a new model; input untouched)."""
    result = model.copy()
    result.meta.wcs = build_wcs(distortion, result.meta.wcsinfo, np.shape(result.data))
    result.meta.wcsinfo.s_region = s_region(result.meta.wcs)
    return result


def run(image, step: StepRun):
    """``image`` (an ImageModel) with its WCS from the DISTORTION reference (a new model)."""
    distortion_path = step.reference("distortion")
    with open_model(distortion_path, (datamodels.DistortionRefModel,), memmap=False) as reference:
        try:
            result = assign_wcs(image, reference.coordinate_distortion_transform)
        except ValueError as err:
            raise InputFileError(step.input, str(err)) from None
    log.info("footprint %s", result.meta.wcsinfo.s_region)
    return result, COMPLETE


def main(argv=None) -> None:
    run_script(STEP, __doc__, INPUT_MODELS, run, argv)


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan


if __name__ == "__main__":
    cli.run_and_exit(main)
