"""source_catalog: segmentation catalogs of galsim-drawn Roman fields against their injected truth."""

import math

from romanpipe import catalogs, cli, dqflags, roman_psf
from romanpipe.products import set_cal_step

import astropy.units as u
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import roman_datamodels as rdm
from astropy.coordinates import SkyCoord
from roman_datamodels import datamodels
from scipy.spatial import cKDTree

import source_catalog
from test_resample import tan_gwcs
from test_source_detection import EXPOSURE_TIME, READ_NOISE, SKY, galsim_rate, observe

EXPO = "r0000101001001001001_01101_0001_WFI03"
SHAPE = (320, 320)
# Point-source settings (README, "Source catalogs"): every parameter as the workflow's default.
SETTINGS = dict(kernel_fwhm=roman_psf.default_kernel_fwhm("F158"), snr_threshold=2.0, npixels=5, deblend=True)
HALO_RADIUS = 16.0  # pixels: the Roman PSF's diffraction rings and spikes around a bright star
HALO_SNR = 50.0
EDGE = 8  # pixels


def roman_ee_fractions(radii_arcsec=source_catalog.APERTURE_RADII_ARCSEC):
    """The encircled energy of the step's Roman PSF (total-flux normalised, as the galsim fields'
    truth) within each radius: the aperture corrections of these fields."""
    model = roman_psf.roman_psf_model("WFI03", "F158")
    return roman_psf.encircled_energy(model, np.asarray(radii_arcsec) / 0.11)


def psf_snr(flux):
    """Signal-to-noise of a PSF-weighted measurement of a star (noise-equivalent area of the Roman PSF)."""
    model = roman_psf.roman_psf_model("WFI03", "F158")
    phase_y, phase_x = (int(o) % 4 for o in model.origin[::-1])
    native = model.data[phase_y::4, phase_x::4]  # the flux fractions of the pixels around a centred star
    area = 1.0 / np.sum(native**2)
    return flux / np.sqrt(flux / EXPOSURE_TIME + area * (SKY / EXPOSURE_TIME + READ_NOISE**2))


@pytest.fixture(scope="module")
def field():
    """~100 stars on a jittered 30-pixel grid, 0.5 to 3000 DN/s (S/N 1 to 3000), drawn by galsim."""
    rng = np.random.default_rng(3)
    centres = np.arange(16.0, SHAPE[0] - 12, 30.0)
    x, y = (a.ravel() + rng.uniform(-3.0, 3.0, a.size) for a in np.meshgrid(centres, centres))
    flux = np.exp(rng.uniform(np.log(0.5), np.log(3000.0), x.size))
    data, err = observe(galsim_rate(SHAPE, x, y, flux), seed=4)
    return x, y, flux, data, err


@pytest.fixture(scope="module")
def catalog(field):
    x, y, flux, data, err = field
    return source_catalog.source_catalog(
        data, err, np.zeros(SHAPE, np.uint32), psf_model=roman_psf.roman_psf_model("WFI03", "F158"),
        ee_fractions=roman_ee_fractions(), scale=source_catalog.image_scale(None, SHAPE), flux_to_njy=1.0,
        **SETTINGS)


def nearest(catalog_x, catalog_y, x, y):
    distance, index = cKDTree(np.c_[catalog_x, catalog_y]).query(np.c_[x, y])
    return distance, index


def test_every_star_of_10_sigma_is_found(field, catalog):
    x, y, flux, *_ = field
    table = catalog.catalog
    distance, _ = nearest(table["x_centroid"], table["y_centroid"], x, y)
    bright = psf_snr(flux) >= 10
    assert bright.sum() > 60
    assert (distance[bright] < 1.5).mean() >= 0.95


