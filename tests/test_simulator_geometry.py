"""wfisim geometry: Roman SIAF layout and distortion, attitudes, pointing errors, the DISTORTION reference."""

import numpy as np
import pysiaf
import pytest
import roman_datamodels as rdm
from astropy.modeling.models import RotationSequence3D, Scale
from gwcs.geometry import CartesianToSpherical, SphericalToCartesian
from pysiaf.utils import rotations
from roman_datamodels import datamodels

from wfisim.detector import build_detector
from wfisim.pointing import (
    DetectorGeometry,
    Pointing,
    cutout_offset,
    distortion_model,
    position_angle,
    separation_arcsec,
    wfi_cen_v2v3,
)
from wfisim.references import make_reference, write_references

SIAF = pysiaf.Siaf("Roman")
HOME = Pointing.at(270.0, 66.0, 30.0)


def pixel_grid(size, points=25):
    """Level 2 pixel centres and edges across a (size - 8)^2 image."""
    axis = np.linspace(-0.5, size - 8 - 0.5, points)
    return np.meshgrid(axis, axis)


def v23_to_sky(wcsinfo):
    """V2/V3 (arcsec) -> sky (deg) from meta.wcsinfo, as romancal's assign_wcs composes it."""
    angles = [wcsinfo["v2_ref"] / 3600, -wcsinfo["v3_ref"] / 3600, wcsinfo["roll_ref"], wcsinfo["dec_ref"],
              -wcsinfo["ra_ref"]]
    return ((Scale(1 / 3600) & Scale(1 / 3600)) | SphericalToCartesian(wrap_lon_at=180)
            | RotationSequence3D(angles, axes_order="zyxyz") | CartesianToSpherical(wrap_lon_at=360))


def test_cutout_is_the_centre_of_the_detector():
    assert cutout_offset(256) == 1920 and cutout_offset(4096) == 0
    # The aperture's reference pixel (SIAF 2044.5, 1-based) is the centre of any cutout's Level 2 image.
    geometry = DetectorGeometry("WFI05", (256, 256), HOME)
    assert geometry.reference_pixel == (4 + 123.5, 4 + 123.5)
    assert geometry.pixel_to_v2v3(4 + 123.5, 4 + 123.5) == pytest.approx(
        (SIAF["WFI05_FULL"].V2Ref, SIAF["WFI05_FULL"].V3Ref), abs=1e-9)


@pytest.mark.parametrize(("detector", "size"), [("WFI01", 256), ("WFI10", 64), ("WFI16", 4096)])
def test_distortion_model_is_the_siaf_to_a_tenth_of_a_milliarcsecond(detector, size):
    model = distortion_model(detector, (size, size))
    x, y = pixel_grid(size)
    offset = cutout_offset(size)
    v2, v3 = model(x, y)
    # pysiaf: 1-based science pixels, planar ideal -> V2/V3 (its default).
    siaf_v2, siaf_v3 = SIAF[f"{detector}_FULL"].sci_to_tel(x + offset + 1, y + offset + 1)
    assert np.max(np.hypot(v2 - siaf_v2, v3 - siaf_v3)) < 1e-4
    back_x, back_y = model.inverse(v2, v3)
    error = np.max(np.hypot(back_x - x, back_y - y))
    # The SIAF's Idl2Sci inverts Sci2Idl to ~3 mpx only at the corners of a full detector.
    assert error < (0.005 if size == 4096 else 0.001)


def test_geometry_places_stars_exactly_on_the_forward_model():
    geometry = DetectorGeometry("WFI16", (4096, 4096), HOME)
    x, y = np.array([4.0, 2000.3, 4090.9]), np.array([4.0, 3000.7, 11.2])
    ra, dec = geometry.pixel_to_sky(x, y)
    back = geometry.sky_to_pixel(ra, dec)
    np.testing.assert_allclose(back, (x, y), atol=1e-6)


def test_footprints_have_the_real_field_layout():
    """Under the true pointing, the detectors' centres are as far apart on the sky as in the SIAF."""
    # V2Ref, V3Ref (arcsec) of WFI01_FULL and WFI10_FULL, from the Roman SIAF (PRD PRDOPSSOC-068).
    siaf_v2v3 = {"WFI01": (1312.9491, -1040.7854), "WFI10": (1557.3400, -617.4161)}
    centres = {}
    for detector in siaf_v2v3:
        info = DetectorGeometry(detector, (4096, 4096), HOME).wcsinfo()
        assert (info["v2_ref"], info["v3_ref"]) == pytest.approx(siaf_v2v3[detector], abs=1e-3)
        centres[detector] = (info["ra_ref"], info["dec_ref"])
    (v2a, v3a), (v2b, v3b) = siaf_v2v3.values()
    expected = np.hypot(v2a - v2b, v3a - v3b)  # 489": flat enough half a degree off the V1 axis
    assert separation_arcsec(*centres["WFI01"], *centres["WFI10"]) == pytest.approx(expected, abs=0.05)
    # pysiaf's own attitude matrix puts the reference points at the same places.
    attitude = rotations.attitude(*wfi_cen_v2v3(), HOME.ra, HOME.dec, HOME.pa_v3)
    for detector, (v2, v3) in siaf_v2v3.items():
        ra, dec = rotations.pointing(attitude, v2, v3)
        assert separation_arcsec(ra, dec, *centres[detector]) < 0.01
    # All 18 detectors: no two footprints overlap (their centres are > 0.95 detector widths apart).
    ras, decs = zip(*(
        (info["ra_ref"], info["dec_ref"]) for info in
        (DetectorGeometry(f"WFI{n:02d}", (4096, 4096), HOME).wcsinfo() for n in range(1, 19))), strict=True)
    ras, decs = np.array(ras), np.array(decs)
    distances = separation_arcsec(ras[:, None], decs[:, None], ras, decs)
    assert np.min(distances[~np.eye(18, dtype=bool)]) > 0.95 * 4088 * 0.107


