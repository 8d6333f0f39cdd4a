"""Atomic file writes: a unique temporary file in the target's folder, fsync, then ``os.replace``.

A crash (SIGKILL, a full disk, an exception) in the middle of a write leaves either the earlier
file or the new one under the final name, never part of one; :func:`atomic_folder` does the same
for a folder of files that belong together (a saved model). The embedding cache, saved models and
the app's demo metadata are written this way.

>>> import tempfile
>>> from pathlib import Path
>>> target = Path(tempfile.mkdtemp()) / "note.txt"
>>> atomic_write_bytes(target, b"complete") == target and target.read_bytes()
b'complete'
"""

from __future__ import annotations

import ctypes
import errno
import glob
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], Any]) -> Path:
    """Call ``write(handle)`` on a temporary file next to ``path``, then rename it to ``path``.

    The folder must exist. On any error the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)  # make the rename itself durable
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_folder(path: str | os.PathLike[str], fill: Callable[[Path], Any]) -> Path:
    """Call ``fill(folder)`` on a new folder beside ``path``, then swap it in for ``path``.

    At every instant ``path`` is the old folder or the new one, never neither and never a mix:
    on Linux the swap is one ``renameat2(RENAME_EXCHANGE)``, elsewhere two renames (a crash
    between them leaves the old folder as ``.<name>.*.old``). On any error the new folder is
    removed and ``path`` is untouched; folders left by writes that were killed are removed by
    the next one that succeeds. ``fill`` should write its files with :func:`atomic_write`.
    """
    path = Path(path)
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".new", dir=parent))
    try:
        fill(new)
        fsync_dir(new)
        if not path.exists():
            os.rename(new, path)
        elif _exchange(new, path):  # ``new`` now holds the old folder
            shutil.rmtree(new, ignore_errors=True)
        else:
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=parent))
            os.rename(path, old / path.name)
            os.rename(new, path)
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    fsync_dir(parent)
    for stale in parent.glob(f".{glob.escape(path.name)}.*"):
        if stale.suffix in (".new", ".old") and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    return path


def recover_folder(path: str | os.PathLike[str]) -> bool:
    """Put back the old folder where :func:`atomic_folder` died between its two renames.

    Only where ``renameat2`` is missing does a swap take two steps; a crash (or an error) between
    them leaves ``path`` missing and the old folder inside ``.<name>.*.old``. Readers call this
    before opening ``path``, so that they find the old folder instead of nothing. True when a
    folder was put back.
    """
    path = Path(path)
    if os.path.lexists(path):
        return False
    for old in sorted(path.parent.glob(f".{glob.escape(path.name)}.*.old/{glob.escape(path.name)}")):
        try:
            os.rename(old, path)
        except OSError:  # another reader put one back first
            continue
        fsync_dir(path.parent)
        shutil.rmtree(old.parent, ignore_errors=True)
        return True
    return False


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step with Linux's ``renameat2``; False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # a libc older than glibc 2.28
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # a file system without the flag
        return False
    raise OSError(err, os.strerror(err), str(b))


def fsync_dir(folder: Path) -> None:
    """Make renames in ``folder`` durable where the platform allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every platform (Windows); the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
