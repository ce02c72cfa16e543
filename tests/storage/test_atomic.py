"""Atomic writes of small files: a file appears whole or not at all, and no temporary is
left behind or shared between processes."""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

import pytest

from acme_xr.storage import atomic
from acme_xr.storage.atomic import TMP_SUFFIX, remove_stale_temporaries, write_bytes


@pytest.mark.parametrize("data", [b"", b"x" * 2048, bytearray(b"\x89HDF" * 100_000),
                                  memoryview(b"abc")], ids=["empty", "2 KB", "400 KB", "view"])
def test_write_bytes_leaves_the_file_and_nothing_else(tmp_path: Any, data: Any) -> None:
    final = str(tmp_path / "f_0.h5")
    write_bytes(final, data)
    write_bytes(final, data)  # dask may run a call twice: the second write replaces
    with open(final, "rb") as fh:
        assert fh.read() == bytes(data)
    assert os.listdir(tmp_path) == ["f_0.h5"]


def test_a_failed_write_leaves_no_temporary(tmp_path: Any) -> None:
    final = tmp_path / "f_0.h5"
    final.mkdir()  # the rename into place fails
    with pytest.raises(OSError):
        write_bytes(str(final), b"data")
    assert os.listdir(tmp_path) == ["f_0.h5"] and final.is_dir()
    with pytest.raises(FileNotFoundError):
        write_bytes(str(tmp_path / "gone" / "f_1.h5"), b"data")


def _names(final: str) -> list[str]:
    return [atomic._temporary_name(final) for _ in range(100)]


def test_temporary_names_differ_in_each_process_and_are_cleaned_up(tmp_path: Any) -> None:
    final = str(tmp_path / "f_0.h5")
    mine = _names(final)
    # a forked worker starts with this process's state: its names must still differ
    with multiprocessing.get_context("fork").Pool(2) as pool:
        theirs = pool.map(_names, [final, final])
    names = mine + theirs[0] + theirs[1]
    assert len(set(names)) == len(names)
    assert all(os.path.dirname(n) == str(tmp_path) for n in names)
    assert all(os.path.basename(n).startswith(".f_0.h5.") and n.endswith(TMP_SUFFIX)
               for n in names)
    for name in names[:5]:  # what killed writers leave is recognised as such
        with open(name, "wb") as fh:
            fh.write(b"half")
    assert remove_stale_temporaries(str(tmp_path)) == 5
    assert os.listdir(tmp_path) == []
