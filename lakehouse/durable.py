"""Writes that survive a power cut, shared by ingest, the stream and the CLIs.

A rename is atomic, but it is durable only once the folder holding it is fsynced; a
file's bytes are durable only once the file is. Every component that answers "done"
after replacing a file (ingest's landing batches and credentials, the stream's spills
and state saves, the operators file) goes through these two functions, so the order of
the steps is written once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make the folder's entries (a rename, a new file) survive a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(path: str | os.PathLike[str], data: str | bytes, *,
                    mode: int = 0o644) -> None:
    """Replace ``path`` atomically and durably: write a temporary file beside it (created
    with ``mode``), fsync it, rename it over ``path``, fsync the folder. After a crash
    the file is the old one or the new one, never a mix; once this returns, the new one
    survives a power cut."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data.encode("utf-8") if isinstance(data, str) else data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


@contextlib.contextmanager
def private_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock for changing the secrets file ``path`` (read, change,
    replace), in a folder only the owner may enter (0700, made if missing): two
    commands changing it at once neither tear it nor lose each other's change."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
