"""photom and flux: the PHOTOM row into the metadata, and the DN/s -> MJy/sr scaling."""

from romanpipe.association import asn_from_list, read_association, write_association

import numpy as np
import pytest
import roman_datamodels as rdm
from roman_datamodels import datamodels

import flux
import photom
from conftest import EXPO

PHOTMJSR, UNCERTAINTY, AREA_SR = 0.75, 0.02, 2.8437e-13
ARCSEC2_PER_SR = (180 / np.pi * 3600) ** 2


def photom_reference(path, elements=("F158",)):
    reference = datamodels.WfiImgPhotomRefModel.create_fake_data()
    table = {}
    for element in elements:
        table[element] = {"photmjsr": PHOTMJSR, "uncertainty": UNCERTAINTY, "pixelareasr": AREA_SR,
                          "collecting_area": 3.6, "wavelength": np.array([1.5, 1.6], np.float32),
                          "effective_area": np.array([2.0, 2.1], np.float32)}
    table["PRISM"] = {"photmjsr": None, "uncertainty": None, "pixelareasr": None, "collecting_area": 3.6,
                      "wavelength": np.array([1.0], np.float32),
                      "effective_area": np.array([1.0], np.float32)}
    reference.phot_table = table
    reference.to_asdf(path)
    return path


def image_file(path, element="F158", shape=(4, 3)):
    image = datamodels.ImageModel.create_fake_data(shape=shape)
    image.meta.instrument.optical_element = element
    image.data = np.full(shape, 2.0, np.float32)
    image.err = np.full(shape, 0.5, np.float16)
    image.var_poisson = np.full(shape, 0.16, np.float16)
    image.var_rnoise = np.full(shape, 0.09, np.float16)
    image.to_asdf(path)
    return path


def test_keywords_converted_to_microjanskys_and_square_arcseconds():
    keywords = photom.photometry_keywords(
        {"F158": {"photmjsr": PHOTMJSR, "uncertainty": UNCERTAINTY, "pixelareasr": AREA_SR}}, "f158")
    # 1 MJy/sr = 1e12 uJy / 4.254517e10 arcsec^2 = 23.50443 uJy/arcsec^2 (rad's photometry schema).
    assert keywords["conversion_microjanskys"] == pytest.approx(PHOTMJSR * 23.50443, rel=1e-6)
    assert keywords["conversion_microjanskys_uncertainty"] == pytest.approx(UNCERTAINTY * 23.50443, rel=1e-6)
    assert keywords["pixelarea_arcsecsq"] == pytest.approx(AREA_SR * 4.254517e10, rel=1e-6)
    assert keywords["conversion_megajanskys"] == PHOTMJSR and keywords["pixel_area"] == AREA_SR


def test_cli_fills_photometry_and_leaves_pixels_alone(tmp_path):
    reference = photom_reference(tmp_path / "roman_wfi_photom_0001.asdf")
    source = image_file(tmp_path / f"{EXPO}_flat.asdf")
    output = tmp_path / f"{EXPO}_photom.asdf"
    assert photom.cli.run(photom.main, [str(source), str(output), "--override-photom", str(reference)]) == 0
    with rdm.open(output) as product, rdm.open(source) as before:
        assert product.meta.photometry.conversion_megajanskys == PHOTMJSR
        assert product.meta.photometry.pixelarea_arcsecsq == pytest.approx(AREA_SR * ARCSEC2_PER_SR)
        assert product.meta.cal_step.photom == "COMPLETE"
        np.testing.assert_array_equal(product.data, before.data)


def test_spectral_row_gives_null_conversions(tmp_path):
    reference = photom_reference(tmp_path / "roman_wfi_photom_0001.asdf")
    source = image_file(tmp_path / f"{EXPO}_flat.asdf", element="PRISM")
    output = tmp_path / f"{EXPO}_photom.asdf"
    assert photom.cli.run(photom.main, [str(source), str(output), "--override-photom", str(reference)]) == 0
    with rdm.open(output) as product:
        assert product.meta.photometry.conversion_megajanskys is None


def test_element_missing_from_the_table_fails_naming_it(tmp_path, caplog):
    reference = photom_reference(tmp_path / "roman_wfi_photom_0001.asdf")
    source = image_file(tmp_path / f"{EXPO}_flat.asdf", element="F213")
    output = tmp_path / f"{EXPO}_photom.asdf"
    assert photom.cli.run(photom.main, [str(source), str(output), "--override-photom", str(reference)]) == 1
    assert "F213" in caplog.text and not output.exists()


