"""dark_references: per-pixel line fits of raw darks, their median combination, the reference files.

Noise of the combined references (used by the truth tests below). The n = N - 1 frames
fitted (frame 0 left out) are read at times t_k (in frame times: the frame index k, or
the read number when the file has a read pattern) and hold y_k = a + b t_k + e_k. The
least-squares intercept is a^ = sum_k w_k y_k with w_k = 1/n - tbar (t_k - tbar) / S,
S = sum (t_k - tbar)^2; the slope is b^ = sum_k v_k y_k with v_k = (t_k - tbar) / S.
For a noise covariance C, Var(a^) = w^T C w and Var(b^) = v^T C v.

* White noise per read, sigma_e^2 = sigma_read^2 + 1/12 (the read noise plus the
  rounding of the integer DN): Var(a^) = sigma_e^2 (1/n + tbar^2 / S). For the TVAC tutorial's
  t_k = k = 1..n, tbar = (n + 1)/2 and S = n (n^2 - 1) / 12, so
  Var(a^) = sigma_e^2 * 2 (2n + 1) / (n (n - 1)), about (2 sigma_e / sqrt(n))^2: the
  extrapolation to t = 0 doubles the naive sigma_e / sqrt(n) (for N = 55,
  sigma_a = 0.276 sigma_e, not 0.136 sigma_e); Var(b^) = 12 sigma_e^2 / (n (n^2 - 1)).
* Shot noise of the dark charge, a random walk: a read at time t holds the charge of
  t frame times, so C_jk = (f t_f / g) min(t_j, t_k) (f the rate in DN/s, t_f the frame
  time, g the gain; a Poisson count of electrons N has variance N, i.e. N / g^2 in DN^2).
* The median of three independent normal values with variance s^2 has variance
  (1 - sqrt(3)/pi) s^2 = 0.4487 s^2 (a mean would have 0.3333 s^2).

So each pixel's superbias error is sqrt((1 - sqrt(3)/pi) w^T C w) and its dark-rate error
sqrt((1 - sqrt(3)/pi) v^T C v) / t_f. The tests check that the residuals divided by
these have a mean near 0 and a standard deviation near 1 over all pixels: a bound off
by the factor 2 of the extrapolation, or a bias of a tenth of it, fails them.
"""

import math
import subprocess
import sys
from pathlib import Path

from romanpipe import cli, crds_cache, dqflags, refs
from romanpipe.errors import EXIT_ERROR

import astropy.units as u
import numpy as np
import pytest
import roman_datamodels as rdm
from astropy.time import Time
from roman_datamodels import datamodels

import dark_references

FRAME_TIME = 3.04
MEDIAN_OF_THREE_VARIANCE = 1 - math.sqrt(3) / math.pi
SCRIPT = Path(dark_references.__file__)


def linear_cube(intercept, slope, nframes):
    """Noiseless ramps: frame k of pixel p holds intercept[p] + slope[p] * k."""
    frames = np.arange(nframes, dtype=np.float64)[:, None, None]
    return intercept[None] + slope[None] * frames


def write_tvac(path, data, *, detector="WFI11", frame_time=FRAME_TIME, start="2024-05-06T22:53:04"):
    """A raw TVAC exposure holding ``data`` (uint16 DN), stored uncompressed as T1's simulator does."""
    model = datamodels.TvacModel.create_fake_data(shape=data.shape)
    model.data = u.Quantity(data.astype(np.uint16), u.DN, dtype=np.uint16)
    model.meta.exposure.frame_time = frame_time
    model.meta.exposure.start_time = Time(start)
    model.meta.instrument.detector = detector
    model.to_asdf(path, all_array_compression=None)
    return path


# ---- the fit --------------------------------------------------------------------------------

