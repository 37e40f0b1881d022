"""Ground-test (TVAC) inputs: the simulator's TvacModel files and truth, dq_init's guide window,
the pool on TVAC files, and saturation flags against the truth on a bright-star exposure."""

import logging
from pathlib import Path

from romanpipe import refs
from romanpipe.dqflags import pixel
from romanpipe.naming import split_suffix

import numpy as np
import pytest
import roman_datamodels as rdm
from roman_datamodels import datamodels

import dq_init
import pool
import saturation
from wfisim.groundtest import GroundTestConfig, simulate_groundtest, truth_path
from wfisim.truth import read_truth

SIZE = 64  # readout pixels per side, border included
CONFIG = GroundTestConfig(size=SIZE, n_darks=2, seed=5, reset_reads=2, reference_read=True)
GW = int(pixel.GW_AFFECTED_DATA)
DNU = int(pixel.DO_NOT_USE)


@pytest.fixture(scope="module")
def groundtest_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("groundtest")
    simulate_groundtest(CONFIG, out)
    return out


def exposures(out, scene):
    paths = sorted((out / "uncal").glob("*_uncal.asdf"))
    return [p for p in paths if read_truth(truth_path(p))["scene"] == scene]


def reference(out, reftype):
    folder = out / "crds_cache" / "references" / "roman" / "wfi"
    (path,) = sorted(folder.glob(f"roman_wfi_{reftype}_*.asdf"))
    return path


def test_set_layout_names_and_workflow_config(groundtest_set):
    uncal = sorted((groundtest_set / "uncal").glob("*_uncal.asdf"))
    assert len(uncal) == 1 + CONFIG.n_darks
    assert len(exposures(groundtest_set, "bright")) == 1
    for path in uncal:
        base, suffix = split_suffix(path)
        assert suffix == "uncal" and base.startswith("r00001") and base.endswith("_WFI01")
        assert truth_path(path) == path.with_name(f"{base}_truth.asdf") and truth_path(path).is_file()
    for reftype in ("mask", "saturation", "linearity"):
        assert reference(groundtest_set, reftype).is_file()
    folder = reference(groundtest_set, "mask").parent  # nothing for the steps after the target
    assert not [p for p in folder.glob("*.asdf") if p.name.split("_")[2] in ("gain", "readnoise", "dark")]
    settings = (groundtest_set / "workflow.yaml").read_text()
    assert "target: linearity" in settings
    # 64 columns cannot hold the 32-output readout: no REFPIX, so the workflow skips refpix
    assert "refpix:\n  skip: true" in settings


def test_files_are_valid_tvac_models_with_groundtest_metadata(groundtest_set):
    for path in sorted((groundtest_set / "uncal").glob("*_uncal.asdf")):
        truth = read_truth(truth_path(path))
        with rdm.open(path) as model:
            assert isinstance(model, datamodels.TvacModel)
            model.validate()
            assert model.meta.filename == path.name
            data = np.asarray(model.data.value)
            assert data.dtype == np.uint16 and data.shape == (55, SIZE, SIZE)
            assert model.amp33.shape == (55, SIZE, 4)
            exposure = model.meta.exposure
            assert [list(r) for r in exposure.read_pattern] == [[k] for k in range(1, 56)]
            assert exposure.ngroups == 55 and exposure.nframes == 1 and exposure.frame_time == 3.04
            bright = truth["scene"] == "bright"
            assert exposure.type == ("WFI_IMAGE" if bright else "WFI_DARK")
            assert model.meta.instrument.optical_element == ("F146" if bright else "DARK")
            assert model.meta.groundtest.detector_id == "SCA01"
            assert model.meta.groundtest.frames_temp.shape == (55,)
            window = model.meta.guidestar
            gw = truth["guide_window"]
            assert (window.gw_window_xstart, window.gw_window_xstop) == (gw["xstart"], gw["xstop"])
            assert (window.gw_window_ystart, window.gw_window_ystop) == (gw["ystart"], gw["ystop"])
            np.testing.assert_array_equal(
                model.guidewindow.value, data[:, gw["ystart"]:gw["ystop"], gw["xstart"]:gw["xstop"]])
            assert model.reset_reads.shape == (2, SIZE, SIZE)
            assert model.reference_read.shape == (1, SIZE, SIZE)
            assert model.amp33_reset_reads.shape == (2, SIZE, 4)
            # reset and reference reads hold no charge: bias plus read noise
            inner = (slice(4, -4), slice(4, -4))
            offset = np.asarray(model.reference_read.value[0], float)[inner] - truth["bias"][inner]
            normal = ~truth["ad_floor"][inner]  # they read 0
            assert abs(np.median(offset[normal])) < 1.0
            assert 5.0 < np.std(offset[normal]) < 7.0


