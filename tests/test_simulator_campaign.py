"""wfisim campaigns: pointing errors, the shared sky and Gaia-like catalog, photometric truth, CRDS, prism."""

from romanpipe import refs

import numpy as np
import pytest
import roman_datamodels as rdm
from astropy.modeling.models import RotationSequence3D, Scale
from astropy.table import Table
from astropy.time import Time
from gwcs.geometry import CartesianToSpherical, SphericalToCartesian

from wfisim.campaign import CampaignConfig, FieldCatalog, simulate_campaign, simulate_exposure
from wfisim.detector import build_detector
from wfisim.level1 import ExposureId
from wfisim.matables import ma_table
from wfisim.pointing import DetectorGeometry, Pointing, distortion_model, separation_arcsec
from wfisim.references import make_reference
from wfisim.sky import propagate
from wfisim.truth import read_truth

CONFIG = {
    "detectors": ["WFI01", "WFI10"], "filters": ["F158"], "exposures_per_filter": 2,
    "dithers": [[0.0, 0.0], [2.5, 1.5]], "size": 64, "stars": 15, "saturating_stars": 1, "seed": 5,
    "pointing": {"ra": 80.0, "dec": -30.0, "pa_v3": 120.0},
    "pointing_error": {"offset_arcsec": 1.5, "roll_deg": 0.06}, "proper_motion_mas_per_yr": 20.0,
    "spectral_exposures": {"PRISM": 1}, "sky_e_per_s": {"F158": 1.0, "PRISM": 2.0},
}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    out = tmp_path_factory.mktemp("campaign")
    outputs = simulate_campaign(CampaignConfig.from_mapping(CONFIG), out)
    truths = {path.name.removesuffix("_truth.asdf"): read_truth(path) for path in outputs.truth}
    return out, outputs, truths


def true_pointing(exposure):
    dx, dy = CONFIG["dithers"][exposure - 1]
    return Pointing.at(**CONFIG["pointing"]).dithered(dx, dy)


def exposures(outputs):
    for uncal in outputs.uncal:
        name = uncal.name.removesuffix("_uncal.asdf")
        yield name, uncal


def test_files_record_the_mis_known_attitude_and_the_truth_keeps_the_true_one(campaign):
    _, outputs, truths = campaign
    directions = set()
    for name, uncal in exposures(outputs):
        truth = truths[name]
        with rdm.open(uncal) as model:
            model.validate()
            wcsinfo = dict(model.meta.wcsinfo)
            pointing = dict(model.meta.pointing)
            exposure = model.meta.observation.exposure
        assert wcsinfo == pytest.approx(truth["wcsinfo_in_file"])
        error = truth["pointing_error"]
        assert error["offset_arcsec"] == 1.5 and abs(error["roll_deg"]) == 0.06
        directions.add(round(error["direction_deg"], 6))
        # WFI_CEN of the recorded attitude (meta.pointing's target) lies 1.5" from the true one.
        true = true_pointing(exposure)
        assert separation_arcsec(pointing["target_ra"], pointing["target_dec"], true.ra, true.dec) == \
            pytest.approx(1.5, abs=1e-6)
        # The roll, plus the turn of north over a 1.5" step (< 0.001 deg at dec -30).
        assert pointing["pa_v3"] - true.pa_v3 == pytest.approx(error["roll_deg"], abs=1e-3)
        # The truth's wcsinfo is the true attitude's.
        geometry = DetectorGeometry(truth["detector"]["name"], (64, 64), true)
        assert truth["wcsinfo"] == pytest.approx(geometry.wcsinfo())
        assert separation_arcsec(wcsinfo["ra_ref"], wcsinfo["dec_ref"], truth["wcsinfo"]["ra_ref"],
                                 truth["wcsinfo"]["dec_ref"]) > 1.0
    # One error per exposure, shared by its detectors: 3 exposures, 3 directions.
    assert len(directions) == 3


