"""One error family for the whole project.

Every error a user can cause is a ``SereError`` subclass whose message names the file or the
parameter and says what to do, in words a linguist understands. Code never ``assert``s on input.
"""

from __future__ import annotations

from pathlib import Path


class SereError(Exception):
    """Base of every error SERE Studio raises on purpose."""


class ConfigError(SereError, ValueError):
    """A parameter is out of range or inconsistent."""


class AudioError(SereError):
    """A file could not be turned into usable speech. ``path`` names it; ``reason`` is a short code."""

    reason = "audio"

    def __init__(self, path: str | Path | None, message: str) -> None:
        self.path = str(path) if path is not None else None
        self.message = message
        super().__init__(f"{Path(self.path).name}: {message}" if self.path else message)


class UnreadableAudioError(AudioError):
    reason = "unreadable"


class UnsupportedFormatError(AudioError):
    reason = "unsupported-format"


class EmptyAudioError(AudioError):
    reason = "empty"


class SilentAudioError(AudioError):
    reason = "silent"


class TooShortError(AudioError):
    reason = "too-short"


class InvalidSamplesError(AudioError):
    reason = "invalid-samples"


class SampleRateError(AudioError):
    reason = "sample-rate"


class FileTooLargeError(AudioError):
    reason = "too-large"


class RecordingTooLongError(AudioError):
    """A recording lasts longer than ``AudioConfig.max_duration_s`` (what it decodes to, not its size)."""

    reason = "too-long"


class ManifestError(SereError):
    """A manifest (CSV, folder or archive) is malformed or unsafe."""


class ArchiveError(ManifestError):
    """A zip archive is unsafe (path traversal, absolute paths, links, bomb) or unreadable."""


class EncoderError(SereError):
    """An encoder failed to build, load or run."""


class EncoderUnavailableError(EncoderError):
    """The encoder's weights or libraries are not reachable here (offline hub, missing package)."""


class EngineError(SereError):
    """A distributed engine (Ray) is not installed, cannot be reached or failed during a run."""


class WeightsIntegrityError(EncoderError):
    """Weights on disk do not match their published hash or shapes."""


class NotFittedError(SereError, RuntimeError):
    """``predict`` (or similar) was called before ``fit``."""


class ModelMismatchError(SereError):
    """A saved model does not match the encoder or emotion set it is used with."""


class TrainingCancelled(SereError):
    """Training stopped because its caller asked it to."""


class StorageError(SereError):
    """The project database or the file store refused or failed an operation."""


class NotFoundError(StorageError, LookupError):
    """A project, clip, recording or training run does not exist (any more)."""


class InvalidDataError(StorageError, ValueError):
    """A value offered for storage breaks a rule; the message names the field and the rule."""


class EmotionError(InvalidDataError):
    """An emotion list is malformed, or an emotion is not one of the project's emotions."""


class EmotionInUseError(EmotionError):
    """An emotion cannot be removed from a project while clips are labeled with it."""


class ProjectExistsError(InvalidDataError):
    """Another project already uses this name."""


class ActiveRunError(StorageError):
    """The project already has a queued or running training run (one at a time per project)."""


class RunStateError(StorageError):
    """A training run cannot make this transition (for example finishing a cancelled run)."""


class UnsafePathError(StorageError):
    """A stored path is absolute or points outside the data folder."""


class SchemaVersionError(StorageError):
    """The database was written by a newer SERE Studio, or a schema migration failed."""


class TrainingDataError(SereError, ValueError):
    """The clips given to ``fit`` or ``predict`` cannot be used (labels, shapes, emotions)."""


class LimitError(InvalidDataError):
    """A workspace would hold more than this server allows one workspace (projects, clips, audio)."""
