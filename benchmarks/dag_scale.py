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

    python benchmarks/dag_scale.py --exposures 1000 --detectors 18 --out bench/dag
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from romanpipe.files import atomic_path  # noqa: E402

from measure import cpu_seconds, markdown_table, one_exposure_campaign, parse_time_v  # noqa: E402

DETECTORS = [f"WFI{number:02d}" for number in range(1, 19)]


def workflow_arguments(out: Path) -> list[str]:
    """Snakemake arguments running our workflow on the campaign folder ``out``."""
    return ["--snakefile", str(ROOT / "Snakefile"), "--directory", str(out), "--configfile",
            str(out / "workflow.yaml")]


def synthetic_campaign(out: Path, exposures: int, detectors: int) -> int:
    """A campaign folder whose pool lists ``exposures x detectors`` placeholders; returns the count."""
    one_exposure_campaign(out, size=32)
    pool_path = out / "results" / "pool.csv"
    run_pool = [sys.executable, "-m", "snakemake", *workflow_arguments(out), "--cores", "1",
                "--until", "pool", "--quiet"]
    subprocess.run(run_pool, check=True, capture_output=True)
    template = pd.read_csv(pool_path).iloc[0]
    for path in (out / "uncal").glob("*_uncal.asdf"):
        path.unlink()
    rows = []
    for number in range(1, exposures + 1):
        for detector in DETECTORS[:detectors]:
            exposure = f"r0000101001001001001_01101_{number:04d}_{detector}"
            path = f"uncal/{exposure}_uncal.asdf"
            (out / path).touch()
            rows.append({**template.to_dict(), "exposure": exposure, "path": path, "detector": detector,
                         "exposure_number": number})
    # The pool runs over the placeholders (and rejects them all: they are empty), so that
    # Snakemake records this set of inputs; its table is then replaced by the synthetic one.
    subprocess.run(run_pool, check=True, capture_output=True)
    with atomic_path(pool_path) as staging:
        pd.DataFrame(rows).to_csv(staging, index=False)
    quarantine = out / "results" / "quarantine.csv"
    with atomic_path(quarantine) as staging:
        pd.read_csv(quarantine).iloc[:0].to_csv(staging, index=False)
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exposures", type=int, default=1000)
    parser.add_argument("--detectors", type=int, default=18, choices=range(1, 19), metavar="1..18")
    parser.add_argument("--out", type=Path, default=Path("bench/dag"))
    args = parser.parse_args(argv)
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
    (args.out / "dag_scale.md").write_text(table)
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
