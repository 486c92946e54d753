"""Atomic writes: a reader sees the old file or the new one, never half of one.

A directory is published the same way: written under a hidden name beside its
final one, then renamed in one step.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def published_directory(final: str | os.PathLike, prefix: str) -> Iterator[str]:
    """Yields a new hidden directory beside ``final``; publishes it as ``final`` in one rename.

    The directory (``prefix`` + a random suffix, in ``final``'s folder) gets
    the permissions the umask gives, so a reader running as another user can
    read it. When the block ends without an error its files are synced to disk
    and it is renamed to ``final``; on any error, Ctrl-C included, it is
    removed. A process killed meanwhile can leave only the hidden directory.

    Raises:
      FileExistsError: ``final`` exists when the block ends (it is never
        replaced: a rename would silently replace an empty directory).
    """
    final = os.fspath(final)
    folder = os.path.dirname(final) or "."
    tmp = tempfile.mkdtemp(prefix=prefix, dir=folder)
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it owner-only
        yield tmp
        _fsync_tree(tmp)
        if os.path.exists(final):
            raise FileExistsError(errno.EEXIST, "appeared while its replacement was written",
                                  final)
        os.rename(tmp, final)
        _fsync(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_tree(root: str) -> None:
    for folder, _, files in os.walk(root):
        for file in files:
            _fsync(os.path.join(folder, file))
        _fsync(folder)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
