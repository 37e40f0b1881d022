"""The campaign's inputs, found by name: the workflow and the pool find the same ones.

The workflow turns each exposure's name into file names and shell arguments at parse time,
before any file is opened. An input it cannot name safely, or that is not there, must not
stop the campaign: it is rejected here with a one-line reason, and the pool writes it to
the quarantine table with the inputs it rejects after reading them.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field

from .naming import split_suffix

UNCAL_PATTERN = "*_uncal.asdf"
# Roman file names use letters, digits, '_', '-' and '.'; anything else ('{' and '}' are
# Snakemake's wildcards, ';', '#', '?', '%', spaces and newlines mean something to a shell,
# a URL or a CSV reader) is refused by name, before it can be misread.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.+-]+")


class InputListError(ValueError):
    """The exposure list itself cannot be read (a configuration error, not a bad input)."""


@dataclass
class Inputs:
    """``exposures``: exposure name -> path, for the inputs the workflow runs;
    ``rejected``: (exposure name, path, reason) of the others."""

    exposures: dict[str, str] = field(default_factory=dict)
    rejected: list[tuple[str, str, str]] = field(default_factory=list)


def discover_inputs(uncal_dir: str | None, exposure_list: str | None) -> Inputs:
    """The inputs named by ``exposure_list`` (a CSV or Parquet table with a ``path`` column),
    else the ``*_uncal.asdf`` files of ``uncal_dir``, sorted out into usable and rejected."""
    inputs = Inputs()
    for path in listed_paths(uncal_dir, exposure_list):
        name = split_suffix(path)[0]
        reason = unusable_name(path, name) or unusable_file(path)
        if reason is None and name in inputs.exposures:
            reason = f"the same exposure name as {inputs.exposures[name]}"
        if reason:
            # a newline in a name would split the table's one-line rows
            inputs.rejected.append((printable(name), printable(path), f"{printable(path)}: {reason}"))
        else:
            inputs.exposures[name] = path
    return inputs


def printable(text: str) -> str:
    """``text`` with control characters escaped as in Python (a newline as \\n)."""
    return text if text.isprintable() else repr(text)[1:-1]


def listed_paths(uncal_dir: str | None, exposure_list: str | None) -> list[str]:
    if not exposure_list:
        return sorted(glob.glob(os.path.join(glob.escape(uncal_dir), UNCAL_PATTERN)))
    import pandas as pd

    try:
        table = (pd.read_parquet(exposure_list) if exposure_list.endswith(".parquet")
                 else pd.read_csv(exposure_list, dtype=str, keep_default_na=False))
    except Exception as err:  # noqa: BLE001 - pandas and pyarrow raise many types
        raise InputListError(f"{exposure_list}: unreadable table of files ({type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else 'no detail'})") from None
    if "path" not in table.columns:
        raise InputListError(f"{exposure_list}: the table of files needs a column 'path'")
    return [str(path) for path in table["path"]]


def unusable_name(path: str, name: str) -> str | None:
    """Why the workflow cannot name this input safely, or None."""
    if "{" in path or "}" in path:
        return "braces in the path (Snakemake reads them as wildcards)"
    if not _SAFE_NAME.fullmatch(os.path.basename(path)):
        return ("the file name holds characters the workflow does not pass on (only letters, digits "
                "and _ . + - are safe in product names and shell lines)")
    if not name or name == os.path.basename(path):
        return "not a Level 1 file name (<exposure>_uncal.asdf)"
    return None


def unusable_file(path: str) -> str | None:
    """Why the input is not there, or None."""
    if os.path.islink(path) and not os.path.exists(path):
        return "a dangling symbolic link (its target does not exist)"
    if not os.path.exists(path):
        return "no such file"
    if not os.path.isfile(path):
        return "not a regular file"
    return None
