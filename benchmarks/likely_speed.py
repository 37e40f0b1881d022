"""Time our likely ramp fit against stcal 1.20's (what romancal 1.1's RampFitStep runs) on one ramp.

A full detector by default: 4096 x 4096 pixels (ours fits the 4088^2 science pixels, as
the step does; stcal the whole frame, as romancal passes it), rates 0.1-10^4 e/s,
Gaussian noise of the right size, 1 % of the pixels with a cosmic ray. Runs alternate,
each timed on its own; the machine's load shows as the spread. Not a test: speed is
never asserted. Needs the peer extra. ``make bench`` shows the same comparison
(``timed_runs``) for each of its MA tables.

    python benchmarks/likely_speed.py [--size 4096] [--ma-table IMG_UNEVEN_6] [--repeat 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from romanpipe import dqflags  # noqa: E402
from romanpipe.detector import BORDER  # noqa: E402

from rampfit_kernels.likely import fit_ramps_likely  # noqa: E402
from rampfit_kernels.readout import resultant_times  # noqa: E402
from wfisim.matables import MA_TABLES  # noqa: E402

GAIN, READ_NOISE = 2.0, 6.0  # e/DN, DN per read


def simulated_ramp(size: int, table, seed: int = 1) -> np.ndarray:
    """(nresultants, size, size) float32 DN: ideal ramps with resultant-level noise, 1 % with a jump."""
    rng = np.random.default_rng(seed)
    times = resultant_times(table.read_pattern_lists(), table.frame_time)
    rates = (10.0 ** rng.uniform(-1, 4, (size, size))).astype(np.float32)
    jump_at = np.where(rng.random((size, size)) < 0.01, rng.integers(1, table.nresultants, (size, size)), 99)
    ramp = np.empty((table.nresultants, size, size), np.float32)
    columns = zip(times.mean_time, times.poisson_factor, times.read_count, strict=True)
    for k, (t, tau, n) in enumerate(columns):
        noise = np.sqrt(rates * tau + (READ_NOISE * GAIN) ** 2 / n, dtype=np.float32)
        ramp[k] = (rates * t + noise * rng.standard_normal((size, size), np.float32)
                   + np.where(jump_at <= k, 2000.0, 0.0)) / GAIN
    return ramp


def time_ours(ramp, table, workers: int) -> float:
    inner = np.s_[:, BORDER:-BORDER, BORDER:-BORDER]
    science = ramp[inner]
    shape = science.shape[1:]
    start = time.perf_counter()
    fit_ramps_likely(science, np.zeros(science.shape, np.uint8), np.zeros(shape, np.uint32),
                     np.full(shape, GAIN, np.float32), np.full(shape, READ_NOISE, np.float32), None,
                     table.read_pattern_lists(), table.frame_time, workers=workers)
    return time.perf_counter() - start


def time_stcal(ramp, table) -> float:
    from stcal.ramp_fitting.likely_fit import likely_ramp_fit
    from stcal.ramp_fitting.ramp_fit_class import RampData

    shape = ramp.shape[1:]
    data = RampData()
    data.set_arrays(data=ramp[None], groupdq=np.zeros((1, *ramp.shape), np.uint8),
                    pixeldq=np.zeros(shape, np.uint32), average_dark_current=np.zeros(shape, np.float32))
    data.set_meta(name="WFI", frame_time=table.frame_time, group_time=table.frame_time, groupgap=0, nframes=1)
    names = ("DO_NOT_USE", "SATURATED", "JUMP_DET", "NO_GAIN_VALUE", "UNRELIABLE_SLOPE", "PERSISTENCE")
    data.set_dqflags({name: int(dqflags.pixel[name]) for name in names})
    data.read_pattern = [[read * table.frame_time for read in reads] for reads in table.read_pattern]
    data.rejection_threshold = 4.5  # what romancal 1.1 passes
    data.zeroframe = None
    start = time.perf_counter()
    # romancal passes the CDS read noise, sqrt(2) x that of one read.
    likely_ramp_fit(data, np.full(shape, READ_NOISE * np.sqrt(2), np.float32),
                    np.full(shape, GAIN, np.float32))
    return time.perf_counter() - start


def timed_runs(size: int, table, repeat: int, workers=(1,)) -> tuple[dict[int, list[float]], list[float]]:
    """Seconds of ``repeat`` alternated fits of one simulated ramp: ours on each number of threads
    in ``workers`` (by that number), stcal's; numba's compilation outside the timing."""
    ramp = simulated_ramp(size, table)
    time_ours(ramp[:, :64, :64], table, 1)  # compile (or load numba's cache) outside the timing
    ours, theirs = {count: [] for count in workers}, []
    for _ in range(repeat):
        for count in workers:
            ours[count].append(time_ours(ramp, table, count))
        theirs.append(time_stcal(ramp, table))
        timings = ", ".join(f"{times[-1]:.1f} s on {count} thread(s)" for count, times in ours.items())
        print(f"likely fit: ours {timings}, stcal {theirs[-1]:.1f} s", file=sys.stderr, flush=True)
    return ours, theirs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--ma-table", default="IMG_UNEVEN_6", choices=sorted(MA_TABLES))
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="our threads (romancal's default is one core)")
    args = parser.parse_args(argv)
    table = MA_TABLES[args.ma_table]
    ours, theirs = timed_runs(args.size, table, args.repeat, (args.workers,))
    ours = ours[args.workers]
    print(f"{args.size}^2 x {table.nresultants} ({args.ma_table}): ours {min(ours):.1f}-{max(ours):.1f} s "
          f"({args.workers} thread(s)), stcal likely {min(theirs):.1f}-{max(theirs):.1f} s; "
          f"ratio {min(ours) / max(theirs):.3f}-{max(ours) / min(theirs):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
