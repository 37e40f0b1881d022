"""provenance_table: what made every product of a campaign, as one table (CSV).

Each product records, per step, the code revision, the parameters it ran with, the CRDS
context and the reference files with their sha256 (romanpipe.steprun). This gathers them:
one row per product, step and reference file (a step without a reference has one row
with those columns empty). A `_cal` product carries its whole exposure chain; a mosaic's
high-level steps are read from the members of its last association step and from the
`_i2d` itself, each step once per product.

    python scripts/provenance_table.py results/exposures/*_cal.asdf results/mosaics/*_i2d.asdf
        --output results/provenance.csv
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from romanpipe import cli
from romanpipe.association import read_association
from romanpipe.errors import InputFileError
from romanpipe.exposure_types import EXPOSURE_STEPS
from romanpipe.files import atomic_path

import pandas as pd
import roman_datamodels as rdm

COLUMNS = ["product", "step", "code_revision", "crds_context", "parameters", "reftype", "reference",
           "sha256"]


def provenance_rows(product: str, provenance: dict, steps: set[str] | None = None) -> list[dict]:
    """Rows for the steps of one product's provenance (only ``steps`` when given)."""
    rows = []
    for step in sorted(provenance, key=pipeline_order):
        record = provenance[step]
        if steps is not None and step not in steps:
            continue
        common = {
            "product": product, "step": step,
            "code_revision": record.get("code_revision", ""),
            "crds_context": record.get("crds_context", ""),
            "parameters": json.dumps(plain(record.get("parameters", {})), sort_keys=True),
        }
        references = record.get("references", {})
        if not references:
            rows.append({**common, "reftype": "", "reference": "", "sha256": ""})
        for reftype, reference in sorted(references.items()):
            rows.append({**common, "reftype": reftype, "reference": reference["file"],
                         "sha256": reference["sha256"]})
    return rows


def pipeline_order(step: str) -> tuple[int, str]:
    """Steps in the order they run (Level 1 to mosaic); any other after them, by name."""
    order = (*EXPOSURE_STEPS, *HIGH_LEVEL_STEPS, "resample")
    return (order.index(step), "") if step in order else (len(order), step)


def plain(node):
    """Nested dicts/lists of plain values (asdf hands over lazy nodes)."""
    if hasattr(node, "items"):
        return {str(key): plain(value) for key, value in node.items()}
    if isinstance(node, list | tuple):
        return [plain(value) for value in node]
    return node if isinstance(node, str | int | float | bool) or node is None else str(node)


def read_product(path: Path):
    """(provenance, the association the product was made from or None) of one product."""
    try:
        with rdm.open(path) as model:
            association = model.meta.get("association", {}).get("name")
            return plain(model.meta.get("provenance", {})), association
    except Exception as err:  # any unreadable product is named in one line
        raise InputFileError(path, f"unreadable product ({type(err).__name__}: {err})") from None


def mosaic_rows(mosaic: Path) -> list[dict]:
    """A mosaic's own resample record and the high-level steps before it, read from a member of
    the association it was drizzled from (each step wrote its members beside its association)."""
    provenance, association = read_product(mosaic)
    rows = provenance_rows(mosaic.name, provenance)
    sources = sorted(mosaic.parent.glob(f"*/{association}")) if association else []
    if sources:
        members = read_association(sources[0]).members()
        if members:
            member_provenance, _ = read_product(members[0])
            rows += provenance_rows(mosaic.name, member_provenance, set(HIGH_LEVEL_STEPS))
    return rows


# Steps of the mosaic chain before resample, recorded in the members' products.
HIGH_LEVEL_STEPS = ("flux", "skymatch", "outlier_detection")


def provenance_table(products: list[Path]) -> pd.DataFrame:
    rows = []
    for path in products:
        if path.name.endswith("_i2d.asdf"):
            rows += mosaic_rows(path)
        else:
            rows += provenance_rows(path.name, read_product(path)[0])
    return pd.DataFrame(rows, columns=COLUMNS)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="provenance_table.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("products", nargs="*", type=Path, help="_cal, _i2d or any other products")
    parser.add_argument("--output", type=Path, required=True, help="the CSV table (written atomically)")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)
    cli.setup_logging(args.verbose)
    table = provenance_table(args.products)
    with atomic_path(args.output) as staging:
        table.to_csv(staging, index=False)


if __name__ == "__main__":
    cli.run_and_exit(main)