def test_noiseless_ramp_gives_intercept_and_slope_exactly():
    rng = np.random.default_rng(1)
    intercept = rng.uniform(5000, 20000, (6, 5)).round()
    slope = rng.uniform(0, 40, (6, 5)).round(2)
    cube = linear_cube(intercept, slope, 12)
    cube[0] += 300.0  # the reset-affected first frame, which the TVAC tutorial leaves out
    fitted_intercept, fitted_slope = dark_references.fit_lines(cube)
    assert fitted_intercept.dtype == np.float32 and fitted_slope.dtype == np.float32
    np.testing.assert_allclose(fitted_intercept, intercept, rtol=0, atol=2e-3)
    np.testing.assert_allclose(fitted_slope, slope, rtol=0, atol=1e-4)
    # Fitting frame 0 as well lets its offset through with weight 1/12 + 5.5^2/143 = 0.295.
    kept_intercept, _ = dark_references.fit_lines(cube, drop_first=False)
    np.testing.assert_allclose(kept_intercept - intercept, 300 * (1 / 12 + 5.5**2 / 143), atol=2e-3)


def test_fit_agrees_with_numpy_polyfit_pixel_by_pixel():
    rng = np.random.default_rng(2)
    cube = rng.normal(1000, 30, (9, 4, 3))
    intercept, slope = dark_references.fit_lines(cube)
    for row, col in np.ndindex(4, 3):
        expected_slope, expected_intercept = np.polyfit(np.arange(1, 9), cube[1:, row, col], 1)
        assert intercept[row, col] == pytest.approx(expected_intercept, rel=1e-6)
        assert slope[row, col] == pytest.approx(expected_slope, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("chunk_rows", [1, 3, 7, 100])
def test_chunk_boundaries_give_the_result_of_one_chunk(chunk_rows):
    cube = np.random.default_rng(3).integers(0, 65535, (10, 17, 6)).astype(np.uint16)
    whole = dark_references.fit_lines(cube, chunk_rows=17)
    chunked = dark_references.fit_lines(cube, chunk_rows=chunk_rows)
    np.testing.assert_array_equal(chunked[0], whole[0])
    np.testing.assert_array_equal(chunked[1], whole[1])


class RecordingCube:
    """A read-only cube that records the slices read from it (stands in for a memory map)."""

    def __init__(self, data):
        self._data = data
        self.shape = data.shape
        self.rows_read = []

    def __getitem__(self, key):
        rows = key[1]
        self.rows_read.append(rows.stop - rows.start)
        return self._data[key]


def test_the_cube_is_read_a_block_of_rows_at_a_time():
    data = np.random.default_rng(4).normal(100, 1, (8, 20, 5))
    cube = RecordingCube(data)
    result = dark_references.fit_lines(cube, chunk_rows=6)
    assert cube.rows_read == [6, 6, 6, 2]
    np.testing.assert_array_equal(result[0], dark_references.fit_lines(data)[0])


def test_read_times_put_the_intercept_at_the_reset():
    """Single reads 1..6 (read j at j frame times): a + b j is fitted back to a, not to a + b."""
    intercept, slope = np.full((2, 2), 500.0), np.full((2, 2), 7.0)
    reads = np.arange(1, 7)
    cube = intercept[None] + slope[None] * reads[:, None, None]
    fitted_intercept, fitted_slope = dark_references.fit_lines(cube, reads)
    np.testing.assert_allclose(fitted_intercept, 500.0, atol=1e-4)
    np.testing.assert_allclose(fitted_slope, 7.0, atol=1e-5)
    tutorial_intercept, _ = dark_references.fit_lines(cube)  # frame index: the first read's level
    np.testing.assert_allclose(tutorial_intercept, 507.0, atol=1e-4)


def test_too_few_frames_is_refused():
    with pytest.raises(ValueError, match="at least 2"):
        dark_references.fit_lines(np.zeros((2, 3, 3)))


# ---- the combination ------------------------------------------------------------------------

def test_median_combine_by_hand():
    planes = [np.array([[1.0, 4.0, np.nan]]), np.array([[5.0, np.nan, np.nan]]),
              np.array([[3.0, 8.0, 2.0]])]
    median, error = dark_references.median_combine(planes)
    np.testing.assert_array_equal(median, np.float32([[3.0, 6.0, 2.0]]))
    # sqrt(pi/2) * std(ddof=1) / sqrt(N): [1, 5, 3] has std 2; [4, 8] has std sqrt(8).
    expected = [math.sqrt(math.pi / 2) * 2 / math.sqrt(3), math.sqrt(math.pi / 2) * math.sqrt(8 / 2)]
    np.testing.assert_allclose(error[0, :2], expected, rtol=1e-6)
    assert np.isnan(error[0, 2])  # one finite value: no scatter to measure


# ---- the reference files --------------------------------------------------------------------

@pytest.fixture
def noiseless_darks(tmp_path):
    """Three noiseless 6-frame darks of integer DN: intercept 1000 + x, slope row + 1 DN per frame."""
    rows, cols = np.mgrid[0:10, 0:12]
    intercept = 1000.0 + cols
    slope = rows + 1.0
    cube = linear_cube(intercept, slope, 6)
    starts = ["2024-05-06T22:53:04", "2024-05-06T22:56:11", "2024-05-06T22:59:17"]
    paths = [write_tvac(tmp_path / f"dark{index}_uncal.asdf", cube, start=start)
             for index, start in enumerate(starts)]
    return paths, intercept, slope / FRAME_TIME


def test_cli_writes_superbias_and_dark_references(noiseless_darks, tmp_path):
    paths, intercept, rate = noiseless_darks
    superbias_path = tmp_path / "out" / "roman_wfi_bias_0001.asdf"
    dark_path = tmp_path / "out" / "roman_wfi_dark_0001.asdf"
    status = cli.run(dark_references.main, [*map(str, paths), "--superbias", str(superbias_path),
                                            "--dark", str(dark_path), "--author", "A. Tester"])
    assert status == 0
    with rdm.open(superbias_path) as superbias:
        assert isinstance(superbias, datamodels.SuperbiasRefModel)
        np.testing.assert_allclose(superbias.data, intercept, atol=1e-3)
        np.testing.assert_array_equal(superbias.err, 0)  # identical darks: no scatter
        np.testing.assert_array_equal(superbias.dq, 0)
        meta = superbias.meta
        assert (meta.reftype, meta.author, meta.instrument.detector) == ("BIAS", "A. Tester", "WFI11")
        # Default USEAFTER: 00:00 UTC of the day before the first dark.
        assert meta.useafter.isot == "2024-05-05T00:00:00.000"
        assert all(path.name in meta.description for path in paths)
    with rdm.open(dark_path) as dark:
        assert isinstance(dark, datamodels.DarkRefModel)
        np.testing.assert_allclose(dark.dark_slope, rate, rtol=1e-5)
        assert dark.meta.reftype == "DARK" and dark.meta.instrument.detector == "WFI11"
        assert dark.meta.exposure.p_exptype == "WFI_IMAGE|WFI_SPECTRAL|"
        assert all(path.name in dark.meta.description for path in paths)


def test_useafter_option_and_a_nan_pixel_is_do_not_use(tmp_path):
    shape = (5, 4, 4)
    paths = []
    for index in range(2):
        model = datamodels.TvacModel.create_fake_data(shape=shape)
        model.data = u.Quantity(np.full(shape, 100 + index, np.uint16), u.DN, dtype=np.uint16)
        model.meta.exposure.frame_time = FRAME_TIME
        model.meta.instrument.detector = "WFI11"
        paths.append(tmp_path / f"d{index}.asdf")
        model.to_asdf(paths[-1], all_array_compression=None)
    fits = [dark_references.fit_dark_exposure(path) for path in paths]
    fits[0]["intercept"][1, 2] = np.nan
    fits[1]["intercept"][1, 2] = np.nan
    superbias, _ = dark_references.dark_references(fits, author="x", useafter=Time("2024-01-01T00:00:00"))
    assert superbias.meta.useafter.isot == "2024-01-01T00:00:00.000"
    assert superbias.dq[1, 2] == dqflags.pixel.DO_NOT_USE
    assert np.count_nonzero(superbias.dq) == 1
    assert superbias.data[0, 0] == pytest.approx(100.5)


@pytest.mark.parametrize("problem", ["frame_time", "detectors", "not_level1"])
def test_cli_errors_are_one_line_and_exit_1(noiseless_darks, tmp_path, caplog, problem):
    paths, _, _ = noiseless_darks
    cube = np.full((6, 10, 12), 1000, np.uint16)
    if problem == "frame_time":
        paths = [write_tvac(tmp_path / "bad.asdf", cube, frame_time=-999999.0)]
        expected = "frame_time is -999999.0"
    elif problem == "detectors":
        paths = [*paths, write_tvac(tmp_path / "other.asdf", cube, detector="WFI04")]
        expected = "several detectors"
    else:
        reference = datamodels.SaturationRefModel.create_fake_data(shape=(10, 12))
        reference.to_asdf(tmp_path / "sat.asdf")
        paths = [tmp_path / "sat.asdf"]
        expected = "expected ScienceRawModel or TvacModel"
    status = cli.run(dark_references.main, [*map(str, paths), "--superbias", str(tmp_path / "b.asdf"),
                                            "--dark", str(tmp_path / "d.asdf")])
    assert status == EXIT_ERROR
    assert expected in caplog.text
    assert not (tmp_path / "b.asdf").exists() and not (tmp_path / "d.asdf").exists()


def test_help_runs_as_a_script():
    result = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True,
                            check=False, cwd=SCRIPT.parent)
    assert result.returncode == 0 and "--superbias" in result.stdout


