"""Input checks shared by SERE and the baselines: clear, typed errors instead of asserts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sere_core.errors import TrainingDataError
from sere_core.method.data import ClipFeatures

MIN_CLASSES = 2
MAX_CLASSES = 10


def _check_clip(clip: object, where: str, dim: int | None) -> int:
    if not isinstance(clip, ClipFeatures):
        raise TrainingDataError(f"{where}: expected ClipFeatures, got {type(clip).__name__}")
    frames = clip.frames
    if not isinstance(frames, np.ndarray) or frames.ndim != 2 or frames.shape[0] < 1:
        raise TrainingDataError(f"{where} (clip {clip.clip_id!r}): frames must be a non-empty [T, D] array")
    if dim is not None and frames.shape[1] != dim:
        raise TrainingDataError(
            f"{where} (clip {clip.clip_id!r}): {frames.shape[1]} features per frame, expected {dim}; "
            "were all clips embedded with the same encoder?")
    if not np.isfinite(frames).all():
        raise TrainingDataError(f"{where} (clip {clip.clip_id!r}): frames contain NaN or infinity")
    if not clip.frame_rate or clip.frame_rate <= 0:
        raise TrainingDataError(f"{where} (clip {clip.clip_id!r}): frame_rate must be positive")
    return int(frames.shape[1])


def check_fit_inputs(labeled: Sequence[ClipFeatures], unlabeled: Sequence[ClipFeatures]
                     ) -> tuple[list[str], int, float]:
    """Validate a training set; returns the emotions (sorted: the probability-column order), the
    feature dimension and the frame rate."""
    labeled, unlabeled = list(labeled), list(unlabeled or [])
    if not labeled:
        raise TrainingDataError("labeled: no labeled clips; label at least one clip of each emotion")
    dim = _check_clip(labeled[0], "labeled", None)
    rate = float(labeled[0].frame_rate)
    for name, clips in (("labeled", labeled), ("unlabeled", unlabeled)):
        for clip in clips:
            _check_clip(clip, name, dim)
            if abs(float(clip.frame_rate) - rate) > 1e-6:
                raise TrainingDataError(
                    f"{name} (clip {clip.clip_id!r}): frame rate {clip.frame_rate} differs from {rate}")
    missing = [c.clip_id for c in labeled if not c.emotion]
    if missing:
        raise TrainingDataError(f"labeled: {len(missing)} clips have no emotion (first: {missing[0]!r})")
    classes = sorted({c.emotion for c in labeled})
    if len(classes) < MIN_CLASSES:
        raise TrainingDataError(
            f"labeled: found only the emotion {classes[0]!r}; label clips of at least {MIN_CLASSES} emotions")
    if len(classes) > MAX_CLASSES:
        raise TrainingDataError(
            f"labeled: {len(classes)} emotions; at most {MAX_CLASSES} are supported")
    ids = [c.clip_id for c in labeled] + [c.clip_id for c in unlabeled]
    if len(set(ids)) != len(ids):
        raise TrainingDataError("clip ids must be unique across labeled and unlabeled clips")
    return classes, dim, rate


def check_predict_inputs(clips: Sequence[ClipFeatures], dim: int) -> list[ClipFeatures]:
    clips = list(clips)
    for clip in clips:
        _check_clip(clip, "clips", dim)
    return clips


def spans_from_weights(weights: np.ndarray, n_raw_frames: int, factor: int, frame_rate: float,
                       fraction: float) -> list[tuple[float, float]]:
    """Highlight spans in seconds: the top ``fraction`` of pooled frames by weight (at least one),
    adjacent frames merged. ``weights [T']`` covers ``n_raw_frames`` encoder frames, ``factor`` per
    pooled frame.

    >>> spans_from_weights(np.array([0.1, 0.5, 0.3, 0.0, 0.1]), 10, 2, 50.0, 0.4)
    [(0.04, 0.12)]
    """
    n = len(weights)
    k = max(1, int(np.ceil(fraction * n)))
    top = np.sort(np.argsort(-weights, kind="stable")[:k])
    spans: list[tuple[float, float]] = []
    start = prev = int(top[0])
    for i in [*map(int, top[1:]), None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        spans.append((round(start * factor / frame_rate, 4),
                      round(min((prev + 1) * factor, n_raw_frames) / frame_rate, 4)))
        if i is not None:
            start = prev = i
    return spans