def test_flux_scales_data_and_err_linearly_and_variances_quadratically(tmp_path):
    reference = photom_reference(tmp_path / "roman_wfi_photom_0001.asdf")
    source = image_file(tmp_path / f"{EXPO}_flat.asdf")
    calibrated = tmp_path / f"{EXPO}_cal.asdf"
    photom.cli.run(photom.main, [str(source), str(calibrated), "--override-photom", str(reference)])
    scaled = tmp_path / f"{EXPO}_flux.asdf"
    assert flux.cli.run(flux.main, [str(calibrated), str(scaled)]) == 0
    with rdm.open(scaled) as product:
        assert product.data[0, 0] == pytest.approx(2.0 * PHOTMJSR)
        assert float(product.err[0, 0]) == pytest.approx(0.5 * PHOTMJSR, rel=1e-3)
        assert float(product.var_poisson[0, 0]) == pytest.approx(0.16 * PHOTMJSR**2, rel=2e-3)
        assert product.meta.cal_step.flux == "COMPLETE"
    # Already in MJy/sr: a second pass changes nothing.
    twice = tmp_path / "again_flux.asdf"
    assert flux.cli.run(flux.main, [str(scaled), str(twice)]) == 0
    with rdm.open(twice) as again:
        assert again.data[0, 0] == pytest.approx(2.0 * PHOTMJSR)


def test_flux_without_photometry_is_an_error(tmp_path):
    source = image_file(tmp_path / f"{EXPO}_flat.asdf")  # fake photometry is -999999
    output = tmp_path / f"{EXPO}_flux.asdf"
    assert flux.cli.run(flux.main, [str(source), str(output)]) == 1 and not output.exists()


def test_flux_on_an_association_writes_every_member_and_the_output_association(tmp_path):
    reference = photom_reference(tmp_path / "roman_wfi_photom_0001.asdf")
    members = []
    for number in (1, 2):
        source = image_file(tmp_path / f"e{number}_flat.asdf")
        calibrated = tmp_path / "exposures" / f"e{number}_cal.asdf"
        photom.cli.run(photom.main, [str(source), str(calibrated), "--override-photom", str(reference)])
        members.append(f"../exposures/{calibrated.name}")
    asn = write_association(asn_from_list(members, "mosaic"), tmp_path / "asns" / "m_asn.json")
    output = tmp_path / "mosaic" / "m_flux_asn.json"
    assert flux.cli.run(flux.main, [str(asn), str(output)]) == 0
    written = read_association(output)
    assert [p.name for p in written.members()] == ["e1_flux.asdf", "e2_flux.asdf"]
    assert written.product_name == "mosaic"
    for path in written.members():
        with rdm.open(path) as product:
            assert product.data[0, 0] == pytest.approx(2.0 * PHOTMJSR)
            assert product.meta.cal_step.flux == "COMPLETE"


def test_flux_on_an_association_with_a_missing_member_writes_nothing(tmp_path):
    asn = write_association(asn_from_list(["nothing_cal.asdf"], "mosaic"), tmp_path / "m_asn.json")
    output = tmp_path / "out" / "m_flux_asn.json"
    assert flux.cli.run(flux.main, [str(asn), str(output)]) == 1
    assert not output.parent.exists() or not any(output.parent.iterdir())


@pytest.mark.peer
def test_same_keywords_as_romancal_photom(tmp_path):
    """romancal's photom on the same image and PHOTOM reference: the schema's three keywords agree."""
    romancal_photom = pytest.importorskip("romancal.photom.photom")
    reference_path = photom_reference(tmp_path / "roman_wfi_photom_0001.asdf")
    with rdm.open(image_file(tmp_path / f"{EXPO}_flat.asdf")) as image, rdm.open(reference_path) as ref:
        theirs = romancal_photom.apply_photom(image.copy(), ref).meta.photometry
        ours = photom.photometry_keywords(ref.phot_table, "F158")
    for key in ("conversion_megajanskys", "conversion_megajanskys_uncertainty", "pixel_area"):
        assert ours[key] == pytest.approx(float(getattr(theirs[key], "value", theirs[key])), rel=1e-12)
