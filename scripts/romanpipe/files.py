"""Writing plain files (tables, JSON, catalogs) so that readers never see half of one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield staging
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
