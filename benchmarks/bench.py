"""Side-by-side wall time, CPU time and peak memory: our workflow against romancal 1.1, same input.

Exposure level, for each ``--ma-table`` (default 6 and 16 resultants): one simulated
exposure (``--size``) from Level 1 to the calibrated ``_cal`` with source detection and
tweakreg against the campaign's local catalog, ours and romancal's alternately, ``--repeat``
times:

- ours: Snakemake with the local profile (2 cores) at the workflow's default settings
  (target ``cal``), every intermediate file written as configured by default, from an empty
  results folder, numba's kernels already compiled (an untimed first run fills the cache
  named by ``NUMBA_CACHE_DIR``); per job from each rule's ``benchmark:`` table, and where
  each job's time went from the ``romanpipe-timing`` line of its log (:mod:`romanpipe.timing`);
- romancal's ExposurePipeline in one process with ``ramp_fit`` ``ols_cas22`` (like with
  like) and with its default algorithm (``likely``), our reference files, its source_catalog
  and tweakreg against the same catalog file (``peer.py``); where its time went from the
  timestamps of its log.

Then a one-step rerun (``flat_field.include_var_flat`` changed: flat_field and every later
job rerun) against the full run; romancal 1.1's chain: our ``config/romancal-1.1.yaml`` preset
against romancal's ExposurePipeline at its defaults on the same exposure and references, both
to ``_cal``, alternately (``--skip-preset`` leaves it out; ``--skip-documented`` leaves out
the documented chain's exposure level and keeps it); our ``likely`` ramp fit alone
against stcal 1.20's (what romancal 1.1's RampFitStep runs by default) on the same ramp
(``likely_speed.py``); and the mosaic level: our flux → skymatch →
outlier_detection → resample on four dithered ``_cal`` files against romancal's
MosaicPipeline on the same files (outlier_detection at the romancal documentation's grid and scale, like
romancal's; then once more as the workflow configures it); our source_catalog against romancal's
SourceCatalogStep on a _cal of a few thousand stars (``catalog_speed.py``). Every process is timed by
``/usr/bin/time -v``; peak RSS is the largest single process's. Results:
``<out>/bench_<size>.md``::

    python benchmarks/bench.py --size 4096 --ma-table IMG_UNEVEN_6 IMG_UNEVEN_16 --out bench
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "scripts"))

from romanpipe.exposure_types import chain_steps  # noqa: E402
from romanpipe.timing import PHASES, read_timings  # noqa: E402

import catalog_speed  # noqa: E402
import peer  # noqa: E402
from measure import (  # noqa: E402
    clean_environment,
    cpu_seconds,
    documented_outlier_settings,
    machine_description,
    markdown_table,
    run_measured,
    run_workflow,
    simulate_campaign,
    warm_servers_folder,
)

EXPOSURE_CHAIN = ["dq_init", "saturation", "refpix", "linearity", "dark_current", "ramp_fit", "assign_wcs",
                  "flat_field", "photom", "source_detection", "tweakreg"]
# Jobs whose logs carry a romanpipe-timing line: the steps and the _cal product.
TIMED_JOBS = [*EXPOSURE_CHAIN, "cal"]
# The report's jobs of a run to _cal: their benchmark only.
REPORT_JOBS = ["quicklook_cal", "provenance", "benchmarks"]
# The preset's jobs of a run to _cal (romancal 1.1's order; romancal's source_catalog step is
# compared with our source_detection, which feeds tweakreg as it does).
PRESET_JOBS = [*chain_steps("romancal-1.1"), "source_catalog", "cal"]
MOSAIC_CHAIN = ["flux", "skymatch", "outlier_detection", "resample"]
# romancal's step names in its log -> ours (it fits ramps before dark_current, photom before flatfield).
PEER_NAME = {"rampfit": "ramp_fit", "flatfield": "flat_field", "source_catalog": "source_detection"}
RERUN_CONFIG = {"flat_field": {"include_var_flat": False}}
PRESET = HERE.parent / "config" / "romancal-1.1.yaml"
DEFAULT_MA_TABLES = ["IMG_UNEVEN_6", "IMG_UNEVEN_16"]


def read_rule_benchmarks(logs: Path, steps: list[str], warm_folder: Path | None = None
                         ) -> dict[str, dict[str, float]]:
    """Snakemake's per-rule benchmark tables (s, max_rss in MB, cpu_time) -> our figures, summed
    over a rule's jobs; a job run warm with its worker's CPU and memory from the servers' logs
    in ``warm_folder`` (``benchmark_table.py``: Snakemake measures only the client)."""
    from benchmark_table import benchmark_table

    table = benchmark_table(logs / "benchmarks", warm_folder)
    figures = {}
    for step in steps:
        jobs = table[table["rule"] == step]
        if not jobs.empty:
            figures[step] = {"wall_s": float(jobs["s"].sum()), "cpu_s": float(jobs["cpu_time"].sum()),
                             "max_rss_gb": float(jobs["max_rss"].max()) / 1024}
    return figures


def read_job_timings(logs: Path, jobs: list[str]) -> dict[str, dict]:
    """Each job's ``romanpipe-timing`` record (summed over its exposures) from ``logs/<job>/*.log``."""
    timings = {}
    for job in jobs:
        records = [record for path in sorted((logs / job).glob("*.log"))
                   for record in read_timings(path.read_text())]
        if records:
            timings[job] = {clock: {phase: sum(record[clock].get(phase, 0.0) for record in records)
                                    for phase in (*PHASES, "total")} for clock in ("wall", "cpu")}
    return timings


