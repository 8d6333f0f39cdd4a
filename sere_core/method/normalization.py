"""Frame preprocessing shared by SERE and the baselines: column selection, time pooling, z-scoring
per language (or per speaker) with unlabeled statistics, and an optional PCA of each view (a
range of the selected columns; SERE's ensemble members read different views).

Why per language: a frozen encoder's features carry a strong language/corpus offset that, left in,
dominates every distance; each group's own statistics (labels never used) remove it. Per speaker
removes the speaker offset too, when speakers are known.

A clip of a group never seen in ``fit`` is normalized with statistics of its own group in the
batch being transformed when that batch holds at least ``min_group_clips`` of them, else with the
statistics of all training frames together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sere_core.errors import ConfigError
from sere_core.method.data import ClipFeatures

GLOBAL = "*"
EPS = 1e-5


def pool_frames(frames: np.ndarray, factor: int) -> np.ndarray:
    """Average ``frames [T, D]`` over windows of ``factor`` frames -> ``[ceil(T / factor), D]``.

    The last window averages the frames it has.

    >>> pool_frames(np.arange(10, dtype=np.float32).reshape(5, 2), 2).tolist()
    [[1.0, 2.0], [5.0, 6.0], [8.0, 9.0]]
    """
    if factor <= 1:
        return frames
    t, d = frames.shape
    n = -(-t // factor)
    pad = n * factor - t
    summed = np.concatenate([frames, np.zeros((pad, d), frames.dtype)]).reshape(n, factor, d).sum(1)
    counts = np.full(n, factor, dtype=np.float32)
    counts[-1] = factor - pad
    return (summed / counts[:, None]).astype(np.float32)


def pool_factor(frame_rate: float, target_frame_rate: float) -> int:
    return max(1, int(round(frame_rate / target_frame_rate)))


def group_key(clip: ClipFeatures, per_language: bool, per_speaker: bool) -> str:
    """The normalization group of a clip: ``spk:<lang>/<speaker>``, ``lang:<lang>`` or global."""
    lang = clip.language or "?"
    if per_speaker and clip.speaker is not None:
        return f"spk:{lang}/{clip.speaker}"
    if per_language:
        return f"lang:{lang}"
    return GLOBAL


def frame_stats(blocks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean and std ``[D]`` over all frames of ``blocks`` (each ``[T_i, D]``), and the frame count."""
    n = sum(b.shape[0] for b in blocks)
    total = np.zeros(blocks[0].shape[1], np.float64)
    for b in blocks:
        total += b.sum(0, dtype=np.float64)
    mean = total / n
    sq = np.zeros_like(total)
    for b in blocks:
        sq += ((b - mean) ** 2).sum(0, dtype=np.float64)
    std = np.sqrt(sq / max(n - 1, 1))
    return mean.astype(np.float32), std.astype(np.float32), n


@dataclass(frozen=True)
class PreprocessConfig:
    feature_range: tuple[int, int] | None = None  # encoder columns [start, stop); None = all
    views: tuple[tuple[int, int], ...] = ()  # ranges of the selected columns; () = one view of all
    target_frame_rate: float = 12.5
    per_language: bool = True
    per_speaker: bool = False
    pca_dim: int = 0
    pca_max_frames: int = 20000
    min_speaker_frames: int = 250
    min_group_clips: int = 10
    seed: int = 0


