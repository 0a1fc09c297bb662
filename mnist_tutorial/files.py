"""Safe writes: checked before the work starts, replaced whole or not at all."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .errors import describe_os_error


def unwritable_folder(folder: Path) -> str | None:
    """Return why no file can be written in ``folder`` (made if missing), or None."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Only writing tells: permissions, read-only mounts and access rules all show.
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        return describe_os_error(error)
    return None


@contextmanager
def replaced_atomically(path: Path) -> Iterator[BinaryIO]:
    """Yield a file whose bytes replace ``path`` if the block ends without error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of our own opened with "x" (not mkstemp), so the file gets the usual
    # permissions; random, so two writers never share it.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    try:
        with temporary.open("xb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


def write_atomically(path: Path, payload: bytes) -> Path:
    """Return ``path`` after replacing its content with ``payload`` in one step."""
    with replaced_atomically(path) as out:
        out.write(payload)
    return path