def split_rows(jobs: dict[str, dict], timings: dict[str, dict], total_wall: float) -> list[list[str]]:
    """Where our run's wall time went: per job its phases, ``other`` = the job's benchmark wall
    minus its logged total (shell, interpreter exit); the report's jobs (their wall and CPU
    only); and the rest (Snakemake's start and planning, the pool)."""
    rows, accounted = [], 0.0
    for job in TIMED_JOBS:
        if job not in timings:
            continue
        wall = jobs[job]["wall_s"] if job in jobs else timings[job]["wall"]["total"]
        accounted += wall
        phases = timings[job]["wall"]
        rows.append([job, f"{wall:.1f}", *(f"{phases[phase]:.2f}" for phase in PHASES),
                     f"{wall - phases['total']:.2f}", f"{timings[job]['cpu']['total']:.1f}"])
    for job in REPORT_JOBS:
        if job in jobs:
            accounted += jobs[job]["wall_s"]
            rows.append([job, f"{jobs[job]['wall_s']:.1f}", *[""] * (len(PHASES) + 1),
                         f"{jobs[job]['cpu_s']:.1f}"])
    rows.append(["outside the jobs (Snakemake, the pool)", f"{total_wall - accounted:.1f}",
                 *[""] * (len(PHASES) + 2)])
    return rows


SPLIT_HEADERS = ["job", "wall (s)", "start + imports", "read", "step", "provenance", "write", "other",
                 "CPU (s)"]


