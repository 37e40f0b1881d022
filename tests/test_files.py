"""atomic_path: a file appears complete or not at all."""

from romanpipe.files import atomic_path

import pytest


def test_the_file_appears_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "sub" / "table.csv"
    with atomic_path(target) as staging:
        staging.write_text("a,b\n1,2\n")
        assert not target.exists()
    assert target.read_text() == "a,b\n1,2\n"
    assert list(target.parent.iterdir()) == [target]


def test_a_failed_block_leaves_neither_file_nor_staging(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as staging:
        staging.write_text("half")
        raise RuntimeError("writer failed")
    assert target.read_text() == "old\n"
    assert list(tmp_path.iterdir()) == [target]

