"""What one job costs besides its step, started plainly and warm (romanpipe.warm), alternated.

Runs one step script on one input ROUNDS times each way, plain (``python SCRIPT``) and warm
(``python warm_start.py SCRIPT`` with a server already up), one after the other, and prints
each way's median wall and CPU seconds (a warm job's CPU is its client's plus its worker's,
from the server's log) with the split the script logs (romanpipe.timing):

    python benchmarks/warm_overhead.py INPUT --step saturation --crds-path sim/crds_cache --out bench/warm
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = HERE.parent / "scripts"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(SCRIPTS))

from romanpipe.naming import STEP_SUFFIX, product_name  # noqa: E402
from romanpipe.timing import PHASES, read_timings  # noqa: E402

from measure import cpu_seconds, markdown_table, run_measured  # noqa: E402


def last_job_cpu(folder: Path) -> float:
    """The CPU seconds of the last job a server in ``folder`` logged."""
    jobs = [json.loads(line) for log in folder.glob("*.log") for line in log.read_text().splitlines()
            if line.startswith("{")]
    return jobs[-1]["cpu"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path)
    parser.add_argument("--step", required=True)
    parser.add_argument("--crds-path", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    folder = (args.out / "warm").resolve()
    env = {**os.environ, "CRDS_PATH": str(args.crds_path.resolve()), "ROMANPIPE_WARM_DIR": str(folder)}
    env.pop("CRDS_SERVER_URL", None)
    plain_env = {**env, "ROMANPIPE_WARM_DIR": ""}
    script = SCRIPTS / f"{args.step}.py"
    output = product_name(args.input, STEP_SUFFIX[args.step], args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(SCRIPTS / "warm_start.py"), str(script), str(args.input), str(output)]
    # An untimed first job starts the server (and compiles numba's kernels into their cache).
    run_measured(command, env, log=args.out / "first.log")
    deadline = time.monotonic() + 300
    while not any(" ready in " in log.read_text() for log in folder.glob("*.log")) and (
            time.monotonic() < deadline):
        time.sleep(0.5)
    time.sleep(1)  # it binds its socket right after saying so
    runs = {"plain": [], "warm": []}
    for round_number in range(args.rounds):
        for way in ("plain", "warm"):
            log = args.out / f"{way}_{round_number}.log"
            figures = run_measured(command, plain_env if way == "plain" else env, log=log)
            cpu = cpu_seconds(figures) + (last_job_cpu(folder) if way == "warm" else 0.0)
            runs[way].append((figures["wall_s"], cpu, read_timings(log.read_text())[-1]))
    for lock_file in folder.glob("*.lock"):
        lock_file.unlink()
    rows = []
    for way, measured in runs.items():
        row = [way, f"{statistics.median(m[0] for m in measured):.2f}",
               f"{statistics.median(m[1] for m in measured):.2f}"]
        row += [f"{statistics.median(m[2]['wall'].get(p, 0) for m in measured):.2f} "
                f"({statistics.median(m[2]['cpu'].get(p, 0) for m in measured):.2f})" for p in PHASES]
        rows.append(row)
    print(f"{args.step} on {args.input.name}, {args.rounds} alternated rounds, medians; "
          "split: wall (CPU) seconds")
    print(markdown_table(["way", "wall (s)", "CPU (s)", *PHASES], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
