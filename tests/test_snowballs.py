"""Snowball (large-event) flagging: hand-checked geometry, clean data, stcal 1.20 on the same masks.

The geometry is chosen so that every ellipse is axis-aligned (symmetric regions longer
along the rows: moment angle exactly 0) and its pixels follow from integer arithmetic.
"""

import numpy as np
import pytest

from rampfit_kernels.snowballs import SnowballParameters, find_ellipses, flag_large_events

SIZE, NRESULTANTS, K = 40, 5, 2  # cube shape and the resultant where the events happen
CENTER = (20, 20)


def grid():
    rows, cols = np.mgrid[:SIZE, :SIZE]
    return rows - CENTER[0], cols - CENTER[1]


def empty_cubes():
    return np.zeros((NRESULTANTS, SIZE, SIZE), bool), np.zeros((NRESULTANTS, SIZE, SIZE), bool)


def event_cubes(core_resultant=K):
    """An 11 x 5 block of jumps (rows 15-25, columns 18-22) in resultant K around one pixel
    that saturates from ``core_resultant`` on (None: no core)."""
    jumps, saturated = empty_cubes()
    d_row, d_col = grid()
    jumps[K] = (np.abs(d_row) <= 5) & (np.abs(d_col) <= 2)
    if core_resultant is not None:
        saturated[core_resultant:, CENTER[0], CENTER[1]] = True
        jumps[K, CENTER[0], CENTER[1]] = core_resultant != K
    return jumps, saturated


def expected_snowball():
    """The block with the core as a hole: 54 pixels, row variance 550/54, column variance 110/54,
    so full axes 4 sqrt(550/54) - 1 = 11.77 and 4 sqrt(110/54) - 1 = 4.71; enlarged, the minor
    one 4.71 x 1.9 = 8.95 and the major one 11.77 + 0.9 x 4.71 = 16.00: semi-axes 4 (columns)
    and 8 (rows), pixels strictly inside: d_row^2 + 4 d_col^2 < 64."""
    d_row, d_col = grid()
    return d_row**2 + 4 * d_col**2 < 64


def test_block_around_a_saturated_core_is_a_snowball_flagged_by_hand():
    jumps, saturated = event_cubes()
    flagged, saturated_out, count = flag_large_events(jumps, saturated, SnowballParameters())
    expected = expected_snowball()
    expected[CENTER] = False  # saturated in K: never flagged JUMP_DET
    assert count == 1
    np.testing.assert_array_equal(flagged[K], expected)
    assert not np.delete(flagged, K, axis=0).any()
    np.testing.assert_array_equal(saturated_out, saturated)  # a one-pixel core (minor axis -1) is not grown
    assert expected.sum() > jumps[K].sum()  # the expansion added pixels


def test_inputs_are_not_modified():
    jumps, saturated = event_cubes()
    before = jumps.copy(), saturated.copy()
    flag_large_events(jumps, saturated, SnowballParameters())
    np.testing.assert_array_equal(jumps, before[0])
    np.testing.assert_array_equal(saturated, before[1])


def test_core_saturating_in_the_next_resultant_also_makes_a_snowball():
    jumps, saturated = event_cubes(core_resultant=K + 1)
    flagged, _, count = flag_large_events(jumps, saturated, SnowballParameters())
    assert count == 1
    np.testing.assert_array_equal(flagged[K], expected_snowball())


@pytest.mark.parametrize("core_resultant", [None, K + 2, K - 1])
def test_no_new_core_no_snowball_unless_not_required(core_resultant):
    """Without a core saturating in K or K + 1 (none; two later; already before K) the block is
    left alone; with sat_required_snowball false it is a snowball all the same."""
    jumps, saturated = event_cubes(core_resultant)
    flagged, _, count = flag_large_events(jumps, saturated, SnowballParameters())
    assert count == 0
    np.testing.assert_array_equal(flagged, jumps)
    flagged, _, count = flag_large_events(jumps, saturated, SnowballParameters(sat_required_snowball=False))
    expected = expected_snowball() & ~saturated[K] | jumps[K]
    assert count == 1
    np.testing.assert_array_equal(flagged[K], expected)


def test_events_smaller_than_min_jump_area_are_not_candidates():
    jumps, saturated = event_cubes()
    _, _, count = flag_large_events(jumps, saturated, SnowballParameters(min_jump_area=56))  # filled area 55
    assert count == 0
    _, _, count = flag_large_events(jumps, saturated, SnowballParameters(min_jump_area=55))
    assert count == 1


def test_core_is_grown_by_hand_and_replaces_later_jumps():
    """A 5 x 3 core (rows 18-22, columns 19-21) saturating in K: row variance 2, column variance
    2/3, full axes 4 sqrt(2) - 1 = 4.66 and 4 sqrt(2/3) - 1 = 2.27 (> min_sat_radius_extend),
    grown by 2 x sat_expand = 4: semi-axes round(4.33) = 4 and round(3.13) = 3, pixels with
    9 d_row^2 + 16 d_col^2 < 144 flagged SATURATED from K on, JUMP_DET there erased."""
    jumps, saturated = empty_cubes()
    d_row, d_col = grid()
    saturated[K:] = (np.abs(d_row) <= 2) & (np.abs(d_col) <= 1)
    jumps[K + 1, CENTER[0], CENTER[1] + 2] = True  # inside the grown core, one resultant later
    jumps[K + 1, CENTER[0], CENTER[1] + 6] = True  # outside it
    flagged, saturated_out, count = flag_large_events(jumps, saturated, SnowballParameters())
    grown = 9 * d_row**2 + 16 * d_col**2 < 144
    assert count == 0
    np.testing.assert_array_equal(saturated_out[:K], saturated[:K])
    for k in range(K, NRESULTANTS):
        np.testing.assert_array_equal(saturated_out[k], grown)
    assert not flagged[K + 1, CENTER[0], CENTER[1] + 2] and flagged[K + 1, CENTER[0], CENTER[1] + 6]
    _, not_grown, _ = flag_large_events(jumps, saturated, SnowballParameters(min_sat_radius_extend=2.3))
    np.testing.assert_array_equal(not_grown, saturated)