def test_detections_away_from_edges_and_halos_are_stars(field, catalog):
    x, y, flux, *_ = field
    table = catalog.catalog
    cx, cy = np.asarray(table["x_centroid"]), np.asarray(table["y_centroid"])
    to_truth, _ = nearest(x, y, cx, cy)
    bright = psf_snr(flux) > HALO_SNR
    to_bright, _ = nearest(x[bright], y[bright], cx, cy)
    away = ((to_bright > HALO_RADIUS) | (to_truth < 1.5)) & (cx > EDGE) & (cy > EDGE) \
        & (cx < SHAPE[1] - EDGE) & (cy < SHAPE[0] - EDGE)
    assert away.sum() > 0.8 * len(table)
    assert (to_truth[away] >= 1.5).mean() <= 0.02


@pytest.mark.parametrize("aperture", ["aper02_flux", "aper04_flux"])
def test_aperture_corrected_fluxes_are_the_true_fluxes(field, catalog, aperture):
    """The median of aperXX / EE(radius) over each magnitude bin is the true flux to 2 %."""
    x, y, flux, *_ = field
    table = catalog.catalog
    distance, index = nearest(table["x_centroid"], table["y_centroid"], x, y)
    ee = dict(zip(catalogs.aperture_column_names(), catalog.ee_fractions, strict=True))
    measured = np.asarray(table[aperture])[index] / ee[aperture]
    snr = psf_snr(flux)
    magnitude = -2.5 * np.log10(flux)
    usable = (distance < 0.5) & (snr > 50)
    bins = np.arange(magnitude[usable].min(), magnitude[usable].max() + 1.0, 1.0)
    checked = 0
    for low in bins:
        in_bin = usable & (magnitude >= low) & (magnitude < low + 1.0)
        if in_bin.sum() >= 4:
            assert abs(np.median(measured[in_bin] / flux[in_bin]) - 1) < 0.02, (low, in_bin.sum())
            checked += 1
    assert checked >= 3


def test_encircled_energy_grows_to_the_total_flux(catalog):
    ee = catalog.ee_fractions
    assert np.all(np.diff(ee) > 0)
    assert 0.4 < ee[0] < ee[-1] < 1.0


def test_psf_positions_and_fluxes_are_the_truth(field, catalog):
    x, y, flux, *_ = field
    table = catalog.catalog
    distance, index = nearest(table["x_psf"], table["y_psf"], x, y)
    bright = (psf_snr(flux) > 50) & (distance < 1.0)
    assert bright.sum() > 30
    dx = np.asarray(table["x_psf"])[index[bright]] - x[bright]
    dy = np.asarray(table["y_psf"])[index[bright]] - y[bright]
    assert math.sqrt(np.mean(dx**2 + dy**2) / 2) <= 0.02
    assert abs(np.median(np.asarray(table["psf_flux"])[index[bright]] / flux[bright]) - 1) < 0.01


def test_close_pair_is_one_source_without_deblending_and_two_with():
    x, y, flux = np.array([40.0, 45.0]), np.array([40.0, 41.0]), np.array([2000.0, 1500.0])
    data, err = observe(galsim_rate((80, 80), x, y, flux), seed=8)
    labels = {}
    for deblend in (False, True):
        result = source_catalog.source_catalog(
            data, err, np.zeros((80, 80), np.uint32), psf_model=roman_psf.roman_psf_model("WFI03", "F158"),
            ee_fractions=roman_ee_fractions(), scale=source_catalog.image_scale(None, (80, 80)),
            flux_to_njy=1.0,
            **{**SETTINGS, "deblend": deblend})
        labels[deblend] = result.detection.segments.data[[40, 41], [40, 45]]
        distance, _ = nearest(result.catalog["x_psf"], result.catalog["y_psf"], x, y)
        if deblend:
            assert (distance < 0.1).all()
    assert labels[False][0] == labels[False][1] != 0
    assert labels[True][0] != labels[True][1] and labels[True].all()


