"""The data the audio pipeline hands on: segments of clean speech, and failures to report."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class AudioSegment:
    """One utterance ready for an encoder: mono float32 at ``sample_rate``, loudness-normalized.

    ``audio_id`` is the SHA-256 of the samples, so identical audio is recognised whatever its
    file name. ``start_s`` and ``end_s`` locate the segment in the original file's timeline.
    The samples are read-only: the id must keep describing them.
    """

    audio_id: str
    samples: np.ndarray
    sample_rate: int
    source: str
    start_s: float
    end_s: float

    def __post_init__(self) -> None:
        samples = np.asarray(self.samples)
        if samples.ndim != 1 or samples.dtype != np.float32:
            raise ValueError(
                f"AudioSegment samples must be float32 of shape [n], got {samples.dtype} {samples.shape}"
            )
        if samples.flags.writeable:
            samples = samples.view()
            samples.flags.writeable = False
        object.__setattr__(self, "samples", samples)

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate

    def _key(self) -> tuple:
        return (self.audio_id, self.sample_rate, self.source, self.start_s, self.end_s)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AudioSegment):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"AudioSegment(audio_id={self.audio_id[:12]}..., source={self.source!r}, "
            f"start_s={self.start_s:.2f}, end_s={self.end_s:.2f}, sample_rate={self.sample_rate})"
        )


@dataclass(frozen=True)
class Failure:
    """A file of a batch that could not be used; ``reason`` is the error's short code."""

    path: str
    reason: str
    message: str


@dataclass(frozen=True)
class BatchResult:
    """What a batch produced: the good segments, and one failure per bad file."""

    segments: tuple[AudioSegment, ...]
    failures: tuple[Failure, ...]

    @property
    def ok(self) -> bool:
        return not self.failures