class Preprocessor:
    """Fit on clips (no labels), then turn clips into normalized (projected) frame arrays."""

    def __init__(self, config: PreprocessConfig) -> None:
        self.config = config
        self.frame_rate: float | None = None
        self.stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        # per view: the PCA mean [W] and components [k, W] of its columns, or None (no PCA)
        self.projections: list[tuple[np.ndarray, np.ndarray] | None] = []

    # --- stages ---------------------------------------------------------------------------------
    def _select_and_pool(self, clip: ClipFeatures) -> np.ndarray:
        frames = np.asarray(clip.frames, dtype=np.float32)
        if self.config.feature_range is not None:
            start, stop = self.config.feature_range
            frames = frames[:, start:stop]
        return pool_frames(frames, pool_factor(clip.frame_rate, self.config.target_frame_rate))

    def _key(self, clip: ClipFeatures) -> str:
        return group_key(clip, self.config.per_language, self.config.per_speaker)

    def output_frame_rate(self, frame_rate: float) -> float:
        return frame_rate / pool_factor(frame_rate, self.config.target_frame_rate)

    @property
    def view_columns(self) -> tuple[tuple[int, int], ...]:
        """Each view's range of the selected columns (after :meth:`fit`)."""
        return self.config.views or ((0, self.width),)

    @property
    def width(self) -> int:
        """The number of selected columns (after :meth:`fit`)."""
        return int(self.stats[GLOBAL][0].shape[0])

    # --- fit / transform --------------------------------------------------------------------------
    def fit(self, clips: Sequence[ClipFeatures]) -> Preprocessor:
        cfg = self.config
        self.frame_rate = float(clips[0].frame_rate)
        pooled = [self._select_and_pool(c) for c in clips]
        self.stats = {}
        mean, std, _ = frame_stats(pooled)
        self.stats[GLOBAL] = (mean, std)
        groups: dict[str, list[np.ndarray]] = {}
        for clip, frames in zip(clips, pooled):
            groups.setdefault(group_key(clip, cfg.per_language or cfg.per_speaker, False), []).append(frames)
            if cfg.per_speaker and clip.speaker is not None:
                groups.setdefault(self._key(clip), []).append(frames)
        for key, blocks in groups.items():
            m, s, n = frame_stats(blocks)
            if key.startswith("spk:") and n < cfg.min_speaker_frames:
                continue  # too few frames: this speaker falls back to its language
            self.stats[key] = (m, s)
        if any(stop > self.width for _, stop in self.view_columns):
            raise ConfigError(f"the views {list(self.view_columns)} reach past the {self.width} columns of "
                              "these features: they come from another encoder read-out")
        self.projections = [None] * len(self.view_columns)
        if cfg.pca_dim:
            sample = self._pca_sample(self._normalize(clips, pooled))
            self.projections = [self._fit_pca(sample[:, start:stop]) for start, stop in self.view_columns]
        return self

    def _normalize(self, clips: Sequence[ClipFeatures], pooled: list[np.ndarray]) -> list[np.ndarray]:
        cfg = self.config
        batch_stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        unseen: dict[str, list[np.ndarray]] = {}
        keys = []
        for clip, frames in zip(clips, pooled):
            key = self._key(clip)
            if key not in self.stats and key.startswith("spk:"):
                key = group_key(clip, True, False)
            if key not in self.stats:
                unseen.setdefault(key, []).append(frames)
            keys.append(key)
        for key, blocks in unseen.items():
            if len(blocks) >= cfg.min_group_clips:
                m, s, _ = frame_stats(blocks)
                batch_stats[key] = (m, s)
        out = []
        for key, frames in zip(keys, pooled):
            m, s = self.stats.get(key) or batch_stats.get(key) or self.stats[GLOBAL]
            out.append(((frames - m) / (s + EPS)).astype(np.float32))
        return out

    def _pca_sample(self, normed: list[np.ndarray]) -> np.ndarray:
        """At most ``pca_max_frames`` of the normalized frames, the same for every view."""
        frames = np.concatenate(normed)
        if frames.shape[0] > self.config.pca_max_frames:
            rng = np.random.default_rng(self.config.seed)
            frames = frames[rng.choice(frames.shape[0], self.config.pca_max_frames, replace=False)]
        return frames

    def _fit_pca(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The mean and the top ``pca_dim`` components ``[k, W]`` of ``frames [N, W]``."""
        k = min(self.config.pca_dim, frames.shape[1], max(frames.shape[0] - 1, 1))
        mean = frames.mean(0, dtype=np.float64).astype(np.float32)
        centered = (frames - mean).astype(np.float32)
        # eigen-decomposition of the W x W covariance: cheap for W ~ 1000 and deterministic
        cov = (centered.T @ centered).astype(np.float64) / max(len(centered) - 1, 1)
        evals, evecs = np.linalg.eigh(cov)
        order = np.argsort(evals)[::-1][:k]
        comps = evecs[:, order].T
        comps *= np.sign(comps[np.arange(k), np.abs(comps).argmax(1)])[:, None]  # fixed signs
        return mean, comps.astype(np.float32)

    def transform(self, clips: Sequence[ClipFeatures]) -> list[list[np.ndarray]]:
        """One list per view: each clip's frames ``[T', D_v]`` after pooling, normalization and
        the view's projection."""
        normed = self._normalize(clips, [self._select_and_pool(c) for c in clips])
        out = []
        for (start, stop), projection in zip(self.view_columns, self.projections):
            if projection is None:
                out.append([np.ascontiguousarray(f[:, start:stop]) for f in normed])
            else:
                mean, comps = projection
                out.append([((f[:, start:stop] - mean) @ comps.T).astype(np.float32) for f in normed])
        return out

    @property
    def out_dims(self) -> list[int]:
        """The size of each view's frames."""
        return [p[1].shape[0] if p is not None else stop - start
                for (start, stop), p in zip(self.view_columns, self.projections)]

    # --- persistence (plain arrays + JSON, never pickle) -----------------------------------------
    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        arrays: dict[str, np.ndarray] = {}
        keys = sorted(self.stats)
        for i, key in enumerate(keys):
            arrays[f"norm.{i}.mean"], arrays[f"norm.{i}.std"] = self.stats[key]
        for v, projection in enumerate(self.projections):
            if projection is not None:
                arrays[f"view.{v}.mean"], arrays[f"view.{v}.components"] = projection
        meta = {"groups": keys, "frame_rate": self.frame_rate}
        return arrays, meta

    @classmethod
    def from_state(cls, config: PreprocessConfig, arrays: dict[str, np.ndarray], meta: dict) -> Preprocessor:
        pre = cls(config)
        pre.frame_rate = meta["frame_rate"]
        pre.stats = {key: (arrays[f"norm.{i}.mean"], arrays[f"norm.{i}.std"])
                     for i, key in enumerate(meta["groups"])}
        pre.projections = [(arrays[f"view.{v}.mean"], arrays[f"view.{v}.components"])
                           if f"view.{v}.components" in arrays else None for v in range(len(pre.view_columns))]
        return pre