def peer_log_split(log_text: str, launched: float, wall: float) -> dict[str, float]:
    """Where romancal's ExposurePipeline process spent its time, from its log's timestamps.

    ``start + imports``: launch to the pipeline's first step; ``read``: the pipeline's start
    to its first step's; each step from its ``running`` to its ``done`` line; ``between
    steps``: the gaps stpipe leaves between them; ``write``: the last step's end to the
    pipeline's (saving the products); ``exit``: the rest of the process's wall.
    """
    events = []
    for line in log_text.splitlines():
        stamp, _, message = line.partition(" - stpipe.step - INFO - ")
        if not message.startswith("Step "):
            continue
        name, _, state = message[len("Step "):].partition(" ")
        if state.startswith("running") or state.startswith("done"):
            moment = datetime.strptime(stamp.strip(), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            events.append((moment, name, state.split()[0]))
    pipeline = [moment for moment, name, _ in events if name == "ExposurePipeline"]
    steps = [(moment, name, state) for moment, name, state in events if name != "ExposurePipeline"]
    split = {"start + imports": pipeline[0] - launched, "read": steps[0][0] - pipeline[0]}
    # A skipped step logs no "done": its time counts as stpipe's, between steps.
    between, previous_end, started = 0.0, None, None
    for moment, name, state in steps:
        if state == "running":
            if previous_end is not None:
                between += moment - previous_end
            previous_end = started = moment
        else:
            split[PEER_NAME.get(name, name)] = moment - started
            previous_end = moment
    split["between steps"] = between
    split["write"] = pipeline[-1] - previous_end
    split["exit"] = launched + wall - pipeline[-1]
    return split


def summary(figures: dict[str, float]) -> dict[str, float]:
    return {"wall_s": figures["wall_s"], "cpu_s": cpu_seconds(figures),
            "max_rss_gb": figures["max_rss_kb"] / 1024**2}


def prepare_run_folder(sim: Path, run: Path, exposures: list[Path], target: str) -> None:
    """A workflow folder reading ``exposures`` of ``sim`` (links), its references and catalogs."""
    (run / "uncal").mkdir(parents=True, exist_ok=True)
    for uncal in exposures:
        link = run / "uncal" / uncal.name
        if not link.exists():
            link.symlink_to(uncal)
    for shared in ("crds_cache", "catalogs"):
        if not (run / shared).exists():
            (run / shared).symlink_to(sim / shared)
    config = yaml.safe_load((sim / "workflow.yaml").read_text())
    config["target"] = target
    # One mosaic of the four exposures, as romancal's MosaicPipeline makes of one association
    # (on sky cells a full detector spans dozens of cells, each its own chain of jobs).
    config["associations"] = {"grouping": "overlap"}
    (run / "workflow.yaml").write_text(yaml.safe_dump(config))


def local_catalog(run: Path) -> Path:
    """The reference catalog file our tweakreg uses (workflow.yaml's ``tweakreg.abs_refcat``)."""
    config = yaml.safe_load((run / "workflow.yaml").read_text())
    return (run / config["tweakreg"]["abs_refcat"]).resolve()


def fresh(run: Path) -> None:
    for generated in ("results", "logs", ".snakemake"):
        shutil.rmtree(run / generated, ignore_errors=True)


def run_ours(run: Path, env, *extra) -> dict[str, float]:
    return summary(run_workflow(run, env, *extra))


def run_peer_pipeline(run: Path, uncal: Path, algorithm: str, env,
                      romancal_default: bool = False) -> tuple[dict[str, float], dict]:
    """romancal's ExposurePipeline to _cal (source catalog, tweakreg on our catalog); its figures
    and where its time went. ``romancal_default``: at romancal 1.1's defaults with every reference
    of the run's pool (a run of our romancal-1.1 preset; ``peer.romancal_default_steps``)."""
    name = "romancal_default" if romancal_default else algorithm
    output = run / "peer" / f"{name}_cal.asdf"
    log = run / "peer" / f"{name}.log"
    command = [sys.executable, str(HERE / "peer.py"), "exposure", str(uncal), str(output), "--pool",
               str(run / "results" / "pool.csv"), "--algorithm", algorithm, "--abs-refcat",
               str(local_catalog(run)), *(["--romancal-default"] if romancal_default else [])]
    launched = time.time()
    figures = summary(run_measured(command, env, log=log))
    return figures, peer_log_split(log.read_text(), launched, figures["wall_s"])


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}×" if theirs else "—"


def cells(figures: dict[str, float] | None) -> list[str]:
    """Wall, CPU and peak RSS of one run as table cells ('—' when not measured)."""
    if not figures:
        return ["—"] * 3
    return [f"{figures['wall_s']:.1f}", f"{figures['cpu_s']:.1f}", f"{figures['max_rss_gb']:.2f}"]


def exposure_table(ours_jobs, peer_split, ours_total, peer_pipelines, steps=EXPOSURE_CHAIN) -> str:
    """Per step of ``steps``: our job (wall, CPU, peak RSS) and romancal's step inside its pipeline
    (wall, from its log); then our whole run against each romancal pipeline run."""
    rows = []
    for step in steps:
        mine, theirs = ours_jobs.get(step), peer_split.get(step)
        rows.append([step, *cells(mine), f"{theirs:.1f}" if theirs is not None else "—",
                     ratio(mine["wall_s"], theirs) if mine and theirs else "—"])
    for label, theirs in peer_pipelines.items():
        rows.append([f"**total** vs {label}", *cells(ours_total),
                     f"{theirs['wall_s']:.1f} (CPU {theirs['cpu_s']:.1f}, {theirs['max_rss_gb']:.2f} GB)",
                     f"{ratio(ours_total['wall_s'], theirs['wall_s'])} "
                     f"(CPU {ratio(ours_total['cpu_s'], theirs['cpu_s'])}, "
                     f"memory {ratio(ours_total['max_rss_gb'], theirs['max_rss_gb'])})"])
    headers = ["step", "ours wall (s)", "ours CPU (s)", "ours peak RSS (GB)", "romancal wall (s)",
               "wall ours/romancal"]
    return markdown_table(headers, rows)


def best(runs: list[dict[str, float]]) -> dict[str, float]:
    """The fastest of repeated runs (the least disturbed by other load), its memory alongside."""
    return min(runs, key=lambda figures: figures["wall_s"])


