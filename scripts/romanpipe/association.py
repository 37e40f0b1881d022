"""Associations: the JSON layout of the romancal documentation, its naming rule, and reading members back.

An association lists the exposures (``members``) that make one product. The
layout follows its examples (sections "Outlier Detection", Examples, and "asn_from_list")::

    {"asn_type": ..., "asn_rule": "DMS_ELPP_Base", "version_id": ..., "code_version": ...,
     "degraded_status": ..., "program": ..., "constraints": ..., "asn_id": ...,
     "target": ..., "asn_pool": ..., "products": [{"name": ..., "members":
     [{"expname": ..., "exptype": "science"}, ...]}]}

Member paths are relative to the association file's folder, as romancal reads them.
High-level steps take an association as input and write one as output, listing
the member products they wrote beside it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import InputFileError, NoScienceDataError
from .files import atomic_path

LEVEL2_RULE = "DMS_ELPP_Base"
NO_DEGRADATION = "No known degraded exposures in association."

# rPPPPP-TNNNN_YYYYMMDDtHHMMSS_ATYPE_MMM_asn.json (the romancal documentation, "Association Naming").
ASSOCIATION_NAME_RE = re.compile(
    r"^r(?P<program>\d{5})-(?P<candidate>o\d{3}|c1\d{3}|a3\d{3}|r\d{4})_"
    r"(?P<version_id>\d{8}t\d{6})_(?P<asn_type>[a-z0-9]+)_(?P<counter>\d{3})_asn\.json$"
)


def association_name(program: int, candidate: str, version_id: str, asn_type: str, counter: int) -> str:
    """File name of an association by the documented rule; ValueError for a malformed part."""
    name = f"r{program:05d}-{candidate}_{version_id}_{asn_type.lower()}_{counter:03d}_asn.json"
    if not ASSOCIATION_NAME_RE.match(name):
        raise ValueError(f"{name}: not of the form rPPPPP-TNNNN_YYYYMMDDtHHMMSS_ATYPE_MMM_asn.json")
    return name


def asn_from_list(items: Iterable, product_name: str, *, with_exptype: bool = False,
                  rule: str = LEVEL2_RULE, asn_type: str = "None", asn_id: str = "a3001",
                  program: str = "noprogram", target: str = "none", asn_pool: str = "none",
                  version_id: str | None = None, code_version: str = "",
                  constraints: str = "No constraints") -> dict:
    """An association of ``items`` making ``product_name`` (the romancal documentation's asn_from_list).

    ``items`` are member names, or ``(name, exptype)`` pairs with ``with_exptype``;
    plain names are science members.
    """
    if rule != LEVEL2_RULE:
        raise ValueError(f"unknown association rule {rule!r}: only {LEVEL2_RULE} is supported")
    members = []
    for item in items:
        name, exptype = item if with_exptype else (item, "science")
        members.append({"expname": str(name), "exptype": str(exptype)})
    return {
        "asn_type": asn_type, "asn_rule": rule, "version_id": version_id,
        "code_version": code_version, "degraded_status": NO_DEGRADATION, "program": program,
        "constraints": constraints, "asn_id": asn_id, "target": target, "asn_pool": asn_pool,
        "products": [{"name": product_name, "members": members}],
    }


@dataclass(frozen=True)
class Association:
    path: Path
    tree: dict

    @property
    def product_name(self) -> str:
        return self.tree["products"][0]["name"]

    def members(self, exptype: str | None = "science") -> list[Path]:
        """Member files (resolved against the association's folder) of ``exptype`` (None: all)."""
        return [self.path.parent / member["expname"]
                for product in self.tree["products"] for member in product["members"]
                if exptype is None or member.get("exptype", "science") == exptype]


def listing(association: Association, products: Iterable[Path]) -> dict:
    """The association's tree with its members replaced by ``products`` (files beside the new one)."""
    members = [{"expname": Path(path).name, "exptype": "science"} for path in products]
    return {**association.tree, "products": [{"name": association.product_name, "members": members}]}


def read_association(path: str | Path) -> Association:
    """Read and check an association file; InputFileError names what is wrong."""
    path = Path(path)
    try:
        tree = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputFileError(path, "association file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputFileError(path, f"unreadable association ({type(err).__name__})") from None
    products = tree.get("products") if isinstance(tree, dict) else None
    if not products or not all(isinstance(p, dict) and p.get("members") for p in products):
        raise InputFileError(path, "an association needs products, each with members")
    for product in products:
        for member in product["members"]:
            if "expname" not in member:
                raise InputFileError(path, f"a member of {product.get('name')!r} has no expname")
    return Association(path, tree)


def read_science_members(path: str | Path) -> tuple[Association, list[Path]]:
    """An association and its science members; NoScienceDataError (exit 64) when it has none."""
    association = read_association(path)
    members = association.members()
    if not members:
        raise NoScienceDataError(f"{path}: the association has no science members")
    return association, members


def is_association(path: str | Path) -> bool:
    """Whether a step's input is an association (a ``.json`` file) rather than one product."""
    return Path(path).suffix.lower() == ".json"


def read_step_input(path: str | Path) -> tuple[Association | None, list[Path]]:
    """A step's input as ``(association, its science members)``, or ``(None, [path])`` for one product.

    Every step decides "image or association?" here, so an association without science
    members ends every step the same way: NoScienceDataError naming the file (exit status 64,
    the romancal documentation, section "Exit Status").
    """
    if is_association(path):
        return read_science_members(path)
    return None, [Path(path)]


def write_association(tree: dict, path: str | Path) -> Path:
    """Write an association atomically (a reader never sees half a file)."""
    with atomic_path(path) as staging:
        staging.write_text(json.dumps(tree, indent=2) + "\n")
    return Path(path)