def test_truth_keys_and_one_detector_for_every_exposure(groundtest_set):
    truths = [read_truth(truth_path(p)) for p in sorted((groundtest_set / "uncal").glob("*_uncal.asdf"))]
    for truth in truths:
        assert truth["bias"].dtype == np.float32 and truth["bias"].shape == (SIZE, SIZE)
        assert truth["dark_rate"].dtype == np.float32 and truth["dark_rate"].shape == (SIZE, SIZE)
        assert truth["first_saturated_frame"].dtype == np.int16
        assert truth["read_noise"].shape == (SIZE, SIZE)
        np.testing.assert_array_equal(truth["bias"], truths[0]["bias"])
        np.testing.assert_array_equal(truth["dark_rate"], truths[0]["dark_rate"])
    light = ~truths[0]["reference_pixels"] & ~truths[0]["hot"] & ~truths[0]["dead"]
    # the configured dark rate: a lognormal with this mean and spread (DN/s)
    assert truths[0]["dark_rate"][light].mean() == pytest.approx(CONFIG.dark_rate, rel=0.1)
    assert truths[0]["dark_rate"][light].std() == pytest.approx(CONFIG.dark_rate_spread, rel=0.25)
    assert np.median(truths[0]["bias"][light]) == pytest.approx(CONFIG.bias_level, abs=100)


def test_darks_intercept_and_slope_are_the_truth_bias_and_dark_rate(groundtest_set):
    """A straight line through each dark's ramp (the TVAC tutorial's bias_intercept_from_cube,
    frame 0 dropped)."""
    slopes = []
    for path in exposures(groundtest_set, "dark"):
        truth = read_truth(truth_path(path))
        with rdm.open(path) as model:
            cube = np.asarray(model.data.value, dtype=np.float64)[1:]
        t = np.arange(1, 55) * CONFIG.frame_time
        slope, intercept = np.polyfit(t, cube.reshape(54, -1), 1)
        light = (~truth["reference_pixels"] & ~truth["dead"] & ~truth["hot"] & ~truth["ad_floor"]).ravel()
        # bias is the intercept at the reset (t = 0): 54 reads of 6 DN pin it to ~1.7 DN per pixel
        residual = intercept[light] - truth["bias"].ravel()[light]
        assert abs(np.median(residual)) < 0.3
        assert np.std(residual) < 2.5
        slopes.append(slope[light])
        hot = (truth["hot"] & (truth["first_full_well_frame"] < 0)).ravel()  # the hottest fill up
        assert hot.any()
        assert slope[hot] == pytest.approx(truth["dark_rate"].ravel()[hot], rel=0.05)
    # one pixel's slope has ~0.017 DN/s of read noise: compare the mean over pixels and darks
    mean = np.mean(slopes)
    assert mean == pytest.approx(truth["dark_rate"].ravel()[light].mean(), abs=5e-4)


def test_bright_scene_saturates_the_brightest_core_from_the_first_frame(groundtest_set):
    (path,) = exposures(groundtest_set, "bright")
    truth = read_truth(truth_path(path))
    catalog = truth["catalog"]
    assert catalog["magnitude"][0] == 4.0 and catalog["magnitude"][-1] == 18.0
    assert len(catalog["x"]) == 9
    first = truth["first_saturated_frame"]
    cores = first[np.round(catalog["y"]).astype(int), np.round(catalog["x"]).astype(int)]
    assert cores[0] == 0
    # fainter stars fill their cores later (mag 18 is ~6900 e/s: its core still fills in 167 s)
    later = np.where(cores < 0, 55, cores)
    assert (np.diff(later) >= 0).all() and later[-1] > 10
    light = ~truth["reference_pixels"]
    # the SATURATION threshold flags what physically reached full well
    assert np.mean(first[light] == truth["first_full_well_frame"][light]) >= 0.999


def test_guide_window_flags_columns_and_the_window():
    bits = dq_init.guide_window_flags((10, 12), (3, 6, 2, 4))
    expected = np.zeros((10, 12), np.uint32)
    expected[:, 3:6] = GW
    expected[2:4, 3:6] |= DNU
    np.testing.assert_array_equal(bits, expected)
    assert not dq_init.guide_window_flags((10, 12), (-999999, -999829, -999999, -999829)).any()
    assert not dq_init.guide_window_flags((10, 12), None).any()


