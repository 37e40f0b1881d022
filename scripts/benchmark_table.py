"""benchmark_table: every job's Snakemake benchmark record as one table (CSV).

Snakemake writes one TSV per job (``benchmark:``, in logs/benchmarks/<rule>/<job>.tsv, or
logs/benchmarks/<rule>.tsv for a rule of one job per run): wall seconds, peak memory
(max_rss, MB), CPU seconds and I/O. This lists them with the rule and the job's name,
slowest first.

    python scripts/benchmark_table.py logs/benchmarks --output results/benchmarks.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

from romanpipe import cli
from romanpipe.errors import InputFileError
from romanpipe.files import atomic_path

import pandas as pd

COLUMNS = ["rule", "job", "s", "cpu_time", "max_rss", "io_in", "io_out", "mean_load"]


def benchmark_table(folder: Path) -> pd.DataFrame:
    frames = []
    for path in sorted(folder.glob("*.tsv")) + sorted(folder.glob("*/*.tsv")):
        try:
            frame = pd.read_csv(path, sep="\t")
        except (OSError, ValueError) as err:
            raise InputFileError(path, f"not a benchmark table ({type(err).__name__})") from None
        frame.insert(0, "rule", path.stem if path.parent == folder else path.parent.name)
        frame.insert(1, "job", path.stem)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    table = pd.concat(frames, ignore_index=True)
    return table[[c for c in COLUMNS if c in table.columns]].sort_values("s", ascending=False)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="benchmark_table.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="the workflow's benchmark folder (logs/benchmarks)")
    parser.add_argument("--output", type=Path, required=True, help="the CSV table (written atomically)")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)
    cli.setup_logging(args.verbose)
    table = benchmark_table(args.folder)
    with atomic_path(args.output) as staging:
        table.to_csv(staging, index=False)


if __name__ == "__main__":
    cli.run_and_exit(main)
