"""benchmark_table: every job's Snakemake benchmark record as one table (CSV).

Snakemake writes one TSV per job (``benchmark:``, in logs/benchmarks/<rule>/<job>.tsv, or
logs/benchmarks/<rule>.tsv for a rule of one job per run): wall seconds, peak memory
(max_rss, MB), CPU seconds and I/O. This lists them with the rule and the job's name,
slowest first. A job run warm (romanpipe.warm) is measured by Snakemake in its client only:
with ``--warm FOLDER`` its worker's CPU seconds and peak memory, from the warm servers' logs,
are added (matched by the job's log file, logs/<rule>/<job>.log beside
logs/benchmarks/<rule>/<job>.tsv).

    python scripts/benchmark_table.py logs/benchmarks --output results/benchmarks.csv \
        [--warm results/.cache/warm]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from romanpipe import cli, warm
from romanpipe.errors import InputFileError
from romanpipe.files import atomic_path

import pandas as pd

COLUMNS = ["rule", "job", "s", "cpu_time", "max_rss", "io_in", "io_out", "mean_load"]


def benchmark_table(folder: Path, warm_folder: Path | None = None) -> pd.DataFrame:
    workers = worker_figures(folder, warm_folder) if warm_folder else {}
    frames = []
    for path in sorted(folder.glob("*.tsv")) + sorted(folder.glob("*/*.tsv")):
        try:
            frame = pd.read_csv(path, sep="\t")
        except (OSError, ValueError) as err:
            raise InputFileError(path, f"not a benchmark table ({type(err).__name__})") from None
        frame.insert(0, "rule", path.stem if path.parent == folder else path.parent.name)
        frame.insert(1, "job", path.stem)
        if path in workers and {"cpu_time", "max_rss"} <= set(frame.columns):
            cpu, rss_mb = workers[path]
            frame["cpu_time"] = frame["cpu_time"] + cpu
            frame["max_rss"] = frame["max_rss"].clip(lower=rss_mb)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    table = pd.concat(frames, ignore_index=True)
    return table[[c for c in COLUMNS if c in table.columns]].sort_values("s", ascending=False)


def worker_figures(folder: Path, warm_folder: Path) -> dict[Path, tuple[float, float]]:
    """Benchmark record -> (CPU seconds, peak MB) of the warm worker that ran its job."""
    logs = folder.resolve().parent
    figures = {}
    for record in warm.worker_records(str(warm_folder)):
        log = Path(record["log"]) if record.get("log") else None
        if log is None or not log.is_relative_to(logs) or "cpu" not in record:
            continue
        figures[folder / log.relative_to(logs).with_suffix(".tsv")] = (
            record["cpu"], record.get("max_rss_kb", 0) / 1024)
    return figures


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="benchmark_table.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="the workflow's benchmark folder (logs/benchmarks)")
    parser.add_argument("--output", type=Path, required=True, help="the CSV table (written atomically)")
    parser.add_argument("--warm", type=Path, help="the warm-start servers' folder (results/.cache/warm)")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)
    cli.setup_logging(args.verbose)
    table = benchmark_table(args.folder, args.warm)
    with atomic_path(args.output) as staging:
        table.to_csv(staging, index=False)


if __name__ == "__main__":
    cli.run_and_exit(main)