def test_dark_reference_enters_the_offline_crds_cache(noiseless_darks, tmp_path, crds_environment,
                                                      monkeypatch):
    paths, _, _ = noiseless_darks
    dark_path = tmp_path / "roman_wfi_dark_0001.asdf"
    dark_references.main([*map(str, paths), "--superbias", str(tmp_path / "roman_wfi_bias_0001.asdf"),
                          "--dark", str(dark_path)])
    cache = tmp_path / "crds_cache"
    context = crds_cache.deliver(cache, [dark_path], description="dark from TVAC darks")
    monkeypatch.setenv("CRDS_PATH", str(cache))
    refs.configure_crds()
    science = {"detector": "WFI11", "optical_element": "F146", "start_time": "2024-05-06T20:45:23",
               "exposure_type": "WFI_IMAGE"}
    selected = refs.best_references(refs.selection_parameters(science), ["dark"], context=context)
    assert Path(selected["dark"]).name == "roman_wfi_dark_0001.asdf"


def test_crds_has_no_rmap_for_the_superbias(noiseless_darks, tmp_path):
    """crds 14.0.3 ships no wfi_bias.rmap: the superbias cannot enter a cache (yet)."""
    paths, _, _ = noiseless_darks
    superbias_path = tmp_path / "roman_wfi_bias_0001.asdf"
    dark_references.main([*map(str, paths), "--superbias", str(superbias_path),
                          "--dark", str(tmp_path / "roman_wfi_dark_0001.asdf")])
    with pytest.raises(ValueError, match="no Roman reference type 'bias'"):
        crds_cache.deliver(tmp_path / "crds_cache", [superbias_path])


