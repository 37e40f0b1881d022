"""ramp_fit's likely algorithm: a naive dense reimplementation, injected truth, edge cases.

The ramps are the ideal ones of ramp_simulation (Poisson charge per read, Gaussian read
noise); the script and the parity with romancal are tested there, beside ols_cas22's.
Seeds are fixed; every tolerance leaves >= 4 standard errors of the measured statistic.
"""

import logging
from functools import partial

import numpy as np
import pytest

from ramp_simulation import (
    DNU,
    FLUX_DECADES,
    GAIN,
    JUMP,
    NO_GAIN_VALUE,
    READ_NOISE,
    SAT,
    SNOWBALL_AT,
    UNEVEN_TABLES,
    bracketing_noise,
    jump_measurement_error,
    planes,
    random_jump_ramps,
    simulate_resultants,
    snowball_ramps,
    uniform_fit,
)
from rampfit_kernels.likely import MIN_RESULTANTS, TIE, fit_ramps_likely, rejection_thresholds
from rampfit_kernels.readout import resultant_times
from rampfit_kernels.snowballs import SnowballParameters
from wfisim.matables import MA_TABLES, MaTable

log = logging.getLogger(__name__)


likely_fit = partial(uniform_fit, fit_ramps_likely)


# ---------------------------------------------------------------- a naive, dense reimplementation

class DenseLikelihood:
    """The likelihood fit written the slow, obvious way: the covariance of the differences
    from that of the resultants through the difference operator, numpy inverses, and every
    candidate drop refitted from scratch. Electrons throughout."""

    def __init__(self, table, rejection_threshold=4.5):
        times = resultant_times(table.read_pattern_lists(), table.frame_time)
        self.t, self.tau, self.count = times.mean_time, times.poisson_factor, times.read_count
        n = self.t.size
        self.operator = (np.eye(n, k=1) - np.eye(n))[:-1] / np.diff(self.t)[:, None]
        self.single, self.pair = rejection_thresholds(rejection_threshold)

    def covariances(self):
        """(read-noise part / sigma^2, Poisson part / F) of the differences' covariance."""
        resultant_read = np.diag(1.0 / self.count)
        resultant_signal = np.minimum.outer(self.t, self.t)
        np.fill_diagonal(resultant_signal, self.tau)
        return (self.operator @ resultant_read @ self.operator.T,
                self.operator @ resultant_signal @ self.operator.T)

    def fit(self, differences, use, read_variance, flux):
        """(rate, var_rnoise, var_poisson, chi^2) of the GLS fit of the differences in ``use``."""
        read, signal = (part[np.ix_(use, use)] for part in self.covariances())
        covariance = read_variance * read + flux * signal
        data = differences[use]
        if data.size == 0:
            return np.nan, np.nan, np.nan, 0.0
        inverse = np.linalg.inv(covariance)
        weights = inverse.sum(axis=1) / inverse.sum()
        rate = weights @ data
        residual = data - rate
        return (rate, read_variance * weights @ read @ weights, flux * weights @ signal @ weights,
                residual @ inverse @ residual)

    def __call__(self, electrons, usable_resultants, read_variance):
        """(rate, var_rnoise, var_poisson, chi^2, jump found) of one pixel."""
        differences = np.diff(electrons) / np.diff(self.t)
        use = usable_resultants[:-1] & usable_resultants[1:]
        if not use.any():
            return np.nan, np.nan, np.nan, np.nan, False
        searched, rate = self.search(differences, use, read_variance)
        jump = bool((searched != use).any())
        return (*self.fit(differences, searched, read_variance, max(rate, 0.0)), jump)

    def search(self, differences, use, read_variance):
        """(differences kept, rate) at the end of the jump search."""
        guess = max(np.median(differences[use]), 0.0)
        rate = self.fit(differences, use, read_variance, guess)[0]
        for _ in range(use.size):
            if use.sum() < 2:
                break
            chi2 = self.fit(differences, use, read_variance, guess)[3]
            # The first of equally good drops (within TIE), in the order single j, pair j and
            # j + 1, single j + 1.
            margin, dropped = 0.0, None
            for j in np.flatnonzero(use):
                for candidate, threshold in (([j], self.single), ([j, j + 1], self.pair)):
                    if len(candidate) == 2 and not (j + 1 < use.size and use[j + 1] and self.count[j + 1] > 1
                                                    and use.sum() > 2):
                        continue
                    saved = chi2 - self.refit(differences, use, candidate, read_variance, guess)[3]
                    if saved - threshold > margin * (1 + TIE):
                        margin, dropped = saved - threshold, candidate
            if dropped is None:
                break
            use = use.copy()
            use[dropped] = False
            rate = self.fit(differences, use, read_variance, guess)[0]
            if use.sum() < 4:
                break
        return use, rate

    def refit(self, differences, use, dropped, read_variance, flux):
        less = use.copy()
        less[dropped] = False
        return self.fit(differences, less, read_variance, flux)


