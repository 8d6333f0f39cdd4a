"""Read what to process from a CSV file, a folder of recordings or a zip archive.

Folder rule for emotion labels (documented for users too):

* Files directly in the chosen folder get no emotion.
* Files in subfolders get the name of the folder that holds them as their emotion, provided all
  of them sit at the same depth, one level down (``angry/a.wav``) or two levels down
  (``speaker01/angry/a.wav``, ``german/angry/a.wav``).
* When subfolder files sit at mixed depths, or deeper than two levels, the layout does not say
  which folder is the emotion, so those files get none; use a CSV manifest to label them.

Hidden files and folders (names starting with ".") and ``__MACOSX`` are ignored. Files with a
recognised audio extension are listed even when their format is not supported (``.m4a``), so
the audio stage reports them instead of skipping them unnoticed.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import tempfile
from pathlib import Path

from sere_core.audio.io import AUDIO_EXTENSIONS
from sere_core.errors import ArchiveError, ManifestError
from sere_core.manifests.archive import ArchiveLimits, extract_zip
from sere_core.manifests.entry import ManifestEntry


def read_manifest(
    source: str | os.PathLike[str],
    workdir: Path | None = None,
    *,
    limits: ArchiveLimits = ArchiveLimits(),
    skipped: list[ManifestError] | None = None,
) -> list[ManifestEntry]:
    """List the recordings described by a CSV file, a folder or a ``.zip`` archive.

    A zip is extracted (safely) into a new folder inside ``workdir``, or inside the system's
    temporary folder when ``workdir`` is None; the entries point there, so the caller owns
    that folder and removes it when done. Raises ``ManifestError`` (``ArchiveError`` for
    unsafe archives) naming the file and, for a CSV, the row. With a ``skipped`` list, a bad
    CSV row or an archive inside the archive is appended to it (its message names the file and
    the row) and the rest is read; without, the first one raises.
    """
    src = Path(source)
    if not src.exists():
        raise ManifestError(f"{src.name}: no such file or folder")
    if src.is_dir():
        return read_folder(src, skipped)
    suffix = src.suffix.lower()
    if suffix == ".csv":
        return read_csv(src, skipped)
    if suffix == ".zip":
        return read_zip(src, workdir, limits=limits, skipped=skipped)
    raise ManifestError(
        f"{src.name}: a manifest must be a CSV file, a folder of recordings or a .zip archive"
    )


def _decode(src: Path, data: bytes) -> str:
    if b"\x00" in data:
        raise ManifestError(f"{src.name}: this is not a text CSV file")
    for encoding in ("utf-8-sig", "cp1252"):  # Excel on Windows still writes cp1252
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ManifestError(f"{src.name}: the file is not readable text; save it as UTF-8 CSV")


def _delimiter(header_line: str) -> str:
    """Comma, semicolon (European Excel) or tab, whichever splits the header most."""
    counts = {d: header_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def _skip_or_raise(error: ManifestError, skipped: list[ManifestError] | None) -> None:
    if skipped is None:
        raise error
    skipped.append(error)


def _rows(src: Path, text: str, delimiter: str) -> list[list[str]]:
    """The CSV's rows, one per line of the file (a quoted cell may span lines; blank lines give
    empty rows). A quote that is never closed is reported at the row where it opens."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[list[str]] = []
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return rows
        except csv.Error as exc:
            if "unexpected end of data" in str(exc) or reader.line_num > start:
                raise ManifestError(
                    f"{src.name}, row {start}: the CSV is malformed (a quote \" opened in this row is "
                    "never closed); check the quotes in that row") from None
            raise ManifestError(f"{src.name}, row {start}: the CSV is malformed ({exc})") from None
        rows.extend([[]] * (reader.line_num - start))  # the lines a quoted cell spanned
        rows.append(cells)


def read_csv(path: str | os.PathLike[str], skipped: list[ManifestError] | None = None) -> list[ManifestEntry]:
    """Read a CSV manifest: column ``path`` (relative to the CSV's folder) plus optional
    ``emotion``, ``language`` and ``speaker``; other columns are ignored.

    Row numbers in messages are the spreadsheet's: the header is row 1 (unless blank lines
    precede it) and blank lines are counted. A bad row raises, or with a ``skipped`` list is
    appended to it and left out.
    """
    src = Path(path)
    try:
        data = src.read_bytes()
    except OSError as exc:
        raise ManifestError(f"{src.name}: cannot be read ({exc.strerror or exc})") from None
    text = _decode(src, data)
    if not text.strip():
        raise ManifestError(f"{src.name}: the manifest is empty; row 1 should be a header with a 'path' column")
    first_line = next(line for line in text.lstrip("\ufeff").splitlines() if line.strip())
    rows = _rows(src, text, _delimiter(first_line))
    # Row numbers follow the file's lines, as a spreadsheet shows them; blank lines count.
    header_at = next(i for i, cells in enumerate(rows) if any(c.strip() for c in cells))
    header_row = header_at + 1
    header = [h.strip().lstrip("\ufeff").lower() for h in rows[header_at]]
    if "path" not in header:
        found = ", ".join(repr(h) for h in header if h) or "none"
        raise ManifestError(
            f"{src.name}, row {header_row}: the header has no 'path' column (columns found: {found})"
        )
    for name in ("path", "emotion", "language", "speaker"):
        if header.count(name) > 1:
            raise ManifestError(f"{src.name}, row {header_row}: the column '{name}' appears more than once")
    columns = {name: header.index(name) for name in ("path", "emotion", "language", "speaker") if name in header}
    base = src.parent.resolve()
    entries: list[ManifestEntry] = []
    first_row: dict[Path, int] = {}
    for number, cells in enumerate(rows[header_at + 1 :], start=header_row + 1):
        if not any(c.strip() for c in cells):
            continue  # blank line
        row = {name: (cells[i] if i < len(cells) else None) for name, i in columns.items()}
        try:
            entry = ManifestEntry.from_row(row, base)
        except ManifestError as exc:
            _skip_or_raise(ManifestError(f"{src.name}, row {number}: {exc}"), skipped)
            continue
        if entry.path in first_row:
            _skip_or_raise(ManifestError(
                f"{src.name}, row {number}: '{row['path']}' is already listed in row {first_row[entry.path]}"
            ), skipped)
            continue
        first_row[entry.path] = number
        entries.append(entry)
    if not entries and not skipped:
        raise ManifestError(f"{src.name}: the manifest has a header but lists no recordings")
    return entries


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


