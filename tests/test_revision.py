"""romanpipe.revision: the code revision and reference checksums a product's provenance records,
worked out once per run by the workflow and by each script run by hand."""

import hashlib
import os
import subprocess

from romanpipe import revision

import pytest


@pytest.fixture
def reference(tmp_path):
    path = tmp_path / "roman_wfi_flat_0001.asdf"
    path.write_bytes(b"flat field" * 1000)
    return path


def test_without_a_checksum_folder_the_digest_is_computed(reference, monkeypatch):
    monkeypatch.delenv(revision.CHECKSUM_CACHE_ENV, raising=False)
    assert revision.reference_sha256(reference) == hashlib.sha256(reference.read_bytes()).hexdigest()


def test_checksum_folder_holds_one_entry_per_file_version(reference, tmp_path, monkeypatch):
    folder = tmp_path / "checksums"
    monkeypatch.setenv(revision.CHECKSUM_CACHE_ENV, str(folder))
    first = revision.reference_sha256(reference)
    assert first == hashlib.sha256(reference.read_bytes()).hexdigest()
    (entry,) = folder.iterdir()
    assert entry.read_text().strip() == first
    # The next job reads the entry instead of the file: a planted digest is what it returns.
    entry.write_text("a" * 64 + "\n")
    assert revision.reference_sha256(reference) == "a" * 64
    # A new version of the file (new content, new modification time) is a new entry.
    reference.write_bytes(b"another flat" * 1000)
    stat = reference.stat()
    os.utime(reference, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert revision.reference_sha256(reference) == hashlib.sha256(reference.read_bytes()).hexdigest()
    assert len(list(folder.iterdir())) == 2


def test_code_revision_from_the_run_or_from_git(monkeypatch):
    revision.code_revision.cache_clear()
    monkeypatch.setenv(revision.CODE_REVISION_ENV, "v1.2-3-gabc+dirty")
    assert revision.code_revision() == "v1.2-3-gabc+dirty"
    revision.code_revision.cache_clear()
    monkeypatch.delenv(revision.CODE_REVISION_ENV)
    expected = subprocess.run(["git", "-C", str(revision.REPO_ROOT), "describe", "--always", "--dirty=+dirty",
                               "--abbrev=12"], capture_output=True, text=True).stdout.strip() or "unknown"
    assert revision.code_revision() == expected
    revision.code_revision.cache_clear()
