"""jump: the two-point difference method on hand-computed ramps, on simulated even ramps
with cosmic rays (wfisim.cosmic_rays), and the script on tiny Roman files.

Hand-computed cases use gain 1 e/DN and read noise 1 DN per read unless stated: the
noise of a first difference with clipped median m is then sqrt(|m| + 2).
"""

import os

from romanpipe.cores import available_cores, worker_count

import numpy as np
import pytest
import roman_datamodels as rdm
from roman_datamodels import datamodels

import dq_init
import jump
from conftest import EXPO, make_level1
from jump import check_even_read_pattern, detect_jumps
from saturation import flag_saturation
from wfisim.cosmic_rays import CosmicRays
from wfisim.detector import build_detector
from wfisim.matables import even_ma_table
from wfisim.ramps import Chunk, simulate_ramp
from wfisim.scene import random_catalog, render_rate

DNU, SAT, JUMP, AD_FLOOR, NO_GAIN = 1, 2, 4, 64, 2**19
FLAGS = {"DO_NOT_USE": DNU, "SATURATED": SAT, "JUMP_DET": JUMP, "AD_FLOOR": AD_FLOOR,
         "NO_SAT_CHECK": 2**21, "NO_GAIN_VALUE": NO_GAIN}
# The romancal documentation, section "Jump Detection", at rejection_threshold 4.0.
DOCUMENTED_FALSE_POSITIVES_PER_MILLION = 6200


def ramps(*differences):
    """A (ngroups, 1, npixels) ramp from 100 DN whose pixels have these first differences (DN)."""
    steps = np.array(differences, dtype=np.float64).T
    ramp = 100 + np.concatenate([np.zeros((1, steps.shape[1])), np.cumsum(steps, axis=0)])
    return ramp[:, None, :].astype(np.float32)


def run(data, *, gain=1.0, read_noise=1.0, groupdq=None, flag_4_neighbors=False, **kwargs):
    """New groupdq and pixeldq of ``data`` with uniform (or per-pixel) gain and read noise.

    Neighbour flagging is off unless asked for: the pixels of a one-row ramp are separate cases.
    """
    plane = data.shape[1:]
    groupdq = np.zeros(data.shape, np.uint8) if groupdq is None else groupdq
    gain, read_noise = (np.broadcast_to(np.asarray(value, np.float32), plane).copy()
                        for value in (gain, read_noise))
    return detect_jumps(data, groupdq, np.zeros(plane, np.uint32), gain, read_noise,
                        flag_4_neighbors=flag_4_neighbors, flags=FLAGS, **kwargs)


def jump_groups(groupdq, pixel=0):
    """Indices of the groups of pixel ``pixel`` (of a 1-row ramp) flagged JUMP_DET."""
    return np.flatnonzero(groupdq[:, 0, pixel] & JUMP).tolist()


# --- five or more groups: clipped median, iteration ----------------------------------------------


def test_one_jump_flags_the_group_at_the_end_of_its_difference():
    # Clipped median 10, noise sqrt(12) = 3.46: (100 - 10) / 3.46 = 26 sigma in difference 3.
    gdq, pdq = run(ramps([10, 10, 10, 100, 10, 10, 10]))
    assert jump_groups(gdq) == [4]
    assert not pdq.any()


def test_threshold_is_strict_and_in_sigma_of_the_difference():
    # 13 / 3.46 = 3.75 sigma stays; 14 / 3.46 = 4.04 sigma is a jump.
    gdq, _ = run(ramps([10] * 6 + [23], [10] * 6 + [24]))
    assert jump_groups(gdq, 0) == [] and jump_groups(gdq, 1) == [7]


def test_read_noise_of_a_difference_is_that_of_two_reads():
    # No signal, read noise 10 DN: the difference's noise is sqrt(2) * 10 = 14.14 DN, so
    # a threshold of 4 sigma lies at 56.6 DN (not at 40 DN, one read's noise).
    gdq, _ = run(ramps([0] * 6 + [56], [0] * 6 + [57]), read_noise=10.0)
    assert jump_groups(gdq, 0) == [] and jump_groups(gdq, 1) == [7]


def test_noise_is_computed_in_electrons_through_the_gain():
    # Gain 2 e/DN, read noise 1 DN = 2 e: median 10 e, noise sqrt(10 + 2 * 4) = 4.24 e.
    # +8 DN = 16 e is 3.77 sigma; +9 DN = 18 e is 4.24 sigma. (In DN, noise sqrt(5 + 2)
    # = 2.65 DN would make +9 DN only 3.40 sigma.)
    gdq, _ = run(ramps([5] * 6 + [13], [5] * 6 + [14]), gain=2.0)
    assert jump_groups(gdq, 0) == [] and jump_groups(gdq, 1) == [7]


