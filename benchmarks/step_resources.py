"""Wall time, peak memory and where the time goes, for each ramp step on one simulated
exposure, one process per step.

Each step's script runs as the workflow runs it (its own process, the previous
product as input, references chosen by CRDS from the simulated cache) under
``/usr/bin/time -v``; the table gives wall and CPU seconds, the peak resident set
size, and the split each script logs (:mod:`romanpipe.timing`): process start and
imports, reading the input, the step's own work, provenance, writing the product, and
the rest (the interpreter's exit, from ``/usr/bin/time``'s wall). Public tools only, so
anyone can rerun it:

    python benchmarks/step_resources.py --size 4096 --ma-table EVEN_55 --out bench/ramp55
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(SCRIPTS))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from romanpipe.naming import STEP_SUFFIX, product_name  # noqa: E402
from romanpipe.timing import PHASES, read_timings  # noqa: E402

from measure import run_measured  # noqa: E402

# The ramp-level chain in pipeline order (steps whose script exists are run).
RAMP_CHAIN = ["dq_init", "saturation", "refpix", "linearity", "dark_current", "jump", "ramp_fit"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--ma-table", default="EVEN_55")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", nargs="+", default=RAMP_CHAIN)
    args = parser.parse_args(argv)

    env = {**os.environ, "CRDS_PATH": str(args.out / "crds_cache")}
    env.pop("CRDS_SERVER_URL", None)
    uncal = sorted((args.out / "uncal").glob("*_uncal.asdf")) if (args.out / "uncal").is_dir() else []
    if not uncal:
        started = time.perf_counter()
        subprocess.run([sys.executable, str(SCRIPTS / "simulate.py"), "exposure", "--out", str(args.out),
                        "--size", str(args.size), "--ma-table", args.ma_table, "--stars", "2000",
                        "--saturating-stars", "20", "-q"], check=True, env=env)
        print(f"simulated in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        uncal = sorted((args.out / "uncal").glob("*_uncal.asdf"))
    product = uncal[0]
    rows = []
    for step in args.steps:
        script = SCRIPTS / f"{step}.py"
        if not script.is_file():
            continue
        output = product_name(product, STEP_SUFFIX[step], args.out / "products")
        output.parent.mkdir(parents=True, exist_ok=True)
        log = output.with_suffix(".log")
        figures = run_measured([sys.executable, str(script), str(product), str(output)], env, log=log)
        rows.append((step, figures, read_timings(log.read_text())[-1]))
        product = output
    print(f"size {args.size}, MA table {args.ma_table}; wall (CPU) seconds")
    print("| step | wall (s) | CPU (s) | peak RSS (GB) | " + " | ".join(PHASES) + " | other |")
    print("|---|---|---|---|" + "---|" * (len(PHASES) + 1))
    for step, f, timing in rows:
        split = [f"{timing['wall'].get(phase, 0):.2f} ({timing['cpu'].get(phase, 0):.2f})"
                 for phase in PHASES]
        other = f["wall_s"] - sum(timing["wall"].get(phase, 0) for phase in PHASES)
        print(f"| {step} | {f['wall_s']:.1f} | {f['user_s'] + f['system_s']:.1f} | "
              f"{f['max_rss_kb'] / 1024**2:.2f} | " + " | ".join(split) + f" | {other:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
