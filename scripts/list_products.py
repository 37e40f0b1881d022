"""list_products: say where a workflow run put its products, grouped by suffix.

    python scripts/list_products.py demo/results
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from romanpipe import cli
from romanpipe.errors import InputFileError
from romanpipe.naming import split_suffix

import pandas as pd


def summary(results: Path) -> str:
    by_suffix: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(results.rglob("*.asdf")):
        by_suffix[split_suffix(path)[1] or "other"].append(path)
    lines = [f"Products under {results}:"]
    for suffix, paths in sorted(by_suffix.items()):
        folders = sorted({str(p.parent) for p in paths})
        where = ", ".join(folders) if len(folders) <= 2 else f"{len(folders)} folders below {results}"
        lines.append(f"  _{suffix}.asdf: {len(paths):4d} file(s) in {where}")
    quarantine = results / "quarantine.csv"
    if quarantine.is_file():
        rejected = pd.read_csv(quarantine)
        lines.append(f"  quarantined inputs: {len(rejected)} (see {quarantine})")
        lines += [f"    {row.exposure}: {row.reason}" for row in rejected.itertuples()]
    if by_suffix.get("i2d"):
        lines += ["Mosaics:", *(f"  {path}" for path in by_suffix["i2d"])]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    args = parser.parse_args(argv)
    cli.setup_logging()
    if not args.results.is_dir():
        raise InputFileError(args.results, "no such folder")
    sys.stdout.write(summary(args.results) + "\n")


if __name__ == "__main__":
    cli.run_and_exit(main)