def test_flags_mark_saturation_bad_pixels_and_edges():
    x, y, flux = np.array([30.0, 70.0, 3.0]), np.array([30.0, 70.0, 50.0]), np.array([1000.0, 1000.0, 1000.0])
    data, err = observe(galsim_rate((100, 100), x, y, flux), seed=9)
    dq = np.zeros((100, 100), np.uint32)
    dq[30, 30] = dqflags.pixel.SATURATED
    dq[71, 71] = dqflags.pixel.DO_NOT_USE | dqflags.pixel.DEAD
    result = source_catalog.source_catalog(
        data, err, dq, psf_model=roman_psf.roman_psf_model("WFI03", "F158"),
        ee_fractions=roman_ee_fractions(), scale=source_catalog.image_scale(None, (100, 100)),
        flux_to_njy=1.0, **SETTINGS)
    table = result.catalog
    _, index = nearest(table["x_centroid"], table["y_centroid"], x, y)
    flags = np.asarray(table["warning_flags"])[index]
    bits = catalogs.WARNING_BITS
    assert flags[0] == bits["saturated"]
    assert flags[1] == bits["bad_pixel_in_aperture"]
    assert flags[2] == bits["near_edge"]
    image_flags = np.asarray(table["image_flags"])[index]
    assert image_flags[0] == dqflags.pixel.SATURATED
    assert image_flags[1] == 0  # a DO_NOT_USE pixel is no part of a segment


def test_masked_convolution_is_astropys():
    """The detection image's float32 convolution equals astropy's (masked pixels interpolated over,
    the edge filled with 0) to float32 rounding, and is 0 on masked pixels."""
    from astropy.convolution import convolve
    from photutils.segmentation import make_2dgaussian_kernel

    rng = np.random.default_rng(5)
    image = rng.normal(0.0, 1.0, (40, 50)).astype(np.float32)
    image[20, 30] = 500.0
    mask = rng.random(image.shape) < 0.05
    mask[:3, :4] = True  # a masked corner (narrower than the kernel: astropy leaves NaN inside a wider one)
    image[mask] = 0.0
    kernel = make_2dgaussian_kernel(1.6, size=5).array
    ours = catalogs.convolve_masked(image, mask, kernel)
    expected = convolve(image, kernel, mask=mask, normalize_kernel=True)
    expected[mask] = 0.0
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
    unmasked = catalogs.convolve_masked(image, np.zeros(image.shape, bool), kernel)
    np.testing.assert_allclose(unmasked, convolve(image, kernel, normalize_kernel=True), rtol=1e-5, atol=1e-6)


def test_ab_magnitudes_of_fluxes_in_njy():
    magnitude, error = catalogs.ab_magnitude(np.array([3631e9, 1.0, -5.0]), np.array([0.0, 0.1, 1.0]))
    assert magnitude[0] == pytest.approx(0.0, abs=1e-12)
    assert magnitude[1] == pytest.approx(31.4, abs=0.001)  # the AB zero point of 1 nJy
    assert math.isnan(magnitude[2]) and math.isnan(error[2])
    assert error[1] == pytest.approx(2.5 * math.log10(1.1))


# --- the command line ------------------------------------------------------------------------

def write_cal(path, data, err, dq, *, wcs=None, conversion=0.5, pixel_area=2.8e-13):
    model = datamodels.ImageModel.create_fake_data(shape=data.shape)
    model.data, model.err, model.dq = data, err, dq
    model.meta.instrument.detector = "WFI03"
    model.meta.instrument.optical_element = "F158"
    model.meta.photometry.conversion_megajanskys = conversion
    model.meta.photometry.pixel_area = pixel_area
    model.meta.filename = path.name
    if wcs is not None:
        model.meta["wcs"] = wcs
    model.to_asdf(path)
    return path


