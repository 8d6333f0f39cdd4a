"""``SEREConfig``: every hyper-parameter of SERE in one frozen dataclass.

The defaults are the ones chosen on the benchmark's development seeds (100-104), never on the
reported seeds; ``benchmarks/results/cross_lingual.md`` says how.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields
from typing import Any

from sere_core.errors import ConfigError

POOLINGS = ("highlight", "mean")
#: How a highlight window that reaches past a clip's edge is averaged: "zero" counts the frames
#: beyond the clip as zero resonance (the default since #15), "clip" averages the frames it has
#: (models saved before format 2, whose highlights crowd the clip's silent edges).
HIGHLIGHT_EDGES = ("zero", "clip")
#: Settings deleted with their code (#15), each with the value whose behaviour the code kept. The
#: commit tagged ``research/2026-12`` still has them; ``benchmarks/studies.md`` says what each did.
REMOVED_SETTINGS: dict[str, Any] = {
    "norm_prior_clips": 0, "pca_whiten": False, "conv_edges": "zeros", "highlight_score": "peak",
    "highlight_margin": 0, "pseudo_shots": 0.0, "feature_noise": 0.0, "uu_balanced": False,
    "uu_threshold": 0.0, "uu_neighbors": 5, "uu_neighbor_weight": 0.0, "uu_im": 0.0, "uu_supcon": 0.0,
}
RESEARCH_TAG = "research/2026-12"


@dataclass(frozen=True)
class SEREConfig:
    """Every setting of SERE. The defaults are the benchmarked method, chosen on the development
    seeds only; ``benchmarks/studies.md`` holds the evidence for each choice."""

    # --- reproducibility and resources
    seed: int = 0
    num_threads: int = 1  # torch/BLAS threads during fit and predict (0 = leave as is); see threads.py
    # --- preprocessing (fit on every clip's frames, labels unused)
    # encoder columns [start, stop) of each member's view: member i reads views[i % len(views)],
    # each z-scored (per language) and projected by a PCA of its own; () = every column, one view
    views: tuple[tuple[int, int], ...] = ()
    target_frame_rate: float = 12.5  # average frames in time down to about this rate
    per_language_norm: bool = True  # z-score each language group with its own statistics
    per_speaker_norm: bool = False  # z-score each known speaker instead (falls back to language)
    pca_dim: int = 128  # PCA of each view's normalized frames to this size; 0 keeps them as they are
    pca_max_frames: int = 8000  # frames sampled to fit the PCA
    # --- resonance network g and the resonance field
    hidden_dim: int = 128
    embed_dim: int = 64
    context: int = 3  # temporal kernel of g (1 = frame-wise MLP); zeros beyond a clip's edges
    dropout: float = 0.1
    tau: float = 0.1  # temperature of the resonance r = cos / tau and of p(c|x)
    pooling: str = "highlight"  # "highlight" (SERE) or "mean" (ablation)
    # highlights a_t = softmax_t(s_t / tau_a), s_t the peak resonance averaged over the
    # highlight_window frames around t (1 = the frame alone), frames beyond the clip as highlight_edges says
    tau_a: float = 4.0
    highlight_window: int = 6
    highlight_edges: str = "zero"
    # --- optimisation
    # models trained with seeds seed, seed + 1000, ..., each on its view; read as one (model.EnsembleModel)
    ensemble: int = 3
    steps: int = 30  # per member
    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch_unlabeled: int = 96
    crop_frames: int = 6  # length of the random crops that make a clip's training views
    frame_drop: float = 0.2  # probability of dropping a frame from a view
    # --- TRIC: weights, and the curriculum (fractions of the steps)
    w_ll: float = 1.0
    w_lu: float = 0.5
    w_uu: float = 0.5  # UU: two views of an unlabeled clip predict each other's sharpened emotion
    lu_start: float = 0.1
    uu_start: float = 0.3
    ramp: float = 0.2
    ll_supcon: float = 0.5  # weight of the supervised-contrastive part of LL
    lu_align: float = 0.5  # weight of class-conditional prototype alignment inside LU
    # --- balanced self-organisation of the unlabeled clips
    refresh_every: int = 15  # steps between full-pool Sinkhorn assignments
    sinkhorn_iters: int = 3
    sinkhorn_eps: float = 0.05
    sharpen: float = 0.5  # temperature applied to the balanced assignments and to UU's targets
    keep_start: float = 0.2  # fraction of each emotion's most confident clips used at first ...
    keep_end: float = 0.5  # ... and at the end (confidence-gated pseudo-labels)
    balance: float = 1.0  # strength of the final class-balance correction on the unlabeled pool (0 = off)
    proto_momentum: float = 0.1  # prototype re-estimation from confident unlabeled clips per refresh
    # --- outputs
    highlight_fraction: float = 0.15  # share of frames reported as highlights
    # p(c|x) = softmax(logits / T) at prediction only (training and the argmax are unchanged);
    # calibrated on the development seeds (benchmarks/calibration.py)
    confidence_temperature: float = 2.187
    snapshot_every: int = 25  # steps between snapshots (plus step 0 and the last); 0 = none

    def __post_init__(self) -> None:
        if isinstance(self.views, list):  # as JSON and to_dict give them
            object.__setattr__(self, "views", tuple(tuple(v) if isinstance(v, list) else v for v in self.views))
        _check(self)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["views"] = [list(v) for v in self.views]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SEREConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown SERE settings: {', '.join(sorted(unknown))}")
        return cls(**data)


def without_removed(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` (saved before #15) without the deleted settings, when each holds the value
    whose behaviour SERE kept; a model or run that used another value cannot be reproduced by this
    version, and says which commit can.

    >>> without_removed({"steps": 30, "conv_edges": "zeros"})
    {'steps': 30}
    """
    changed = sorted(k for k, v in settings.items() if k in REMOVED_SETTINGS and v != REMOVED_SETTINGS[k])
    if changed:
        raise ConfigError(
            f"these settings were removed from SERE and the saved value is not the one it kept: "
            f"{', '.join(f'{k}={settings[k]!r}' for k in changed)}; the commit tagged {RESEARCH_TAG} "
            "still has them")
    return {k: v for k, v in settings.items() if k not in REMOVED_SETTINGS}


