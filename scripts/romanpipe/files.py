"""Writing plain files (tables, JSON, catalogs) so that readers never see half of one."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Every staging name ends so: a run killed mid-write leaves them behind, and the next run
# (or the end of a failed one) removes them by this mark (remove_staging).
STAGING_MARK = ".staging"


def staging_folder(path: str | Path) -> Path:
    """A new hidden folder beside ``path`` to write it in under its own name, then move it out."""
    path = Path(path)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=STAGING_MARK, dir=path.parent))


def remove_staging(folder: str | Path) -> list[Path]:
    """Remove the staging files and folders under ``folder`` that writers left (killed mid-write)."""
    removed = []
    for staging in sorted(Path(folder).rglob(f".*{STAGING_MARK}")):
        if staging.is_dir() and not staging.is_symlink():
            shutil.rmtree(staging, ignore_errors=True)
        else:
            staging.unlink(missing_ok=True)
        removed.append(staging)
    return removed


def workdir_relative(path: str) -> str:
    """``path`` relative to the working directory when inside it, else as given: a campaign moved
    with its CRDS cache keeps its references' paths, which Snakemake compares to decide what reruns."""
    relative = os.path.relpath(path)
    return path if relative.startswith(os.pardir) else relative


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A hidden name beside ``path`` to write to; it becomes ``path`` only if the block succeeds.

    The staging file is in the same folder (``os.replace`` is atomic there) and is removed
    when the block fails, so no partial file is left under either name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}{STAGING_MARK}")
    try:
        yield staging
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