def test_median_drops_the_largest_difference():
    # [10, 20, 10, 35, 20] without 35: median 15, noise sqrt(17) = 4.12, 35 is 4.85 sigma.
    # (The plain median 20 would give noise 4.69 and only 3.20 sigma.) Pass 2: [10, 10, 20]
    # after dropping a 20: median 10, 20 is 2.89 sigma.
    gdq, _ = run(ramps([10, 20, 10, 35, 20]))
    assert jump_groups(gdq) == [4]


def test_iteration_finds_a_second_jump_without_the_first():
    # Pass 1: median of [10 x 6, 60] = 10, 200 is 54.8 sigma -> group 3. Pass 2 (7 left):
    # the clipped median drops 60, median 10, 60 is 14.4 sigma -> group 6. Pass 3: nothing.
    gdq, _ = run(ramps([10, 10, 200, 10, 10, 60, 10, 10]))
    assert jump_groups(gdq) == [3, 6]


def test_equal_jumps_are_found_one_per_pass():
    gdq, _ = run(ramps([10, 10, 10, 500, 500, 10, 10]))
    assert jump_groups(gdq) == [4, 5]


def test_negative_jump_is_flagged_too():
    # |(-40) - 10| / 3.46 = 14.4 sigma.
    gdq, _ = run(ramps([10, 10, 10, -40, 10, 10, 10]))
    assert jump_groups(gdq) == [4]


# --- four and three groups -----------------------------------------------------------------------


def test_four_groups_use_the_plain_median_and_their_own_threshold():
    # [10, 20, 40]: median 20 (clipped would be 15), noise sqrt(22) = 4.69, 40 is 4.26 sigma:
    # above 4 but not above the four-group threshold 5. [10, 20, 60]: 8.53 sigma -> group 3;
    # then [10, 20] leave the smaller 10 as median, 20 is 10 / sqrt(12) = 2.89 sigma.
    gdq, _ = run(ramps([10, 20, 40], [10, 20, 60]))
    assert jump_groups(gdq, 0) == [] and jump_groups(gdq, 1) == [3]
    gdq, _ = run(ramps([10, 20, 40]), four_group_rejection_threshold=4.2)
    assert jump_groups(gdq) == [3]


def test_three_groups_compare_the_larger_difference_with_the_smaller():
    # Median = the smaller difference 10, noise sqrt(12) = 3.46: 30 is 5.77 sigma (not above 6),
    # 40 is 8.66 sigma; the larger difference may come first.
    gdq, _ = run(ramps([10, 30], [10, 40], [40, 10]))
    assert [jump_groups(gdq, p) for p in range(3)] == [[], [2], [1]]
    gdq, _ = run(ramps([10, 30]), three_group_rejection_threshold=5.5)
    assert jump_groups(gdq) == [2]


def test_fewer_than_three_groups_is_an_error_for_the_kernel():
    with pytest.raises(ValueError, match="needs at least 3"):
        run(ramps([10]))


# --- flagged groups --------------------------------------------------------------------------------


def test_saturated_groups_are_never_used_nor_flagged():
    # Groups 5-7 saturated (wild values): 4 usable differences [10, 10, 100, 10] -> group 3.
    # Pixel 1: the only jump is into a saturated group. Pixel 2: groups 4-7 saturated leave
    # [10, 20, 40], judged as four groups (4.26 sigma < 5) although the ramp has eight.
    data = ramps([10, 10, 100, 10, 1e6, -1e6, 5], [10, 10, 10, 10, 5000, 10, 10],
                 [10, 20, 40, 3000, 10, 10, 10])
    groupdq = np.zeros(data.shape, np.uint8)
    groupdq[5:, 0, :2] = SAT
    groupdq[4:, 0, 2] = SAT
    gdq, _ = run(data, groupdq=groupdq)
    assert jump_groups(gdq, 0) == [3] and jump_groups(gdq, 1) == [] and jump_groups(gdq, 2) == []
    np.testing.assert_array_equal(gdq & SAT, groupdq)


def test_do_not_use_group_drops_both_its_differences():
    data = ramps([10, 10, 10, 1e5, 10, 10, 10, 10])
    groupdq = np.zeros(data.shape, np.uint8)
    groupdq[4, 0, 0] = DNU | AD_FLOOR
    gdq, _ = run(data, groupdq=groupdq)
    assert jump_groups(gdq) == []
    assert gdq[4, 0, 0] == DNU | AD_FLOOR