def test_stars_sit_where_the_true_wcsinfo_and_the_distortion_put_them(campaign):
    _, outputs, truths = campaign
    for name in truths:
        truth = truths[name]
        catalog = truth["catalog"]
        distortion = distortion_model(truth["detector"]["name"], (64, 64))
        # Level 2 pixel = readout pixel - 4; then V2/V3 and the true attitude.
        v2, v3 = distortion(catalog["x"] - 4, catalog["y"] - 4)
        assert len(catalog["x"]) > 5
        ra, dec = wcs_from_wcsinfo(truth["wcsinfo"], v2, v3)
        assert np.max(separation_arcsec(ra, dec, catalog["ra"], catalog["dec"])) < 1e-5
        wrong_ra, wrong_dec = wcs_from_wcsinfo(truth["wcsinfo_in_file"], v2, v3)
        assert np.min(separation_arcsec(wrong_ra, wrong_dec, catalog["ra"], catalog["dec"])) > 1.0
        if truth["exposure_type"] == "WFI_IMAGE":
            # The injected light peaks where the truth puts the brightest star on the array.
            rate = truth["rate_e_per_s"]
            inside = (catalog["x"] > 6) & (catalog["x"] < 57) & (catalog["y"] > 6) & (catalog["y"] < 57)
            brightest = np.argmax(np.where(inside, catalog["flux_e_per_s"], 0))
            x, y = round(catalog["x"][brightest]), round(catalog["y"][brightest])
            assert np.unravel_index(np.argmax(rate[y - 2:y + 3, x - 2:x + 3]), (5, 5)) == (2, 2)


def wcs_from_wcsinfo(info, v2, v3):
    """V2/V3 (arcsec) -> sky (deg) from meta.wcsinfo, the rotation romancal's assign_wcs composes."""
    angles = [info["v2_ref"] / 3600, -info["v3_ref"] / 3600, info["roll_ref"], info["dec_ref"],
              -info["ra_ref"]]
    model = ((Scale(1 / 3600) & Scale(1 / 3600)) | SphericalToCartesian(wrap_lon_at=180)
             | RotationSequence3D(angles, axes_order="zyxyz") | CartesianToSpherical(wrap_lon_at=360))
    return model(v2, v3)


def test_one_sky_with_proper_motions_and_its_gaia_like_catalog(campaign):
    out, outputs, truths = campaign
    sky = Table.read(out / "truth" / "sky_catalog.ecsv")
    gaia = Table.read(outputs.gaia_catalog)
    parquet = Table.read(out / "catalogs" / "gaia_like.parquet")
    assert parquet.colnames == gaia.colnames and np.array_equal(parquet["source_id"], gaia["source_id"])
    np.testing.assert_array_equal(parquet["ra"], gaia["ra"])
    assert set(gaia["source_id"]) < set(sky["source_id"])  # the faintest stars are missing
    by_id = {int(source): index for index, source in enumerate(sky["source_id"])}
    seen_by = {}
    for truth in truths.values():
        catalog = truth["catalog"]
        rows = [by_id[int(source)] for source in catalog["source_id"]]
        years = truth["epoch_jyear"] - 2016.0
        assert years == pytest.approx(Time("2027-03-01").jyear - 2016.0, abs=0.01)
        ra, dec = propagate(sky["ra"][rows], sky["dec"][rows], sky["pmra"][rows], sky["pmdec"][rows], years)
        assert np.max(separation_arcsec(ra, dec, catalog["ra"], catalog["dec"])) < 1e-6
        # The motion since 2016 is tens of mas: 20 mas/yr rms over 11 years.
        moved = separation_arcsec(sky["ra"][rows], sky["dec"][rows], catalog["ra"], catalog["dec"])
        assert 0.05 < np.median(moved) < 0.6
        np.testing.assert_allclose(catalog["flux_e_per_s"], sky["flux_e_per_s"][rows])
        seen_by.setdefault(truth["detector"]["name"], []).append(set(catalog["source_id"].tolist()))
    for sets in seen_by.values():
        assert len(set.intersection(*sets)) >= 10  # dithers (and the prism) share the detector's stars
        assert set.union(*sets) & set(gaia["source_id"].tolist())
    assert not set.union(*seen_by["WFI01"]) & set.union(*seen_by["WFI10"])  # 8' apart


def test_prism_exposure_is_spectral_with_dispersed_traces(campaign):
    _, outputs, truths = campaign
    spectral = [name for name, truth in truths.items() if truth["exposure_type"] == "WFI_SPECTRAL"]
    assert len(spectral) == 2  # one per detector
    for name in spectral:
        truth = truths[name]
        assert truth["optical_element"] == "PRISM" and "photometry" not in truth
        assert truth["dispersion"] == {"axis": "y", "first_pixel": -15.0, "last_pixel": 15.0}
        with rdm.open(next(path for path in outputs.uncal if name in path.name)) as model:
            assert model.meta.exposure.type == "WFI_SPECTRAL"
            assert model.meta.instrument.optical_element == "PRISM"
        catalog = truth["catalog"]
        scene = truth["rate_e_per_s"] / truth["flat"] - truth["sky_e_per_s"]
        inside = (catalog["x"] > 10) & (catalog["x"] < 53) & (catalog["y"] > 20) & (catalog["y"] < 43)
        for x, y, flux in zip(catalog["x"][inside], catalog["y"][inside], catalog["flux_e_per_s"][inside],
                              strict=True):
            column = scene[:, round(x) - 4:round(x) + 5]
            trace = column[round(y) - 18:round(y) + 19].sum()
            assert trace == pytest.approx(flux, rel=0.02) or trace > flux  # neighbours' light adds
            # A third of the trace's length away from the star still holds its light: a streak.
            assert column[round(y) + 10].sum() > 0.5 * flux / 31


