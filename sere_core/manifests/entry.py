"""One row of a manifest: which recording, and what is known about it."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sere_core.errors import ManifestError

#: Columns a CSV manifest may have; only ``path`` is required, others are ignored.
MANIFEST_COLUMNS: tuple[str, ...] = ("path", "emotion", "language", "speaker")
#: Longest value of each text column (the database stores no more).
MAX_CHARS: dict[str, int] = {"emotion": 100, "language": 32, "speaker": 200}

_WINDOWS_ABSOLUTE = re.compile(r"^[A-Za-z]:[\\/]|^[A-Za-z]:$|^\\\\")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def normalize_emotion(label: str | None) -> str | None:
    """Emotion labels compare equal however they were typed: NFC, stripped, lower case.

    >>> normalize_emotion("  Angry ")
    'angry'
    """
    if label is None:
        return None
    text = unicodedata.normalize("NFC", str(label)).strip().lower()
    return text or None


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    text = unicodedata.normalize("NFC", str(value)).strip()
    return text or None


def resolve_inside(raw: str, base: Path) -> Path:
    """Resolve a manifest path against ``base`` and refuse it unless it stays inside ``base``.

    Manifests are data, and data must not reach files elsewhere on the machine (``../x.wav``,
    ``/etc/passwd``, ``C:\\x.wav``, or a link pointing out of the folder).
    """
    text = raw.strip()
    if not text:
        raise ManifestError("the path is empty")
    if "\x00" in text:
        raise ManifestError(f"the path {text!r} contains a NUL character")
    if _URL.match(text):
        raise ManifestError(f"the path '{text}' is a web address; download the recording and list the file")
    if _WINDOWS_ABSOLUTE.match(text):
        raise ManifestError(
            f"the path '{text}' is an absolute Windows path; write it relative to the manifest's folder"
        )
    candidate = Path(text.replace("\\", "/"))
    base_resolved = base.resolve()
    resolved = (candidate if candidate.is_absolute() else base_resolved / candidate).resolve()
    if not resolved.is_relative_to(base_resolved):
        raise ManifestError(
            f"the path '{text}' points outside the manifest's folder; "
            "list only recordings stored next to the manifest or in its subfolders"
        )
    return resolved


@dataclass(frozen=True)
class ManifestEntry:
    """A recording to process: its absolute path and its optional labels.

    Labels are normalized on creation (emotion lower-cased) so that "Angry" in one CSV and
    "angry" in a folder name are the same class.
    """

    path: Path
    emotion: str | None = None
    language: str | None = None
    speaker: str | None = None

    def __post_init__(self) -> None:
        path = Path(self.path)
        if not path.is_absolute():
            raise ValueError(f"ManifestEntry.path must be absolute, got {self.path!s}")
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "emotion", normalize_emotion(self.emotion))
        object.__setattr__(self, "language", _clean(self.language))
        object.__setattr__(self, "speaker", _clean(self.speaker))

    def to_row(self, base: Path | None = None) -> dict[str, str]:
        """A CSV row; the path is written relative to ``base`` when given (it must lie inside)."""
        path = self.path.relative_to(base.resolve()).as_posix() if base is not None else str(self.path)
        return {
            "path": path,
            "emotion": self.emotion or "",
            "language": self.language or "",
            "speaker": self.speaker or "",
        }

    @classmethod
    def from_row(cls, row: Mapping[str, str | None], base: Path) -> ManifestEntry:
        """Build an entry from a CSV row whose path is relative to ``base`` (checked to stay inside)."""
        raw = row.get("path")
        if raw is None:
            raise ManifestError("the row has no 'path' value")
        for column, most in MAX_CHARS.items():
            value = _clean(row.get(column))
            if value is not None and len(value) > most:
                raise ManifestError(f"the {column} '{value[:40]}...' is longer than {most} characters")
        return cls(
            path=resolve_inside(raw, base),
            emotion=row.get("emotion"),
            language=row.get("language"),
            speaker=row.get("speaker"),
        )