# ---- against injected truth -----------------------------------------------------------------

def fit_weights(times):
    """Intercept and slope weights w, v of the frames after the first, and the random walk min(t_j, t_k)."""
    fitted = np.asarray(times, dtype=np.float64)[1:]
    centred = fitted - fitted.mean()
    spread = np.dot(centred, centred)
    slope_weights = centred / spread
    intercept_weights = 1 / fitted.size - fitted.mean() * slope_weights
    return intercept_weights, slope_weights, np.minimum.outer(fitted, fitted)


def expected_errors(times, read_noise, rate, gain, frame_time, ndarks=3):
    """Per-pixel standard errors of the combined superbias (DN) and dark rate (DN/s), module docstring."""
    w, v, walk = fit_weights(times)
    white = read_noise.astype(np.float64) ** 2 + 1 / 12
    shot = np.clip(rate, 0, None) * frame_time / gain
    intercept_variance = white * np.dot(w, w) + shot * (w @ walk @ w)
    slope_variance = white * np.dot(v, v) + shot * (v @ walk @ v)
    assert ndarks == 3, "the median factor below is the one of three values"
    return (np.sqrt(MEDIAN_OF_THREE_VARIANCE * intercept_variance),
            np.sqrt(MEDIAN_OF_THREE_VARIANCE * slope_variance) / frame_time)


def test_the_noise_bound_formula_of_the_docstring():
    w, v, _ = fit_weights(np.arange(55))
    n = 54
    assert math.sqrt(np.dot(w, w)) == pytest.approx(0.276, abs=1e-3)
    assert np.dot(w, w) == pytest.approx(2 * (2 * n + 1) / (n * (n - 1)))
    assert np.dot(v, v) == pytest.approx(12 / (n * (n * n - 1)))


