"""tweakreg: stars at known sky positions (with proper motions), a WCS with a known pointing error.

The truth is built independently of the step: the TRUE WCS comes from assign_wcs with
the true pointing keywords, the stars' positions at the exposure epoch are that WCS
at their true pixels, and the reference catalog holds them at epoch 2016.0, moved back
with astropy's ``SkyCoord.apply_space_motion`` and blurred by the catalog's errors.
The image carries a WCS built from a WRONG pointing (offset and roll) and a detection
catalog of the true pixels plus 0.02 pixel of noise, with missing stars and spurious
detections. The aligned WCS must put the detections back on the stars.
"""

import http.server
import json
import math
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from romanpipe.association import asn_from_list, read_association, write_association
from romanpipe.footprints import s_region
from romanpipe.params import step_defaults

import numpy as np
import pytest
import roman_datamodels as rdm
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.modeling.models import AffineTransformation2D, Shift
from astropy.table import Table
from astropy.time import Time
from roman_datamodels import datamodels

import tweakreg
from assign_wcs import build_wcs

ROOT = Path(__file__).resolve().parents[1]
SCALE = 0.11  # arcsec per pixel
V2_REF, V3_REF = 1312.95, -1040.79  # WFI01's place in the focal plane, arcsec
SHAPE = (512, 512)
TRUE_INFO = {"v2_ref": V2_REF, "v3_ref": V3_REF, "ra_ref": 10.5, "dec_ref": -42.3, "roll_ref": 117.0}
START_TIME = Time("2027-06-01T00:00:00")
CATALOG_EPOCH = 2016.0
COMMON_PM = (4.0, -6.0)  # mas/yr, the field's mean motion: ~80 mas between the epochs
DETECTION_NOISE = 0.02  # pixels
TOLERANCE_MAS = 5.0
EXPO_A = "r0000101001001001001_01101_0001_WFI01"
EXPO_B = "r0000101001001001001_01101_0002_WFI01"
OBSERVATION_ID = {EXPO_A: "0000101001001001001011010001", EXPO_B: "0000101001001001001011010002"}
DEFAULTS = step_defaults("tweakreg")


