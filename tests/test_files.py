"""Tests of mnist_tutorial.files: a file is replaced whole or not at all, and a folder
that cannot be written is found before the work starts."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest

import mnist_tutorial.files as files
from mnist_tutorial.files import (
    replaced_atomically,
    unwritable_folder,
    write_atomically,
)


def names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_write_atomically_writes_the_payload_and_leaves_nothing_else(
    tmp_path: Path,
) -> None:
    path = write_atomically(tmp_path / "sub" / "out.bin", b"payload")
    assert path == tmp_path / "sub" / "out.bin"
    assert path.read_bytes() == b"payload"
    assert names(path.parent) == ["out.bin"]


def test_an_existing_file_is_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"x" * 10_000)
    write_atomically(path, b"short")
    assert path.read_bytes() == b"short"
    assert names(tmp_path) == ["out.bin"]


def test_an_error_while_writing_leaves_the_old_file_and_no_part_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="stopped"), replaced_atomically(path) as out:
        out.write(b"half of the new")
        raise RuntimeError("stopped")
    assert path.read_bytes() == b"old"
    assert names(tmp_path) == ["out.bin"]


def test_a_full_disk_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")

    def full(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        write_atomically(path, b"new")
    assert path.read_bytes() == b"old"
    assert names(tmp_path) == ["out.bin"]


def test_the_new_content_is_invisible_until_the_block_ends(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with replaced_atomically(path) as out:
        out.write(b"new")
        out.flush()
        assert path.read_bytes() == b"old"
        (part,) = [name for name in names(tmp_path) if name != "out.bin"]
        assert part.startswith(".out.bin.") and part.endswith(".part")
    assert path.read_bytes() == b"new"


def test_two_writers_of_one_file_never_share_a_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    with replaced_atomically(path) as first, replaced_atomically(path) as second:
        first.write(b"first")
        second.write(b"second")
        assert len(names(tmp_path)) == 2
    assert path.read_bytes() == b"first"  # the outer block ends last
    assert names(tmp_path) == ["out.bin"]


def test_a_written_file_gets_the_usual_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    path = write_atomically(tmp_path / "out.bin", b"x")
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_writable_folder_is_created_and_has_no_problem(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b"
    assert unwritable_folder(folder) is None
    assert folder.is_dir() and names(folder) == []


def test_a_folder_under_a_file_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("a file")
    assert (
        unwritable_folder(tmp_path / "notes.txt" / "sub")
        == "a part of the path is a file, not a folder"
    )


def test_a_folder_that_refuses_new_files_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    # Only writing tells (a root user passes any permission check): refuse the write
    # itself.
    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    assert unwritable_folder(tmp_path) == "permission denied"
