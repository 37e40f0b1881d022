"""How long Snakemake takes to plan a campaign: a dry run over a synthetic pool.

A tiny simulated campaign provides the CRDS cache and reference files; the pool table is then
replaced by one of ``exposures x detectors`` rows (each exposure's Level 1 file an empty
placeholder: a dry run only checks that inputs exist), as if the pool checkpoint had read
them. ``snakemake -n`` then plans every exposure's chain to ``_cal`` (the associations, and
so the mosaics, wait for the _cal products in a real run). The wall time, CPU time and peak
memory of that dry run are measured with ``/usr/bin/time -v`` (public tools only), and the
DAG construction within it from the times Snakemake's log lines arrive. The same number of
jobs then goes through the plainest workflow Snakemake can run (a chain of rules with no
functions): the floor under any one-job-per-step plan.

``--sharded`` measures the campaign run in shards instead (``scripts/shards.py``, one shard per
visit of ``--exposures-per-visit`` exposures), never planned as one DAG: how long ``shards.py
plan`` takes over the whole campaign, then how long a shard's run takes to its first job (its
pool), and, with its pool replaced by a synthetic one, to its first step (every job of the shard
then planned), each with its peak memory: the run is stopped (SIGINT) once the job starts.
``--cells`` measures the Level 3 stage alone: a dry run over a synthetic association index of
that many sky cells (each with ``--members-per-cell`` placeholder ``_cal`` products); with
``--cells-per-group`` it is planned in groups of cells, as ``shards.py level3`` runs it: the
association checkpoint's run (up to date), then the first group's run to its first job.

    python benchmarks/dag_scale.py --exposures 1000 --detectors 18 --out bench/dag
    python benchmarks/dag_scale.py --sharded --exposures 10000 --detectors 18 --out bench/dag
    python benchmarks/dag_scale.py --cells 10000 --out bench/dag
    python benchmarks/dag_scale.py --cells 10000 --cells-per-group 1000 --out bench/dag
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from romanpipe.files import atomic_path  # noqa: E402

from measure import cpu_seconds, markdown_table, one_exposure_campaign, parse_time_v  # noqa: E402

from shards import GROUPS_DIR, SHARDS_DIR, Campaign  # noqa: E402

DETECTORS = [f"WFI{number:02d}" for number in range(1, 19)]


def workflow_arguments(out: Path) -> list[str]:
    """Snakemake arguments running our workflow on the campaign folder ``out``."""
    return ["--snakefile", str(ROOT / "Snakefile"), "--directory", str(out), "--configfile",
            str(out / "workflow.yaml")]


def pool_template(out: Path) -> dict:
    """A fresh campaign folder (one tiny simulated exposure, its CRDS cache); its pool row, the
    template of every synthetic row. The simulated Level 1 file is removed."""
    one_exposure_campaign(out, size=32)
    subprocess.run(pool_command(out), check=True, capture_output=True)
    template = pd.read_csv(out / "results" / "pool.csv").iloc[0].to_dict()
    for path in (out / "uncal").glob("*_uncal.asdf"):
        path.unlink()
    return template


def pool_command(out: Path, *arguments: str) -> list[str]:
    """Run only the pool (``arguments``: a shard's own Snakemake arguments instead of the campaign's)."""
    return [*(arguments or [sys.executable, "-m", "snakemake", *workflow_arguments(out)]), "--cores", "1",
            "--until", "pool", "--quiet"]


def placeholders(out: Path, template: dict, exposures: int, detectors: int, per_visit: int) -> list[dict]:
    """Empty Level 1 files (a plan only checks that inputs exist) of ``exposures`` exposures in
    visits of ``per_visit``; their synthetic pool rows."""
    rows = []
    for number in range(exposures):
        visit = number // per_visit
        # 3 digits each: observations of up to 100 visits
        prefix = f"r0000101001001{visit // 100 + 1:03d}{visit % 100 + 1:03d}"
        for detector in DETECTORS[:detectors]:
            exposure = f"{prefix}_01101_{number % per_visit + 1:04d}_{detector}"
            path = f"uncal/{exposure}_uncal.asdf"
            (out / path).touch()
            rows.append({**template, "exposure": exposure, "path": path, "detector": detector,
                         "exposure_number": number % per_visit + 1})
    return rows


def replace_pool(results: Path, rows: list[dict]) -> None:
    """Put a synthetic pool table (and an empty quarantine) in place of the pool's."""
    with atomic_path(results / "pool.csv") as staging:
        pd.DataFrame(rows).to_csv(staging, index=False)
    quarantine = results / "quarantine.csv"
    with atomic_path(quarantine) as staging:
        pd.read_csv(quarantine).iloc[:0].to_csv(staging, index=False)