def test_wcsinfo_with_the_distortion_reproduces_the_simulator_as_romancal_composes_it():
    geometry = DetectorGeometry("WFI10", (256, 256), HOME.dithered(3.5, 2.5))
    info = geometry.wcsinfo()
    assert info["aperture_name"] == "WFI10_FULL" and info["vparity"] == -1 and info["v3yangle"] == -60.0
    x, y = pixel_grid(256, 9)
    ra, dec = v23_to_sky(info)(*geometry.distortion(x, y))
    true_ra, true_dec = geometry.pixel_to_sky(x + 4, y + 4)
    assert np.max(separation_arcsec(ra, dec, true_ra, true_dec)) < 1e-5
    # roll_ref: position angle of +V3 at the reference point.
    ra_ref, dec_ref = geometry.pointing.v2v3_to_sky(info["v2_ref"], info["v3_ref"])
    ra_up, dec_up = geometry.pointing.v2v3_to_sky(info["v2_ref"], info["v3_ref"] + 0.01)
    assert info["roll_ref"] == pytest.approx(position_angle(ra_ref, dec_ref, ra_up, dec_up), abs=1e-4)
    # s_region: the Level 2 image's corners.
    corners = np.array(info["s_region"].split()[2:], dtype=float).reshape(4, 2)
    corner_ra, corner_dec = geometry.pixel_to_sky(np.array([3.5, 251.5]), np.array([3.5, 251.5]))
    assert corners[[0, 2], 0] == pytest.approx(corner_ra, abs=1e-8)
    assert corners[[0, 2], 1] == pytest.approx(corner_dec, abs=1e-8)


@pytest.mark.parametrize(("offset", "roll"), [(1.5, 0.06), (10.0, -0.2)])
def test_pointing_error_has_exactly_the_configured_size(offset, roll):
    wrong = HOME.perturbed(offset, 130.0, roll)
    assert separation_arcsec(HOME.ra, HOME.dec, wrong.ra, wrong.dec) == pytest.approx(offset, abs=1e-7)
    # The roll turns the field about WFI_CEN: compare with the same offset and no roll.
    unrolled = HOME.perturbed(offset, 130.0, 0.0)
    assert (wrong.ra, wrong.dec) == pytest.approx((unrolled.ra, unrolled.dec), abs=1e-10)
    assert wrong.pa_v3 - unrolled.pa_v3 == pytest.approx(roll, abs=1e-9)
    # The offset's direction in V2/V3: from +V3 towards +V2.
    v2, v3 = HOME.sky_to_v2v3(wrong.ra, wrong.dec)
    cen_v2, cen_v3 = wfi_cen_v2v3()
    assert np.degrees(np.arctan2(v2 - cen_v2, v3 - cen_v3)) % 360 == pytest.approx(130.0, abs=1e-3)


def test_distortion_reference_file_holds_the_model_and_its_inverse(tmp_path):
    detector = build_detector("WFI10", (64, 64), 5)
    [path] = write_references(detector, tmp_path, useafter="2027-01-01T00:00:00", reftypes=["distortion"],
                              optical_elements=["F158"])
    assert path.name == "roman_wfi_distortion_0001.asdf"
    with rdm.open(path) as model:
        assert isinstance(model, datamodels.DistortionRefModel)
        model.validate()
        assert model.meta.instrument.detector == "WFI10" and model.meta.instrument.optical_element == "F158"
        assert model.meta.input_units == "pixel" and model.meta.output_units == "arcsec"
        transform = model.coordinate_distortion_transform
        x, y = pixel_grid(64, 7)
        v2, v3 = transform(x, y)
        np.testing.assert_allclose((v2, v3), distortion_model("WFI10", (64, 64))(x, y), rtol=0, atol=1e-9)
        np.testing.assert_allclose(transform.inverse(v2, v3), (x, y), atol=1e-3)
        assert tuple(transform.bounding_box.bounding_box()) == ((-0.5, 55.5), (-0.5, 55.5))
    prism = make_reference("distortion", detector, useafter="2027-01-01T00:00:00", optical_element="PRISM")
    assert prism.meta.instrument.optical_element == "PRISM"


@pytest.mark.peer
def test_romancal_assign_wcs_agrees_with_the_simulated_sky(tmp_path):
    """romancal's own WCS from our meta.wcsinfo and DISTORTION puts pixels where the simulator did."""
    assign_wcs = pytest.importorskip("romancal.assign_wcs.assign_wcs")
    detector = build_detector("WFI07", (64, 64), 5)
    [reference] = write_references(detector, tmp_path, useafter="2027-01-01T00:00:00",
                                   reftypes=["distortion"], optical_elements=["F158"])
    geometry = DetectorGeometry("WFI07", (64, 64), HOME)
    image = datamodels.ImageModel.create_fake_data(shape=(56, 56))
    image.meta.wcsinfo.update(geometry.wcsinfo())
    image.meta.velocity_aberration.scale_factor = 1.0
    image.meta["cal_step"] = {}
    image = assign_wcs.load_wcs(image, {"distortion": str(reference)})
    x, y = pixel_grid(64, 5)
    ra, dec = image.meta.wcs(x, y)
    assert np.max(separation_arcsec(ra, dec, *geometry.pixel_to_sky(x + 4, y + 4))) < 1e-5