def exposure_level(args, ma_table: str, env) -> tuple[str, dict[str, float]]:
    """The exposure-level tables of one MA table: ours and romancal alternately, then a rerun."""
    sim = (args.out / f"sim_{args.size}_{ma_table}").resolve()
    exposures = simulate_campaign(sim, args.size, ma_table, env)
    peer_env = peer.configure_environment(sim / "crds_cache", dict(env))
    exposure_run = (args.out / f"bench_{args.size}_{ma_table}" / "exposure").resolve()
    prepare_run_folder(sim, exposure_run, exposures[:1], "cal")
    # The steady state an installation runs in: numba's kernels compiled once (an untimed run).
    fresh(exposure_run)
    run_ours(exposure_run, env)

    algorithms = ["ols_cas22"] + ([] if args.skip_likely else ["likely"])
    ours_runs, peer_runs = [], {algorithm: [] for algorithm in algorithms}
    ours_jobs, ours_timings, peer_split = {}, {}, {}
    for repeat in range(args.repeat):
        fresh(exposure_run)
        ours_runs.append(run_ours(exposure_run, env))
        if ours_runs[-1] is best(ours_runs):
            ours_jobs = read_rule_benchmarks(exposure_run / "logs", [*TIMED_JOBS, *REPORT_JOBS],
                                             warm_servers_folder(exposure_run))
            ours_timings = read_job_timings(exposure_run / "logs", TIMED_JOBS)
        print(f"{ma_table} run {repeat + 1}: ours {ours_runs[-1]}", file=sys.stderr)
        for algorithm in algorithms:
            figures, split = run_peer_pipeline(exposure_run, exposures[0], algorithm, peer_env)
            peer_runs[algorithm].append(figures)
            if algorithm == "ols_cas22" and figures is best(peer_runs[algorithm]):
                peer_split = split
            print(f"{ma_table} run {repeat + 1}: romancal {algorithm} {figures}", file=sys.stderr)

    rerun_config = exposure_run / "rerun.yaml"
    rerun_config.write_text(yaml.safe_dump(RERUN_CONFIG))
    rerun = run_ours(exposure_run, env, "--configfile", str(exposure_run / "workflow.yaml"),
                     str(rerun_config))
    full = best(ours_runs)
    peer_totals = {f"romancal ExposurePipeline ({algorithm})": best(runs)
                   for algorithm, runs in peer_runs.items()}
    peer_best = peer_totals["romancal ExposurePipeline (ols_cas22)"]
    text = [f"\n## Exposure level, {ma_table} (uncal → cal with source detection and tweakreg; ours "
            "through Snakemake, 2 cores, default settings)\n\n",
            exposure_table(ours_jobs, peer_split, full, peer_totals),
            "\n### Where our time goes (fastest run; wall seconds, from each job's log and benchmark)\n\n",
            markdown_table(SPLIT_HEADERS, split_rows(ours_jobs, ours_timings, full["wall_s"])),
            "\n### Where romancal's time goes (ExposurePipeline, ols_cas22, fastest run; from its log)\n\n",
            markdown_table(["phase", "wall (s)"],
                           [[phase, f"{seconds:.2f}"] for phase, seconds in peer_split.items()]
                           + [["total", f"{peer_best['wall_s']:.1f}"]]),
            "\n### One-step rerun (flat_field.include_var_flat changed: flat_field and every later job "
            "rerun)\n\n",
            markdown_table(["run", "wall (s)", "CPU (s)", "peak RSS (GB)", "of the full run"], [
                ["full run", *cells(full), "100 %"],
                ["rerun", *cells(rerun), f"{100 * rerun['wall_s'] / full['wall_s']:.0f} %"]])]
    return "".join(text), full


def likely_fit_level(args, ma_table: str) -> str:
    """Our likely ramp fit against stcal 1.20's, which romancal 1.1's RampFitStep runs by default,
    on the same simulated ramp (``likely_speed.timed_runs``): ours on one thread and on two."""
    import likely_speed

    ours, theirs = likely_speed.timed_runs(args.size, likely_speed.MA_TABLES[ma_table], args.repeat, (1, 2))
    rows = [[f"{workers}", f"{min(times):.1f}", f"{min(theirs):.1f}", ratio(min(times), min(theirs))]
            for workers, times in ours.items()]
    return "".join([
        f"\n## The likely ramp fit alone, {ma_table} ({args.size}² pixels, rates 0.1–10⁴ e/s, 1 % with a "
        "cosmic ray; fastest of the alternated runs; `benchmarks/likely_speed.py`)\n\n",
        markdown_table(["our threads", "ours (s)", "romancal 1.1 / stcal 1.20 likely, 1 core (s)",
                        "ours/romancal"], rows)])