def test_crds_selects_the_image_references_of_every_exposure(campaign, crds_environment, monkeypatch):
    out, outputs, _ = campaign
    monkeypatch.setenv("CRDS_PATH", str(out / "crds_cache"))
    refs.configure_crds()
    for _, uncal in exposures(outputs):
        with rdm.open(uncal) as model:
            meta = model.meta
            detector, element = meta.instrument.detector, meta.instrument.optical_element
            imaging = meta.exposure.type == "WFI_IMAGE"
            reftypes = ["distortion", "dark", "readnoise", "mask"] + (["flat", "photom"] if imaging else [])
            chosen = {reftype: refs.reference_path(reftype, meta) for reftype in reftypes}
            if not imaging:
                with pytest.raises(refs.ReferenceNotFoundError):
                    refs.reference_path("flat", meta)
        for reftype, path in chosen.items():
            with rdm.open(path) as reference:
                assert reference.meta.instrument.detector == detector
                if reftype in ("distortion", "flat"):
                    assert reference.meta.instrument.optical_element == element


def test_flat_fielded_calibrated_stars_and_sky_match_the_truth(tmp_path):
    """The contract: slope (DN/s) / FLAT * photmjsr summed over a star (x pixelareasr) = truth flux_mjy."""
    det = build_detector("WFI04", (64, 64), 9)
    geometry = DetectorGeometry(det.name, det.shape, Pointing.at(80.0, -30.0, 120.0))
    x, y = np.array([20.3, 44.6]), np.array([21.7, 40.2])
    ra, dec = geometry.pixel_to_sky(x, y)
    stars = FieldCatalog(ra, dec, np.array([900.0, 600.0]))
    table = ma_table("IMG_UNEVEN_6")
    uncal, truth_path = simulate_exposure(det, geometry, stars, sky=3.0, optical_element="F158", table=table,
                                          exposure_id=ExposureId(), start_time=Time("2016-01-01T12:00:00"),
                                          seed=[4, 5], out_dir=tmp_path)
    truth = read_truth(truth_path)
    with rdm.open(uncal) as model:
        data = np.asarray(model.data, dtype=float)
    times = [np.mean(reads) * table.frame_time for reads in table.read_pattern]
    slope = (data[-1] - data[0]) / (times[-1] - times[0]) - det.dark_current / det.gain  # DN/s
    reference = make_reference("flat", det, useafter="2027-01-01T00:00:00", optical_element="F158")
    flat = np.asarray(reference.data)
    flat = np.where(flat == 0, np.nan, flat)  # as the flat-field step, which leaves those pixels out
    photometry = truth["photometry"]
    calibrated = (slope / flat * photometry["photmjsr"])[4:-4, 4:-4]  # MJy/sr on the Level 2 image
    good = (det.photosensitive & ~det.hot & np.isfinite(flat) & (flat != 0))[4:-4, 4:-4]
    catalog = truth["catalog"]
    assert catalog["x"] == pytest.approx(x, abs=1e-6) and catalog["y"] == pytest.approx(y, abs=1e-6)
    far = good.copy()
    for col, row in zip(x - 4, y - 4, strict=True):  # Level 2 pixel = readout pixel - 4
        far[round(row) - 8:round(row) + 9, round(col) - 8:round(col) + 9] = False
    sky = np.mean(calibrated[far])
    assert sky == pytest.approx(truth["sky_mjy_per_sr"], rel=0.03)
    assert truth["sky_mjy_per_sr"] == pytest.approx(3.0 / det.nominal_gain * photometry["photmjsr"])
    for index, (col, row) in enumerate(zip(x - 4, y - 4, strict=True)):
        box = (slice(round(row) - 6, round(row) + 7), slice(round(col) - 6, round(col) + 7))
        assert good[box].all()
        flux_mjy = (calibrated[box] - sky).sum() * photometry["pixelareasr"]
        assert flux_mjy == pytest.approx(catalog["flux_mjy"][index], rel=0.02)
        assert catalog["flux_dn_per_s"][index] == pytest.approx(catalog["flux_e_per_s"][index] / 2.0)
