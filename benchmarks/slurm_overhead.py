"""What one job costs on SLURM beyond its work: the per-job overhead of profiles/slurm.

One tiny simulated exposure is first calibrated locally. Then the same jobs are forced to
run again, alternately with profiles/local and with profiles/slurm, and each run is timed
(``/usr/bin/time -v``):

- the pool checkpoint alone (one plain SLURM job);
- the exposure's chain, ``dq_init`` to ``_cal`` and its quicklook (twelve rules: locally
  twelve jobs in one Snakemake, on SLURM one group job, as the profile groups them).

The overhead of a job is the SLURM run's wall time less the local run's: submission, the
scheduler, Snakemake starting again inside the job, the status checks and the latency wait.
Needs a running SLURM (``make bench-slurm`` starts the one-node cluster of ``make test-slurm``
and stops it afterwards):

    python benchmarks/slurm_overhead.py --repeat 3 --out bench
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from measure import (  # noqa: E402
    clean_environment,
    machine_description,
    markdown_table,
    one_exposure_campaign,
    run_measured,
)

# (what is timed, the Snakemake arguments that force exactly those jobs to run again)
SCENARIOS = [
    ("the pool checkpoint: 1 SLURM job", ["--forcerun", "pool", "--until", "pool"]),
    ("one exposure's chain (12 rules): 1 SLURM group job, 12 local jobs",
     ["--forcerun", "dq_init", "--until", "quicklook_cal"]),
]


def workflow_command(folder: Path, profile: str, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--profile", str(ROOT / "profiles" / profile),
            "--snakefile", str(ROOT / "Snakefile"), "--directory", str(folder),
            "--configfile", str(folder / "workflow.yaml"), *extra]


def require_slurm() -> None:
    result = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True,
                            timeout=30) if shutil.which("sinfo") else None
    if result is None or result.returncode != 0 or not result.stdout.strip():
        sys.exit("slurm_overhead: no SLURM cluster answers (start one: make bench-slurm)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench"))
    args = parser.parse_args(argv)
    require_slurm()
    folder = args.out / "slurm_overhead"
    one_exposure_campaign(folder, size=48)
    with open(folder / "workflow.yaml", "a") as stream:
        stream.write("target: cal\n")
    env = clean_environment()
    logs = folder / "logs_bench"
    run_measured(workflow_command(folder, "local", []), env, logs / "first.log")
    rows = []
    for name, extra in SCENARIOS:
        walls = {"local": [], "slurm": []}
        for attempt in range(args.repeat):
            for profile in walls:
                figures = run_measured(workflow_command(folder, profile, extra), env,
                                       logs / f"{profile}_{extra[1]}_{attempt}.log")
                walls[profile].append(figures["wall_s"])
        local, slurm = statistics.median(walls["local"]), statistics.median(walls["slurm"])
        rows.append([name, local, slurm, slurm - local])
    table = markdown_table(["jobs run again", "local wall (s, median)", "SLURM wall (s, median)",
                            "SLURM overhead per job (s)"], rows)
    text = (f"# Per-job overhead of profiles/slurm\n\n{machine_description()}; "
            f"{args.repeat} runs each\n\n{table}")
    (args.out / "slurm_overhead.md").write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
