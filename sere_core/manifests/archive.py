"""Safe extraction of zip archives uploaded by users.

An archive is untrusted data. Every entry is checked before anything is written (names, links,
counts, declared sizes and compression ratios), and the bytes are counted again while
streaming because declared sizes can lie. ``ZipFile.extractall`` is never used.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sere_core.errors import ArchiveError, ConfigError

_DRIVE = re.compile(r"^[A-Za-z]:")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    """What an archive may contain before it is refused.

    Attributes:
        max_entries: files and folders together.
        max_total_bytes: uncompressed size of all files together.
        max_ratio: uncompressed / compressed size of one file; speech compresses about 1.1-3:1
            and a zip bomb thousands to one.
        ratio_min_bytes: the ratio is only checked on files bigger than this, because small
            files (a CSV, a run of silence) legitimately compress very well.
    """

    max_entries: int = 10_000
    max_total_bytes: int = 2_000_000_000
    max_ratio: float = 200.0
    ratio_min_bytes: int = 1_000_000

    def __post_init__(self) -> None:
        for name in ("max_entries", "max_total_bytes", "max_ratio"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"ArchiveLimits.{name} must be positive, got {getattr(self, name)}")
        if self.ratio_min_bytes < 0:
            raise ConfigError(f"ArchiveLimits.ratio_min_bytes must not be negative, got {self.ratio_min_bytes}")


def _safe_parts(name: str) -> tuple[str, ...]:
    """The folder/file names of an entry, or an explanation of why the name is unsafe."""
    text = name.replace("\\", "/")
    if "\x00" in text:
        raise ValueError("its name contains a NUL character")
    if text.startswith("/") or _DRIVE.match(text):
        raise ValueError("it has an absolute path")
    parts = [p for p in PurePosixPath(text).parts if p not in ("", ".")]
    if ".." in parts:
        raise ValueError("its path contains '..' and would land outside the extraction folder")
    if not parts:
        raise ValueError("it has an empty name")
    return tuple(parts)


def _entry_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        return "link"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "special"
    return "dir" if info.is_dir() else "file"


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n} bytes"


def extract_zip(
    path: str | os.PathLike[str], dest: str | os.PathLike[str], limits: ArchiveLimits = ArchiveLimits()
) -> list[Path]:
    """Extract a zip archive into ``dest`` after checking it; return the extracted files.

    Raises ``ArchiveError`` naming the archive and the offending entry when the archive is
    unreadable, encrypted, contains links or unsafe paths, or exceeds ``limits``. On any error
    nothing extracted so far is left behind. Existing files in ``dest`` are never overwritten.
    """
    src = Path(path)
    out = Path(dest)
    label = src.name

    def fail(message: str) -> ArchiveError:
        return ArchiveError(f"{label}: {message}; the archive was not extracted")

    try:
        zf = zipfile.ZipFile(src)
    except FileNotFoundError:
        raise ArchiveError(f"{label}: the archive does not exist") from None
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArchiveError(f"{label}: this is not a readable zip archive ({exc})") from None

    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_entries:
            raise fail(f"it holds {len(infos)} entries, more than the {limits.max_entries} allowed")
        plan: list[tuple[zipfile.ZipInfo, tuple[str, ...], bool]] = []
        seen: dict[tuple[str, ...], str] = {}
        total = 0
        for info in infos:
            try:
                parts = _safe_parts(info.filename)
            except ValueError as why:
                raise fail(f"the entry '{info.filename}' is unsafe: {why}") from None
            kind = _entry_kind(info)
            if kind == "link":
                raise fail(f"the entry '{info.filename}' is a symbolic link, which archives may not contain")
            if kind == "special":
                raise fail(f"the entry '{info.filename}' is a device or pipe, not a file")
            if info.flag_bits & 0x1:
                raise fail(f"the entry '{info.filename}' is password-protected")
            if parts in seen and not (kind == "dir" and seen[parts] == "dir"):
                raise fail(f"the entry '{info.filename}' appears more than once")
            seen[parts] = kind
            if kind == "file":
                total += info.file_size
                if total > limits.max_total_bytes:
                    raise fail(
                        f"its files would take more than {_size(limits.max_total_bytes)} once extracted"
                    )
                ratio = info.file_size / max(info.compress_size, 1)
                if info.file_size > limits.ratio_min_bytes and ratio > limits.max_ratio:
                    raise fail(
                        f"the entry '{info.filename}' expands {ratio:.0f} times "
                        f"(more than {limits.max_ratio:g}:1), which is how zip bombs work"
                    )
            plan.append((info, parts, kind == "dir"))

        dest_existed = out.exists()
        created: list[Path] = []
        current = ""
        try:
            out.mkdir(parents=True, exist_ok=True)
            root = out.resolve()
            files: list[Path] = []
            written_total = 0
            current = ""
            for info, parts, is_dir in plan:
                current = info.filename
                target = root.joinpath(*parts)
                if not target.resolve().is_relative_to(root):  # e.g. a folder there is a link
                    raise fail(f"the entry '{info.filename}' would be written outside the extraction folder")
                for parent in reversed([target, *target.parents] if is_dir else list(target.parents)):
                    if parent != root and parent.is_relative_to(root) and not parent.exists():
                        parent.mkdir()
                        created.append(parent)
                if is_dir:
                    continue
                written = 0
                with zf.open(info) as reader, open(target, "xb") as writer:
                    created.append(target)
                    while chunk := reader.read(_CHUNK):
                        written += len(chunk)
                        written_total += len(chunk)
                        if written > info.file_size:
                            raise fail(
                                f"the entry '{info.filename}' holds more data than the {info.file_size} "
                                "bytes it declares"
                            )
                        if written_total > limits.max_total_bytes:
                            raise fail(
                                f"its files would take more than {_size(limits.max_total_bytes)} once extracted"
                            )
                        if written > limits.ratio_min_bytes and written / max(info.compress_size, 1) > limits.max_ratio:
                            raise fail(
                                f"the entry '{info.filename}' expands more than {limits.max_ratio:g} times, "
                                "which is how zip bombs work"
                            )
                        writer.write(chunk)
                files.append(target)
            return files
        except ArchiveError:
            _cleanup(out, created, dest_existed)
            raise
        except FileExistsError as exc:
            _cleanup(out, created, dest_existed)
            raise fail(f"extracting would overwrite an existing file ({Path(exc.filename or '').name})") from None
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            _cleanup(out, created, dest_existed)
            raise fail(f"it is damaged ({exc})") from None
        except (NotImplementedError, RuntimeError) as exc:  # unsupported compression, encryption
            _cleanup(out, created, dest_existed)
            raise fail(f"it uses a feature that cannot be read ({exc})") from None
        except OSError as exc:
            _cleanup(out, created, dest_existed)
            raise fail(f"the entry '{current}' could not be written ({exc.strerror or exc})") from None


def _cleanup(dest: Path, created: list[Path], dest_existed: bool) -> None:
    """Remove what an aborted extraction wrote."""
    if not dest_existed:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for p in reversed(created):
        try:
            if p.is_dir() and not p.is_symlink():
                p.rmdir()
            else:
                p.unlink()
        except OSError:
            pass