#: Upper bounds, far above any useful value, so that a crafted or mistyped setting (a saved
#: model's ``model.json`` is a user's file) is refused instead of allocating gigabytes or looping
#: for hours.
_AT_MOST: dict[str, float] = {
    "num_threads": 256, "target_frame_rate": 1000.0, "pca_dim": 4096,
    "pca_max_frames": 10_000_000, "hidden_dim": 4096, "embed_dim": 4096, "context": 64,
    "tau": 100.0, "tau_a": 100.0, "highlight_window": 10_000, "ensemble": 16,
    "steps": 1_000_000, "lr": 10.0, "weight_decay": 10.0, "batch_unlabeled": 100_000, "crop_frames": 100_000,
    "w_ll": 1000.0, "w_lu": 1000.0, "w_uu": 1000.0, "ll_supcon": 1000.0,
    "lu_align": 1000.0, "refresh_every": 1_000_000, "sinkhorn_iters": 1000, "sinkhorn_eps": 100.0,
    "sharpen": 100.0, "confidence_temperature": 1000.0, "snapshot_every": 1_000_000,
}
#: Lower bounds of the temperatures that divide logits and scores at prediction: below them the
#: float32 quotients overflow and every probability becomes NaN.
_AT_LEAST: dict[str, float] = {"tau": 1e-3, "tau_a": 1e-3, "confidence_temperature": 1e-3}
_MAX_FEATURE_COLUMN = 1_000_000
#: The most views a config (and so a saved model) may hold.
MAX_VIEWS = 16


def _check_types(c: SEREConfig) -> None:
    """Each setting has its field's type: a whole number where a count is meant, a finite number
    where a weight is, True/False for a switch, a word for a choice."""
    for f in fields(c):
        value, kind = getattr(c, f.name), str(f.type)
        if kind == "bool":
            ok, what = isinstance(value, bool), "True or False"
        elif kind == "int":
            ok, what = isinstance(value, numbers.Integral) and not isinstance(value, bool), "a whole number"
        elif kind == "float":
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            what = "a finite number"
        elif kind == "str":
            ok, what = isinstance(value, str), "a word"
        else:  # views: ((start, stop), ...)
            ok = isinstance(value, tuple) and len(value) <= MAX_VIEWS and all(
                isinstance(v, tuple) and len(v) == 2
                and all(isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in v) for v in value)
            what = f"a tuple of at most {MAX_VIEWS} (start, stop) pairs"
        if not ok:
            raise ConfigError(f"SEREConfig.{f.name} must be {what} (got {value!r:.80})")


