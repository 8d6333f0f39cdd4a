"""Files under the data folder: uploaded audio (content-addressed) and trained models.

Audio is stored as ``audio/<first two hex digits>/<sha256>.<ext>``: the same bytes are stored once
whatever they were called, and a stored file is never modified (its name is its checksum).
Writes go to a temporary file in the same folder tree, are fsync'ed and then renamed into place,
so a crash leaves either the whole file or nothing under its final name.

Paths kept in the database are relative to the data folder and are resolved only through
:meth:`BlobStore.path_for`, which refuses anything that would leave the folder.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO

from ..atomic import fsync_dir
from ..errors import InvalidDataError, UnsafePathError

_CHUNK = 1 << 20
_EXT_RE = re.compile(r"^[a-z0-9]{1,10}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
KINDS = ("audio",)


class BlobStore:
    """Content-addressed files under ``root`` (the data folder)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"BlobStore({str(self.root)!r})"

    # -- paths -----------------------------------------------------------------------------

    def path_for(self, rel: str | os.PathLike[str]) -> Path:
        """The absolute path of a stored relative path; raises :class:`UnsafePathError` if ``rel``
        is absolute, empty, or resolves (through ``..`` or links) outside the data folder."""
        text = os.fspath(rel)
        if not isinstance(text, str) or not text.strip() or "\x00" in text:
            raise UnsafePathError(f"Stored path {text!r} is empty or malformed.")
        if PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute() or PureWindowsPath(text).drive:
            raise UnsafePathError(
                f"Stored path {text!r} is absolute; stored paths must be relative to the data folder."
            )
        candidate = (self.root / text).resolve()
        if candidate == self.root or not candidate.is_relative_to(self.root):
            raise UnsafePathError(f"Stored path {text!r} points outside the data folder {self.root}.")
        return candidate

    def relative(self, path: str | os.PathLike[str]) -> str:
        """``path`` (inside the data folder) as the relative POSIX string kept in the database."""
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(self.root) or resolved == self.root:
            raise UnsafePathError(f"{path} is not inside the data folder {self.root}.")
        return resolved.relative_to(self.root).as_posix()

    @staticmethod
    def _extension(name: str) -> str:
        ext = Path(name).suffix.lower().lstrip(".")
        return ext if _EXT_RE.match(ext) else "bin"

    def _existing(self, folder: Path, sha256: str) -> Path | None:
        if not folder.is_dir():
            return None
        for candidate in sorted(folder.glob(f"{sha256}.*")):
            if candidate.is_file() and not candidate.name.endswith(".tmp"):
                return candidate
        return None

    # -- writing ---------------------------------------------------------------------------

    def put_file(self, src: str | Path, kind: str = "audio") -> tuple[str, str]:
        """Store the file at ``src``; return ``(sha256 of its bytes, path relative to the root)``.

        The same bytes are stored once: a second call (under any name) returns the first path.
        """
        src = Path(src)
        if not src.is_file():
            raise InvalidDataError(f"{src}: not a file that can be stored.")
        if kind not in KINDS:
            raise InvalidDataError(f"kind must be one of {KINDS}, got {kind!r}.")
        digest = hashlib.sha256()
        with src.open("rb") as handle:  # known bytes (a re-upload, every workspace's demo) are not copied again
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        sha256 = digest.hexdigest()
        existing = self._existing(self.root / kind / sha256[:2], sha256)
        if existing is not None:
            return sha256, self.relative(existing)
        with src.open("rb") as handle:
            return self.put_stream(handle, self._extension(src.name), kind=kind)

    def put_bytes(self, data: bytes, ext: str = "bin", kind: str = "audio") -> tuple[str, str]:
        import io

        return self.put_stream(io.BytesIO(data), self._extension(f"x.{ext}"), kind=kind)

    def put_stream(self, stream: BinaryIO, ext: str, kind: str = "audio") -> tuple[str, str]:
        if kind not in KINDS:
            raise InvalidDataError(f"kind must be one of {KINDS}, got {kind!r}.")
        staging = self.root / kind / ".incoming"
        staging.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(dir=staging, suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            sha256 = digest.hexdigest()
            folder = self.root / kind / sha256[:2]
            existing = self._existing(folder, sha256)
            if existing is not None:
                return sha256, self.relative(existing)
            folder.mkdir(parents=True, exist_ok=True)
            final = folder / f"{sha256}.{ext}"
            os.replace(tmp, final)
            fsync_dir(folder)
            return sha256, self.relative(final)
        finally:
            tmp.unlink(missing_ok=True)

    def has(self, sha256: str, kind: str = "audio") -> bool:
        return _SHA_RE.match(sha256) is not None and self._existing(self.root / kind / sha256[:2], sha256) is not None

    def model_dir(self, run_id: int) -> Path:
        """A fresh folder for the model of training run ``run_id`` (``models/run-<id>``).

        Store ``BlobStore.relative(...)`` of it as the run's ``model_path``. An older folder of the
        same run (a retried save) is replaced.
        """
        if not isinstance(run_id, int) or run_id < 0:
            raise InvalidDataError(f"run_id must be a non-negative integer, got {run_id!r}.")
        folder = self.root / "models" / f"run-{run_id}"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return folder
