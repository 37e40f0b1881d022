"""assign_wcs: the GWCS against an independent attitude (the simulator's) and round trips."""

from romanpipe.footprints import s_region

import numpy as np
import pytest
import roman_datamodels as rdm
from astropy.modeling.models import AffineTransformation2D, Shift
from roman_datamodels import datamodels

import assign_wcs
from assign_wcs import build_wcs, v2v3_to_sky
from conftest import EXPO
from wfisim.detector import build_detector
from wfisim.pointing import DetectorGeometry, Pointing, v3_position_angle
from wfisim.references import write_references

SCALE = 0.11  # arcsec per pixel
V2_REF, V3_REF = 1312.95, -1040.79
SHAPE = (40, 50)


def linear_distortion(shape=SHAPE, angle_deg=-60.0):
    """A distortion-free detector: pixel offsets from the centre, rotated and scaled into V2/V3."""
    nrows, ncols = shape
    angle = np.radians(angle_deg)
    matrix = SCALE * np.array([[-np.cos(angle), np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return ((Shift(-(ncols - 1) / 2) & Shift(-(nrows - 1) / 2)) | AffineTransformation2D(matrix)
            | (Shift(V2_REF) & Shift(V3_REF)))


def wcsinfo_for(pointing):
    ra, dec = pointing.v2v3_to_sky(V2_REF, V3_REF)
    return {"v2_ref": V2_REF, "v3_ref": V3_REF, "ra_ref": float(ra), "dec_ref": float(dec),
            "roll_ref": v3_position_angle(pointing, V2_REF, V3_REF)}


@pytest.mark.parametrize("ra, dec, pa_v3", [(270.0, 66.0, 0.0), (10.0, -30.0, 117.0), (359.99, 89.5, 250.0)])
def test_v2v3_to_sky_agrees_with_the_simulators_attitude_matrix(ra, dec, pa_v3):
    pointing = Pointing.at(ra, dec, pa_v3)
    transform = v2v3_to_sky(wcsinfo_for(pointing))
    v2 = V2_REF + np.array([0.0, 300.0, -450.0, 80.0])
    v3 = V3_REF + np.array([0.0, 120.0, 260.0, -500.0])
    got_ra, got_dec = transform(v2, v3)
    want_ra, want_dec = pointing.v2v3_to_sky(v2, v3)
    separation_mas = np.hypot(((got_ra - want_ra + 180) % 360 - 180) * np.cos(np.radians(want_dec)),
                              got_dec - want_dec) * 3.6e6
    assert separation_mas.max() < 0.01
    back_v2, back_v3 = transform.inverse(got_ra, got_dec)
    assert np.abs(back_v2 - v2).max() < 1e-6 and np.abs(back_v3 - v3).max() < 1e-6


def test_wcs_frames_reference_point_scale_and_inverse():
    pointing = Pointing.at(150.0, 2.0, 30.0)
    info = wcsinfo_for(pointing)
    wcs = build_wcs(linear_distortion(), info, SHAPE)
    assert wcs.available_frames == ["detector", "v2v3", "world"]
    centre = ((SHAPE[1] - 1) / 2, (SHAPE[0] - 1) / 2)
    ra, dec = wcs(*centre)
    assert ra == pytest.approx(info["ra_ref"], abs=1e-9) and dec == pytest.approx(info["dec_ref"], abs=1e-9)
    ra1, dec1 = wcs(centre[0] + 1, centre[1])
    step_arcsec = np.hypot((ra1 - ra) * np.cos(np.radians(dec)), dec1 - dec) * 3600
    assert step_arcsec == pytest.approx(SCALE, rel=1e-5)
    x = np.array([0.0, 12.3, 49.0, 25.5])
    y = np.array([0.0, 39.0, 7.7, 20.2])
    back_x, back_y = wcs.invert(*wcs(x, y))
    assert np.abs(back_x - x).max() < 1e-3 and np.abs(back_y - y).max() < 1e-3
    assert wcs.bounding_box.bounding_box(order="F") == ((-0.5, 49.5), (-0.5, 39.5))


def test_s_region_lists_the_outer_corners_on_the_sky():
    wcs = build_wcs(linear_distortion(), wcsinfo_for(Pointing.at(150.0, 2.0, 30.0)), SHAPE)
    words = s_region(wcs).split()
    assert words[:2] == ["POLYGON", "ICRS"]
    corners = np.array(words[2:], dtype=float).reshape(4, 2)
    want = np.column_stack(wcs([-0.5, 49.5, 49.5, -0.5], [-0.5, -0.5, 39.5, 39.5]))
    assert {tuple(np.round(c, 7)) for c in corners} == {tuple(np.round(c, 7)) for c in want}


def test_missing_pointing_keyword_is_a_clear_error():
    info = wcsinfo_for(Pointing.at(150.0, 2.0, 30.0))
    info["roll_ref"] = None
    with pytest.raises(ValueError, match="roll_ref"):
        build_wcs(linear_distortion(), info, SHAPE)


@pytest.fixture
def image_file(tmp_path):
    image = datamodels.ImageModel.create_fake_data(shape=SHAPE)
    image.data = np.ones(SHAPE, np.float32)
    image.meta.wcsinfo.update(wcsinfo_for(Pointing.at(150.0, 2.0, 30.0)))
    path = tmp_path / f"{EXPO}_rampfit.asdf"
    image.to_asdf(path)
    return path


@pytest.fixture
def distortion_file(tmp_path):
    reference = datamodels.DistortionRefModel.create_fake_data()
    reference.coordinate_distortion_transform = linear_distortion()
    path = tmp_path / "roman_wfi_distortion_0001.asdf"
    reference.to_asdf(path)
    return path


def test_cli_writes_a_product_whose_wcs_works_after_reopening(tmp_path, image_file, distortion_file):
    output = tmp_path / f"{EXPO}_assignwcs.asdf"
    status = assign_wcs.cli.run(assign_wcs.main, [str(image_file), str(output),
                                                  "--override-distortion", str(distortion_file)])
    assert status == 0
    with rdm.open(output) as product:
        assert product.meta.cal_step.assign_wcs == "COMPLETE"
        assert product.meta.ref_file.distortion == distortion_file.name
        ra, dec = product.meta.wcs(24.5, 19.5)
        assert ra == pytest.approx(product.meta.wcsinfo.ra_ref, abs=1e-9)
        assert product.meta.wcsinfo.s_region.startswith("POLYGON ICRS")


def test_cli_wrong_reference_type_fails_without_output(tmp_path, image_file):
    not_distortion = tmp_path / "roman_wfi_flat_0001.asdf"
    datamodels.FlatRefModel.create_fake_data(shape=(2, 2)).to_asdf(not_distortion)
    output = tmp_path / "out_assignwcs.asdf"
    status = assign_wcs.cli.run(assign_wcs.main, [str(image_file), str(output),
                                                  "--override-distortion", str(not_distortion)])
    assert status == 1 and not output.exists()


@pytest.mark.parametrize("detector_name, size", [("WFI07", 64), ("WFI16", 256)])
def test_wcs_from_the_simulators_distortion_reference_hits_the_truth(tmp_path, detector_name, size):
    """Our GWCS from a DISTORTION reference file and the TRUE wcsinfo puts pixels where the
    simulator put them (<= 1 mas), and inverts to <= 0.001 pixel."""
    detector = build_detector(detector_name, (size, size), 5)
    [reference_path] = write_references(detector, tmp_path, useafter="2027-01-01T00:00:00",
                                        reftypes=["distortion"], optical_elements=["F158"])
    pointing = Pointing.at(270.0, 66.0, 30.0).dithered(3.5, 2.5)
    geometry = DetectorGeometry(detector_name, (size, size), pointing)
    with rdm.open(reference_path) as reference:
        wcs = build_wcs(reference.coordinate_distortion_transform, geometry.wcsinfo(), (size - 8, size - 8))
    axis = np.linspace(0, size - 9, 9)
    x, y = (grid.ravel() for grid in np.meshgrid(axis, axis))
    ra, dec = wcs(x, y)
    true_ra, true_dec = geometry.pixel_to_sky(x + 4, y + 4)  # Level 2 pixel = readout pixel - 4
    error_mas = np.hypot((ra - true_ra) * np.cos(np.radians(true_dec)), dec - true_dec) * 3.6e6
    assert error_mas.max() <= 1.0
    back_x, back_y = wcs.invert(ra, dec)
    assert np.abs(back_x - x).max() <= 1e-3 and np.abs(back_y - y).max() <= 1e-3