def test_event_near_the_edge_needs_no_core():
    """An 11 x 5 block running off the top edge (rows 0-8 left, centroid row 4), no core: a
    snowball once edge_size exceeds 4."""
    jumps, saturated = empty_cubes()
    d_row, d_col = grid()
    jumps[K] = (d_row + 17 >= -5) & (d_row + 17 <= 5) & (np.abs(d_col) <= 2)
    (event,) = find_ellipses(jumps[K], 6)
    assert event.row == 4.0  # rows 0-8 of the clipped block
    assert flag_large_events(jumps, saturated, SnowballParameters(edge_size=4))[2] == 0
    assert flag_large_events(jumps, saturated, SnowballParameters(edge_size=5))[2] == 1


def test_clean_cubes_are_left_alone():
    """Scattered single-pixel jumps and saturation that never grows a region: nothing changes."""
    rng = np.random.default_rng(2)
    jumps = np.zeros((NRESULTANTS, SIZE, SIZE), bool)
    jumps[:, ::4, ::4] = rng.random((NRESULTANTS, SIZE // 4, SIZE // 4)) < 0.5  # isolated pixels
    jumps[0] = False
    saturated = np.zeros_like(jumps)
    flagged, saturated_out, count = flag_large_events(jumps, saturated, SnowballParameters())
    assert count == 0
    np.testing.assert_array_equal(flagged, jumps)
    np.testing.assert_array_equal(saturated_out, saturated)


def test_mismatched_cubes_are_an_error():
    with pytest.raises(ValueError, match="same"):
        flag_large_events(np.zeros((3, 4, 4), bool), np.zeros((3, 4, 5), bool), SnowballParameters())


# ---------------------------------------------------------------- stcal 1.20 on the same masks (peer extra)

def random_snowball_cubes(rng, n=5, size=64):
    """Elliptical saturated cores with broken rings of jumps around them, at random resultants,
    angles and sizes, plus 1 % scattered jumps."""
    jumps, saturated = np.zeros((n, size, size), bool), np.zeros((n, size, size), bool)
    rows, cols = np.mgrid[:size, :size]
    for _ in range(rng.integers(1, 5)):
        k, (row, col) = rng.integers(1, n), rng.integers(0, size, 2)
        semi_row, semi_col = rng.uniform(0.5, 4, 2)
        angle = rng.uniform(0, np.pi)
        along = (rows - row) * np.cos(angle) + (cols - col) * np.sin(angle)
        across = -(rows - row) * np.sin(angle) + (cols - col) * np.cos(angle)
        core = (along / semi_row) ** 2 + (across / semi_col) ** 2 < 1
        ring = ((along / (2.5 * semi_row)) ** 2 + (across / (2.5 * semi_col)) ** 2 < 1) & ~core
        saturated[k:] |= core
        jumps[k] |= ring & (rng.random(ring.shape) < 0.9)
    jumps |= rng.random(jumps.shape) < 0.01
    jumps[0] = False
    return jumps, saturated


@pytest.mark.peer
def test_same_flags_as_stcal_flag_large_events():
    """stcal 1.20's flag_large_events (as romancal 1.1's likely fit calls it, sat_expand doubled)
    on 150 random cubes: the same JUMP_DET and SATURATED resultants and snowball count."""
    jump_module = pytest.importorskip("stcal.jump.jump")
    from stcal.jump.jump_class import JumpData

    jump_flag, saturated_flag = 4, 2
    rng = np.random.default_rng(3)
    for trial in range(150):
        jumps, saturated = random_snowball_cubes(rng)
        parameters = SnowballParameters(edge_size=int(rng.integers(0, 10)),
                                        sat_required_snowball=bool(rng.random() < 0.8))
        jump_data = JumpData()
        jump_data.set_snowball_info(True, parameters.min_jump_area, parameters.min_sat_area,
                                    parameters.expand_factor, parameters.sat_required_snowball,
                                    parameters.min_sat_radius_extend, 2 * parameters.sat_expand,
                                    parameters.edge_size)
        jump_data.fl_jump, jump_data.fl_sat = jump_flag, saturated_flag
        groupdq = (jumps * jump_flag | saturated * saturated_flag).astype(np.uint8)[None]
        peer_dq, peer_count = jump_module.flag_large_events(groupdq, jump_flag, saturated_flag, jump_data)
        flagged, saturated_out, count = flag_large_events(jumps, saturated, parameters)
        assert count == peer_count, trial
        np.testing.assert_array_equal(flagged, (peer_dq[0] & jump_flag) != 0, err_msg=str(trial))
        np.testing.assert_array_equal(saturated_out, (peer_dq[0] & saturated_flag) != 0, err_msg=str(trial))