def preset_level(args, ma_table: str, env) -> str:
    """Our romancal-1.1 preset (``config/romancal-1.1.yaml``) against romancal 1.1's default
    ExposurePipeline on one exposure, uncal → cal with source detection and tweakreg, alternately;
    per step our jobs' figures against romancal's steps, and where romancal's time goes (issue 24's
    goals: wall and memory ≤ 0.5× romancal's)."""
    sim = (args.out / f"sim_{args.size}_{ma_table}").resolve()
    exposures = simulate_campaign(sim, args.size, ma_table, env)
    peer_env = peer.configure_environment(sim / "crds_cache", dict(env))
    run = (args.out / f"bench_{args.size}_{ma_table}" / "preset").resolve()
    prepare_run_folder(sim, run, exposures[:1], "cal")
    preset = ["--configfile", str(run / "workflow.yaml"), str(PRESET)]
    fresh(run)
    run_ours(run, env, *preset)  # numba's kernels compiled, as for the documented chain
    ours_runs, peer_runs, jobs, peer_split = [], [], {}, {}
    for repeat in range(args.repeat):
        fresh(run)
        ours_runs.append(run_ours(run, env, *preset))
        if ours_runs[-1] is best(ours_runs):
            jobs = read_rule_benchmarks(run / "logs", [*PRESET_JOBS, *REPORT_JOBS], warm_servers_folder(run))
        figures, split = run_peer_pipeline(run, exposures[0], "likely", peer_env, romancal_default=True)
        peer_runs.append(figures)
        if figures is best(peer_runs):
            peer_split = split
        print(f"{ma_table} preset run {repeat + 1}: ours {ours_runs[-1]}, romancal {peer_runs[-1]}",
              file=sys.stderr)
    ours, theirs = best(ours_runs), best(peer_runs)
    label = ("romancal 1.1 ExposurePipeline (defaults: likely, dark_decay, wfi18_transient, "
             "read-by-read linearity)")
    return "".join([
        f"\n## romancal 1.1's chain, {ma_table} (ours: config/romancal-1.1.yaml through Snakemake, 2 cores; "
        "romancal 1.1's ExposurePipeline at its defaults; same exposure and references, uncal → cal with "
        "source detection and tweakreg; issue 24's goal: ours ≤ 0.5× in wall time and memory)\n\n",
        exposure_table(jobs, peer_split, ours, {label: theirs}, steps=[*PRESET_JOBS, *REPORT_JOBS]),
        "\n### Where romancal's time goes (ExposurePipeline at its defaults, fastest run; from its log)\n\n",
        markdown_table(["phase", "wall (s)"],
                       [[phase, f"{seconds:.2f}"] for phase, seconds in peer_split.items()]
                       + [["total", f"{theirs['wall_s']:.1f}"]])])