#: Archives found inside a folder or an archive: reported, not opened (an archive in an archive
#: is how zip bombs nest).
NESTED_ARCHIVES = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar")


def read_folder(path: str | os.PathLike[str], skipped: list[ManifestError] | None = None) -> list[ManifestEntry]:
    """List the audio files under a folder, labelled by the rule in this module's docstring.

    An archive in the folder is not opened: it raises, or with a ``skipped`` list is appended
    to it."""
    root = Path(path).resolve()
    found: list[tuple[Path, Path]] = []  # (relative path, resolved path)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
        for name in sorted(filenames):
            if not _hidden(name) and Path(name).suffix.lower() in NESTED_ARCHIVES:
                rel = (Path(dirpath) / name).relative_to(root).as_posix()
                _skip_or_raise(ManifestError(
                    f"{rel}: archives inside a folder or an archive are not opened; unpack it and "
                    "upload its contents"), skipped)
                continue
            if _hidden(name):  # .DS_Store, __MACOSX and the like: a system's, not the user's
                continue
            if Path(name).suffix.lower() not in AUDIO_EXTENSIONS:
                if skipped is not None:  # a file the user put there: say it was left out
                    rel = (Path(dirpath) / name).relative_to(root).as_posix()
                    skipped.append(ManifestError(f"{rel}: not an audio file; skipped"))
                continue
            full = Path(dirpath) / name
            rel = full.relative_to(root)
            resolved = full.resolve()
            if not resolved.is_relative_to(root):
                raise ManifestError(
                    f"{Path(path).name}: '{rel.as_posix()}' is a link to a file outside the folder; "
                    "copy the recording into the folder instead"
                )
            found.append((rel, resolved))
    if not found and not skipped:
        raise ManifestError(
            f"{Path(path).name}: the folder contains no audio files "
            f"(looked for {', '.join(sorted({'.wav', '.flac', '.ogg', '.mp3'}))})"
        )
    depths = {len(rel.parts) - 1 for rel, _ in found if len(rel.parts) > 1}
    label_depth = depths.pop() if len(depths) == 1 and depths <= {1, 2} else None
    found.sort(key=lambda item: item[0].as_posix())
    return [
        ManifestEntry(
            path=resolved,
            emotion=rel.parts[-2] if label_depth is not None and len(rel.parts) - 1 == label_depth else None,
        )
        for rel, resolved in found
    ]


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not _hidden(p.name))


def read_zip(
    path: str | os.PathLike[str], workdir: Path | None = None, *, limits: ArchiveLimits = ArchiveLimits(),
    skipped: list[ManifestError] | None = None,
) -> list[ManifestEntry]:
    """Extract an archive safely, then read it as a CSV manifest (exactly one ``*.csv`` at its
    top level) or as a folder. A single folder wrapping everything is looked inside, because
    zipping a folder usually produces one."""
    src = Path(path)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", src.stem)[:40] or "archive"
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    dest = Path(tempfile.mkdtemp(prefix=f"{stem}-", dir=workdir))
    try:
        extract_zip(src, dest, limits)
        root = dest
        while True:
            visible = _visible(root)
            if len(visible) == 1 and visible[0].is_dir():
                root = visible[0]
            else:
                break
        csvs = [p for p in _visible(root) if p.is_file() and p.suffix.lower() == ".csv"]
        try:
            if len(csvs) > 1:
                names = ", ".join(p.name for p in csvs)
                raise ManifestError(f"it holds several CSV manifests at its top level ({names}); keep only one")
            inner: list[ManifestError] | None = [] if skipped is not None else None
            entries = read_csv(csvs[0], inner) if csvs else read_folder(root, inner)
            if skipped is not None:  # named after the archive the user knows
                skipped.extend(ManifestError(f"{src.name}: {exc}") for exc in inner)
            return entries
        except ArchiveError:
            raise
        except ManifestError as exc:
            raise ManifestError(f"{src.name}: {exc}") from None
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)  # nothing half-extracted is left behind
        raise