def apcorr_reference(path, ee_fractions, radii, element="F158"):
    """An APCORR reference of WFI03 holding ``ee_fractions`` at ``radii`` for ``element``."""
    model = datamodels.ApcorrRefModel.create_fake_data()
    radii = np.asarray(radii, dtype=np.float64)
    fractions = np.asarray(ee_fractions, dtype=np.float64)
    model.data = {element: {"ee_fractions": fractions, "ee_radii": radii, "ap_corrections": 1.0 / fractions,
                           "sky_background_rin": None, "sky_background_rout": None}}
    model.meta.instrument.detector = "WFI03"
    model.to_asdf(path)
    return path


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """EPSF and APCORR references of the step's Roman PSF (romanpipe.roman_psf: total-flux normalised,
    as the galsim fields' truth), as ``--override-*`` options."""
    from test_simulator import detector
    from wfisim.references import make_reference

    folder = tmp_path_factory.mktemp("references")
    model = roman_psf.roman_psf_model("WFI03", "F158")
    epsf = make_reference("epsf", detector(name="WFI03"), useafter="2027-01-01T00:00:00",
                          optical_element="F158")
    epsf.psf = np.asarray(model.data, dtype=np.float32)[None, None, None]
    epsf.meta.oversample = int(model.oversampling[0])
    epsf.to_asdf(folder / "epsf.asdf")
    radii = np.arange(1, 161) * 0.1
    apcorr = apcorr_reference(folder / "apcorr.asdf", roman_psf.encircled_energy(model, radii), radii)
    return ["--override-epsf", str(folder / "epsf.asdf"), "--override-apcorr", str(apcorr)]


@pytest.fixture(scope="module")
def cal_file(tmp_path_factory, field):
    x, y, flux, data, err = field
    wcs = tan_gwcs((SHAPE[1] / 2, SHAPE[0] / 2), (80.0, -30.0), 20.0, SHAPE, scale=0.11 / 3600)
    folder = tmp_path_factory.mktemp("cal")
    return write_cal(folder / f"{EXPO}_cal.asdf", data, err, np.zeros(SHAPE, np.uint32), wcs=wcs), wcs


def test_cli_writes_the_parquet_catalog_and_the_segmentation_map(cal_file, field, references, tmp_path):
    path, wcs = cal_file
    x, y, flux, *_ = field
    output = tmp_path / f"{EXPO}_cat.parquet"
    assert cli.run(source_catalog.main, [str(path), str(output), "--snr-threshold", "1.5",
                                         "--npixels", "5", "--deblend", "true", *references]) == 0

    table = pd.read_parquet(output)
    template = datamodels.ImageSourceCatalogModel.create_fake_data()
    assert list(table.columns) == source_catalog.catalog_columns(fit_psf=True)
    schema = pq.read_schema(output)
    for name in ("x_psf", "psf_flux", "kron_abmag", "segment_area", "ra", "aper04_flux"):
        unit = template.get_column_definition(name)["unit"]
        assert u.Unit(schema.field(name).metadata[b"unit"].decode()) == u.Unit(unit)
    metadata = {key.decode(): value.decode() for key, value in schema.metadata.items()}
    assert metadata["roman.meta.instrument.optical_element"] == "F158"
    assert metadata["roman.meta.image.filename"] == path.name
    # The aperture corrections are the APCORR reference's, at the apertures' radii.
    np.testing.assert_allclose(catalog_ee_fractions(output), roman_ee_fractions(), rtol=1e-3)

    # Fluxes in nJy: DN/s x MJy/sr per DN/s x sr x 1e15.
    distance, index = nearest(table["x_psf"], table["y_psf"], x, y)
    bright = (psf_snr(flux) > 50) & (distance < 1.0)
    ratio = table["psf_flux"].to_numpy()[index[bright]] / (flux[bright] * 0.5 * 2.8e-13 * 1e15)
    assert abs(np.median(ratio) - 1) < 0.01
    np.testing.assert_allclose(table["kron_abmag"], -2.5 * np.log10(table["kron_flux"] / 3631e9), rtol=1e-5)
    # Sky positions: the WCS at the PSF positions; "ra"/"dec" are the PSF's.
    true_ra, true_dec = wcs(x[bright], y[bright])
    separation = SkyCoord(table["ra"].to_numpy()[index[bright]], table["dec"].to_numpy()[index[bright]],
                          unit="deg").separation(SkyCoord(true_ra, true_dec, unit="deg")).arcsec
    assert np.sqrt(np.mean(separation**2)) < 0.02 * 0.11 * 2
    assert table["segment_area"].gt(0).all()

    with rdm.open(tmp_path / f"{EXPO}_segm.asdf") as segmentation:
        assert isinstance(segmentation, datamodels.SegmentationMapModel)
        labels = np.asarray(segmentation.data)
        assert set(np.unique(labels)) - {0} == set(table["label"])
        assert np.asarray(segmentation.detection_image).shape == SHAPE
        assert segmentation.meta.provenance.source_catalog.parameters.npixels == 5