def test_bad_gain_flags_pixeldq_and_the_pixel_is_not_searched():
    data = ramps(*[[10] * 6 + [500]] * 5)
    gdq, pdq = run(data, gain=np.array([[np.nan, 0.0, -2.0, np.inf, 1.0]], np.float32))
    assert pdq[0].tolist() == [NO_GAIN | DNU] * 4 + [0]
    assert [jump_groups(gdq, p) for p in range(5)] == [[], [], [], [], [7]]


def test_zero_noise_never_flags():
    # Read noise 0 and no signal: the expected noise is 0, there is nothing to compare with.
    gdq, _ = run(ramps([0] * 6 + [3]), read_noise=0.0)
    assert jump_groups(gdq) == []


def test_existing_flags_are_kept_and_inputs_not_modified():
    data = ramps([10, 10, 10, 100, 10, 10, 10])
    groupdq = np.zeros(data.shape, np.uint8)
    groupdq[1, 0, 0] = 8  # DROPOUT: usable, and kept
    pixeldq = np.full((1, 1), 1024, np.uint32)
    gain, read_noise = np.ones((1, 1), np.float32), np.ones((1, 1), np.float32)
    before = [array.copy() for array in (data, groupdq, pixeldq, gain, read_noise)]
    gdq, pdq = detect_jumps(data, groupdq, pixeldq, gain, read_noise, flags=FLAGS)
    assert gdq[:, 0, 0].tolist() == [0, 8, 0, 0, JUMP, 0, 0, 0] and pdq[0, 0] == 1024
    for array, copy in zip((data, groupdq, pixeldq, gain, read_noise), before, strict=True):
        np.testing.assert_array_equal(array, copy)


# --- neighbours ------------------------------------------------------------------------------------


def plane_with_jump(extra, shape=(5, 5), at=(2, 2)):
    """Six groups rising 10 DN per group; pixel ``at`` jumps by ``extra`` DN in group 3."""
    data = np.broadcast_to(100 + 10 * np.arange(6, dtype=np.float32)[:, None, None], (6, *shape)).copy()
    data[3:, at[0], at[1]] += extra
    return data


def jumps_in_group_3(groupdq):
    return {tuple(index) for index in np.argwhere(groupdq[3] & JUMP)}


def run_plane(data, flag_4_neighbors=True, **kwargs):
    """``run`` with the step's default neighbour flagging."""
    return run(data, flag_4_neighbors=flag_4_neighbors, **kwargs)


CROSS = {(2, 2), (1, 2), (3, 2), (2, 1), (2, 3)}


@pytest.mark.parametrize(("extra", "expected"), [
    (50.0, CROSS),  # 50 / 3.46 = 14.4 sigma: between 10 and 1000
    (30.0, {(2, 2)}),  # 8.66 sigma: below min_jump_to_flag_neighbors
    (4000.0, {(2, 2)}),  # 1155 sigma: above max_jump_to_flag_neighbors
])
def test_neighbours_are_flagged_between_the_limits(extra, expected):
    gdq, _ = run_plane(plane_with_jump(extra))
    assert jumps_in_group_3(gdq) == expected
    assert not (gdq[[0, 1, 2, 4, 5]] & JUMP).any()


def test_neighbour_limits_and_switch_are_parameters():
    assert jumps_in_group_3(run_plane(plane_with_jump(30.0), min_jump_to_flag_neighbors=8.0)[0]) == CROSS
    assert jumps_in_group_3(run_plane(plane_with_jump(50.0), max_jump_to_flag_neighbors=14.0)[0]) == {(2, 2)}
    assert jumps_in_group_3(run_plane(plane_with_jump(50.0), flag_4_neighbors=False)[0]) == {(2, 2)}


def test_saturated_neighbour_and_corner_neighbours():
    data = plane_with_jump(50.0)
    groupdq = np.zeros(data.shape, np.uint8)
    groupdq[3:, 1, 2] = SAT
    assert jumps_in_group_3(run_plane(data, groupdq=groupdq)[0]) == CROSS - {(1, 2)}
    assert jumps_in_group_3(run_plane(plane_with_jump(50.0, at=(0, 0)))[0]) == {(0, 0), (1, 0), (0, 1)}


