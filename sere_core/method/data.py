"""The method's data: clips of frame features in, predictions, progress and snapshots out.

Small frozen dataclasses that carry only ids, numbers and arrays, so the app, the storage layer and
the benchmark can pass them around without knowing how SERE is trained. The baselines use the same
``ClipFeatures`` and ``Prediction``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class ClipFeatures:
    """Frame features ``frames [T, D]`` (float32) of one clip, with what is known about it.

    ``language`` groups clips for normalization (any stable code: ISO 639-1, a corpus name);
    ``speaker`` is used only by per-speaker normalization; ``emotion`` is the label of a labeled
    clip and is ignored everywhere else (unlabeled clips and clips to predict never need it).
    """

    clip_id: str
    frames: np.ndarray
    frame_rate: float
    language: str | None = None
    speaker: str | None = None
    emotion: str | None = None

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def duration_s(self) -> float:
        return self.n_frames / float(self.frame_rate)


@dataclass(frozen=True)
class Prediction:
    """One clip's decision: the emotion, its probability, every emotion's probability, and the
    highlight spans ``(start_s, end_s)`` (seconds from the clip's start) that carried it."""

    emotion: str
    confidence: float
    probabilities: dict[str, float]
    highlights: list[tuple[float, float]] = field(default_factory=list)
    #: The share of an ensemble's models that decide this emotion on their own (None: one model).
    agreement: float | None = None


@dataclass(frozen=True)
class TrainingProgress:
    """What the training loop reports after each optimisation step; ``snapshot`` is the one taken
    at this step, if any (so a viewer can draw the clips while they move)."""

    step: int
    total_steps: int
    losses: dict[str, float]
    elapsed_s: float
    snapshot: Snapshot | None = None


@dataclass(frozen=True, eq=False)
class Snapshot:
    """Every training clip's embedding ``[N, d]`` and the prototypes ``[C, d]`` at one step; the app
    replays these to show unlabeled clips moving toward the emotion structure. Row order follows
    ``clip_ids`` (labeled clips first, then unlabeled, in the order given to ``fit``)."""

    step: int
    clip_ids: tuple[str, ...]
    embeddings: np.ndarray
    prototypes: np.ndarray


def label_counts(clips: Sequence[ClipFeatures]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for clip in clips:
        if clip.emotion is not None:
            counts[clip.emotion] = counts.get(clip.emotion, 0) + 1
    return counts
