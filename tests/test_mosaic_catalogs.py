"""Level 3 catalogs: source_catalog on a mosaic, and the multiband catalog, against injected truth.

The mosaics are drawn by galsim as drizzling makes them at pixfrac 1 on the detectors'
pixel scale: each star is the Roman PSF integrated over the detector pixel, spread over the
drizzle's drop of one pixel (galsim's ``Pixel`` twice) and integrated over the mosaic pixel
(``drawImage``'s own pixel), in MJy/sr.
"""

import math

from romanpipe import catalogs, cli, roman_psf

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import roman_datamodels as rdm
from astropy.table import Table
from roman_datamodels import datamodels
from scipy.spatial import cKDTree

import multiband_catalog
import source_catalog
from test_resample import tan_gwcs

SHAPE = (256, 256)
SCALE_ARCSEC = 0.11
PIXEL_AREA_SR = (SCALE_ARCSEC / 206264.806) ** 2
NJY_PER_MJY_SR = PIXEL_AREA_SR * 1e15  # nJy in a pixel of 1 MJy/sr
SKY = 0.2  # MJy/sr
NOISE = 0.004  # MJy/sr per pixel: a 4-exposure mosaic's background noise
HALF_STAMP = 12
GALSIM_BANDPASS = {"F158": "H158", "F087": "Z087"}
DETECTOR = "WFI03"
PRODUCT = "r00001_p_full_270p65x48y69"


def mosaic_rate(x, y, flux_njy, optical_element, seed):
    """Sky, stars (flux in nJy) and Gaussian noise in MJy/sr, as a pixfrac-1 mosaic of SCA 3 draws them."""
    import galsim
    import galsim.roman

    bandpass = galsim.roman.getBandpasses()[GALSIM_BANDPASS[optical_element]]
    psf = galsim.roman.getPSF(3, GALSIM_BANDPASS[optical_element], pupil_bin=8,
                              wavelength=bandpass.effective_wavelength)
    pixel = galsim.Pixel(galsim.roman.pixel_scale)
    dropped = galsim.Convolve(psf, pixel, pixel)
    rate = np.full(SHAPE, SKY)
    size = 2 * HALF_STAMP + 1
    for x0, y0, f in zip(x, y, flux_njy, strict=True):
        col, row = round(x0), round(y0)
        stamp = dropped.withFlux(f / NJY_PER_MJY_SR).drawImage(
            nx=size, ny=size, scale=galsim.roman.pixel_scale, offset=(x0 - col, y0 - row)).array
        rows = slice(max(0, row - HALF_STAMP), min(SHAPE[0], row + HALF_STAMP + 1))
        cols = slice(max(0, col - HALF_STAMP), min(SHAPE[1], col + HALF_STAMP + 1))
        rate[rows, cols] += stamp[rows.start - row + HALF_STAMP:rows.stop - row + HALF_STAMP,
                                  cols.start - col + HALF_STAMP:cols.stop - col + HALF_STAMP]
    rng = np.random.default_rng(seed)
    return (rate + rng.normal(0.0, NOISE, SHAPE)).astype(np.float32)


def write_mosaic(path, data, optical_element):
    """A rad MosaicModel of ``data`` on a TAN grid of 0.11" pixels, its corner uncovered."""
    model = datamodels.MosaicModel.create_fake_data(shape=SHAPE)
    data = data.copy()
    weight = np.ones(SHAPE, np.float32)
    data[:6, :6], weight[:6, :6] = np.nan, 0.0
    model.data, model.weight = data, weight
    model.err = np.full(SHAPE, NOISE, np.float32)
    model.meta.instrument.optical_element = optical_element
    model.meta.wcs = tan_gwcs((SHAPE[1] / 2, SHAPE[0] / 2), (270.0, 65.0), 0.0, SHAPE,
                              scale=SCALE_ARCSEC / 3600)
    model.meta.resample.pixfrac = 1.0
    model.meta.individual_image_meta = {"instrument": Table({"detector": [DETECTOR] * 2,
                                                             "optical_element": [optical_element] * 2})}
    model.meta.filename = path.name
    model.to_asdf(path)
    return path