def test_dq_init_flags_the_tvac_guide_window_and_names_dark_types(groundtest_set, caplog):
    (path,) = exposures(groundtest_set, "dark")[:1]
    truth = read_truth(truth_path(path))
    gw = truth["guide_window"]
    with rdm.open(path) as tvac, caplog.at_level(logging.INFO, logger="dq_init"):
        ramp = dq_init.to_ramp_model(tvac, np.zeros((SIZE, SIZE), np.uint32))
    ramp.validate()
    assert ramp.meta.exposure.type == "WFI_IM_DARK"  # rad's TVAC WFI_DARK in the science schemas
    pixeldq = np.asarray(ramp.pixeldq)
    columns = np.zeros(SIZE, bool)
    columns[gw["xstart"]:gw["xstop"]] = True
    assert ((pixeldq[:, columns] & GW) == GW).all()
    assert not (pixeldq[:, ~columns] & GW).any()
    window = np.zeros((SIZE, SIZE), bool)
    window[gw["ystart"]:gw["ystop"], gw["xstart"]:gw["xstop"]] = True
    np.testing.assert_array_equal((pixeldq & DNU) != 0, window)
    assert ramp.meta.guide_star.window_xstart == gw["xstart"]
    assert f"Flagging rows from: {gw['xstart']} to {gw['xstop']}" in caplog.text
    assert ramp.meta.groundtest["frames_temp"][0] == pytest.approx(95.0, abs=0.1)


def test_dq_init_flags_a_science_raw_guide_window():
    level1 = datamodels.ScienceRawModel.create_fake_data(shape=(2, 16, 16))
    level1.meta.exposure.read_pattern = [[1], [2]]
    level1.meta.guide_star.update({"window_xstart": 5, "window_xstop": 9, "window_ystart": 6,
                                   "window_ystop": 8})
    ramp = dq_init.to_ramp_model(level1, np.zeros((16, 16), np.uint32))
    assert (ramp.pixeldq[:, 5:9] & GW == GW).all() and not (ramp.pixeldq[:, 9:] & GW).any()
    assert (ramp.pixeldq[6:8, 5:9] & DNU).all() and not (ramp.pixeldq[8:12, 5:9] & DNU).any()


def test_pool_accepts_tvac_files(groundtest_set, crds_environment):
    refs.configure_crds(groundtest_set / "crds_cache")
    paths = sorted((groundtest_set / "uncal").glob("*_uncal.asdf"))
    step_reftypes = {"dq_init": ["mask"], "saturation": ["saturation"], "linearity": ["linearity"]}
    table, quarantine = pool.build_pool(paths, step_reftypes)
    assert quarantine.empty, quarantine["reason"].tolist()
    assert sorted(table["exposure_type"]) == ["WFI_IMAGE"] + ["WFI_IM_DARK"] * CONFIG.n_darks
    assert set(table["optical_element"]) == {"F146", "DARK"}
    assert (table["ref_saturation"].str.endswith(reference(groundtest_set, "saturation").name)).all()


def test_saturation_of_the_bright_exposure_matches_the_truth(groundtest_set, tmp_path):
    """dq_init then saturation, as scripts, with the set's references: SATURATED starts at the
    truth's first saturated frame and stays on."""
    (path,) = exposures(groundtest_set, "bright")
    truth = read_truth(truth_path(path))
    dqinit = tmp_path / path.name.replace("_uncal", "_dqinit")
    saturated_path = tmp_path / path.name.replace("_uncal", "_saturation")
    assert dq_init.cli.run(dq_init.main, [str(path), str(dqinit), "--override-mask",
                                          str(reference(groundtest_set, "mask"))]) == 0
    assert saturation.cli.run(saturation.main, [str(dqinit), str(saturated_path), "--override-saturation",
                                                str(reference(groundtest_set, "saturation"))]) == 0
    with rdm.open(saturated_path) as model:
        assert model.meta.cal_step.dq_init == "COMPLETE" and model.meta.cal_step.saturation == "COMPLETE"
        flags = (np.asarray(model.groupdq) & pixel.SATURATED) != 0
    flagged = np.where(flags.any(axis=0), flags.argmax(axis=0), -1)
    expected = truth["first_saturated_frame"]
    assert (expected == 0).sum() >= 9  # the magnitude-4 core, from the first frame
    assert np.mean(flagged == expected) >= 0.999
    # every later frame of a saturated pixel is flagged, and no frame of another pixel
    onset = np.where(flagged < 0, 55, flagged)
    assert (flags == (np.arange(55)[:, None, None] >= onset)).all()


def test_config_rejects_unknown_settings_and_bad_windows():
    with pytest.raises(ValueError, match="unknown ground-test setting"):
        GroundTestConfig.from_mapping({"sise": 64})
    with pytest.raises(ValueError, match="guide window"):
        GroundTestConfig(size=64, guide_window=[60, 10, 16, 16])
    config = GroundTestConfig.from_yaml(Path(__file__).parents[1] / "config" / "groundtest_campaign.yaml")
    assert (config.size, config.nresultants, config.n_darks, config.optical_element) == (4096, 55, 3, "F146")
    assert config.window() == (1358, 1358, 1374, 1374)  # 16 x 16, a third of the way in