def synthetic_campaign(out: Path, exposures: int, detectors: int) -> int:
    """A campaign folder whose pool lists ``exposures x detectors`` placeholders; returns the count."""
    rows = placeholders(out, pool_template(out), exposures, detectors, per_visit=exposures)
    # The pool runs over the placeholders (and rejects them all: they are empty), so that
    # Snakemake records this set of inputs; its table is then replaced by the synthetic one.
    subprocess.run(pool_command(out), check=True, capture_output=True)
    replace_pool(out / "results", rows)
    return len(rows)


# The same number of jobs through the plainest Snakemake workflow: a chain of as many rules
# as ours has per detector-exposure, with no input, parameter or resource functions. What
# Snakemake itself costs per job; no workflow of one job per step and file can plan faster.
FLOOR_SNAKEFILE = """
STEPS = [f"step{number:02d}" for number in range(config["steps"])]
rule all:
    input: expand("out/{unit}_{step}.txt", unit=range(config["units"]), step=STEPS[-1])
rule step00:
    input: "in/{unit}.txt"
    output: "out/{unit}_step00.txt"
    shell: "cp {input} {output}"
for previous, step in zip(STEPS[:-1], STEPS[1:]):
    rule:
        name: step
        input: f"out/{{unit}}_{previous}.txt"
        output: f"out/{{unit}}_{step}.txt"
        shell: "cp {input} {output}"
"""


def floor_workflow(out: Path, units: int, steps: int) -> list[str]:
    """A folder with the floor workflow and ``units`` input files; returns its dry-run arguments."""
    if out.exists():
        shutil.rmtree(out)
    (out / "in").mkdir(parents=True)
    (out / "Snakefile").write_text(FLOOR_SNAKEFILE)
    for unit in range(units):
        (out / "in" / f"{unit}.txt").touch()
    return ["--snakefile", str(out / "Snakefile"), "--directory", str(out),
            "--config", f"units={units}", f"steps={steps}"]




def dry_run(arguments: list[str], log: Path) -> tuple[dict[str, float], int]:
    """/usr/bin/time -v figures of ``snakemake -n``, the seconds it spent building the DAG, and
    the number of jobs it planned.

    The DAG is built between Snakemake's "Building DAG of jobs..." and its first "Job stats:"
    (the rest of a dry run lists every job); the log is read as it comes, unbuffered.
    """
    timing = log.with_suffix(".time")
    command = ["/usr/bin/time", "-v", "-o", str(timing), sys.executable, "-m", "snakemake", *arguments,
               "--cores", "2", "-n", "--quiet", "rules"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRDS_")} | {"PYTHONUNBUFFERED": "1"}
    marks = {}
    lines = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env) as process:
        for line in process.stdout:
            lines.append(line)
            for mark in ("Building DAG of jobs", "Job stats:"):
                if line.startswith(mark):
                    marks.setdefault(mark, time.monotonic())
    log.write_text("".join(lines))
    if process.returncode != 0 or len(marks) != 2:
        raise RuntimeError(f"snakemake -n failed (log: {log}):\n{''.join(lines[-30:])}")
    jobs = 0
    for line in lines:
        fields = line.split()
        if len(fields) == 2 and fields[0] == "total" and fields[1].isdigit():
            jobs = int(fields[1])
    figures = parse_time_v(timing.read_text())
    figures["dag_s"] = marks["Job stats:"] - marks["Building DAG of jobs"]
    return figures, jobs


BENCH_ENV = {"PYTHONUNBUFFERED": "1", "ROMANPIPE_WARM_DIR": ""}  # no warm-start servers to stop
JOB_START = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CRDS_")} | BENCH_ENV


def until_first_job(command: list[str], log: Path) -> tuple[dict[str, float], str, int]:
    """Run ``command`` (a workflow run) until Snakemake starts its first job, then stop it
    (SIGINT to its process group, which /usr/bin/time ignores): /usr/bin/time -v figures with
    ``first_job_s`` (from the start), the job's rule and the jobs the run had planned."""
    timing = log.with_suffix(".time")
    start = time.monotonic()
    lines, first, rule = [], None, ""
    command = ["/usr/bin/time", "-v", "-o", str(timing), *command]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=clean_env(), start_new_session=True) as process:
        for line in process.stdout:
            lines.append(line)
            started = JOB_START.match(line.strip())
            if started and first is None:
                first, rule = time.monotonic() - start, started[1]
                os.killpg(process.pid, signal.SIGINT)
    log.write_text("".join(lines))
    if first is None:
        raise RuntimeError(f"no job started (log: {log}):\n{''.join(lines[-30:])}")
    totals = [int(m[1]) for m in re.finditer(r"^total\s+(\d+)\s*$", "".join(lines), re.MULTILINE)]
    figures = parse_time_v(timing.read_text())
    figures["first_job_s"] = first
    return figures, rule, totals[0] if totals else 0


