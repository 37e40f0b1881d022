"""quarantine_table: every input left out of a campaign, and why (the report's quarantine table).

Two sources: the inputs the pool rejected (``results/quarantine.csv``), and the exposures
that failed after the pool (the failure ledger, romanpipe.failures). One row each, with the
stage that left it out: ``pool`` or the step that failed.

    python scripts/quarantine_table.py results/quarantine.csv --pool results/pool.csv \\
        [--ledger results/failed.csv] --output results/quarantine_report.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

from romanpipe import cli
from romanpipe.failures import read_ledger
from romanpipe.files import atomic_path
from romanpipe.pool_table import QUARANTINE_COLUMNS

import pandas as pd

COLUMNS = ["exposure", "path", "stage", "reason"]


def quarantine_table(pool_rejected: pd.DataFrame, failed: list[dict]) -> pd.DataFrame:
    rows = [{**row, "stage": "pool"} for row in pool_rejected[QUARANTINE_COLUMNS].to_dict("records")]
    rows += [{"exposure": row["exposure"], "path": row["path"], "stage": row["step"], "reason": row["reason"]}
             for row in failed]
    return pd.DataFrame(rows, columns=COLUMNS)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="quarantine_table.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("quarantine", type=Path, help="the pool's quarantine table")
    parser.add_argument("--pool", type=Path, required=True, help="the pool table (dates the ledger)")
    parser.add_argument("--ledger", type=Path, help="the failure ledger, when there is one")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)
    cli.setup_logging(args.verbose)
    rejected = pd.read_csv(args.quarantine, dtype=str, keep_default_na=False)
    failed = list(read_ledger(args.ledger, args.pool).values()) if args.ledger else []
    with atomic_path(args.output) as staging:
        quarantine_table(rejected, failed).to_csv(staging, index=False)


if __name__ == "__main__":
    cli.run_and_exit(main)
