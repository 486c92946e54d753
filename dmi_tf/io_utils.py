"""Atomic writes: a reader sees the old file or the new one, never half of one.

A directory is published the same way: written under a hidden name beside its
final one, then renamed in one step.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from typing import BinaryIO


def _create_unique(folder: str, prefix: str, suffix: str, create):
    for _ in range(100):
        path = os.path.join(folder, f"{prefix}{secrets.token_hex(6)}{suffix}")
        try:
            return create(path), path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary name", os.path.join(folder, prefix))


def new_file(folder: str, prefix: str, suffix: str = "") -> tuple[int, str]:
    """Creates a new file with a random name in ``folder``; returns ``(fd, path)``.

    Unlike ``tempfile.mkstemp`` (mode 0600) the file gets the permissions
    ``open`` gives any new file (0666 less the umask): what is written here is
    published under its final name for other processes, e.g. a TF-Serving
    container running as another user, to read.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    return _create_unique(folder, prefix, suffix, lambda path: os.open(path, flags, 0o666))


def new_directory(folder: str, prefix: str) -> str:
    """Creates a new folder with a random name in ``folder`` (0777 less the umask, unlike
    ``tempfile.mkdtemp``'s 0700; see ``new_file``); returns its path."""
    return _create_unique(folder, prefix, "", lambda path: os.mkdir(path, 0o777))[1]


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Calls ``write(f)`` on a temporary binary file beside ``path``, then renames it there.

    Readers see the old file or the whole new one, never a part; the temporary
    file is removed if ``write`` fails.
    """
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = new_file(folder, f".{os.path.basename(path)}.", ".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` (UTF-8, newlines as given) to ``path`` atomically (``atomic_write``)."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


@contextlib.contextmanager
def published_directory(final: str | os.PathLike, prefix: str) -> Iterator[str]:
    """Yields a new hidden directory beside ``final``; publishes it as ``final`` in one rename.

    The directory (``prefix`` + a random suffix, in ``final``'s folder) gets
    the permissions the umask gives (``new_directory``), so a reader running
    as another user can read it. When the block ends without an error its files are synced to disk
    and it is renamed to ``final``; on any error, Ctrl-C included, it is
    removed. A process killed meanwhile can leave only the hidden directory.

    Raises:
      FileExistsError: ``final`` exists when the block ends (it is never
        replaced: a rename would silently replace an empty directory).
    """
    final = os.fspath(final)
    folder = os.path.dirname(final) or "."
    tmp = new_directory(folder, prefix)
    try:
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