def assert_normalised_residuals(residual, error, usable=None):
    z = (residual / error)[usable if usable is not None else np.s_[...]].ravel()
    assert abs(z.mean()) < 0.1
    assert 0.92 < z.std() < 1.08
    assert np.abs(z).max() < 6


def test_superbias_and_dark_rate_match_hand_made_noisy_darks(tmp_path):
    """Darks made here: bias + random-walk dark charge + read noise, rounded to uint16 DN."""
    rng = np.random.default_rng(5)
    nframes, shape, gain = 55, (64, 64), 2.0
    bias = rng.uniform(8000, 12000, shape)
    rate = rng.uniform(0.0, 2.0, shape)  # DN/s
    read_noise = rng.uniform(4.0, 8.0, shape)  # DN per read
    paths = []
    for index in range(3):
        electrons = rng.poisson(rate * gain * FRAME_TIME, (nframes - 1, *shape)).cumsum(axis=0)
        charge = np.concatenate([np.zeros((1, *shape)), electrons / gain])  # frame 0 at the reset
        cube = bias + charge + rng.normal(0, 1, (nframes, *shape)) * read_noise
        cube[0] += 250  # reset transient in the first frame, left out of the fit
        paths.append(write_tvac(tmp_path / f"dark{index}.asdf", np.rint(cube)))
    dark_references.main([*map(str, paths), "--superbias", str(tmp_path / "bias.asdf"),
                          "--dark", str(tmp_path / "dark.asdf"), "--chunk-rows", "10"])
    bias_error, rate_error = expected_errors(np.arange(nframes), read_noise, rate, gain, FRAME_TIME)
    with rdm.open(tmp_path / "bias.asdf") as superbias, rdm.open(tmp_path / "dark.asdf") as dark:
        assert_normalised_residuals(superbias.data - bias, bias_error)
        assert_normalised_residuals(dark.dark_slope - rate, rate_error)
        # The files' own errors come from the scatter of three values: right on average.
        assert np.median(superbias.err / bias_error) == pytest.approx(1, abs=0.25)


def test_superbias_and_dark_rate_match_the_ground_test_simulator(tmp_path):
    """T1's ground-test simulator (scripts/wfisim/groundtest.py): its truth for the bias and dark rate.

    72 pixels a side: no 32-output layout, so no reference-pixel electronics (amplifier
    offsets and correlated noise, which the raw superbias would contain and which are
    not white). Two kinds of pixel are left out of the statistics: HOT pixels, whose
    ramps reach thousands of DN and bend with the nonlinearity (a line fitted to raw
    data is then biased), and A/D-floor pixels, which read 0 DN (superbias 0).
    """
    groundtest = pytest.importorskip("wfisim.groundtest")
    config = groundtest.GroundTestConfig.from_mapping({"detector": "WFI11", "size": 72, "nresultants": 55,
                                                       "seed": 7, "n_darks": 3})
    paths, truths = [], []
    for index in range(config.n_darks):
        paths.append(tmp_path / f"dark{index}_uncal.asdf")
        truths.append(groundtest.write_tvac_exposure(paths[-1], config, scene="dark", index=index))
    dark_references.main([*map(str, paths), "--superbias", str(tmp_path / "bias.asdf"),
                          "--dark", str(tmp_path / "dark.asdf")])
    truth = truths[0]
    np.testing.assert_array_equal(truths[2]["bias"], truth["bias"])  # one detector, three darks
    rate = np.asarray(truth["dark_rate"], dtype=np.float64)
    read_noise = np.asarray(truth["read_noise"], dtype=np.float64)
    times = np.array([reads[0] for reads in truth["read_pattern"]], dtype=np.float64)
    gain = np.asarray(truth["gain"], dtype=np.float64)
    bias_error, rate_error = expected_errors(times, read_noise, rate, gain, truth["frame_time"])
    with rdm.open(tmp_path / "bias.asdf") as superbias, rdm.open(tmp_path / "dark.asdf") as dark:
        usable = ~np.asarray(truth["hot"]) & (superbias.data > 0)
        assert np.count_nonzero(~usable) <= 0.002 * usable.size
        # The superbias is the level at the reset (t = 0), the truth's bias.
        assert_normalised_residuals(superbias.data - truth["bias"], bias_error, usable)
        assert_normalised_residuals(dark.dark_slope - rate, rate_error, usable)
