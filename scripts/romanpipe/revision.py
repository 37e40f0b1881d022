"""What a product's provenance identifies: the code's revision and each reference file's SHA-256.

Both are the same for every job of a run, so a workflow run works them out once instead of
in every job: it exports the revision in ``ROMANPIPE_CODE_REVISION`` and names a folder
of reference checksums in ``ROMANPIPE_CHECKSUM_CACHE`` (the shell prefix of every rule).
A script run by hand, without them, computes both itself. Light on purpose: the workflow
imports this module when it starts.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from functools import cache
from pathlib import Path

from .files import atomic_path

REPO_ROOT = Path(__file__).resolve().parents[2]
CODE_REVISION_ENV = "ROMANPIPE_CODE_REVISION"
CHECKSUM_CACHE_ENV = "ROMANPIPE_CHECKSUM_CACHE"


@cache
def code_revision() -> str:
    """The git revision of the code that runs, with ``+dirty`` for uncommitted edits
    (``ROMANPIPE_CODE_REVISION`` when the workflow has worked it out for the run)."""
    if os.environ.get(CODE_REVISION_ENV):
        return os.environ[CODE_REVISION_ENV]
    try:
        rev = subprocess.run(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty=+dirty",
                              "--abbrev=12"], capture_output=True, text=True, check=True,
                             timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = "unknown"
    return rev or "unknown"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def reference_sha256(path: str | Path) -> str:
    """A reference file's SHA-256, computed once per file version when a checksum folder is named.

    An entry is keyed by the file's real path, size, modification time (ns) and inode, so an
    edited or replaced reference gets a new entry rather than a stale digest. Entries are
    written atomically (:func:`romanpipe.files.atomic_path`): jobs that compute the same one
    at the same time write the same content.
    """
    folder = os.environ.get(CHECKSUM_CACHE_ENV)
    if not folder:
        return file_sha256(path)
    status = os.stat(path)
    key = hashlib.sha256(f"{os.path.realpath(path)}\0{status.st_size}\0{status.st_mtime_ns}\0"
                         f"{status.st_ino}".encode()).hexdigest()
    entry = Path(folder) / key
    try:
        digest = entry.read_text().strip()
        if len(digest) == 64:
            return digest
    except OSError:
        pass
    digest = file_sha256(path)
    try:
        with atomic_path(entry) as staging:
            staging.write_text(digest + "\n")
    except OSError:  # a read-only or full folder costs the cache, not the product
        pass
    return digest
