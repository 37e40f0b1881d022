"""Campaign throughput: exposures per hour and CPU seconds per exposure, ours against romancal 1.1.

The four dithered exposures of the benchmark campaign (``--size``, ``--ma-table``), each from
Level 1 to ``_cal`` with source detection and tweakreg against the campaign's local
catalog, on the same cores (``--cores``, default 2):

- ours: one Snakemake run over the four exposures with the local profile (target ``cal``,
  the workflow's default settings, numba's kernels compiled by an untimed first run);
- romancal: its ExposurePipeline (``ols_cas22``), one process per exposure, ``--cores`` of
  them at a time (``peer.py exposure``, our references, the same catalog).

Each side runs ``--repeat`` times, alternately; the wall is from the first start to the
last end, the CPU seconds those of every process (``/usr/bin/time -v``; Snakemake's
include its jobs'). Results: ``<out>/campaign_<size>_<ma table>.md``::

    python benchmarks/campaign.py --size 4096 --ma-table IMG_UNEVEN_6 --out bench
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "scripts"))

import peer  # noqa: E402
from bench import best, fresh, local_catalog, prepare_run_folder, summary  # noqa: E402
from measure import (  # noqa: E402
    clean_environment,
    machine_description,
    markdown_table,
    run_measured,
    run_workflow,
    simulate_campaign,
)


def run_ours(run: Path, env, cores: int) -> dict[str, float]:
    fresh(run)
    return summary(run_workflow(run, env, cores=cores))


def run_peer(run: Path, exposures: list[Path], env, cores: int) -> dict[str, float]:
    """romancal's ExposurePipeline on every exposure, ``cores`` processes at a time."""
    catalog = local_catalog(run)

    def one(uncal: Path) -> dict[str, float]:
        output = run / "peer" / "campaign" / uncal.name.replace("_uncal", "_cal")
        command = [sys.executable, str(HERE / "peer.py"), "exposure", str(uncal), str(output),
                   "--pool", str(run / "results" / "pool.csv"), "--algorithm", "ols_cas22",
                   "--abs-refcat", str(catalog)]
        return summary(run_measured(command, env, log=output.with_suffix(".log")))

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=cores) as pool:
        runs = list(pool.map(one, exposures))
    return {"wall_s": time.perf_counter() - started, "cpu_s": sum(figures["cpu_s"] for figures in runs),
            "max_rss_gb": max(figures["max_rss_gb"] for figures in runs)}


def throughput_rows(label: str, figures: dict[str, float], exposures: int) -> list:
    return [label, f"{figures['wall_s']:.1f}", f"{3600 * exposures / figures['wall_s']:.0f}",
            f"{figures['cpu_s'] / exposures:.1f}", f"{figures['max_rss_gb']:.2f}"]


def throughput_table(ours: dict[str, float], theirs: dict[str, float], exposures: int) -> str:
    """Our run and romancal's; the last row's exposures per hour is ours over romancal's (the goal)."""
    rows = [throughput_rows("ours (Snakemake)", ours, exposures),
            throughput_rows("romancal ExposurePipeline (ols_cas22), processes side by side", theirs,
                            exposures),
            ["ours/romancal", f"{ours['wall_s'] / theirs['wall_s']:.2f}×",
             f"{theirs['wall_s'] / ours['wall_s']:.2f}×", f"{ours['cpu_s'] / theirs['cpu_s']:.2f}×",
             f"{ours['max_rss_gb'] / theirs['max_rss_gb']:.2f}×"]]
    headers = ["run", "wall (s)", "exposures per hour", "CPU s per exposure", "peak RSS (GB)"]
    return markdown_table(headers, rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--ma-table", default="IMG_UNEVEN_6")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench"))
    parser.add_argument("--skip-warmup", action="store_true",
                        help="no untimed first run: numba's cache (<out>/.numba_cache) is already filled, "
                             "e.g. by bench.py at the same size")
    args = parser.parse_args(argv)

    env = clean_environment()
    env["NUMBA_CACHE_DIR"] = str((args.out / ".numba_cache").resolve())
    sim = (args.out / f"sim_{args.size}_{args.ma_table}").resolve()
    exposures = simulate_campaign(sim, args.size, args.ma_table, env)
    peer_env = peer.configure_environment(sim / "crds_cache", dict(env))
    run = (args.out / f"campaign_{args.size}_{args.ma_table}").resolve()
    prepare_run_folder(sim, run, exposures, "cal")
    if not args.skip_warmup:
        run_ours(run, env, args.cores)  # untimed: numba's cache compiled as on an installation

    ours, theirs = [], []
    for repeat in range(args.repeat):
        ours.append(run_ours(run, env, args.cores))
        print(f"run {repeat + 1}: ours {ours[-1]}", file=sys.stderr)
        theirs.append(run_peer(run, exposures, peer_env, args.cores))
        print(f"run {repeat + 1}: romancal {theirs[-1]}", file=sys.stderr)
    text = (f"# Campaign throughput: {len(exposures)} exposures, {args.size}×{args.size}, "
            f"{args.ma_table}, {args.cores} cores\n\n{machine_description()}\n\nReproduce: `python "
            f"benchmarks/campaign.py --size {args.size} --ma-table {args.ma_table} --repeat {args.repeat}`. "
            f"Fastest of {args.repeat} alternated run(s).\n\n"
            + throughput_table(best(ours), best(theirs), len(exposures)))
    output = args.out / f"campaign_{args.size}_{args.ma_table}.md"
    output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