@pytest.mark.parametrize("table_name", UNEVEN_TABLES)
def test_same_as_a_dense_reimplementation(table_name):
    """Slopes, both variances, chi^2 and jump flags of 600 pixels with jumps of every size,
    flagged resultants and NaN, against ``DenseLikelihood``."""
    table = MA_TABLES[table_name]
    rng = np.random.default_rng(12)
    npix = 600
    rates = 10.0 ** rng.uniform(-1, 4, npix)
    jump_read = rng.integers(2, table.last_read + 1, npix)
    charge = np.where(rng.random(npix) < 0.5, 10.0 ** rng.uniform(1, 4, npix), 0.0)
    resultants = simulate_resultants(rates, table, rng, jump_read=jump_read, jump_charge=charge)
    groupdq = np.where(rng.random(resultants.shape) < 0.05, rng.choice([DNU, SAT, JUMP], resultants.shape),
                       0).astype(np.uint8)
    resultants[rng.random(resultants.shape) < 0.01] = np.nan
    fit = likely_fit(resultants, table, groupdq)

    dense = DenseLikelihood(table)
    expected = np.array([dense(resultants[:, 0, p].astype(np.float64) * GAIN,
                               (groupdq[:, 0, p] == 0) & np.isfinite(resultants[:, 0, p]),
                               (READ_NOISE * GAIN) ** 2) for p in range(npix)])
    np.testing.assert_allclose(fit.slope[0] * GAIN, expected[:, 0], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(fit.var_rnoise[0] * GAIN**2, expected[:, 1], rtol=1e-4)
    np.testing.assert_allclose(fit.var_poisson[0] * GAIN**2, expected[:, 2], rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(fit.chisq[0], expected[:, 3], rtol=1e-3, atol=1e-3)
    jump_step_flags = (groupdq[:, 0] & JUMP).any(axis=0)
    np.testing.assert_array_equal((fit.dq[0] & JUMP) != 0, expected[:, 4].astype(bool) | jump_step_flags)
    assert 0.2 < np.mean(expected[:, 4]) < 0.6  # the search did drop differences


def test_noiseless_line_has_its_slope_and_zero_chi_square():
    table = MA_TABLES["IMG_UNEVEN_6"]
    times = resultant_times(table.read_pattern_lists(), table.frame_time).mean_time
    fit = likely_fit((100.0 + 7.5 * times).astype(np.float32)[:, None, None], table)
    np.testing.assert_allclose(fit.slope[0, 0], 7.5, rtol=1e-6)
    assert abs(fit.chisq[0, 0]) < 1e-6 and fit.dq[0, 0] == 0
    # The Poisson part at the fitted rate, the read-noise part at sigma: both positive.
    assert fit.var_poisson[0, 0] > 0 and fit.var_rnoise[0, 0] > 0


# ---------------------------------------------------------------- statistical truth tests

@pytest.mark.parametrize("table_name", UNEVEN_TABLES)
def test_slopes_are_unbiased_and_errors_match_the_scatter(table_name):
    """Clean ramps, 0.1-10^4 e/s: |bias| <= 0.02 of the scatter and ERR within 5 % of the scatter
    in every flux decade (measured: |bias| <= 0.008, ERR / scatter 0.992-1.009), chi^2 with
    its n - 2 degrees of freedom, false jumps below 10^-3."""
    table = MA_TABLES[table_name]
    rng = np.random.default_rng(2024)
    for decade in FLUX_DECADES:
        rates = 10.0 ** rng.uniform(decade, decade + 1, 40_000)
        fit = likely_fit(simulate_resultants(rates, table, rng), table)
        assert np.mean((fit.dq[0] & JUMP) != 0) <= 1e-3, "false jumps in clean ramps"
        assert np.isfinite(fit.slope).all()
        residual = fit.slope[0] * GAIN - rates
        assert abs(residual.mean()) <= 0.02 * residual.std(), f"bias at 10^{decade} e/s"
        ratio = np.sqrt(np.mean((fit.err[0] * GAIN) ** 2)) / np.sqrt(np.mean(residual**2))
        assert abs(ratio - 1) <= 0.05, f"ERR / scatter = {ratio:.3f} at 10^{decade} e/s"
        assert abs(np.mean(fit.chisq) - (table.nresultants - 2)) <= 0.1


def fit_with_random_jumps(table, rng, decade, jump_noise, sigmas):
    """``random_jump_ramps`` fitted by the likely fit: (rates, fit)."""
    rates, _, _, resultants = random_jump_ramps(table, rng, decade, jump_noise, sigmas)
    return rates, likely_fit(resultants, table)


@pytest.mark.parametrize("table_name", UNEVEN_TABLES)
def test_jumps_of_10_sigma_are_flagged_99_percent(table_name):
    """10-sigma jumps, sigma the larger of the bracketing difference's noise and the error with
    which the whole ramp measures the jump (test_ramp_fit's two measures): >= 99 % flagged in
    every flux decade, 0.1-10^4 e/s, none left without a slope (measured: 100.00 %).

    The hit pixels' slopes keep part of a jump that lands inside a multi-read resultant when
    only one of the two differences sharing it is dropped: biased high by 0.10-0.25 of their
    scatter on IMG_UNEVEN_6 and 0.01-0.05 on IMG_UNEVEN_16 (the algorithm's, as in stcal).
    """
    def larger_noise(rates, table, jump_read):
        return np.maximum(bracketing_noise(rates, table, jump_read),
                          jump_measurement_error(rates, table, jump_read))

    table = MA_TABLES[table_name]
    rng = np.random.default_rng(91)
    for decade in FLUX_DECADES:
        rates, fit = fit_with_random_jumps(table, rng, decade, larger_noise, 10.0)
        flagged = np.mean((fit.dq[0] & JUMP) != 0)
        residual = fit.slope[0] * GAIN - rates
        log.info("%s, 10 sigma, 10^%d e/s: %.4f flagged, bias %.3f of the scatter", table_name, decade,
                 flagged, residual.mean() / np.nanstd(residual))
        assert flagged >= 0.99, f"{flagged:.4f} flagged at 10^{decade} e/s"
        assert np.isfinite(fit.slope).all()


def test_saturating_pixel_has_no_false_jump():
    """A bright pixel saturated from R_3 on: the rate guess comes from its usable differences
    only. From all five (stcal's median), three flat differences would make it ~0, a
    read-noise-only covariance under two steep differences, and drop one as a jump."""
    table = MA_TABLES["IMG_UNEVEN_6"]
    rates = np.full(2000, 3000.0)
    resultants = simulate_resultants(rates, table, np.random.default_rng(6))
    groupdq = np.zeros(resultants.shape, np.uint8)
    groupdq[3:] = SAT
    resultants[3:] = resultants[2]  # flat at the full well
    fit = likely_fit(resultants, table, groupdq)
    assert not np.any(fit.dq & JUMP)
    residual = fit.slope[0] * GAIN - rates
    assert abs(residual.mean()) <= 0.1 * residual.std()
    assert np.all(fit.dq & SAT)


# ---------------------------------------------------------------- parameters, edge cases

def test_rejection_threshold_and_use_jump_decide_what_is_dropped():
    table = MA_TABLES["IMG_UNEVEN_16"]
    rates = np.full(4000, 30.0)
    # A 300 e jump at read 30, inside the 4-read R_8: about 8 sigma of the differences around it.
    resultants = simulate_resultants(rates, table, np.random.default_rng(8), jump_read=30, jump_charge=300.0)
    default = likely_fit(resultants, table)
    strict = likely_fit(resultants, table, rejection_threshold=20.0)
    off = likely_fit(resultants, table, use_jump=False)
    assert np.mean(default.dq & JUMP > 0) > 0.99
    assert not np.any(strict.dq & JUMP) and not np.any(off.dq & JUMP)
    np.testing.assert_array_equal(strict.slope, off.slope)  # nothing dropped: the same fit
    assert np.mean(off.slope) * GAIN > 30.0 + 5 * np.std(off.slope * GAIN) / np.sqrt(rates.size)
    assert abs(np.mean(default.slope) * GAIN - 30.0) < np.mean(off.slope) * GAIN - 30.0


def test_jump_flags_of_the_jump_step_are_left_out_without_the_search():
    table = MA_TABLES["IMG_UNEVEN_6"]
    rates = np.full(1000, 50.0)
    resultants = simulate_resultants(rates, table, np.random.default_rng(9), jump_read=16, jump_charge=5000.0)
    groupdq = np.zeros(resultants.shape, np.uint8)
    groupdq[4] = JUMP  # the jump step's flag on the resultant the jump landed in
    fit = likely_fit(resultants, table, groupdq, use_jump=False)
    residual = fit.slope[0] * GAIN - rates
    assert abs(residual.mean()) <= 0.1 * residual.std() and np.all(fit.dq & JUMP)


def test_dark_is_added_back_for_the_noise_and_removed_from_the_slope():
    table = MA_TABLES["IMG_UNEVEN_6"]
    rates = np.full(50, 20.0)  # e/s, of which 0.5 DN/s = 1 e/s is dark current
    with_dark = simulate_resultants(rates, table, np.random.default_rng(1))
    times = resultant_times(table.read_pattern_lists(), table.frame_time).mean_time
    subtracted = (with_dark - 0.5 * times[:, None, None]).astype(np.float32)
    plain = likely_fit(with_dark, table)
    dark = likely_fit(subtracted, table, dark_rate=planes(with_dark.shape[1:], 0.5))
    np.testing.assert_allclose(dark.slope, plain.slope - 0.5, atol=2e-4)
    np.testing.assert_allclose(dark.var_poisson, plain.var_poisson, rtol=1e-4)


def test_fewer_than_four_resultants_is_an_error():
    table = MaTable("THREE", 1, ((1,), (2, 3), (4,)), frame_time=3.04)
    with pytest.raises(ValueError, match="needs 4 or more"):
        likely_fit(np.zeros((3, 1, 1), np.float32), table)
    assert MIN_RESULTANTS == 4


def test_negative_rejection_threshold_is_an_error():
    with pytest.raises(ValueError, match="rejection_threshold"):
        likely_fit(np.zeros((6, 1, 1), np.float32), MA_TABLES["IMG_UNEVEN_6"], rejection_threshold=-1.0)


@pytest.mark.parametrize("case", ["all_flagged", "one_usable_resultant", "all_nan"])
def test_ramps_without_a_usable_difference_get_nan_and_do_not_use(case):
    table = MA_TABLES["IMG_UNEVEN_6"]
    resultants = np.arange(6, dtype=np.float32)[:, None, None] * 10
    groupdq = np.zeros(resultants.shape, np.uint8)
    if case == "all_flagged":
        groupdq[:] = DNU
    elif case == "one_usable_resultant":
        groupdq[1:] = SAT
    else:
        resultants[:] = np.nan
    fit = likely_fit(resultants, table, groupdq)
    assert np.isnan(fit.slope[0, 0]) and np.isnan(fit.err[0, 0]) and np.isnan(fit.chisq[0, 0])
    assert fit.dq[0, 0] & DNU


def test_invalid_gain_flags_the_pixel():
    table = MA_TABLES["IMG_UNEVEN_6"]
    resultants = np.tile(np.arange(6, dtype=np.float32)[:, None, None] * 10, (1, 1, 2))
    gain = np.array([[np.nan, GAIN]], np.float32)
    fit = fit_ramps_likely(resultants, np.zeros(resultants.shape, np.uint8), np.zeros((1, 2), np.uint32),
                           gain, planes((1, 2), READ_NOISE), None, table.read_pattern_lists(),
                           table.frame_time)
    assert fit.dq[0, 0] & (NO_GAIN_VALUE | DNU) == NO_GAIN_VALUE | DNU and np.isnan(fit.slope[0, 0])
    assert fit.dq[0, 1] == 0 and np.isfinite(fit.slope[0, 1])


def test_workers_do_not_change_the_result_and_inputs_are_untouched():
    table = MA_TABLES["IMG_UNEVEN_16"]
    rng = np.random.default_rng(3)
    rates = 10.0 ** rng.uniform(-1, 4, 70 * 40)
    jump_read = rng.integers(2, table.last_read + 1, rates.size)
    resultants = simulate_resultants(rates, table, rng, jump_read=jump_read, jump_charge=2000.0)
    resultants = resultants.reshape(table.nresultants, 70, 40)
    groupdq = np.where(rng.random(resultants.shape) < 0.02, SAT, 0).astype(np.uint8)
    before = resultants.copy(), groupdq.copy()
    one = likely_fit(resultants, table, groupdq, workers=1)
    two = likely_fit(resultants, table, groupdq, workers=2)
    for name in ("slope", "var_poisson", "var_rnoise", "chisq", "dq", "uniform_minus_optimal"):
        np.testing.assert_array_equal(getattr(one, name), getattr(two, name))
    np.testing.assert_array_equal(resultants, before[0])
    np.testing.assert_array_equal(groupdq, before[1])


# ---------------------------------------------------------------- snowball flagging

def test_snowball_in_ramps_is_flagged_and_its_halo_refitted():
    """Without snowball flagging only the block's pixels have jumps; with it every pixel of the
    ellipse but the saturated core is JUMP_DET, the halo's slopes are those of the fit without
    the difference R_2 -> R_3 (``DenseLikelihood``, covariance at the rate its search ended
    with) and every other pixel is fitted as without it, on 1 or 2 threads alike."""
    table = MA_TABLES["IMG_UNEVEN_6"]
    resultants, groupdq, block, ellipse = snowball_ramps(table)
    plain = likely_fit(resultants, table, groupdq)
    flagged = likely_fit(resultants, table, groupdq, snowballs=SnowballParameters())
    np.testing.assert_array_equal((plain.dq & JUMP) != 0, block)
    np.testing.assert_array_equal((flagged.dq & JUMP) != 0, ellipse)
    core = groupdq[-1] != 0
    assert not (flagged.dq & SAT)[~core].any()  # a one-pixel core is not grown

    halo = ellipse & ~block
    outside = ~halo
    for name in ("slope", "var_poisson", "var_rnoise", "chisq", "uniform_minus_optimal"):
        np.testing.assert_array_equal(getattr(flagged, name)[outside], getattr(plain, name)[outside])
    dense = DenseLikelihood(table)
    read_variance = (READ_NOISE * GAIN) ** 2
    for row, col in zip(*np.nonzero(halo), strict=True):
        differences = np.diff(resultants[:, row, col].astype(np.float64) * GAIN) / np.diff(dense.t)
        kept, rate = dense.search(differences, np.ones(differences.size, bool), read_variance)
        kept[SNOWBALL_AT - 1] = False
        expected = dense.fit(differences, kept, read_variance, max(rate, 0.0))
        np.testing.assert_allclose(flagged.slope[row, col] * GAIN, expected[0], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(flagged.var_rnoise[row, col] * GAIN**2, expected[1], rtol=1e-4)
    residual = (flagged.slope[halo] - plain.slope[halo]) * GAIN
    assert residual.mean() < 0  # the halo loses its share of the 20 e (measured: -0.30 e/s)
    two = likely_fit(resultants, table, groupdq, snowballs=SnowballParameters(), workers=2)
    for name in ("slope", "var_poisson", "var_rnoise", "chisq", "dq", "uniform_minus_optimal"):
        np.testing.assert_array_equal(getattr(two, name), getattr(flagged, name))


def test_snowball_flagging_leaves_clean_ramps_as_they_are():
    """Ramps with scattered cosmic rays and saturation but no snowball: bit for bit the same fit."""
    table = MA_TABLES["IMG_UNEVEN_6"]
    rng = np.random.default_rng(21)
    rates = 10.0 ** rng.uniform(-1, 4, 50 * 50)
    jump_read = rng.integers(2, table.last_read + 1, rates.size)
    charge = np.where(rng.random(rates.size) < 0.02, 3000.0, 0.0)
    resultants = simulate_resultants(rates, table, rng, jump_read=jump_read, jump_charge=charge)
    resultants = resultants.reshape(table.nresultants, 50, 50)
    groupdq = np.where(rng.random(resultants.shape) < 0.01, SAT, 0).astype(np.uint8)
    plain = likely_fit(resultants, table, groupdq)
    flagged = likely_fit(resultants, table, groupdq, snowballs=SnowballParameters())
    for name in ("slope", "var_poisson", "var_rnoise", "chisq", "dq", "uniform_minus_optimal"):
        np.testing.assert_array_equal(getattr(flagged, name), getattr(plain, name))
    assert (plain.dq & JUMP).any()
