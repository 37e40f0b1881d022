"""Ideal ramps for the ramp_fit tests (Poisson charge per read, Gaussian read noise, no
digitisation, clipping or full well) and the fits with uniform gain and read noise."""

import numpy as np

from rampfit_kernels.readout import resultant_times

DNU, SAT, JUMP, AD_FLOOR, NO_GAIN_VALUE = 1, 2, 4, 64, 524288
GAIN = 2.0  # e/DN
READ_NOISE = 6.0  # DN per read
UNEVEN_TABLES = ("IMG_UNEVEN_6", "IMG_UNEVEN_16")
FLUX_DECADES = (-1, 0, 1, 2, 3)  # bins [10^d, 10^(d+1)) e/s: 0.1 to 10^4 e/s


def simulate_resultants(rates, table, rng, *, jump_read=None, jump_charge=None):
    """(nresultants, 1, npix) resultants in DN of ideal pixels collecting ``rates`` e/s.

    A jump adds ``jump_charge`` electrons to every read from ``jump_read`` on.
    """
    reads = np.arange(1, table.last_read + 1)[:, None]
    charge = np.cumsum(rng.poisson(rates * table.frame_time, size=(reads.size, rates.size)), axis=0,
                       dtype=np.float64)
    if jump_read is not None:
        charge += np.where(reads >= jump_read, jump_charge, 0.0)
    resultants = np.empty((table.nresultants, 1, rates.size), dtype=np.float32)
    for index, kept in enumerate(table.read_pattern):
        signal = charge[np.asarray(kept) - 1] / GAIN
        resultants[index, 0] = (signal + rng.normal(0.0, READ_NOISE, signal.shape)).mean(axis=0)
    return resultants


def planes(shape, value):
    return np.full(shape, value, dtype=np.float32)


def uniform_fit(kernel, resultants, table, groupdq=None, **kwargs):
    """``kernel`` (a fit_ramps_* function) with uniform gain and read noise, no PIXELDQ, no dark
    unless given."""
    shape = resultants.shape[1:]
    groupdq = np.zeros(resultants.shape, np.uint8) if groupdq is None else groupdq
    return kernel(resultants, groupdq, np.zeros(shape, np.uint32), planes(shape, GAIN),
                  planes(shape, READ_NOISE), kwargs.pop("dark_rate", None),
                  [list(r) for r in table.read_pattern], table.frame_time, **kwargs)


def random_jump_ramps(table, rng, decade, jump_noise, sigmas):
    """40,000 ramps at rates in [10^decade, 10^(decade+1)) e/s, each with one jump of ``sigmas`` x
    ``jump_noise(rates, table, jump_read)`` at a random read after R_0 (a jump before R_1 is
    part of the pedestal): (rates, jump_read, charge, resultants)."""
    rates = 10.0 ** rng.uniform(decade, decade + 1, 40_000)
    jump_read = rng.integers(table.read_pattern[0][-1] + 1, table.last_read + 1, rates.size)
    charge = sigmas * jump_noise(rates, table, jump_read)
    resultants = simulate_resultants(rates, table, rng, jump_read=jump_read, jump_charge=charge)
    return rates, jump_read, charge, resultants


def bracketing_noise(rates, table, jump_read):
    """The "sigma" of a jump at ``jump_read`` (e): the noise of the resultant difference holding all of it.

    The jump lands in resultant k, and R_k holds all of it or a part, depending on the read;
    R_{k+1} - R_{k-1} (R_k - R_{k-1} for the last resultant) holds all of it wherever it
    lands. Its noise at the pixel's true rate F: sqrt(sigma^2 (1/N_{k-1} + 1/N_{k+1}) +
    F (tau_{k-1} + tau_{k+1} - 2 t_{k-1})), the read noise sigma in electrons.
    """
    times = resultant_times(table.read_pattern_lists(), table.frame_time)
    last_reads = np.array([reads[-1] for reads in table.read_pattern])
    k = np.searchsorted(last_reads, jump_read)
    before, after = np.maximum(k - 1, 0), np.minimum(k + 1, table.nresultants - 1)
    n, tau, t = times.read_count, times.poisson_factor, times.mean_time
    read_variance = (READ_NOISE * GAIN) ** 2 * (1 / n[before] + 1 / n[after])
    return np.sqrt(read_variance + rates * (tau[before] + tau[after] - 2 * t[before]))


