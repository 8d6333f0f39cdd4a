"""Synthetic cross-lingual frame features for tests, examples and quick checks.

Each emotion has a direction in feature space that shows up strongly only in a clip's highlight
frames (the rest of the frames are emotion-neutral); each language adds a large offset and a
scaling, each speaker a smaller offset. This mimics why real features need per-language
normalization and why highlight pooling helps.
"""

from __future__ import annotations

import numpy as np

from sere_core.method.data import ClipFeatures

EMOTIONS = ("angry", "happy", "neutral", "sad")


def make_corpus(language: str, n_per_class: int, *, emotions: tuple[str, ...] = EMOTIONS,
                dim: int = 32, n_speakers: int = 4, frames: tuple[int, int] = (20, 40),
                frame_rate: float = 50.0, signal: float = 1.5, highlight_share: float = 0.3,
                language_offset: float = 4.0, speaker_offset: float = 1.0, seed: int = 0,
                world_seed: int = 1234) -> list[ClipFeatures]:
    """Clips of one language; ``world_seed`` fixes the emotion directions shared by all languages."""
    world = np.random.default_rng(world_seed)
    directions = world.normal(size=(len(emotions), dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    rng = np.random.default_rng([seed, sum(map(ord, language))])
    lang_shift = rng.normal(size=dim) * language_offset / np.sqrt(dim) * 3
    lang_scale = rng.uniform(0.5, 2.0, size=dim)
    speakers = [f"{language}-s{i}" for i in range(n_speakers)]
    spk_shift = {s: rng.normal(size=dim) * speaker_offset / np.sqrt(dim) * 3 for s in speakers}
    clips = []
    for c, emotion in enumerate(emotions):
        for i in range(n_per_class):
            speaker = speakers[(i + c) % n_speakers]
            t = int(rng.integers(frames[0], frames[1] + 1))
            x = rng.normal(size=(t, dim))
            n_hi = max(1, int(highlight_share * t))
            start = int(rng.integers(0, t - n_hi + 1))
            x[start : start + n_hi] += signal * 3 * directions[c]
            x = (x + spk_shift[speaker]) * lang_scale + lang_shift
            clips.append(ClipFeatures(f"{language}-{emotion}-{i}", x.astype(np.float32), frame_rate,
                                      language, speaker, emotion))
    return clips


def make_task(n_shots: int = 5, n_target_per_class: int = 30, *, emotions: tuple[str, ...] = EMOTIONS,
              seed: int = 0, **kwargs) -> tuple[list[ClipFeatures], list[ClipFeatures]]:
    """``(labeled source shots, labeled target clips)`` of a toy cross-lingual task."""
    source = make_corpus("xx", n_shots, emotions=emotions, seed=seed, **kwargs)
    target = make_corpus("yy", n_target_per_class, emotions=emotions, seed=seed + 1, **kwargs)
    return source, target


def unlabel(clips: list[ClipFeatures]) -> list[ClipFeatures]:
    return [ClipFeatures(c.clip_id, c.frames, c.frame_rate, c.language, c.speaker, None) for c in clips]