def test_cli_without_psf_fit_has_no_psf_columns(cal_file, references, tmp_path):
    path, _ = cal_file
    output = tmp_path / f"{EXPO}_cat.parquet"
    apcorr_only = references[2:]  # no EPSF: nothing is fitted
    assert cli.run(source_catalog.main, [str(path), str(output), "--fit-psf", "false", *apcorr_only]) == 0
    table = pd.read_parquet(output)
    assert list(table.columns) == source_catalog.catalog_columns(fit_psf=False)
    assert not {"x_psf", "psf_flux", "psf_flags"} & set(table.columns)
    np.testing.assert_array_equal(table["ra"], table["ra_centroid"])
    with rdm.open(tmp_path / f"{EXPO}_segm.asdf") as segmentation:
        assert set(segmentation.meta.provenance.source_catalog.references) == {"apcorr"}


@pytest.mark.parametrize(("element", "radii", "problem"), [
    ("F087", [1.0, 20.0], "APCORR table has no row for optical element F158"),
    ("F158", [2.0, 4.0], "APCORR ee_radii of F158 (2-4 pixels) do not cover the apertures (0.909-14.5)"),
])
def test_cli_apcorr_without_the_filter_or_the_radii_fails_naming_it(cal_file, tmp_path, capsys, element,
                                                                    radii, problem):
    path, _ = cal_file
    apcorr = apcorr_reference(tmp_path / "apcorr.asdf", [0.5, 0.7], radii, element)
    output = tmp_path / "out" / f"{EXPO}_cat.parquet"
    assert cli.run(source_catalog.main, [str(path), str(output), "--fit-psf", "false",
                                         "--override-apcorr", str(apcorr)]) != 0
    error = capsys.readouterr().err
    assert apcorr.name in error and problem in error
    assert not output.parent.exists() or not list(output.parent.iterdir())


def test_cli_image_without_usable_pixels_fails_and_writes_nothing(tmp_path, capsys):
    data = np.ones((40, 40), np.float32)
    path = write_cal(tmp_path / f"{EXPO}_cal.asdf", data, np.ones((40, 40), np.float16),
                     np.full((40, 40), dqflags.pixel.DO_NOT_USE, np.uint32))
    output = tmp_path / "out" / f"{EXPO}_cat.parquet"
    assert cli.run(source_catalog.main, [str(path), str(output)]) != 0
    assert path.name in capsys.readouterr().err
    assert not output.parent.exists() or not list(output.parent.iterdir())


def test_cli_empty_field_writes_an_empty_catalog(references, tmp_path):
    rng = np.random.default_rng(1)
    data = (SKY + rng.normal(0, 0.1, (64, 64))).astype(np.float32)
    wcs = tan_gwcs((32, 32), (80.0, -30.0), 20.0, (64, 64), scale=0.11 / 3600)
    path = write_cal(tmp_path / f"{EXPO}_cal.asdf", data, np.full((64, 64), 0.1, np.float16),
                     np.zeros((64, 64), np.uint32), wcs=wcs)
    output = tmp_path / f"{EXPO}_cat.parquet"
    assert cli.run(source_catalog.main, [str(path), str(output), *references]) == 0
    table = pd.read_parquet(output)
    assert len(table) == 0 and list(table.columns) == source_catalog.catalog_columns(fit_psf=True)
    with rdm.open(tmp_path / f"{EXPO}_segm.asdf") as segmentation:
        assert not np.asarray(segmentation.data).any()


# --- the peer ---------------------------------------------------------------------------------

