"""ramp_diagnostics: masks, mean slopes and relative slopes by hand; the four PNGs of a synthetic star."""

from romanpipe import cli, dqflags
from romanpipe.errors import EXIT_ERROR, ParameterError

import numpy as np
import pytest
from astropy import units as u
from matplotlib import image as mpimg
from roman_datamodels import datamodels
from scipy.signal import convolve2d

import ramp_diagnostics as rd

SATURATED = dqflags.pixel.SATURATED


# ---- pure functions -------------------------------------------------------------------------

@pytest.mark.parametrize(("shape", "center", "half", "expected"), [
    ((4096, 4096), (1900, 1900), 256, ((1644, 2156), (1644, 2156))),   # the TVAC tutorial's cutout
    ((256, 256), (1900, 1900), 256, ((0, 256), (0, 256))),             # centre moved onto the detector
    ((256, 256), (10, 250), 20, ((230, 256), (0, 30))),                # clipped at two edges
    ((100, 200), (150, 20), 5, ((15, 25), (145, 155))),                # x is the column, y the row
])
def test_cutout_window(shape, center, half, expected):
    rows, cols = rd.cutout_window(shape, center, half)
    assert ((rows.start, rows.stop), (cols.start, cols.stop)) == expected


def test_default_frames_are_the_tutorials():
    assert rd.default_frames(55) == [2, 27, 54]
    assert rd.check_frames(None, 55) == [2, 27, 54]
    assert rd.check_frames([9, 3, 9], 10) == [3, 9]
    with pytest.raises(ParameterError, match="not in 2..9"):
        rd.check_frames([1, 5], 10)


def test_neighbours_of_one_saturated_pixel():
    saturated = np.zeros((1, 5, 5), dtype=bool)
    saturated[0, 2, 2] = True
    four, diagonal = rd.neighbour_masks(saturated)
    assert sorted(zip(*np.nonzero(four[0]), strict=True)) == [(1, 2), (2, 1), (2, 3), (3, 2)]
    assert sorted(zip(*np.nonzero(diagonal[0]), strict=True)) == [(1, 1), (1, 3), (3, 1), (3, 3)]
    np.testing.assert_array_equal(rd.mask_classes(saturated, four, diagonal)[0, 1:4, 1:4],
                                  [[1, 2, 1], [2, 3, 2], [1, 2, 1]])


def test_neighbours_match_the_tutorials_convolution():
    """The TVAC tutorial's make_saturation_mask_dn, frame by frame with scipy.signal.convolve2d."""
    saturated = np.random.default_rng(1).random((4, 30, 40)) > 0.93
    four, diagonal = rd.neighbour_masks(saturated)
    kernel_4 = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]])
    kernel_diag = np.array([[1, 0, 1], [0, 0, 0], [1, 0, 1]])
    for frame, plane in enumerate(saturated):
        tutorial_four = ~plane & (convolve2d(plane, kernel_4, mode="same") > 0)
        tutorial_diag = ~plane & ~tutorial_four & (convolve2d(plane, kernel_diag, mode="same") > 0)
        np.testing.assert_array_equal(four[frame], tutorial_four)
        np.testing.assert_array_equal(diagonal[frame], tutorial_diag)


def test_saturation_from_thresholds_and_from_groupdq():
    raw = np.array([[[10.0, 50.0]], [[60.0, 80.0]]])
    thresholds = np.array([[60.0, np.nan]])  # NaN: never saturates
    expected = [[[False, False]], [[True, False]]]
    np.testing.assert_array_equal(rd.saturated_from_thresholds(raw, thresholds), expected)
    groupdq = np.array([[[0, 0]], [[SATURATED | dqflags.pixel.JUMP_DET, dqflags.pixel.JUMP_DET]]], np.uint8)
    np.testing.assert_array_equal(rd.saturated_from_groupdq(groupdq), expected)