def sharded_figures(out: Path, exposures: int, detectors: int, per_visit: int) -> list[list]:
    """Rows: planning the shards, a shard's run to its first job (its pool), and to its first step."""
    template = pool_template(out)
    rows = placeholders(out, template, exposures, detectors, per_visit)
    (out / "results" / "pool.csv").unlink()  # the template's: this campaign has only its shards' pools
    driver = [sys.executable, str(ROOT / "scripts" / "shards.py")]
    where = ["--directory", str(out), "--configfile", str(out / "workflow.yaml")]
    timing = out.parent / "plan.time"
    subprocess.run(["/usr/bin/time", "-v", "-o", str(timing), *driver, "plan", *where], check=True,
                   capture_output=True, env=clean_env())
    plan = parse_time_v(timing.read_text())
    campaign = Campaign(out, [out / "workflow.yaml"], [])
    first, second = campaign.shards()[:2]
    size = f"{exposures} x {detectors} = {len(rows)}"
    shard_files = sum(row["path"].startswith(f"uncal/{first}") for row in rows)
    table = [["`shards.py plan`: every shard's exposure list", size, len(campaign.shards()), "",
              plan["wall_s"], cpu_seconds(plan), plan["max_rss_kb"] / 2**20]]
    # A shard as it first runs: its pool is the first job.
    figures, rule, jobs = until_first_job([*driver, "run", "--shard", second, *where, "--", "--cores", "1"],
                                          out.parent / "shard_pool.log")
    assert rule == "pool", rule
    table.append([f"a shard's run to its first job (`{rule}`)", f"{shard_files} in the shard", 1, jobs,
                  figures["first_job_s"], cpu_seconds(figures), figures["max_rss_kb"] / 2**20])
    # A shard whose pool has run: every step of its exposures is planned before the first starts.
    subprocess.run(pool_command(out, *campaign.shard_command(first)), check=True, capture_output=True,
                   env=clean_env())
    replace_pool(campaign.shard_dir(first) / "results", [row for row in rows
                                                         if row["path"].startswith(f"uncal/{first}")])
    figures, rule, jobs = until_first_job([*driver, "run", "--shard", first, *where, "--", "--cores", "1"],
                                          out.parent / "shard_steps.log")
    table.append([f"a shard's run after its pool to its first step (`{rule}`)", f"{shard_files} in the shard",
                  1, jobs, figures["first_job_s"], cpu_seconds(figures), figures["max_rss_kb"] / 2**20])
    return table


def skycell_stage(out: Path, cells: int, members_per_cell: int) -> list[str]:
    """A Level 3 stage of ``cells`` sky cells over placeholder _cal products (each image in
    ``members_per_cell`` / 2 cells, as an image across a cell corner is); its dry-run arguments."""
    one_exposure_campaign(out, size=32)
    exposures = out / SHARDS_DIR / "synthetic" / "results" / "exposures"
    exposures.mkdir(parents=True)
    images = cells * 2
    cal = [f"{SHARDS_DIR}/synthetic/results/exposures/r0000101001001001001_01101_{n:06d}_cal.asdf"
           for n in range(images)]
    for path in cal:
        (out / path).touch()
    (out / "cal.csv").write_text("path\n" + "".join(f"{path}\n" for path in cal))
    (out / "level3.yaml").write_text(yaml.safe_dump({"inputs": {"cal_list": "cal.csv"}}))
    rows = []
    for cell in range(cells):
        name = f"r00001_p_full_{cell // 1000:03d}p00x{cell % 1000:03d}y000_f158"
        members = [cal[(2 * cell + k) % images] for k in range(members_per_cell)]
        tree = {"asn_type": "image", "asn_id": "a3001", "target": name.split("_")[3], "products": [
            {"name": name, "members": [{"expname": f"../../{m}", "exptype": "science"} for m in members]}]}
        rows.append({"asn": name, "product": name, "tree": json.dumps(tree)})
    # Written after the _cal placeholders: the checkpoint is up to date.
    (out / "results").mkdir()
    pd.DataFrame(rows).to_csv(out / "results" / "associations.csv", index=False)
    return [*workflow_arguments(out), str(out / "level3.yaml")]