@pytest.mark.peer
def test_peer_romancal_source_catalog_measures_the_same_sources(cal_file, catalog, references, tmp_path,
                                                                monkeypatch):
    """romancal 1.1's SourceCatalogStep on the same _cal with the same parameters: the same
    sources, aperture fluxes to 1 % (median), centroids to a few hundredths of a pixel."""
    pytest.importorskip("romancal")
    from romancal.source_catalog import _source_catalog
    from romancal.source_catalog.source_catalog_step import SourceCatalogStep
    from stpipe import crds_client

    def no_dust_map(*args, **kwargs):
        raise LookupError("no CRDS server: no dust map")

    # romancal asks a CRDS server for its dust maps and for the context it records (crds exits
    # when there is none); without the maps it writes dust_ebv NaN, as we do.
    monkeypatch.setattr(_source_catalog, "getreferences", no_dust_map)
    monkeypatch.setattr(crds_client, "get_context_used", lambda observatory: "N/A")

    path, _ = cal_file
    # Six radii: romancal fits a cubic spline to them.
    radii = np.array([0.1, 0.2, 0.4, 0.8, 1.2, 1.6])
    model = roman_psf.roman_psf_model("WFI03", "F158")
    # romancal 1.1 evaluates the APCORR's spline at the radii in arcsec (rad's schema and our step:
    # pixels), so it gets a file of its own.
    fractions = roman_psf.encircled_energy(model, radii / 0.11)
    apcorr = apcorr_reference(tmp_path / "apcorr.asdf", fractions, radii)
    output = tmp_path / f"{EXPO}_cat.parquet"
    parameters = {"snr_threshold": 2.0, "npixels": 5, "deblend": True, "kernel_fwhm": SETTINGS["kernel_fwhm"]}
    options = [arg for name, value in parameters.items()
               for arg in (f"--{name.replace('_', '-')}", str(value).lower())]
    assert cli.run(source_catalog.main, [str(path), str(output), "--fit-psf", "false", *options,
                                         *references[2:]]) == 0
    ours = pd.read_parquet(output)
    # process() directly: run() would ask a CRDS server for the step's parameter reference.
    with rdm.open(path) as image:
        set_cal_step(image, "tweakreg", "COMPLETE")  # a real _cal has cal_step, which romancal updates
        theirs_model, _ = SourceCatalogStep(override_apcorr=str(apcorr), fit_psf=False,
                                            **parameters).process(image)
    theirs = theirs_model.source_catalog.to_pandas()

    distance, index = nearest(theirs["x_centroid"], theirs["y_centroid"],
                              ours["x_centroid"], ours["y_centroid"])
    matched = distance < 0.5
    assert matched.mean() >= 0.9 and len(set(index[matched])) >= 0.9 * len(theirs)
    for name in ("aper02_flux", "aper04_flux", "segment_flux", "kron_flux"):
        ratio = ours[name].to_numpy()[matched] / theirs[name].to_numpy()[index[matched]]
        assert abs(np.median(ratio) - 1) < 0.01, name
    assert np.median(distance[matched]) < 0.05
    np.testing.assert_allclose(ours["ra_centroid"].to_numpy()[matched],
                               theirs["ra_centroid"].to_numpy()[index[matched]], atol=0.05 * 0.11 / 3600)


# --- the simulator's EPSF and APCORR references ---------------------------------------------

def catalog_ee_fractions(path) -> np.ndarray:
    """The ``ee_fractions`` a catalog's Parquet metadata holds."""
    text = pq.read_schema(path).metadata[b"source_catalog.ee_fractions"].decode()
    return np.array(text.strip("[]").split(), dtype=float)


@pytest.fixture(scope="module")
def simulated_field(tmp_path_factory):
    """Stars drawn by the simulator (wfisim.psf.render_stars, its Roman PSF), its EPSF and APCORR
    references."""
    from test_simulator import detector
    from wfisim.psf import render_stars
    from wfisim.references import make_reference
    from wfisim.scene import Catalog

    rng = np.random.default_rng(5)
    shape = (224, 224)
    centres = np.arange(16.0, shape[0] - 12, 30.0)
    x, y = (a.ravel() + rng.uniform(-3.0, 3.0, a.size) for a in np.meshgrid(centres, centres))
    flux = np.exp(rng.uniform(np.log(100.0), np.log(3000.0), x.size))
    rate = render_stars(shape, Catalog(x, y, flux), SKY, "F158", detector="WFI03", psf="roman")
    data, err = observe(rate, seed=6)
    epsf = make_reference("epsf", detector(name="WFI03"), useafter="2027-01-01T00:00:00",
                          optical_element="F158")
    folder = tmp_path_factory.mktemp("references")
    path = folder / "roman_wfi_epsf_0001.asdf"
    epsf.to_asdf(path)
    apcorr = make_reference("apcorr", detector(name="WFI03"), useafter="2027-01-01T00:00:00",
                            row_elements=["F158"])
    apcorr.to_asdf(folder / "roman_wfi_apcorr_0001.asdf")
    return x, y, flux, data, err, path, folder / "roman_wfi_apcorr_0001.asdf"