@pytest.mark.parametrize("rows_per_chunk", [1, 2, 3])
def test_neighbours_cross_row_chunk_borders(rows_per_chunk):
    for at in [(1, 2), (2, 2), (3, 2)]:
        whole = run_plane(plane_with_jump(50.0, at=at))[0]
        chunked = run_plane(plane_with_jump(50.0, at=at), rows_per_chunk=rows_per_chunk, workers=2)[0]
        np.testing.assert_array_equal(chunked, whole)


# --- parameters ------------------------------------------------------------------------------------


def test_even_read_patterns_pass_and_uneven_ones_are_named():
    check_even_read_pattern([[1], [2], [3]], 3)
    check_even_read_pattern([[2], [4], [6]], 3)
    with pytest.raises(ValueError, match="resultant 1 averages 2 reads"):
        check_even_read_pattern([[1], [2, 3], [4]], 3)
    with pytest.raises(ValueError, match="not equally spaced"):
        check_even_read_pattern([[1], [2], [4]], 3)
    with pytest.raises(ValueError, match="read_pattern has 2 resultants, the data 3"):
        check_even_read_pattern([[1], [2]], 3)


def test_maximum_cores_fractions():
    assert [worker_count(name, 8) for name in ("none", "quarter", "half", "all")] == [1, 2, 4, 8]
    assert [worker_count(name, 2) for name in ("none", "quarter", "half", "all")] == [1, 1, 1, 2]
    assert worker_count("all") >= 1


def test_omp_num_threads_caps_the_workers(monkeypatch):
    """Snakemake gives each job its threads as OMP_NUM_THREADS: a step uses no more."""
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert available_cores() == 1 and worker_count("all") == 1
    monkeypatch.setenv("OMP_NUM_THREADS", str(cores + 7))
    assert available_cores() == cores
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    assert available_cores() == cores


# --- cosmic rays (the simulator effect) -----------------------------------------------------------


def test_a_hit_deposits_its_charge_with_ipc_on_the_four_neighbours():
    rays = CosmicRays(0.05, ipc_fraction=0.02)
    chunk = Chunk("science", slice(8, 16), 8, 3.0, np.random.default_rng(4))
    charge = np.zeros(chunk.shape)
    rays.add_charge(chunk, 1, charge)
    rays.add_charge(chunk, 2, np.zeros(chunk.shape))
    hits = rays.truth()
    first = hits["read"] == 1
    assert first.sum() > 0 and set(hits["read"]) <= {1, 2}
    expected = np.zeros(chunk.shape)
    for row, col, electrons in zip(hits["row"][first] - 8, hits["col"][first], hits["electrons"][first],
                                   strict=True):
        expected[row, col] += 0.92 * electrons
        for r, c in ((row - 1, col), (row + 1, col), (row, col - 1), (row, col + 1)):
            if 0 <= r < 8 and 0 <= c < 8:
                expected[r, c] += 0.02 * electrons
    np.testing.assert_allclose(charge, expected)
    assert ((hits["electrons"] >= 50) & (hits["electrons"] <= 50_000)).all()
    amp33 = np.zeros((8, 4))
    rays.add_charge(Chunk("amp33", slice(8, 16), 4, 3.0, np.random.default_rng(4)), 1, amp33)
    assert not amp33.any()


def test_collecting_mask_must_cover_the_readout():
    rays = CosmicRays(0.05, collecting=np.ones((16, 6), bool))
    with pytest.raises(ValueError, match="collecting mask"):
        rays.add_charge(Chunk("science", slice(8, 16), 8, 3.0, np.random.default_rng(4)), 1, np.zeros((8, 8)))


def test_hits_and_ramps_do_not_depend_on_the_worker_threads():
    det = build_detector("WFI01", (96, 40), 3)
    table = even_ma_table(6)
    outputs = []
    for workers in (1, 3):
        rays = CosmicRays(0.002, collecting=det.photosensitive)
        ramp = simulate_ramp(det.electron_rate(np.ones(det.shape)), det.science_readout(), table, 5,
                             effects=[rays], workers=workers)
        outputs.append((ramp.resultants, rays.truth()))
    (ramp_1, hits_1), (ramp_3, hits_3) = outputs
    np.testing.assert_array_equal(ramp_1, ramp_3)
    assert hits_1.keys() == hits_3.keys() and len(hits_1["row"]) > 20
    for key in hits_1:
        np.testing.assert_array_equal(hits_1[key], hits_3[key])
    assert det.photosensitive[hits_1["row"], hits_1["col"]].all()