def _check(c: SEREConfig) -> None:
    def need(ok: bool, name: str, what: str) -> None:
        if not ok:
            raise ConfigError(f"SEREConfig.{name} {what} (got {getattr(c, name)!r})")

    _check_types(c)
    for name, most in _AT_MOST.items():
        need(getattr(c, name) <= most, name, f"must be at most {most:g}")
    for name, least in _AT_LEAST.items():
        need(getattr(c, name) >= least, name, f"must be at least {least:g}")

    need(c.pooling in POOLINGS, "pooling", f"must be one of {POOLINGS}")
    need(c.highlight_edges in HIGHLIGHT_EDGES, "highlight_edges", f"must be one of {HIGHLIGHT_EDGES}")
    need(c.target_frame_rate >= 0.1, "target_frame_rate", "must be at least 0.1 frames per second")
    need(c.pca_dim >= 0, "pca_dim", "must be 0 (off) or positive")
    for name in ("ensemble", "hidden_dim", "embed_dim", "context", "batch_unlabeled", "crop_frames",
                 "pca_max_frames", "refresh_every", "sinkhorn_iters", "highlight_window"):
        need(getattr(c, name) >= 1, name, "must be at least 1")
    need(c.steps >= 0, "steps", "must not be negative")
    for name in ("lr", "sinkhorn_eps", "sharpen"):
        need(getattr(c, name) > 0, name, "must be positive")
    for name in ("dropout", "frame_drop"):
        need(0 <= getattr(c, name) < 1, name, "must be in [0, 1)")
    for name in ("lu_start", "uu_start", "ramp", "keep_start", "keep_end", "proto_momentum",
                 "highlight_fraction", "balance"):
        need(0 <= getattr(c, name) <= 1, name, "must be in [0, 1]")
    for name in ("w_ll", "w_lu", "w_uu", "ll_supcon", "lu_align", "weight_decay", "snapshot_every",
                 "num_threads"):
        need(getattr(c, name) >= 0, name, "must not be negative")
    need(all(0 <= start < stop <= _MAX_FEATURE_COLUMN for start, stop in c.views),
         "views", "must be (start, stop) pairs with 0 <= start < stop")


def recommended_config(encoder_info: Any = None, **overrides: Any) -> SEREConfig:
    """The dev-tuned config for features of ``encoder_info`` (an ``EncoderInfo`` or a dict).

    For whisper-base each member reads its layers of ``encoders.whisper.SERE_VIEWS``, wherever the
    read-out put them; a read-out that lacks one of their layers, or splits them, gives one view of
    all its columns. Other encoders use all their columns (nothing was tuned for them).

    >>> recommended_config({"name": "whisper-base", "dim": 3584, "layers": list(range(7))}).views
    ((1024, 2048), (1024, 2560), (512, 2048))
    >>> recommended_config({"name": "whisper-base", "dim": 2048, "layers": [1, 2, 3, 4]}).views
    ((512, 1536), (512, 2048), (0, 1536))
    >>> recommended_config({"name": "whisper-base", "dim": 1024, "layers": [2, 3]}).views
    ()
    >>> recommended_config({"name": "prosody", "dim": 45, "layers": []}).views
    ()
    """
    from sere_core.encoders.whisper import SERE_VIEWS

    info = encoder_info
    get = (lambda k: info.get(k)) if isinstance(info, dict) else (lambda k: getattr(info, k, None))
    settings: dict[str, Any] = {}
    layers = list(get("layers") or []) if info is not None else []
    if info is not None and get("name") == "whisper-base" and get("dim") and layers:
        width = int(get("dim")) // len(layers)
        views = []
        for first, last in SERE_VIEWS:
            wanted = list(range(first, last + 1))
            start = layers.index(first) if first in layers else -1
            if start < 0 or layers[start:start + len(wanted)] != wanted:
                break
            views.append((start * width, (start + len(wanted)) * width))
        else:
            settings["views"] = tuple(views)
    settings.update(overrides)
    return SEREConfig(**settings)