def test_mean_frame_difference_leaves_out_excluded_frames():
    frames = np.array([0.0, 2.0, 4.0, 10.0, 11.0])[:, None, None] * np.ones((1, 1, 2))
    excluded = np.zeros(frames.shape, dtype=bool)
    excluded[3:, 0, 0] = True          # pixel 0: only differences 1-0 and 2-1 count
    excluded[1:, 0, 1] = True          # pixel 1: no difference counts
    mean = rd.mean_frame_difference(frames, excluded)
    assert mean[0, 0] == 2.0
    assert np.isnan(mean[0, 1])
    ratio = rd.relative_slopes(frames, mean)
    np.testing.assert_array_equal(ratio[:, 0, 0], [1.0, 1.0, 3.0, 0.5])
    assert np.isnan(ratio[:, 0, 1]).all()


def test_neighbour_curve_shows_the_injected_excess_and_clean_pixels_stay_at_one():
    """Pixel (5, 5) saturates from frame 4; its 8 neighbours then gain 20 % more per frame."""
    nframes, shape = 9, (11, 11)
    slope = np.full(shape, 100.0)
    saturated = np.zeros((nframes, *shape), dtype=bool)
    saturated[4:, 5, 5] = True
    increments = np.repeat(slope[None], nframes - 1, axis=0)
    increments[3:, 4:7, 4:7] *= 1.2  # differences of frames 4.. (entry k-1 is frame k)
    frames = np.concatenate([np.zeros((1, *shape)), np.cumsum(increments, axis=0)])
    four, _ = rd.neighbour_masks(saturated)
    ratio = rd.relative_slopes(frames, rd.mean_frame_difference(frames, saturated | four))
    good = np.ones(shape, dtype=bool)
    good[0, 0] = False
    curves = rd.neighbour_and_clean_curves(ratio, saturated, good)
    np.testing.assert_array_equal(curves["frames"], np.arange(1, nframes))
    assert np.isnan(curves["neighbours"][:3]).all()   # nothing saturated before frame 4
    # 4-neighbours: mean slope from frames 1-3 (100), so 1.2; diagonals averaged the excess in.
    diagonal_ratio = 1.2 / ((3 * 100 + 5 * 120) / 8 / 100)
    assert curves["neighbours"][3:, 1] == pytest.approx((1.2 + diagonal_ratio) / 2)
    np.testing.assert_allclose(curves["neighbours"][3:, [0, 2]].min(), diagonal_ratio, rtol=1e-3)
    np.testing.assert_allclose(curves["clean"], 1.0, rtol=1e-6)


def test_shared_limits_are_the_extreme_percentiles_over_good_pixels():
    first = np.arange(100.0).reshape(10, 10)
    second = first + 50
    good = np.ones((10, 10), dtype=bool)
    good[9] = False  # values 90-99 and 140-149 are left out
    assert rd.shared_limits([first, second], good) == pytest.approx(
        (np.percentile(first[:9], 2), np.percentile(second[:9], 98)))


# ---- the script on a synthetic bright star --------------------------------------------------

NFRAMES, SIZE, BIAS, THRESHOLD = 12, 48, 1000.0, 30000.0
STAR = (30, 20)  # x, y