def resultant_covariance(rates, table):
    """(npix, n, n) covariance of the resultants in e^2: sigma^2/N_i + F tau_i, F t_min off the diagonal."""
    times = resultant_times(table.read_pattern_lists(), table.frame_time)
    covariance = rates[:, None, None] * np.minimum.outer(times.mean_time, times.mean_time)
    diagonal = np.arange(table.nresultants)
    covariance[:, diagonal, diagonal] = rates[:, None] * times.poisson_factor + (READ_NOISE * GAIN) ** 2 / (
        times.read_count)
    return covariance


def jump_measurement_error(rates, table, jump_read):
    """The error (e) with which a ramp measures a jump at ``jump_read``, knowing where it is.

    Generalised least squares of a step of known shape g on top of a free pedestal and
    slope: the step's error is 1 / sqrt(g' P g), P = C^-1 - C^-1 X (X' C^-1 X)^-1 X' C^-1
    with X = [1, t]; g_i is the fraction of the reads of R_i at or after ``jump_read``.
    """
    times = resultant_times(table.read_pattern_lists(), table.frame_time)
    inverse = np.linalg.inv(resultant_covariance(rates, table))
    design = np.stack([np.ones(table.nresultants), times.mean_time], axis=1)
    projected = inverse @ design
    nuisance = projected @ np.linalg.inv(design.T @ projected) @ projected.transpose(0, 2, 1)
    share_after = np.array([[np.mean(np.asarray(reads) >= read) for reads in table.read_pattern]
                            for read in range(table.last_read + 1)])
    shape = share_after[jump_read]
    return 1.0 / np.sqrt(np.einsum("pi,pij,pj->p", shape, inverse - nuisance, shape))


SNOWBALL_SIZE, SNOWBALL_AT = 40, 3  # the image, and the resultant where the snowball lands


def snowball_ramps(table, seed=8):
    """A 1 e/s sky with a snowball at the first read of R_3 (IMG_UNEVEN_6): pixel (20, 20) saturates
    from R_3 on (SATURATED), the rest of the 11 x 5 block of rows 15-25 and columns 18-22 gets
    5000 e, and the pixels around it inside the ellipse snowball flagging draws (test_snowballs'
    hand-checked geometry: d_row^2 + 4 d_col^2 < 64) get 20 e, too little for the search.

    Returns (resultants, groupdq, block, ellipse).
    """
    rows, cols = np.mgrid[:SNOWBALL_SIZE, :SNOWBALL_SIZE] - 20
    block = (np.abs(rows) <= 5) & (np.abs(cols) <= 2)
    ellipse = rows**2 + 4 * cols**2 < 64
    charge = np.where(block, 5000.0, np.where(ellipse, 20.0, 0.0)).ravel()
    rng = np.random.default_rng(seed)
    resultants = simulate_resultants(np.full(charge.size, 1.0), table, rng,
                                     jump_read=table.read_pattern[SNOWBALL_AT][0], jump_charge=charge)
    resultants = resultants.reshape(table.nresultants, SNOWBALL_SIZE, SNOWBALL_SIZE)
    groupdq = np.zeros(resultants.shape, np.uint8)
    groupdq[SNOWBALL_AT:, 20, 20] = SAT
    resultants[SNOWBALL_AT:, 20, 20] = 65535.0 / GAIN
    return resultants, groupdq, block & (groupdq[-1] == 0), ellipse & (groupdq[-1] == 0)