def test_rate_from_flux_and_one_effect_per_exposure():
    assert CosmicRays.from_flux(5.0).rate_per_pixel_s == pytest.approx(5e-6)
    det = build_detector("WFI01", (40, 40), 3)
    rays = CosmicRays(0.001)
    args = (det.electron_rate(np.ones(det.shape)), det.science_readout(), even_ma_table(3), 1)
    simulate_ramp(*args, effects=[rays])
    with pytest.raises(RuntimeError, match="one CosmicRays per exposure"):
        simulate_ramp(*args, effects=[rays], workers=1)


# --- simulated even ramps ----------------------------------------------------------------------------


def simulated(size, rate_per_pixel_s, seed):
    """An EVEN_10 exposure of sky (1 e/s) and stars, saturation flagged as the saturation step does."""
    det = build_detector("WFI01", (size, size), seed)
    table = even_ma_table(10)
    stars = random_catalog([seed, 1], det.shape, size * size // 400, flux_range=(20.0, 2.0e3))
    electron_rate = det.electron_rate(render_rate(det.shape, stars, 1.0, 1.5))
    rays = CosmicRays(rate_per_pixel_s, collecting=det.photosensitive)
    ramp = simulate_ramp(electron_rate, det.science_readout(), table, [seed, 2], effects=[rays])
    data = ramp.resultants.astype(np.float32)
    groupdq, pixeldq = flag_saturation(data, np.zeros(data.shape, np.uint8), np.zeros(det.shape, np.uint32),
                                       det.saturation_threshold, np.zeros(det.shape, np.uint32),
                                       table.read_pattern_lists(), flags=FLAGS)
    return det, table, electron_rate, rays, data, groupdq, pixeldq


@pytest.fixture(scope="module")
def cosmic_ray_exposure():
    # 0.004 hits per pixel per second: about 0.12 per pixel in the 30 s ramp, 2000 hits.
    return simulated(128, 0.004, 21)


def test_jumps_above_10_sigma_are_found(cosmic_ray_exposure):
    det, table, electron_rate, rays, data, groupdq, pixeldq = cosmic_ray_exposure
    flagged, _ = detect_jumps(data, groupdq, pixeldq, det.gain, det.read_noise, flags=FLAGS)
    hits = rays.truth()
    row, col, read = hits["row"], hits["col"], hits["read"]
    in_pixel = hits["electrons"] * (1 - 4 * rays.ipc_fraction)
    gain = det.gain[row, col].astype(np.float64)
    # sigma: expected noise (e) of the difference that ends at the hit's read, from the truth.
    sigma = np.sqrt(electron_rate[row, col] * table.frame_time + 2 * (gain * det.read_noise[row, col]) ** 2)
    group = read - 1  # read k is resultant k - 1; a hit at read 1 changes no difference
    usable = (read >= 2) & ((groupdq[group, row, col] | groupdq[group - 1, row, col]) & (SAT | DNU) == 0)
    strong = usable & (in_pixel >= 10 * sigma)
    found = (flagged[group, row, col] & JUMP) != 0
    assert strong.sum() > 1000
    assert found[strong].mean() >= 0.99


def test_maximum_cores_all_gives_the_single_core_result(cosmic_ray_exposure):
    det, _, _, _, data, groupdq, pixeldq = cosmic_ray_exposure
    one = detect_jumps(data, groupdq, pixeldq, det.gain, det.read_noise, workers=worker_count("none"),
                       flags=FLAGS)
    for rows_per_chunk in (None, 7):
        many = detect_jumps(data, groupdq, pixeldq, det.gain, det.read_noise, workers=worker_count("all"),
                            rows_per_chunk=rows_per_chunk, flags=FLAGS)
        for single, parallel in zip(one, many, strict=True):
            np.testing.assert_array_equal(single, parallel)
    assert (one[0] & JUMP).any()


def test_false_positives_without_cosmic_rays_are_within_the_documented_rate():
    det, _, _, _, data, groupdq, pixeldq = simulated(256, 0.0, 22)
    flagged, _ = detect_jumps(data, groupdq, pixeldq, det.gain, det.read_noise, flags=FLAGS)
    jumps = (flagged & JUMP) != 0
    differences = (data.shape[0] - 1) * data.shape[1] * data.shape[2]
    per_million_differences = 1e6 * jumps.sum() / differences
    per_million_pixels = 1e6 * jumps.any(axis=0).sum() / (data.shape[1] * data.shape[2])
    # Normal noise alone puts 63 per million differences beyond 4 sigma; the median's own noise
    # (9 differences) adds to it. The documentation quotes 6200 per million pixels.
    assert 63 < per_million_differences <= 2 * DOCUMENTED_FALSE_POSITIVES_PER_MILLION
    assert per_million_pixels <= 2 * DOCUMENTED_FALSE_POSITIVES_PER_MILLION


# --- the script -----------------------------------------------------------------------------------------


def reference_files(tmp_path, shape, gain=2.0, read_noise=5.0, nan_gain_at=None):
    gain_model = datamodels.GainRefModel.create_fake_data(shape=shape)
    gain_model.data = np.full(shape, gain, np.float32)
    if nan_gain_at is not None:
        gain_model.data[nan_gain_at] = np.nan
    readnoise = datamodels.ReadnoiseRefModel.create_fake_data(shape=shape)
    readnoise.data = np.full(shape, read_noise, np.float32)
    paths = tmp_path / "roman_wfi_gain_0001.asdf", tmp_path / "roman_wfi_readnoise_0001.asdf"
    gain_model.to_asdf(paths[0])
    readnoise.to_asdf(paths[1])
    return ["--override-gain", str(paths[0]), "--override-readnoise", str(paths[1])]


def ramp_file(tmp_path, mask_file, data, read_pattern):
    level1 = make_level1(shape=data.shape, read_pattern=read_pattern)
    level1.data = data
    uncal = tmp_path / f"{EXPO}_uncal.asdf"
    level1.to_asdf(uncal)
    path = tmp_path / f"{EXPO}_dqinit.asdf"
    assert dq_init.cli.run(dq_init.main, [str(uncal), str(path), "--override-mask", str(mask_file)]) == 0
    return path


def test_script_flags_jumps_and_records_the_step(tmp_path, mask_file):
    data = (1000 + 20 * np.arange(6, dtype=np.uint16))[:, None, None] * np.ones((1, 16, 16), np.uint16)
    data[3:, 8, 8] += 500  # 1000 e on a 40 e median: 64 sigma, neighbours flagged too
    path = ramp_file(tmp_path, mask_file, data, [[k] for k in range(1, 7)])
    out = tmp_path / f"{EXPO}_jump.asdf"
    status = jump.cli.run(jump.main, [str(path), str(out), "--maximum-cores", "all",
                                      *reference_files(tmp_path, (16, 16), nan_gain_at=(5, 5))])
    assert status == 0
    with rdm.open(path) as before, rdm.open(out) as result:
        assert result.meta.cal_step.jump == "COMPLETE"
        assert result.meta.ref_file.gain == "roman_wfi_gain_0001.asdf"
        assert result.meta.ref_file.readnoise == "roman_wfi_readnoise_0001.asdf"
        np.testing.assert_array_equal(result.data, before.data)
        assert {tuple(i) for i in np.argwhere(result.groupdq & JUMP)} == \
            {(3, 8, 8), (3, 7, 8), (3, 9, 8), (3, 8, 7), (3, 8, 9)}
        assert result.pixeldq[5, 5] & (NO_GAIN | DNU) == NO_GAIN | DNU
        np.testing.assert_array_equal(np.delete(result.pixeldq.ravel(), 5 * 16 + 5),
                                      np.delete(before.pixeldq.ravel(), 5 * 16 + 5))


def test_script_skips_fewer_than_three_groups(tmp_path, mask_file):
    data = np.full((2, 16, 16), 1000, np.uint16)
    path = ramp_file(tmp_path, mask_file, data, [[1], [2]])
    out = tmp_path / f"{EXPO}_jump.asdf"
    assert jump.cli.run(jump.main, [str(path), str(out)]) == 0  # no reference needed
    with rdm.open(path) as before, rdm.open(out) as result:
        assert result.meta.cal_step.jump == "SKIPPED"
        for name in ("data", "groupdq", "pixeldq"):
            np.testing.assert_array_equal(result[name], before[name])


def test_script_refuses_an_uneven_ramp_in_one_line(tmp_path, level1_file, mask_file, caplog):
    path = tmp_path / f"{EXPO}_dqinit.asdf"
    dq_init.cli.run(dq_init.main, [str(level1_file), str(path), "--override-mask", str(mask_file)])
    out = tmp_path / f"{EXPO}_jump.asdf"
    assert jump.cli.run(jump.main, [str(path), str(out), *reference_files(tmp_path, (16, 16))]) == 1
    assert not out.exists()
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert str(path) in errors[0] and "uneven ramp: resultant 1 averages 2 reads" in errors[0]
    assert "ramp fitting" in errors[0]