@pytest.fixture(scope="module")
def simulated_catalog(simulated_field, tmp_path_factory):
    """The CLI's catalog of the simulated field with the simulator's references, and its folder."""
    x, y, flux, data, err, epsf, apcorr = simulated_field
    folder = tmp_path_factory.mktemp("simulated_catalog")
    wcs = tan_gwcs((data.shape[1] / 2, data.shape[0] / 2), (80.0, -30.0), 20.0, data.shape, scale=0.11 / 3600)
    path = write_cal(folder / f"{EXPO}_cal.asdf", data, err, np.zeros(data.shape, np.uint32), wcs=wcs,
                     conversion=1.0, pixel_area=1e-15)  # 1 DN/s = 1 nJy
    output = folder / f"{EXPO}_cat.parquet"
    assert cli.run(source_catalog.main, [str(path), str(output), "--override-epsf", str(epsf),
                                         "--override-apcorr", str(apcorr)]) == 0
    return output


def test_the_epsf_reference_gives_the_simulated_fluxes_and_positions(simulated_field, simulated_catalog):
    """The simulator's stars hold their whole flux within their 33 x 33-pixel stamps; its EPSF is
    normalised so, and fits give that flux (a PSF normalised to the total flux over the plane
    would put 2-6 % more, 1/EE(stamp), from F062 to F213)."""
    x, y, flux, data, err, epsf, apcorr = simulated_field
    output = simulated_catalog
    table = pd.read_parquet(output)
    distance, index = nearest(table["x_psf"], table["y_psf"], x, y)
    assert (distance < 0.1).all()
    dx, dy = table["x_psf"].to_numpy()[index] - x, table["y_psf"].to_numpy()[index] - y
    assert math.sqrt(np.mean(dx**2 + dy**2) / 2) <= 0.02
    assert abs(np.median(table["psf_flux"].to_numpy()[index] / flux) - 1) < 0.01
    with rdm.open(output.with_name(f"{EXPO}_segm.asdf")) as segmentation:
        references = segmentation.meta.provenance.source_catalog.references
        assert references.epsf.file == epsf.name and references.apcorr.file == apcorr.name


@pytest.mark.parametrize("aperture", ["aper02_flux", "aper04_flux"])
def test_the_apcorr_reference_corrects_apertures_to_the_simulated_fluxes(simulated_field, simulated_catalog,
                                                                        aperture):
    """aperXX / ee_fraction (the APCORR reference's, at the aperture's radius) is the injected flux:
    its median within 2 % in every magnitude bin of 4 stars or more."""
    x, y, flux, *_ = simulated_field
    table = pd.read_parquet(simulated_catalog)
    fractions = dict(zip(catalogs.aperture_column_names(), catalog_ee_fractions(simulated_catalog),
                         strict=True))
    distance, index = nearest(table["x_psf"], table["y_psf"], x, y)
    assert (distance < 0.1).all()
    ratio = table[aperture].to_numpy()[index] / fractions[aperture] / flux
    magnitude = -2.5 * np.log10(flux)
    checked = 0
    for low in np.arange(magnitude.min(), magnitude.max() + 1.0, 1.0):
        in_bin = (magnitude >= low) & (magnitude < low + 1.0)
        if in_bin.sum() >= 4:
            assert abs(np.median(ratio[in_bin]) - 1) < 0.02, (low, in_bin.sum())
            checked += 1
    assert checked >= 3
