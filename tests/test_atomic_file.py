"""atomic_write: the one way jaxdiff replaces a file (PNGs, .npz, eval.json, metrics.jsonl)."""

import os
import stat

import numpy as np
import pytest

from jaxdiff.atomic_file import atomic_write


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "eval.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_write(target, "w") as f:
            f.write("half of the new")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["eval.json"]


def test_a_file_object_writer_replaces_the_file_and_creates_the_folder(tmp_path):
    target = tmp_path / "new" / "samples.npz"
    with atomic_write(target) as f:
        np.savez(f, images=np.arange(3.0))
    np.testing.assert_array_equal(np.load(target)["images"], [0.0, 1.0, 2.0])
    assert sorted(os.listdir(target.parent)) == ["samples.npz"]


def test_the_file_gets_the_permissions_of_the_umask_not_a_private_temporary(tmp_path):
    previous = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "a.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