def mosaic_level(args, ma_table: str, env) -> str:
    """Our mosaic chain on four dithered _cal files against romancal's MosaicPipeline."""
    sim = (args.out / f"sim_{args.size}_{ma_table}").resolve()
    exposures = simulate_campaign(sim, args.size, ma_table, env)
    peer_env = peer.configure_environment(sim / "crds_cache", dict(env))
    mosaic_run = (args.out / f"bench_{args.size}_{ma_table}" / "mosaic").resolve()
    prepare_run_folder(sim, mosaic_run, exposures, "i2d")
    like_romancal = documented_outlier_settings(mosaic_run)
    run_ours(mosaic_run, env, *like_romancal)
    # Only the mosaic part reruns once its products are gone (the config stays the same).
    for generated in ("results/mosaics", "results/associations", "logs/benchmarks/flux",
                      "logs/benchmarks/skymatch", "logs/benchmarks/outlier_detection",
                      "logs/benchmarks/resample"):
        shutil.rmtree(mosaic_run / generated, ignore_errors=True)
    (mosaic_run / "results" / "associations.csv").unlink(missing_ok=True)
    ours_mosaic = run_ours(mosaic_run, env, *like_romancal)
    ours_mosaic_steps = read_rule_benchmarks(mosaic_run / "logs", MOSAIC_CHAIN,
                                             warm_servers_folder(mosaic_run))
    asn = cal_association(mosaic_run)
    peer_mosaic = summary(run_measured(
        [sys.executable, str(HERE / "peer.py"), "mosaic", str(asn), str(mosaic_run / "peer" / "i2d.asdf")],
        peer_env, log=mosaic_run / "peer" / "mosaic.log"))
    # What operators run: the workflow configuration's outlier_detection (its finer median
    # grid) changes its parameters, so it and resample rerun.
    run_ours(mosaic_run, env)
    configured_outliers = read_rule_benchmarks(mosaic_run / "logs", ["outlier_detection"],
                                               warm_servers_folder(mosaic_run))["outlier_detection"]
    return "".join([
        f"\n## Mosaic level, {ma_table} (four dithered _cal files → _i2d)\n\n",
        markdown_table(["run", "wall (s)", "CPU (s)", "peak RSS (GB)"], [
            *[[f"ours: {step}", *cells(figures)] for step, figures in ours_mosaic_steps.items()],
            ["ours: outlier_detection, workflow configuration (median at half the pixel scale)",
             *cells(configured_outliers)],
            ["ours total (Snakemake: association, flux, skymatch, outlier_detection, resample)",
             *cells(ours_mosaic)],
            ["romancal MosaicPipeline (flux, skymatch, outlier_detection, resample)", *cells(peer_mosaic)],
            ["ours/romancal", ratio(ours_mosaic["wall_s"], peer_mosaic["wall_s"]), "",
             ratio(ours_mosaic["max_rss_gb"], peer_mosaic["max_rss_gb"])]])])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4096, help="readout rows = columns (4096: full detector)")
    parser.add_argument("--ma-table", nargs="+", default=DEFAULT_MA_TABLES)
    parser.add_argument("--out", type=Path, default=Path("bench"))
    parser.add_argument("--repeat", type=int, default=1, help="alternate ours/romancal this many times")
    parser.add_argument("--skip-likely", action="store_true",
                        help="leave out romancal's default ramp fit (its pipeline and the likely-fit rows)")
    parser.add_argument("--skip-mosaic", action="store_true", help="leave out the mosaic level")
    parser.add_argument("--skip-catalog", action="store_true", help="leave out the source catalog")
    parser.add_argument("--catalog-stars", type=int, default=3000, help="stars on the source catalog's _cal")
    parser.add_argument("--skip-preset", action="store_true",
                        help="leave out romancal 1.1's chain (our preset against romancal's defaults)")
    parser.add_argument("--skip-documented", action="store_true",
                        help="leave out the documented chain's exposure level (ours against romancal's "
                             "ExposurePipeline, the one-step rerun)")
    args = parser.parse_args(argv)

    env = clean_environment()
    env["NUMBA_CACHE_DIR"] = str((args.out / ".numba_cache").resolve())
    sections = [] if args.skip_documented else [exposure_level(args, ma_table, env)[0]
                                                for ma_table in args.ma_table]
    if not args.skip_preset:
        sections += [preset_level(args, ma_table, env) for ma_table in args.ma_table]
    if not args.skip_likely:
        sections += [likely_fit_level(args, ma_table) for ma_table in args.ma_table]
    if not args.skip_mosaic:
        sections.append(mosaic_level(args, args.ma_table[0], env))
    if not args.skip_catalog:
        stars, repeat = args.catalog_stars, args.repeat
        sections.append(catalog_speed.catalog_table(args.out, args.size, stars, repeat, env))
    text = [f"# Benchmark: {args.size}×{args.size} readout, {', '.join(args.ma_table)}\n\n",
            f"{machine_description()}\n\n",
            f"Reproduce: `python benchmarks/bench.py --size {args.size} --ma-table {' '.join(args.ma_table)} "
            f"--repeat {args.repeat}`. Fastest of {args.repeat} alternated run(s).\n", *sections]
    output = args.out / f"bench_{args.size}.md"
    output.write_text("".join(text))
    print("".join(text))
    return 0


def cal_association(run: Path) -> Path:
    """Our association of the four exposures with their _cal products as members."""
    from romanpipe.association import asn_from_list, write_association

    cals = sorted((run / "results" / "exposures").glob("*_cal.asdf"))
    tree = asn_from_list([str(path) for path in cals], product_name="bench_mosaic")
    return write_association(tree, run / "peer" / "bench_mosaic_asn.json")


if __name__ == "__main__":
    sys.exit(main())