def truth_field(seed):
    """~60 stars on a jittered 32-pixel grid, 30 nJy to 30 uJy."""
    rng = np.random.default_rng(seed)
    centres = np.arange(20.0, SHAPE[0] - 12, 32.0)
    x, y = (a.ravel() + rng.uniform(-3.0, 3.0, a.size) for a in np.meshgrid(centres, centres))
    flux = np.exp(rng.uniform(np.log(30.0), np.log(30000.0), x.size))
    return x, y, flux


def nearest(catalog_x, catalog_y, x, y):
    return cKDTree(np.c_[catalog_x, catalog_y]).query(np.c_[x, y])


def peak_snr(flux_njy):
    """S/N of a PSF-weighted measurement against the background noise (noise-equivalent area ~ 9 px)."""
    return flux_njy / NJY_PER_MJY_SR / (NOISE * 3.0)


@pytest.fixture(scope="module")
def field():
    return truth_field(7)


@pytest.fixture(scope="module")
def f158_mosaic(tmp_path_factory, field):
    x, y, flux = field
    folder = tmp_path_factory.mktemp("l3")
    return write_mosaic(folder / f"{PRODUCT}_f158_i2d.asdf", mosaic_rate(x, y, flux, "F158", seed=1), "F158")


@pytest.fixture(scope="module")
def l3_catalog(f158_mosaic):
    output = f158_mosaic.parent / f"{PRODUCT}_f158_cat.parquet"
    assert cli.run(source_catalog.main, [str(f158_mosaic), str(output)]) == 0
    return output


def test_mosaic_catalog_finds_every_star_of_10_sigma(field, l3_catalog):
    x, y, flux = field
    table = pd.read_parquet(l3_catalog)
    distance, _ = nearest(table["x_centroid"], table["y_centroid"], x, y)
    bright = peak_snr(flux) >= 10
    assert bright.sum() > 30
    assert (distance[bright] < 1.5).mean() >= 0.95
    # Every detection is a star: nothing spurious on a clean field.
    to_truth, _ = nearest(x, y, table["x_centroid"], table["y_centroid"])
    assert (to_truth < 1.5).mean() >= 0.98


def test_mosaic_catalog_fluxes_are_the_true_fluxes(field, l3_catalog):
    """Aperture fluxes corrected by the mosaic PSF's encircled energy, and PSF fluxes, within 2 % (median)."""
    x, y, flux = field
    table = pd.read_parquet(l3_catalog)
    distance, index = nearest(table["x_psf"], table["y_psf"], x, y)
    bright = (peak_snr(flux) > 50) & (distance < 0.5)
    assert bright.sum() > 15
    ee = pq.read_schema(l3_catalog).metadata[b"source_catalog.ee_fractions"].decode()
    fractions = np.array(ee.strip("[]").split(), dtype=float)
    for name, fraction in (("aper02_flux", fractions[1]), ("aper04_flux", fractions[2]), ("psf_flux", 1.0)):
        ratio = table[name].to_numpy()[index[bright]] / fraction / flux[bright]
        assert abs(np.median(ratio) - 1) < 0.02, name
    dx = table["x_psf"].to_numpy()[index[bright]] - x[bright]
    dy = table["y_psf"].to_numpy()[index[bright]] - y[bright]
    assert math.sqrt(np.mean(dx**2 + dy**2) / 2) <= 0.03