def detector_to_v2v3(scale=SCALE, angle_deg=-60.0):
    """A distortion-free detector: pixel offsets from the centre, rotated (with parity) and scaled."""
    nrows, ncols = SHAPE
    angle = np.radians(angle_deg)
    matrix = scale * np.array([[-np.cos(angle), np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return ((Shift(-(ncols - 1) / 2) & Shift(-(nrows - 1) / 2)) | AffineTransformation2D(matrix)
            | (Shift(V2_REF) & Shift(V3_REF)))


def pointed(info, east=0.0, north=0.0, roll=0.0):
    """``info`` with its reference point moved east/north (arcsec) and its roll changed (deg)."""
    dec = info["dec_ref"]
    return dict(info, ra_ref=info["ra_ref"] + east / 3600 / np.cos(np.radians(dec)),
                dec_ref=dec + north / 3600, roll_ref=info["roll_ref"] + roll)


WRONG_INFO = pointed(TRUE_INFO, east=1.3, north=-0.9, roll=0.07)


class Field:
    """Stars on one detector: true pixels, true sky at the exposure epoch, and their motions."""

    def __init__(self, true_info=TRUE_INFO, nstars=70, seed=3, distortion=None):
        rng = np.random.default_rng(seed)
        self.true_wcs = build_wcs(distortion or detector_to_v2v3(), true_info, SHAPE)
        self.x = rng.uniform(3, SHAPE[1] - 4, nstars)
        self.y = rng.uniform(3, SHAPE[0] - 4, nstars)
        self.ra, self.dec = self.true_wcs(self.x, self.y)
        self.pmra = COMMON_PM[0] + rng.normal(0, 8, nstars)
        self.pmdec = COMMON_PM[1] + rng.normal(0, 8, nstars)
        self.rng = rng

    def detections(self, missing=5, spurious=4, keep=None) -> Table:
        """Detected x, y: true pixels + noise, the first ``missing`` stars lost, ``spurious`` added."""
        index = np.arange(missing, len(self.x)) if keep is None else np.arange(keep)
        x = self.x[index] + self.rng.normal(0, DETECTION_NOISE, index.size)
        y = self.y[index] + self.rng.normal(0, DETECTION_NOISE, index.size)
        fake_x, fake_y = self.rng.uniform(3, SHAPE[1] - 4, (2, spurious))
        return Table({"id": np.arange(1, index.size + spurious + 1),
                      "x": np.concatenate([x, fake_x]), "y": np.concatenate([y, fake_y]),
                      "flux": np.concatenate([np.full(index.size, 1e4), np.full(spurious, 50.0)])})

    def reference_catalog(self, with_motions=True, units=False, extra=30) -> Table:
        """The stars at epoch 2016.0 (Gaia-like columns), plus stars beyond the detector."""
        now = SkyCoord(self.ra * u.deg, self.dec * u.deg, pm_ra_cosdec=self.pmra * u.mas / u.yr,
                       pm_dec=self.pmdec * u.mas / u.yr, obstime=START_TIME)
        with warnings.catch_warnings():
            # ERFA notes that a star without distance is put far away: that is what we mean.
            warnings.simplefilter("ignore")
            then = now.apply_space_motion(new_obstime=Time(CATALOG_EPOCH, format="jyear"))
        n = len(self.ra)
        ra_error = self.rng.uniform(0.05, 0.4, n)
        dec_error = self.rng.uniform(0.05, 0.4, n)
        ra = then.ra.deg + self.rng.normal(0, ra_error) / 3.6e6 / np.cos(then.dec.radian)
        dec = then.dec.deg + self.rng.normal(0, dec_error) / 3.6e6
        # Field stars 1-3 arcmin away: outside the detector, inside a campaign-wide catalog.
        angle = self.rng.uniform(0, 2 * np.pi, extra)
        distance = self.rng.uniform(60, 180, extra) / 3600
        centre_ra, centre_dec = self.true_wcs((SHAPE[1] - 1) / 2, (SHAPE[0] - 1) / 2)
        ra = np.concatenate([ra, centre_ra + distance * np.sin(angle) / np.cos(np.radians(centre_dec))])
        dec = np.concatenate([dec, centre_dec + distance * np.cos(angle)])
        table = Table({"source_id": np.arange(n + extra, dtype=np.int64), "ra": ra, "dec": dec,
                       "ra_error": np.concatenate([ra_error, np.full(extra, 0.1)]),
                       "dec_error": np.concatenate([dec_error, np.full(extra, 0.1)]),
                       "pmra": np.concatenate([self.pmra, np.zeros(extra)]),
                       "pmdec": np.concatenate([self.pmdec, np.zeros(extra)]),
                       "ref_epoch": np.full(n + extra, CATALOG_EPOCH),
                       "mag": self.rng.uniform(16, 20, n + extra)})
        if not with_motions:
            table.remove_columns(["pmra", "pmdec"])
        if units:
            table["ra"].unit = table["dec"].unit = u.deg
            table["ra_error"].unit = table["dec_error"].unit = u.mas
            if with_motions:
                table["pmra"].unit = table["pmdec"].unit = u.mas / u.yr
            table["ref_epoch"].unit = u.yr
        return table

    def error_mas(self, wcs) -> np.ndarray:
        """Distance (mas) from where ``wcs`` puts the true pixels to the stars, now."""
        return _separation_mas(*wcs(self.x, self.y), self.ra, self.dec)


def _separation_mas(ra1, dec1, ra2, dec2):
    return SkyCoord(ra1 * u.deg, dec1 * u.deg).separation(SkyCoord(ra2 * u.deg, dec2 * u.deg)).to_value(u.mas)


def rms(values) -> float:
    return float(np.sqrt(np.mean(np.square(values))))


def stars_now(field: Field) -> Table:
    """A reference catalog already at the exposure epoch: the stars' true positions."""
    table = Table({"RA": field.ra, "DEC": field.dec})
    table.meta["name"] = "truth"
    return table


def align(wcs, info, catalog, refcat, **parameters) -> tweakreg.Alignment:
    image = tweakreg.ImageToAlign("image", wcs, info, catalog, "exposure-1")
    return tweakreg.align_images([image], refcat, {**DEFAULTS, **parameters}, "truth")[0]


def detected_rms(field: Field, wcs, catalog: Table, missing=5) -> float:
    """RMS distance (mas) from the detections of real stars, through ``wcs``, to the stars now."""
    stars = len(field.x) - missing
    ra, dec = wcs(catalog["x"][:stars], catalog["y"][:stars])
    return rms(_separation_mas(ra, dec, field.ra[missing:], field.dec[missing:]))


# ----------------------------------------------------------------------------- the kernel


def test_absolute_alignment_puts_detections_on_the_stars_at_the_exposure_epoch(tmp_path):
    field = Field()
    wrong_wcs = build_wcs(detector_to_v2v3(), WRONG_INFO, SHAPE)
    catalog = field.detections()
    path = tmp_path / "gaia_like.ecsv"
    field.reference_catalog().write(path)
    name, refcat = tweakreg.reference_catalog(str(path), [wrong_wcs], START_TIME.jyear, margin_arcsec=6.0,
                                              timeout=1.0)
    before = detected_rms(field, wrong_wcs, catalog)
    # At the documented abs_separation, the default, every detected star takes part (romancal
    # 1.1's 1 arcsec leaves out the few with a neighbour that close: checked below).
    result = align(wrong_wcs, WRONG_INFO, catalog, refcat)
    after = detected_rms(field, result.wcs, catalog)
    assert name == "gaia_like.ecsv"
    assert len(refcat) == 70  # the 30 field stars away from the detector are not used
    assert before > 1000.0  # the wrong pointing is off by more than an arcsecond
    assert after <= TOLERANCE_MAS
    assert rms(field.error_mas(result.wcs)) <= 1.0  # the WCS itself, at the true pixels
    assert result.status == "COMPLETE"
    assert result.fit_results["status"] == "SUCCESS"
    assert result.fit_results["nmatches"] == 65  # the 65 detected stars, none of the spurious sources
    assert list(result.fit_results) == [key for key in tweakreg.WCS_FIT_KEYS]
    assert result.wcs.available_frames == ["detector", "v2v3", "v2v3corr", "world"]
    assert wrong_wcs.available_frames == ["detector", "v2v3", "world"]  # the input WCS is untouched
    romancal_separation = align(wrong_wcs, WRONG_INFO, catalog, refcat, abs_separation=1.0)
    assert 50 < romancal_separation.fit_results["nmatches"] < 65
    assert detected_rms(field, romancal_separation.wcs, catalog) <= TOLERANCE_MAS


SHIFT_ONLY = pointed(TRUE_INFO, east=1.3, north=-0.9)
SCALE_ERROR = 1e-3


@pytest.mark.parametrize("error, fitgeometry, recovers", [
    ("shift", "shift", True), ("shift", "rshift", True),
    ("rotation", "shift", False), ("rotation", "rshift", True), ("rotation", "general", True),
    ("scale", "rshift", False), ("scale", "rscale", True), ("scale", "general", True),
])
def test_each_fitgeometry_recovers_what_it_can(error, fitgeometry, recovers):
    field = Field()
    info = {"shift": SHIFT_ONLY, "rotation": WRONG_INFO, "scale": SHIFT_ONLY}[error]
    distortion = detector_to_v2v3(SCALE * (1 + SCALE_ERROR)) if error == "scale" else detector_to_v2v3()
    catalog = field.detections()
    result = align(build_wcs(distortion, info, SHAPE), info, catalog, stars_now(field),
                   abs_fitgeometry=fitgeometry)
    fit = result.fit_results
    residual = detected_rms(field, result.wcs, catalog)
    assert fit["status"] == "SUCCESS" and fit["fitgeom"] == fitgeometry
    if recovers:
        assert residual <= TOLERANCE_MAS
    else:
        assert residual > 2 * TOLERANCE_MAS  # what the geometry cannot describe stays in the WCS
    if fitgeometry == "shift":
        assert fit["matrix"] == [[1.0, 0.0], [0.0, 1.0]]
    # The tangent plane is the wrong WCS's, x east and y north at its reference point: the
    # correction is minus the pointing error, and turns the image back by the roll error.
    if error == "shift":
        assert fit["shift"] == pytest.approx([-1.3, 0.9], abs=0.002)  # arcsec
        assert abs(fit["proper_rot"]) < 0.002  # deg
    if error == "rotation" and recovers:
        angle = np.radians(0.07)  # counter-clockwise from east towards north
        assert fit["matrix"][1][0] == pytest.approx(np.sin(angle), abs=4e-5)
        assert fit["matrix"][0][1] == pytest.approx(-np.sin(angle), abs=4e-5)
        assert fit["proper_rot"] == pytest.approx(-0.07, abs=0.002)  # tweakwcs counts clockwise
    if error == "scale" and recovers:
        assert fit["<scale>"] == pytest.approx(1 / (1 + SCALE_ERROR), abs=5e-5)  # undoes the error


def test_proper_motions_matter(tmp_path):
    field = Field()
    wrong_wcs = build_wcs(detector_to_v2v3(), WRONG_INFO, SHAPE)
    catalog = field.detections()
    residual = {}
    for with_motions in (True, False):
        path = tmp_path / f"gaia_like_{with_motions}.ecsv"
        field.reference_catalog(with_motions=with_motions).write(path)
        refcat = tweakreg.read_reference_catalog(path, START_TIME.jyear)
        aligned = align(wrong_wcs, WRONG_INFO, catalog, refcat).wcs
        residual[with_motions] = detected_rms(field, aligned, catalog)
    assert residual[True] <= TOLERANCE_MAS
    assert residual[False] > 10 * TOLERANCE_MAS  # the ~80 mas the field moved since 2016 stays in the WCS


@pytest.mark.parametrize("ra, dec, pmra, pmdec", [
    (10.5, -42.3, 30.0, -20.0), (200.0, 89.99, -500.0, 300.0), (359.999, 0.0, 1000.0, 0.0),
    (45.0, -89.95, 0.0, 0.0)])
def test_proper_motion_agrees_with_astropy(ra, dec, pmra, pmdec):
    star = SkyCoord(ra * u.deg, dec * u.deg, pm_ra_cosdec=pmra * u.mas / u.yr, pm_dec=pmdec * u.mas / u.yr,
                    obstime=Time(CATALOG_EPOCH, format="jyear"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = star.apply_space_motion(new_obstime=START_TIME)
    got_ra, got_dec = tweakreg.propagate_proper_motion(np.array([ra]), np.array([dec]), pmra, pmdec,
                                                       CATALOG_EPOCH, START_TIME.jyear)
    assert _separation_mas(got_ra, got_dec, want.ra.deg, want.dec.deg)[0] < 0.01


def test_too_few_matches_leaves_the_wcs_as_it_was():
    field = Field()
    wrong_wcs = build_wcs(detector_to_v2v3(), WRONG_INFO, SHAPE)
    result = align(wrong_wcs, WRONG_INFO, field.detections(keep=8, spurious=0), stars_now(field))
    assert result.status == "FAILED"
    assert result.wcs is wrong_wcs
    assert result.fit_results == {"status": "FAILED: not enough matches (8 < abs_minobj 15)",
                                  "fitgeom": "rshift", "nmatches": 8}


def test_too_few_reference_stars_is_a_failed_fit_not_an_error():
    field = Field()
    wrong_wcs = build_wcs(detector_to_v2v3(), WRONG_INFO, SHAPE)
    result = align(wrong_wcs, WRONG_INFO, field.detections(), stars_now(field)[:10])
    assert result.status == "FAILED" and result.wcs is wrong_wcs
    assert result.fit_results["status"] == ("FAILED: not enough reference sources in the field "
                                            "(10 < abs_minobj 15)")


# ----------------------------------------------------------------------------- catalogs


def test_catfile_wins_over_the_association_and_empty_means_detected(tmp_path):
    catfile = tmp_path / "lists" / "catfile.txt"
    catfile.parent.mkdir()
    catfile.write_text("# image catalog\nimg1.asdf  cat1.ecsv\n\nimg2.asdf\n")
    asn_entries = [tmp_path / "asn1.ecsv", tmp_path / "asn2.ecsv", tmp_path / "asn3.ecsv"]
    names = ["img1.asdf", "img2.asdf", "img3.asdf"]
    choose = tweakreg.custom_catalog_paths
    assert choose(names, use_custom_catalogs=True, catfile=catfile, association_entries=asn_entries) == [
        catfile.parent / "cat1.ecsv", None, None]  # img3 is not listed: its detected catalog, not the ASN's
    assert choose(names, use_custom_catalogs=True, catfile=None,
                  association_entries=asn_entries) == asn_entries
    assert choose(names, use_custom_catalogs=True, catfile=None,
                  association_entries=[None, asn_entries[1], None]) == [None, asn_entries[1], None]
    assert choose(names, use_custom_catalogs=False, catfile=catfile, association_entries=asn_entries) == [
        None, None, None]


def test_association_member_catalogs_are_relative_to_the_association(tmp_path):
    tree = asn_from_list(["a_sourcedetection.asdf", "b_sourcedetection.asdf"], "product")
    tree["products"][0]["members"][0]["tweakreg_catalog"] = "cats/a.ecsv"
    tree["products"][0]["members"][1]["tweakreg_catalog"] = ""
    path = write_association(tree, tmp_path / "x_asn.json")
    entries = tweakreg.association_catalog_entries(read_association(path))
    assert entries == [tmp_path / "cats" / "a.ecsv", None]


def test_catalog_files_in_every_format_and_column_naming(tmp_path):
    x, y = np.array([1.5, 20.25, 300.0, 600.0]), np.array([2.0, 30.5, 100.0, 5.0])
    box = ((-0.5, 511.5), (-0.5, 511.5))
    Table({"x": x, "y": y, "flux": [1.0, 2.0, 3.0, 4.0]}).write(tmp_path / "c.ecsv")
    Table({"xcentroid": x, "ycentroid": y}).write(tmp_path / "c.parquet")
    Table({"x_psf": x, "y_psf": y}).write(tmp_path / "c.csv", format="ascii.csv")
    catalog_model = datamodels.ImageSourceCatalogModel.create_fake_data()
    template = catalog_model.source_catalog
    # rad's columns keep their dtypes and units; only the centroids are filled in.
    table = Table([template[name].__class__(np.zeros(4, dtype=template[name].dtype), name=name,
                                            unit=template[name].unit) for name in template.colnames])
    table["x_centroid"][:], table["y_centroid"][:] = x, y
    catalog_model.source_catalog = table
    catalog_model.to_asdf(tmp_path / "c_cat.asdf")
    for name, table_format in [("c.ecsv", None), ("c.parquet", None), ("c.csv", "ascii.csv"),
                               ("c_cat.asdf", None)]:
        table = tweakreg.read_catalog_file(tmp_path / name, table_format)
        positions = tweakreg.source_positions(table, name, box)
        assert positions["x"].tolist() == x[:3].tolist() and positions["y"].tolist() == y[:3].tolist(), name
    with pytest.raises(ValueError, match="no source position columns"):
        tweakreg.source_positions(Table({"ra": x, "dec": y}), "bad", box)


def test_parquet_and_ecsv_reference_catalogs_with_units_agree(tmp_path):
    field = Field()
    table = field.reference_catalog(units=True, extra=0)
    table.write(tmp_path / "ref.ecsv")
    plain = field.reference_catalog(extra=0)
    plain["ra"], plain["dec"] = table["ra"].value, table["dec"].value
    plain.write(tmp_path / "ref.parquet")
    from_ecsv = tweakreg.read_reference_catalog(tmp_path / "ref.ecsv", START_TIME.jyear)
    from_parquet = tweakreg.read_reference_catalog(tmp_path / "ref.parquet", START_TIME.jyear)
    assert np.allclose(from_ecsv["RA"], from_parquet["RA"], rtol=0, atol=1e-12)
    assert rms(_separation_mas(from_ecsv["RA"], from_ecsv["DEC"], field.ra, field.dec)) < 1.0


def test_reference_sources_without_proper_motion_are_dropped(tmp_path):
    field = Field()
    table = field.reference_catalog(extra=0)
    table["pmra"] = np.ma.masked_array(table["pmra"], mask=np.arange(70) < 3)
    table["pmdec"][5] = np.nan
    table.write(tmp_path / "ref.ecsv")
    refcat = tweakreg.read_reference_catalog(tmp_path / "ref.ecsv", START_TIME.jyear)
    assert refcat["source_id"].tolist() == [i for i in range(70) if i not in (0, 1, 2, 5)]


# ----------------------------------------------------------------------------- the command line


def image_file(directory: Path, field: Field | None, *, expo=EXPO_A, info=WRONG_INFO, catalog=None,
               catalog_in_file=True, observation_id=None, distortion=None, place=None) -> Path:
    """An ImageModel with the wrong WCS; its catalog beside it (by name) or in memory.

    ``place`` (v2, v3): the detector's reference point in wcsinfo, where tweakwcs puts its
    tangent plane (the WCS keeps ``info``'s attitude).
    """
    model = datamodels.ImageModel.create_fake_data(shape=SHAPE)
    model.meta.wcsinfo.update(info)
    model.meta.wcs = build_wcs(distortion or detector_to_v2v3(), info, SHAPE)
    if place is not None:
        model.meta.wcsinfo.v2_ref, model.meta.wcsinfo.v3_ref = place
    model.meta.wcsinfo.s_region = s_region(model.meta.wcs)
    model.meta.exposure.start_time = START_TIME
    if observation_id:
        model.meta.observation.observation_id = observation_id
    catalog = field.detections() if catalog is None else catalog
    if catalog_in_file:
        catalog.write(directory / f"{expo}_cat.ecsv")
        model.meta["source_catalog"] = {"tweakreg_catalog_name": f"{expo}_cat.ecsv"}
    elif catalog is not False:
        model.meta["source_catalog"] = {"tweakreg_catalog": np.asarray(catalog.as_array())}
    path = directory / f"{expo}_sourcedetection.asdf"
    model.to_asdf(path)
    return path


def refcat_file(directory: Path, field: Field) -> Path:
    path = directory / "catalogs" / "gaia_like.ecsv"
    path.parent.mkdir(exist_ok=True)
    field.reference_catalog(units=True).write(path)
    return path


def run(argv) -> int:
    return tweakreg.cli.run(tweakreg.main, [str(arg) for arg in argv])


def test_cli_aligns_one_image_and_the_product_reopens(tmp_path):
    field = Field()
    catalog = field.detections()
    image = image_file(tmp_path, field, catalog=catalog)
    output = tmp_path / f"{EXPO_A}_tweakreg.asdf"
    refcat = refcat_file(tmp_path, field)
    assert run([image, output, "--abs-refcat", refcat, "--save-abs-catalog", "true"]) == 0
    with rdm.open(output) as product:
        wcs = product.meta.wcs
        assert wcs.available_frames == ["detector", "v2v3", "v2v3corr", "world"]
        assert wcs.name == "FIT-LVL2-gaia_like.ecsv"
        assert product.meta.cal_step.tweakreg == "COMPLETE"
        fit = product.meta.wcs_fit_results
        assert set(fit) == set(tweakreg.WCS_FIT_KEYS) and fit["status"] == "SUCCESS"
        assert product.meta.wcsinfo.s_region == s_region(wcs)
        assert "tweakreg_catalog_name" in product.meta.source_catalog
        assert detected_rms(field, wcs, catalog) <= TOLERANCE_MAS
        x = np.array([0.0, 100.3, 511.0, 250.5, 17.2])
        y = np.array([0.0, 400.7, 511.0, 3.1, 260.0])
        back_x, back_y = wcs.invert(*wcs(x, y))
        assert np.abs(back_x - x).max() <= 1e-3 and np.abs(back_y - y).max() <= 1e-3
    saved = Table.read(tmp_path / "fit_gaia_like_ref.ecsv")
    assert len(saved) == 70 and {"RA", "DEC"} <= set(saved.colnames)


def test_cli_too_few_matches_exits_0_with_the_wcs_unchanged(tmp_path):
    field = Field()
    image = image_file(tmp_path, field, catalog=field.detections(keep=8, spurious=0), catalog_in_file=False)
    output = tmp_path / f"{EXPO_A}_tweakreg.asdf"
    assert run([image, output, "--abs-refcat", refcat_file(tmp_path, field)]) == 0
    with rdm.open(image) as before, rdm.open(output) as product:
        assert product.meta.cal_step.tweakreg == "FAILED"
        assert product.meta.wcs_fit_results["status"] == "FAILED: not enough matches (8 < abs_minobj 15)"
        assert product.meta.wcs.available_frames == ["detector", "v2v3", "world"]
        assert np.array_equal(product.meta.wcs(field.x, field.y), before.meta.wcs(field.x, field.y))
        assert product.meta.wcsinfo.s_region == before.meta.wcsinfo.s_region
        assert "tweakreg_catalog" not in product.meta.source_catalog  # the documentation: tweakreg deletes it


def test_cli_custom_catalog_from_catfile_replaces_the_detected_one(tmp_path):
    field = Field()
    junk_x, junk_y = np.random.default_rng(9).uniform(3, 508, (2, 60))
    junk = Table({"x": junk_x, "y": junk_y})
    image = image_file(tmp_path, field, catalog=junk, catalog_in_file=False)  # detections that match nothing
    good = field.detections()
    good["x", "y"].write(tmp_path / "custom.csv", format="ascii.csv")
    refcat = refcat_file(tmp_path, field)
    catfile = tmp_path / "catfile.txt"
    output = tmp_path / f"{EXPO_A}_tweakreg.asdf"
    outcomes = {}
    for line in (f"{image.name} custom.csv\n", f"{image.name}\n"):
        catfile.write_text(line)
        assert run([image, output, "--abs-refcat", refcat, "--use-custom-catalogs", "true",
                    "--catalog-format", "ascii.csv", "--catfile", catfile]) == 0
        with rdm.open(output) as product:
            outcomes[line.strip()] = product.meta.cal_step.tweakreg
            if line.split()[-1] == "custom.csv":
                assert detected_rms(field, product.meta.wcs, good) <= TOLERANCE_MAS
    assert outcomes == {f"{image.name} custom.csv": "COMPLETE", image.name: "FAILED"}


def test_cli_image_without_a_catalog_is_skipped(tmp_path):
    field = Field()
    image = image_file(tmp_path, field, catalog=False, catalog_in_file=False)
    output = tmp_path / "out_tweakreg.asdf"
    assert run([image, output, "--abs-refcat", refcat_file(tmp_path, field)]) == 0
    with rdm.open(output) as product:
        assert product.meta.cal_step.tweakreg == "SKIPPED"
        assert product.meta.wcs.available_frames == ["detector", "v2v3", "world"]


def test_cli_association_aligns_members_to_each_other_and_to_the_catalog(tmp_path):
    field = Field(nstars=90)
    missing = {EXPO_A: 5, EXPO_B: 10}
    catalogs = {expo: field.detections(missing=missing[expo]) for expo in (EXPO_A, EXPO_B)}
    # Within searchrad of each other (one visit), each far off the truth.
    infos = {EXPO_A: WRONG_INFO, EXPO_B: pointed(TRUE_INFO, east=1.9, north=-0.3, roll=0.03)}
    images = [image_file(tmp_path, field, expo=expo, info=infos[expo], catalog=catalogs[expo],
                         catalog_in_file=expo == EXPO_A, observation_id=OBSERVATION_ID[expo])
              for expo in (EXPO_A, EXPO_B)]
    association = write_association(asn_from_list([path.name for path in images], "r00001_tweakreg"),
                                    tmp_path / "exposures_asn.json")
    output = tmp_path / "out" / "exposures_tweakreg_asn.json"
    assert run([association, output, "--abs-refcat", refcat_file(tmp_path, field)]) == 0
    members = json.loads(output.read_text())["products"][0]["members"]
    assert [member["expname"] for member in members] == [f"{EXPO_A}_tweakreg.asdf", f"{EXPO_B}_tweakreg.asdf"]
    for expo in (EXPO_A, EXPO_B):
        with rdm.open(output.parent / f"{expo}_tweakreg.asdf") as product:
            assert product.meta.cal_step.tweakreg == "COMPLETE"
            assert product.meta.wcs.available_frames == ["detector", "v2v3", "v2v3corr", "world"]
            assert detected_rms(field, product.meta.wcs, catalogs[expo], missing[expo]) <= TOLERANCE_MAS


# ----------------------------------------------------------------------------- one exposure, sparse detectors

# Four detectors of one exposure side by side in the focal plane (arcsec from WFI01's place; a
# detector is 56 arcsec wide), five stars each, and one pointing error (offset and roll) for all.
SPARSE_OFFSETS = [(-32.0, -32.0), (32.0, -32.0), (-32.0, 32.0), (32.0, 32.0)]
SPARSE_STARS = 5
SPARSE_EXPOSURE = "r0000101001001001001_01101_0001"
SPARSE_OBSERVATION = "0000101001001001001011010001"


class SparseDetector:
    """One detector of the sparse exposure: its focal-plane place, true WCS, stars and detections."""

    def __init__(self, offset, rng):
        self.distortion = detector_to_v2v3() | (Shift(offset[0]) & Shift(offset[1]))
        self.place = (V2_REF + offset[0], V3_REF + offset[1])
        self.true_wcs = build_wcs(self.distortion, TRUE_INFO, SHAPE)
        self.x, self.y = rng.uniform(20, SHAPE[1] - 21, (2, SPARSE_STARS))
        self.ra, self.dec = self.true_wcs(self.x, self.y)
        self.detections = Table({"x": self.x + rng.normal(0, DETECTION_NOISE, SPARSE_STARS),
                                 "y": self.y + rng.normal(0, DETECTION_NOISE, SPARSE_STARS)})

    def error_mas(self, wcs) -> np.ndarray:
        return _separation_mas(*wcs(self.x, self.y), self.ra, self.dec)


def sparse_exposure(seed=11) -> tuple[list[SparseDetector], Table]:
    """The detectors and a reference catalog of their stars at the exposure epoch."""
    rng = np.random.default_rng(seed)
    detectors = [SparseDetector(offset, rng) for offset in SPARSE_OFFSETS]
    refcat = Table({"RA": np.concatenate([d.ra for d in detectors]),
                    "DEC": np.concatenate([d.dec for d in detectors])})
    refcat.meta["name"] = "truth"
    return detectors, refcat


def test_sparse_detectors_align_as_one_exposure_group_and_not_alone():
    detectors, refcat = sparse_exposure()
    images = [tweakreg.ImageToAlign(f"wfi0{k + 1}", build_wcs(d.distortion, WRONG_INFO, SHAPE),
                                    dict(WRONG_INFO, v2_ref=d.place[0], v3_ref=d.place[1]), d.detections,
                                    SPARSE_OBSERVATION) for k, d in enumerate(detectors)]
    assert min(rms(d.error_mas(image.wcs)) for d, image in zip(detectors, images, strict=True)) > 1000.0
    together = tweakreg.align_images(images, refcat, DEFAULTS, "truth")
    group_errors = [d.error_mas(result.wcs) for d, result in zip(detectors, together, strict=True)]
    assert [result.status for result in together] == ["COMPLETE"] * 4
    assert all(result.fit_results["nmatches"] == 4 * SPARSE_STARS for result in together)
    assert max(np.max(errors) for errors in group_errors) <= TOLERANCE_MAS
    # Alone, five stars are fewer than abs_minobj: the WCS stays wrong.
    alone = [tweakreg.align_images([image], refcat, DEFAULTS, "truth")[0] for image in images]
    assert [result.status for result in alone] == ["FAILED"] * 4
    assert all("5 < abs_minobj 15" in result.fit_results["status"] for result in alone)
    # Allowed to fit five stars, each detector alone is further off than the group.
    lowered = {**DEFAULTS, "abs_minobj": 3}
    few = [tweakreg.align_images([image], refcat, lowered, "truth")[0] for image in images]
    few_errors = [d.error_mas(result.wcs) for d, result in zip(detectors, few, strict=True)]
    assert max(np.max(errors) for errors in few_errors) > max(np.max(errors) for errors in group_errors)


def paired_exposure(seed=5, stars=20, pairs=8, pair_pixels=2.7, apart_arcsec=540.0):
    """Two detectors of one exposure 540 arcsec apart (as WFI01 and WFI02), 20 stars each, eight
    of them with a companion 0.3 arcsec away, and a reference catalog of all of them."""
    rng = np.random.default_rng(seed)
    detectors = []
    for offset in ((0.0, 0.0), (apart_arcsec, 0.0)):
        detector = SparseDetector(offset, rng)  # its five stars are replaced
        x, y = rng.uniform(20, SHAPE[1] - 21, (2, stars))
        angle = rng.uniform(0, 2 * np.pi, pairs)
        detector.x = np.concatenate([x, x[:pairs] + pair_pixels * np.cos(angle)])
        detector.y = np.concatenate([y, y[:pairs] + pair_pixels * np.sin(angle)])
        detector.ra, detector.dec = detector.true_wcs(detector.x, detector.y)
        detector.detections = Table({"x": detector.x + rng.normal(0, DETECTION_NOISE, detector.x.size),
                                     "y": detector.y + rng.normal(0, DETECTION_NOISE, detector.y.size)})
        detectors.append(detector)
    refcat = Table({"RA": np.concatenate([d.ra for d in detectors]),
                    "DEC": np.concatenate([d.dec for d in detectors])})
    refcat.meta["name"] = "truth"
    return detectors, refcat


def test_close_pairs_do_not_swap_in_an_exposure_group_fit():
    """A 0.06 deg roll moves the far detector's stars ~0.56 arcsec from where the first guess (a
    shift) puts them, within abs_tolerance of a companion 0.3 arcsec away: with the documented
    abs_separation (0.1, the default) pairs swapped and the group fit ended 25 and 66 mas off (the
    Roman-PSF campaign: 8.4 and 28.7 mas); romancal 1.1's 1.0 leaves pairs out of the match."""
    detectors, refcat = paired_exposure()
    wrong = pointed(TRUE_INFO, east=1.3, north=-0.9, roll=0.06)
    images = [tweakreg.ImageToAlign(f"wfi0{k + 1}", build_wcs(d.distortion, wrong, SHAPE),
                                    dict(wrong, v2_ref=d.place[0], v3_ref=d.place[1]), d.detections,
                                    SPARSE_OBSERVATION) for k, d in enumerate(detectors)]
    parameters = dict(DEFAULTS, abs_separation=1.0)
    assert parameters["abs_separation"] > math.sqrt(2) * parameters["abs_tolerance"]
    results = tweakreg.align_images(images, refcat, parameters, "truth")
    assert [result.status for result in results] == ["COMPLETE"] * 2
    assert max(rms(d.error_mas(r.wcs)) for d, r in zip(detectors, results, strict=True)) <= 2.0


def sparse_files(directory: Path, detectors) -> list[Path]:
    return [image_file(directory, None, expo=f"{SPARSE_EXPOSURE}_WFI0{k + 1}", catalog=d.detections,
                       observation_id=SPARSE_OBSERVATION, distortion=d.distortion, place=d.place)
            for k, d in enumerate(detectors)]


@pytest.mark.parametrize("align_exposure", [True, False])
def test_cli_aligns_a_detector_with_the_other_detectors_of_its_exposure(tmp_path, align_exposure):
    detectors, refcat = sparse_exposure()
    refcat_path = tmp_path / "truth.ecsv"
    Table({"ra": refcat["RA"], "dec": refcat["DEC"]}).write(refcat_path)
    images = sparse_files(tmp_path, detectors)
    fits = []
    for k, image in enumerate(images):
        output = tmp_path / image.name.replace("_sourcedetection", "_tweakreg")
        others = [other for other in images if other != image]
        assert run([image, output, "--abs-refcat", refcat_path, "--align-exposure",
                    str(align_exposure).lower(), "--exposure-images", *others]) == 0
        with rdm.open(output) as product:
            if align_exposure:
                assert product.meta.cal_step.tweakreg == "COMPLETE"
                assert product.meta.wcs_fit_results["nmatches"] == 4 * SPARSE_STARS
                assert np.max(detectors[k].error_mas(product.meta.wcs)) <= TOLERANCE_MAS
                fit = product.meta.wcs_fit_results
                fits.append(np.concatenate([np.ravel(fit["shift"]), np.ravel(fit["matrix"])]))
            else:
                assert product.meta.cal_step.tweakreg == "FAILED"
        # Only INPUT's product is written: the other detectors' come from their own runs.
        assert sorted(tmp_path.glob("*_tweakreg.asdf")) == sorted(
            tmp_path / i.name.replace("_sourcedetection", "_tweakreg") for i in images[:k + 1])
    # Whichever detector's job it is, the exposure gets one fit (one group, one tangent plane).
    assert all(np.array_equal(fit, fits[0]) for fit in fits)


def test_cli_missing_exposure_image_is_a_one_line_error(tmp_path):
    detectors, _ = sparse_exposure()
    image = sparse_files(tmp_path, detectors[:1])[0]
    output = tmp_path / "out_tweakreg.asdf"
    absent = tmp_path / "absent_sourcedetection.asdf"
    done = subprocess.run([sys.executable, ROOT / "scripts" / "tweakreg.py", image, output,
                           "--abs-refcat", refcat_file(tmp_path, Field()), "--exposure-images", absent],
                          capture_output=True, text=True, timeout=120)
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert done.returncode != 0
    assert len(errors) == 1 and absent.name in errors[0] and "no such image" in errors[0]
    assert not output.exists()


class _CatalogService(http.server.BaseHTTPRequestHandler):
    """A stand-in for the STScI catalog service: one CSV answer, the queries recorded."""

    queries: list = []
    answer = ""

    def do_GET(self):  # noqa: N802 - the http.server interface
        type(self).queries.append(self.path)
        body = type(self).answer.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/csv")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_gaia_query_asks_for_the_field_at_the_epoch_and_drops_stars_without_motion(monkeypatch):
    _CatalogService.queries = []
    _CatalogService.answer = ("ra,dec,mag,objID,epoch,pmra,pmdec\n10.5,-42.3,17.0,1,2027.41,3.0,-2.0\n"
                              "10.51,-42.31,18.0,2,2027.41,,\n10.49,-42.29,19.0,3,2027.41,-1.0,0.5\n")
    server = http.server.HTTPServer(("127.0.0.1", 0), _CatalogService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("ASTROMETRIC_CATALOG_URL", f"http://127.0.0.1:{server.server_port}/webservices")
        table = tweakreg.query_catalog_service("GAIADR3", 10.5, -42.3, 0.02, START_TIME.jyear, timeout=5.0)
    finally:
        server.shutdown()
        server.server_close()
    query = urlparse(_CatalogService.queries[0])
    assert query.path == "/webservices/vo/CatalogSearch.aspx"
    assert {key: value[0] for key, value in parse_qs(query.query).items()} == {
        "RA": "10.50000000", "DEC": "-42.30000000", "EPOCH": f"{START_TIME.jyear:.4f}", "SR": "0.020000",
        "FORMAT": "CSV", "CAT": "GAIADR3"}
    assert table["RA"].tolist() == [10.5, 10.49] and table["source_id"].tolist() == [1, 3]


def test_gaia_without_network_is_a_one_line_error_and_no_output(tmp_path):
    field = Field()
    image = image_file(tmp_path, field)
    output = tmp_path / "out_tweakreg.asdf"
    # A closed local port: refused at once, whether or not this machine has a network.
    env = {"ASTROMETRIC_CATALOG_URL": "http://127.0.0.1:9/webservices", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, ROOT / "scripts" / "tweakreg.py", image, output,
                           "--abs-refcat", "GAIADR3", "--vo-timeout", "5"],
                          capture_output=True, text=True, env=env, timeout=120)
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert done.returncode == 1
    assert len(errors) == 1 and "GAIADR3" in errors[0] and "give a local reference catalog file" in errors[0]
    assert not output.exists() and not list(tmp_path.glob(".out_tweakreg*"))


# ----------------------------------------------------------------------------- peer


@pytest.mark.peer
def test_peer_romancal_finds_the_same_wcs(tmp_path):
    pytest.importorskip("romancal")
    from romanpipe.products import set_cal_step

    from romancal.datamodels import ModelLibrary
    from romancal.tweakreg.tweakreg_step import TweakRegStep

    field = Field()
    catalog = field.detections()
    model = datamodels.ImageModel.create_fake_data(shape=SHAPE)
    model.meta.filename = f"{EXPO_A}_sourcedetection.asdf"
    model.meta.wcsinfo.update(WRONG_INFO)
    model.meta.wcs = build_wcs(detector_to_v2v3(), WRONG_INFO, SHAPE)
    model.meta.exposure.start_time = START_TIME
    model.meta.observation.observation_id = OBSERVATION_ID[EXPO_A]
    set_cal_step(model, "photom", "COMPLETE")
    model.meta["source_catalog"] = {"tweakreg_catalog": np.asarray(catalog.as_array())}
    # romancal 1.1 reads a local catalog as it is (no proper motions) and refuses
    # abs_separation <= sqrt(2) abs_tolerance: both get the stars now, and separation 1".
    refcat = stars_now(field)
    refcat.write(tmp_path / "now.ecsv")
    parameters = {"abs_fitgeometry": "rshift", "abs_minobj": 15, "abs_separation": 1.0}
    # process() directly: run() would ask a CRDS server for the step's parameter reference.
    library = TweakRegStep(abs_refcat=str(tmp_path / "now.ecsv"), **parameters).process(ModelLibrary([model]))
    with library:
        theirs = library.borrow(0)
        their_wcs, their_fit = theirs.meta.wcs, dict(theirs.meta.wcs_fit_results)
        library.shelve(theirs, 0, modify=False)
    ours = align(build_wcs(detector_to_v2v3(), WRONG_INFO, SHAPE), WRONG_INFO, catalog, refcat, **parameters)
    x, y = (grid.ravel() for grid in np.meshgrid(np.linspace(-0.5, 511.5, 9), np.linspace(-0.5, 511.5, 9)))
    assert _separation_mas(*their_wcs(x, y), *ours.wcs(x, y)).max() < 0.01
    assert their_wcs.available_frames == ours.wcs.available_frames
    assert ours.fit_results["nmatches"] == their_fit["nmatches"]
    assert ours.fit_results["shift"] == pytest.approx(their_fit["shift"], abs=1e-9)
