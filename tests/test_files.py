"""atomic_path: a file appears complete or not at all; what a killed writer leaves is removable."""

import os

from romanpipe.files import STAGING_MARK, atomic_path, remove_staging, staging_folder

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



def test_staging_left_by_a_killed_writer_is_removed_and_nothing_else(tmp_path):
    product = tmp_path / "exposures" / "x_cal.asdf"
    product.parent.mkdir()
    product.write_text("a product")
    left_folder = staging_folder(product)  # write_atomic's, as a kill -9 mid-write leaves it
    (left_folder / product.name).write_text("half")
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "table.csv") as staging:
        staging.write_text("half")
        os.link(staging, staging.with_name(staging.name + "2" + STAGING_MARK))  # a second one left
        raise RuntimeError
    hidden_cache = tmp_path / ".cache" / "numba"
    hidden_cache.mkdir(parents=True)
    removed = remove_staging(tmp_path)
    assert left_folder in removed and len(removed) == 2
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        ".cache", ".cache/numba", "exposures", "exposures/x_cal.asdf"]
