"""Labels out to CSV and back in.

CSV files get opened in spreadsheets, and a cell such as ``=HYPERLINK(...)`` or ``@SUM(...)`` in a
file name or speaker would run as a formula there. :func:`safe_csv_cell` prefixes such text with an
apostrophe (which spreadsheets show as plain text), and :func:`import_labels` strips that prefix
again, so an export followed by an import is lossless.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..atomic import atomic_write
from ..errors import InvalidDataError
from .labels import set_label
from .models import Clip, ClipRole, Label, Recording
from .projects import get_project, parse_role

#: Cell prefixes that make spreadsheets evaluate a cell (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
#: Columns of :func:`labels_to_rows`, in file order.
LABEL_COLUMNS = ("path", "original_name", "audio_id", "role", "start_s", "end_s", "emotion", "language", "speaker")


def safe_csv_cell(value: Any) -> str:
    """The text to write for ``value``: empty for None, and a leading ``'`` on text that a
    spreadsheet would read as a formula.

    >>> safe_csv_cell("=1+1"), safe_csv_cell("@SUM(A1)"), safe_csv_cell("angry"), safe_csv_cell(None)
    ("'=1+1", "'@SUM(A1)", 'angry', '')
    >>> safe_csv_cell(-0.5)  # numbers we produce are numbers, not formulas
    '-0.5'
    """
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def unescape_csv_cell(text: str) -> str:
    """Undo :func:`safe_csv_cell` on a cell read back from a file."""
    if len(text) >= 2 and text[0] == "'" and text[1:].startswith(FORMULA_PREFIXES):
        return text[1:]
    return text


def write_csv(path: str | Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> int:
    """Write ``rows`` (only ``columns``, in that order) as UTF-8 CSV, every cell made safe.

    The file appears complete or not at all (temporary file + rename). Returns the row count.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0

    def write(raw: BinaryIO) -> None:
        nonlocal count
        handle = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        writer = csv.writer(handle)
        writer.writerow([safe_csv_cell(c) for c in columns])
        for row in rows:
            writer.writerow([safe_csv_cell(row.get(c)) for c in columns])
            count += 1
        handle.flush()
        handle.detach()  # atomic_write owns and closes the file

    atomic_write(path, write)
    return count


def labels_to_rows(session: Session, project_id: int, role: ClipRole | str | None = None) -> list[dict[str, Any]]:
    """One row per labeled clip (columns :data:`LABEL_COLUMNS`), in clip order.

    ``path`` is the stored recording relative to the data folder (empty if the clip has none);
    ``start_s``/``end_s`` place the clip in that recording.
    """
    get_project(session, project_id)
    query = (
        select(Clip, Label.emotion, Recording.stored_path)
        .join(Label, Label.clip_id == Clip.id)
        .outerjoin(Recording, Recording.id == Clip.recording_id)
        .where(Clip.project_id == project_id)
        .order_by(Clip.id)
    )
    if role is not None:
        query = query.where(Clip.role == parse_role(role))
    return [
        {
            "path": stored_path or "",
            "original_name": clip.original_name,
            "audio_id": clip.audio_id,
            "role": clip.role.value,
            "start_s": clip.start_s,
            "end_s": clip.end_s,
            "emotion": emotion,
            "language": clip.language,
            "speaker": clip.speaker,
        }
        for clip, emotion, stored_path in session.execute(query)
    ]


@dataclass
class ImportResult:
    """What :func:`import_labels` did; ``rejected`` lists ``(line number, reason)``."""

    applied: int = 0
    unchanged: int = 0
    skipped: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)


def _narrow(candidates: list[Clip], row: Mapping[str, str]) -> list[Clip]:
    role = row.get("role", "").strip().lower()
    if role and len(candidates) > 1:
        candidates = [c for c in candidates if c.role.value == role]
    start = row.get("start_s", "").strip()
    if start and len(candidates) > 1:
        try:
            start_s = float(start)
        except ValueError:
            return candidates
        candidates = [c for c in candidates if abs(c.start_s - start_s) < 1e-3]
    return candidates