def test_mosaic_catalog_is_romans_level_3_product(f158_mosaic, l3_catalog):
    table = pd.read_parquet(l3_catalog)
    assert list(table.columns) == source_catalog.catalog_columns(fit_psf=True)
    metadata = pq.read_schema(l3_catalog).metadata
    assert metadata[b"roman.meta.image.filename"].decode() == f158_mosaic.name
    with rdm.open(l3_catalog.parent / f"{PRODUCT}_f158_segm.asdf") as segmentation:
        assert isinstance(segmentation, datamodels.MosaicSegmentationMapModel)
        labels = np.asarray(segmentation.data)
        assert set(np.unique(labels)) - {0} == set(table["label"])
        assert not labels[:6, :6].any()  # the uncovered corner is no source


def test_mosaic_psf_of_pixfrac_and_scale():
    """Drizzled at twice the pixel scale, the PSF holds the same flux and is wider."""
    detector_psf = roman_psf.roman_psf_model(DETECTOR, "F158")
    same = roman_psf.mosaic_psf_model(detector_psf, pixel_scale_arcsec=SCALE_ARCSEC, pixfrac=1.0)
    coarse = roman_psf.mosaic_psf_model(detector_psf, pixel_scale_arcsec=2 * SCALE_ARCSEC, pixfrac=1.0)
    total = detector_psf.data.sum() / 16
    assert same.data.sum() / 16 == pytest.approx(total, rel=2e-3)
    assert coarse.data.sum() / 16 == pytest.approx(total, rel=2e-3)
    radii = [1.0, 2.0]
    assert (roman_psf.encircled_energy(coarse, [r / 2 for r in radii])
            < roman_psf.encircled_energy(detector_psf, radii)).all()


# --- the multiband catalog ------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_filters(tmp_path_factory, field):
    """The same cell in F087 and F158: every star with its own flux in each filter, and a few
    stars too faint to find in either filter alone that their sum finds."""
    x, y, flux = field
    rng = np.random.default_rng(11)
    colour = np.exp(rng.uniform(np.log(0.3), np.log(3.0), x.size))  # F087 / F158 flux
    folder = tmp_path_factory.mktemp("multiband")
    paths = [write_mosaic(folder / f"{PRODUCT}_{element.lower()}_i2d.asdf",
                          mosaic_rate(x, y, flux * factor, element, seed=seed), element)
             for element, factor, seed in (("F158", 1.0, 21), ("F087", colour, 22))]
    return x, y, {"F158": flux, "F087": flux * colour}, paths


@pytest.fixture(scope="module")
def multiband(two_filters):
    *_, paths = two_filters
    output = paths[0].parent / f"{PRODUCT}_cat.parquet"
    assert cli.run(multiband_catalog.main, [str(p) for p in paths] + ["--output", str(output)]) == 0
    return output


def test_multiband_catalog_has_one_row_per_source(two_filters, multiband):
    x, y, _, _ = two_filters
    table = pd.read_parquet(multiband)
    assert list(table.columns) == multiband_catalog.catalog_columns(["F158", "F087"], fit_psf=True)
    assert table["label"].is_unique
    distance, index = nearest(table["x_centroid"], table["y_centroid"], x, y)
    found = distance < 1.5
    assert found.mean() >= 0.9
    assert len(set(index[found])) == found.sum()  # no star twice
    with rdm.open(multiband.parent / f"{PRODUCT}_segm.asdf") as segmentation:
        assert isinstance(segmentation, datamodels.MultibandSegmentationMapModel)
        assert set(np.unique(segmentation.data)) - {0} == set(table["label"])