@pytest.fixture
def star_files(tmp_path):
    """A _linearity RampModel of a star that saturates its core, its raw exposure and SATURATION."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    rate = 20.0 + 9000.0 * np.exp(-((x - STAR[0]) ** 2 + (y - STAR[1]) ** 2) / (2 * 2.0**2))
    times = np.arange(NFRAMES, dtype=np.float64)[:, None, None]
    raw = np.minimum(BIAS + rate * times, THRESHOLD + 500)
    ramp = datamodels.RampModel.create_fake_data(shape=(NFRAMES, SIZE, SIZE))
    ramp.data = (raw - BIAS).astype(np.float32)
    ramp.groupdq = np.where(raw >= THRESHOLD, SATURATED, 0).astype(np.uint8)
    ramp.pixeldq = np.zeros((SIZE, SIZE), np.uint32)
    ramp.pixeldq[5, 7] = dqflags.pixel.DEAD | dqflags.pixel.DO_NOT_USE
    ramp.meta.instrument.detector = "WFI11"
    ramp_path = tmp_path / "r0000101001001001001_0001_WFI11_linearity.asdf"
    ramp.to_asdf(ramp_path, all_array_compression=None)

    level1 = datamodels.TvacModel.create_fake_data(shape=(NFRAMES, SIZE, SIZE))
    level1.data = u.Quantity(raw.astype(np.uint16), u.DN, dtype=np.uint16)
    raw_path = tmp_path / "raw_uncal.asdf"
    level1.to_asdf(raw_path)

    reference = datamodels.SaturationRefModel.create_fake_data(shape=(SIZE, SIZE))
    reference.data = np.full((SIZE, SIZE), THRESHOLD, np.float32)
    reference.dq = np.zeros((SIZE, SIZE), np.uint32)
    reference.dq[0, 0] = dqflags.pixel.NO_SAT_CHECK
    sat_path = tmp_path / "roman_wfi_saturation_0001.asdf"
    reference.to_asdf(sat_path)
    return ramp_path, raw_path, sat_path


@pytest.mark.parametrize("extra", [[], ["--raw", "RAW"], ["--min-mean-slope", "50"]])
def test_cli_writes_the_four_figures(star_files, tmp_path, extra):
    ramp_path, raw_path, sat_path = star_files
    out_dir = tmp_path / "figures"
    argv = [str(ramp_path), "--saturation", str(sat_path), "--out-dir", str(out_dir),
            "--center", str(STAR[0]), str(STAR[1]), "--half-size", "12", "--frames", "2", "6", "11"]
    argv += [str(raw_path) if option == "RAW" else option for option in extra]
    assert cli.run(rd.main, argv) == 0
    assert sorted(path.name for path in out_dir.iterdir()) == sorted(rd.FIGURES)
    for name in rd.FIGURES:
        pixels = mpimg.imread(out_dir / name)
        assert pixels.ndim == 3 and min(pixels.shape[:2]) > 200
        assert pixels[..., :3].std() > 0.05  # not a blank canvas


def test_star_masks_from_groupdq_and_from_raw_agree(star_files):
    """The saturation step's flags and the TVAC tutorial's raw >= threshold give the same pixels."""
    ramp_path, raw_path, _ = star_files
    with datamodels.open(ramp_path) as ramp, datamodels.open(raw_path) as raw:
        from_groupdq = rd.saturated_from_groupdq(ramp.groupdq)
        from_raw = rd.saturated_from_thresholds(np.asarray(raw.data.value, dtype=np.float32),
                                                np.full((SIZE, SIZE), THRESHOLD, np.float32))
    np.testing.assert_array_equal(from_groupdq, from_raw)
    assert not from_raw[1].any() and from_raw[-1, STAR[1], STAR[0]]


@pytest.mark.parametrize(("extra", "message"), [
    (["--frames", "1"], "not in 2..11"),
    (["--half-size", "0"], "half-size is 0"),
])
def test_bad_parameters_exit_1_with_one_line(star_files, tmp_path, caplog, extra, message):
    ramp_path, _, sat_path = star_files
    argv = [str(ramp_path), "--saturation", str(sat_path), "--out-dir", str(tmp_path / "f"), *extra]
    assert cli.run(rd.main, argv) == EXIT_ERROR
    assert message in caplog.text
    assert not (tmp_path / "f").exists()


def test_inputs_of_the_wrong_kind_exit_1(star_files, tmp_path, caplog):
    ramp_path, _, sat_path = star_files
    argv = [str(sat_path), "--saturation", str(ramp_path), "--out-dir", str(tmp_path / "f")]
    assert cli.run(rd.main, argv) == EXIT_ERROR
    assert "is a SaturationRefModel, expected RampModel" in caplog.text
