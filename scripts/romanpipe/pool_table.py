"""The exposure pool table: its columns, defined once for the pool, CRDS selection and the workflow.

The pool checkpoint (``scripts/pool.py``) writes one row per valid exposure; CRDS selects
references from some of its columns (:data:`SELECTION_COLUMNS`); the workflow reads the
references, exposure types and shapes from it. Rejected inputs go to the quarantine table.
No import here may be slow: the workflow imports this module at every start.
"""

from __future__ import annotations

# The exposure's metadata, in table order.
METADATA_COLUMNS = [
    "exposure", "path", "program", "execution_plan", "pass", "segment", "observation", "visit",
    "exposure_number", "detector", "optical_element", "exposure_type", "ma_table_name",
    "nresultants", "ny", "nx", "start_time", "ra_ref", "dec_ref", "roll_ref",
]
# The columns CRDS matches references on, and the datamodel metadata each holds.
SELECTION_COLUMNS = {
    "detector": "instrument.detector",
    "optical_element": "instrument.optical_element",
    "start_time": "exposure.start_time",
    "exposure_type": "exposure.type",
}
# The CRDS context the references were selected in (one value for the whole table).
CONTEXT_COLUMN = "crds_context"
QUARANTINE_COLUMNS = ["exposure", "path", "reason"]


def reference_column(reftype: str) -> str:
    """The column holding an exposure's reference of ``reftype`` (empty when its type does not need one)."""
    return f"ref_{reftype.lower()}"


def pool_columns(reftypes) -> list[str]:
    """Every column of a pool selecting references of ``reftypes``."""
    return METADATA_COLUMNS + [reference_column(r) for r in sorted(reftypes)] + [CONTEXT_COLUMN]