def import_labels(
    session: Session,
    project_id: int,
    path: str | Path,
    *,
    author: str | None = None,
    session_id: str | None = None,
) -> ImportResult:
    """Apply the labels of a CSV (such as :func:`write_csv` of :func:`labels_to_rows`) to a project.

    Rows are matched to clips by ``audio_id`` when present, else by ``original_name`` (narrowed by
    ``role`` and ``start_s`` when one file was split into several clips). Needs an ``emotion``
    column; emotions match the project's names ignoring case. Rows with an empty emotion are
    skipped; rows naming an unknown clip or emotion are reported in ``rejected``, not applied.
    Every applied label goes through :func:`set_label`, so it is in the history and can be undone.
    """
    project = get_project(session, project_id)
    by_casefold = {e.casefold(): e for e in project.emotions}
    clips = list(session.scalars(select(Clip).where(Clip.project_id == project_id)))
    by_audio: dict[str, list[Clip]] = defaultdict(list)
    by_name: dict[str, list[Clip]] = defaultdict(list)
    for clip in clips:
        by_audio[clip.audio_id].append(clip)
        by_name[clip.original_name].append(clip)
    current = dict(
        session.execute(
            select(Label.clip_id, Label.emotion)
            .join(Clip, Clip.id == Label.clip_id)
            .where(Clip.project_id == project_id)
        ).all()
    )
    result = ImportResult()
    try:
        handle = open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise InvalidDataError(f"{Path(path).name}: cannot read the labels file ({exc.strerror}).") from exc
    with handle:
        reader = csv.DictReader(handle, strict=True)  # strict: an unclosed quote is an error, not one huge cell
        try:
            header = [(h or "").strip().lower() for h in reader.fieldnames or []]
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InvalidDataError(f"{Path(path).name}: not a readable CSV file ({exc}).") from exc
        if "emotion" not in header or not ({"audio_id", "original_name"} & set(header)):
            raise InvalidDataError(
                f"{Path(path).name}: a labels file needs an 'emotion' column and an 'audio_id' or "
                f"'original_name' column; found {header}."
            )
        reader.fieldnames = header
        line = reader.line_num
        try:
            for raw in reader:
                line = reader.line_num
                row = {k: unescape_csv_cell((v or "").strip()) for k, v in raw.items() if isinstance(k, str)}
                emotion_text = row.get("emotion", "")
                if not emotion_text:
                    result.skipped += 1
                    continue
                emotion = by_casefold.get(emotion_text.casefold())
                if emotion is None:
                    result.rejected.append((line, f"{emotion_text!r} is not an emotion of this project"))
                    continue
                audio_id = row.get("audio_id", "")
                name = row.get("original_name", "")
                if audio_id:
                    candidates, what = by_audio.get(audio_id, []), f"audio_id {audio_id[:12]}"
                else:
                    candidates, what = by_name.get(name, []), f"{name!r}"
                candidates = _narrow(candidates, row)
                if not candidates:
                    result.rejected.append((line, f"no clip {what} in this project"))
                    continue
                if len(candidates) > 1:
                    result.rejected.append((line, f"{what} matches {len(candidates)} clips; add start_s or role"))
                    continue
                clip = candidates[0]
                if current.get(clip.id) == emotion:
                    result.unchanged += 1
                    continue
                set_label(session, clip.id, emotion, author=author, session_id=session_id)
                current[clip.id] = emotion
                result.applied += 1
        except csv.Error as exc:
            why = ("a quote \" opened there or below is never closed" if "unexpected end of data" in str(exc)
                   else str(exc))
            raise InvalidDataError(f"{Path(path).name}, line {line + 1}: the CSV is malformed ({why}); "
                                   "fix that row and import the file again.") from exc
        except UnicodeDecodeError as exc:
            raise InvalidDataError(f"{Path(path).name}: not a readable CSV file ({exc}).") from exc
    return result