def test_multiband_forced_photometry_gives_each_filters_flux(two_filters, multiband):
    """On the common segments, each filter's PSF and aperture-corrected fluxes are that filter's truth."""
    x, y, truth, _ = two_filters
    table = pd.read_parquet(multiband)
    metadata = {key.decode(): value.decode() for key, value in pq.read_schema(multiband).metadata.items()}
    distance, index = nearest(table["x_centroid"], table["y_centroid"], x, y)
    for element, flux in truth.items():
        band = element.lower()
        fractions = np.array(metadata[f"source_catalog.ee_fractions.{band}"].strip("[]").split(), dtype=float)
        bright = (peak_snr(flux) > 50) & (distance < 1.0)
        assert bright.sum() > 10
        for name, fraction in ((f"psf_{band}_flux", 1.0), (f"aper04_{band}_flux", fractions[2])):
            ratio = table[name].to_numpy()[index[bright]] / fraction / flux[bright]
            assert abs(np.median(ratio) - 1) < 0.02, name
        dx = table[f"x_psf_{band}"].to_numpy()[index[bright]] - x[bright]
        assert np.sqrt(np.mean(dx**2)) < 0.05


def test_multiband_segments_each_filter_only_for_its_background(two_filters, tmp_path, monkeypatch):
    """A filter's own segments only mask its sources for its second background estimate: one
    segmentation per filter, and two of the detection image (its background's first pass, the
    catalog's segments), not a wasted final pass per filter."""
    *_, paths = two_filters
    calls = []
    segment = catalogs.segment

    def counted(*args, **kwargs):
        calls.append(args[0].subtracted.shape)
        return segment(*args, **kwargs)

    monkeypatch.setattr(catalogs, "segment", counted)
    output = tmp_path / "x_cat.parquet"
    assert cli.run(multiband_catalog.main, [str(p) for p in paths] + ["--output", str(output)]) == 0
    assert len(calls) == len(paths) + 2


def test_multiband_needs_one_grid(two_filters, tmp_path, capsys):
    *_, paths = two_filters
    with rdm.open(paths[1]) as model:
        shifted = write_mosaic(tmp_path / "shifted_f087_i2d.asdf", np.asarray(model.data)[:, ::-1], "F087")
    with rdm.open(shifted) as model:
        model.meta.wcs = tan_gwcs((SHAPE[1] / 2 + 0.5, SHAPE[0] / 2), (270.0, 65.0), 0.0, SHAPE,
                                  scale=SCALE_ARCSEC / 3600)
        model.save(tmp_path / "moved_f087_i2d.asdf")
    output = tmp_path / "x_cat.parquet"
    assert cli.run(multiband_catalog.main, [str(paths[0]), str(tmp_path / "moved_f087_i2d.asdf"),
                                            "--output", str(output)]) != 0
    assert "moved_f087_i2d.asdf" in capsys.readouterr().err and not output.exists()


def test_band_column_names_are_romancals():
    names = {name: multiband_catalog.band_column_name(name, "F158") for name in
             ("aper04_flux", "aper04_flux_err", "aper_bkg_flux", "x_psf", "x_psf_err", "ra_psf_err",
              "psf_flux", "psf_flux_err", "kron_abmag_err", "is_extended", "psf_gof", "fluxfrac_radius_50")}
    assert names == {"aper04_flux": "aper04_f158_flux", "aper04_flux_err": "aper04_f158_flux_err",
                     "aper_bkg_flux": "aper_bkg_f158_flux", "x_psf": "x_psf_f158",
                     "x_psf_err": "x_psf_f158_err",
                     "ra_psf_err": "ra_psf_f158_err", "psf_flux": "psf_f158_flux",
                     "psf_flux_err": "psf_f158_flux_err", "kron_abmag_err": "kron_f158_abmag_err",
                     "is_extended": "is_extended_f158", "psf_gof": "psf_gof_f158",
                     "fluxfrac_radius_50": "fluxfrac_radius_50_f158"}


def test_multiband_products_name_no_single_filter(multiband):
    metadata = pq.read_schema(multiband).metadata
    assert metadata.get(b"roman.meta.instrument.optical_element", b"None") == b"None"
    with rdm.open(multiband.parent / f"{PRODUCT}_segm.asdf") as segmentation:
        assert segmentation.meta.instrument.optical_element is None
        elements = [meta["instrument"]["optical_element"] for meta in segmentation.meta.image_metas]
        assert elements == ["F158", "F087"]