def grouped_skycell_figures(out: Path, cells: int, members_per_cell: int, cells_per_group: int) -> list[list]:
    """Rows: the Level 3 stage's association checkpoint run (nothing to do: the index is up to
    date), grouping the cells, and the first group's run to its first job, each stopped there."""
    skycell_stage(out, cells, members_per_cell)
    level3_config = out / "level3.yaml"
    campaign = Campaign(out, [out / "workflow.yaml"], ["--cores", "1"])
    timing = out.parent / "associations.time"
    subprocess.run(["/usr/bin/time", "-v", "-o", str(timing),
                    *campaign.associations_command(level3_config)], check=True, capture_output=True,
                   env=clean_env())
    associations = parse_time_v(timing.read_text())
    start, cpu = time.monotonic(), time.process_time()
    groups = campaign.plan_groups(cells_per_group)
    grouping_s, grouping_cpu = time.monotonic() - start, time.process_time() - cpu
    first = next(iter(groups))
    figures, rule, jobs = until_first_job(campaign.group_command(level3_config, first),
                                          out.parent / "skycell_group.log")
    size = f"{members_per_cell} per cell"
    return [
        ["the association checkpoint's run (up to date)", size, cells, 1, associations["wall_s"],
         cpu_seconds(associations), associations["max_rss_kb"] / 2**20],
        [f"grouping the cells (`{GROUPS_DIR}/index.csv`, a config per group)", size,
         f"{len(groups)} groups of <= {cells_per_group}", "", grouping_s, grouping_cpu, ""],
        [f"a group's run to its first job (`{rule}`)", size, len(groups[first]), jobs, figures["first_job_s"],
         cpu_seconds(figures), figures["max_rss_kb"] / 2**20],
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exposures", type=int, default=1000)
    parser.add_argument("--detectors", type=int, default=18, choices=range(1, 19), metavar="1..18")
    parser.add_argument("--out", type=Path, default=Path("bench/dag"))
    parser.add_argument("--sharded", action="store_true", help="the campaign in shards (scripts/shards.py)")
    parser.add_argument("--exposures-per-visit", type=int, default=10, help="with --sharded (default 10)")
    parser.add_argument("--cells", type=int, help="the Level 3 stage alone, of this many sky cells")
    parser.add_argument("--members-per-cell", type=int, default=8, help="with --cells (default 8)")
    parser.add_argument("--cells-per-group", type=int,
                        help="with --cells: planned in groups of this many cells (shards.py level3)")
    args = parser.parse_args(argv)
    # On a shared machine the wall time waits for the others; the CPU time is this run's own.
    headers = ["run", "exposures", "shards or cells", "jobs planned", "time to the first job, wall (s)",
               "CPU (s)", "peak RSS (GB)"]
    if args.sharded:
        rows = sharded_figures(args.out / "sharded", args.exposures, args.detectors, args.exposures_per_visit)
        return write_table(args.out / "dag_scale_sharded.md", markdown_table(headers, rows))
    if args.cells and args.cells_per_group:
        rows = grouped_skycell_figures(args.out / "skycells", args.cells, args.members_per_cell,
                                       args.cells_per_group)
        return write_table(args.out / "dag_scale_skycell_groups.md", markdown_table(headers, rows))
    if args.cells:
        figures, jobs = dry_run(skycell_stage(args.out / "skycells", args.cells, args.members_per_cell),
                                args.out / "skycells.log")
        rows = [["Level 3 stage, dry run (DAG construction; whole dry run)",
                 f"{args.members_per_cell} per cell", args.cells, jobs,
                 f"{figures['dag_s']:.1f}; {figures['wall_s']:.1f}", cpu_seconds(figures),
                 figures["max_rss_kb"] / 2**20]]
        return write_table(args.out / "dag_scale_skycells.md", markdown_table(headers, rows))
    count = synthetic_campaign(args.out / "campaign", args.exposures, args.detectors)
    ours, jobs = dry_run([*workflow_arguments(args.out / "campaign"), "--config", "target=cal"],
                         args.out / "campaign.log")
    steps_per_exposure = round(jobs / count)
    floor, floor_jobs = dry_run(floor_workflow(args.out / "floor", count, steps_per_exposure),
                                args.out / "floor.log")
    exposures = f"{args.exposures} x {args.detectors} = {count}"
    rows = [[name, exposures, planned, figures["dag_s"], figures["wall_s"], cpu_seconds(figures),
             figures["max_rss_kb"] / 2**20]
            for name, planned, figures in [
                ("this workflow", jobs, ours),
                (f"Snakemake alone ({steps_per_exposure} chained rules, no functions)", floor_jobs, floor)]]
    table = markdown_table(["workflow", "exposures", "jobs planned", "DAG construction (s)",
                            "whole dry run, wall (s)", "CPU (s)", "peak RSS (GB)"], rows)
    return write_table(args.out / "dag_scale.md", table)


def write_table(path: Path, table: str) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(table)
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
