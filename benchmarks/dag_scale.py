"""How long Snakemake takes to plan a campaign: a dry run over a synthetic pool.

A tiny simulated campaign provides the CRDS cache and reference files; the pool table is then
replaced by one of ``exposures x detectors`` rows (each exposure's Level 1 file an empty
placeholder: a dry run only checks that inputs exist), as if the pool checkpoint had read
them. ``snakemake -n`` then plans every exposure's chain to ``_cal`` (the associations, and
so the mosaics, wait for the _cal products in a real run). The wall time, CPU time and peak
memory of that dry run are measured with ``/usr/bin/time -v`` (public tools only):

    python benchmarks/dag_scale.py --exposures 1000 --detectors 18 --out bench/dag
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from romanpipe.files import atomic_path  # noqa: E402

from measure import parse_time_v  # noqa: E402

from wfisim.campaign import CampaignConfig, simulate_campaign  # noqa: E402

DETECTORS = [f"WFI{number:02d}" for number in range(1, 19)]


def synthetic_campaign(out: Path, exposures: int, detectors: int) -> int:
    """A campaign folder whose pool lists ``exposures x detectors`` placeholders; returns the count."""
    if out.exists():
        shutil.rmtree(out)
    simulate_campaign(CampaignConfig.from_mapping({
        "detectors": ["WFI01"], "filters": ["F158"], "exposures_per_filter": 1, "size": 32,
        "stars": 2, "saturating_stars": 0, "seed": 1,
    }), out)
    pool_path = out / "results" / "pool.csv"
    run_pool = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
                str(out), "--configfile", str(out / "workflow.yaml"), "--cores", "1", "--until", "pool",
                "--quiet"]
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


def dry_run(out: Path) -> tuple[dict[str, float], int]:
    """/usr/bin/time -v figures of ``snakemake -n`` to _cal, and the number of jobs it planned."""
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "snakemake", "--snakefile",
               str(ROOT / "Snakefile"), "--directory", str(out), "--configfile", str(out / "workflow.yaml"),
               "--config", "target=cal", "--cores", "2", "-n", "--quiet", "rules"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRDS_")}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    jobs = 0
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == "total" and fields[1].isdigit():
            jobs = int(fields[1])
    return parse_time_v(result.stderr), jobs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exposures", type=int, default=1000)
    parser.add_argument("--detectors", type=int, default=18, choices=range(1, 19), metavar="1..18")
    parser.add_argument("--out", type=Path, default=Path("bench/dag"))
    args = parser.parse_args(argv)
    count = synthetic_campaign(args.out / "campaign", args.exposures, args.detectors)
    figures, jobs = dry_run(args.out / "campaign")
    line = (f"| {args.exposures} x {args.detectors} = {count} | {jobs} | {figures['wall_s']:.1f} | "
            f"{figures['user_s'] + figures['system_s']:.1f} | {figures['max_rss_kb'] / 2**20:.2f} |")
    table = ("| exposures | jobs planned | wall (s) | CPU (s) | peak RSS (GB) |\n"
             "|---|---|---|---|---|\n" + line + "\n")
    (args.out / "dag_scale.md").write_text(table)
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
