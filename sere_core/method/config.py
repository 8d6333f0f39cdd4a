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
HIGHLIGHT_SCORES = ("peak", "contrast")
CONV_EDGES = ("zeros", "replicate")


@dataclass(frozen=True)
class SEREConfig:
    # --- reproducibility and resources
    seed: int = 0
    num_threads: int = 1  # torch/BLAS threads during fit and predict (0 = leave as is); see threads.py
    # --- preprocessing (fit on every clip's frames, labels unused)
    feature_range: tuple[int, int] | None = None  # encoder columns [start, stop); None = all
    # (see recommended_config: for whisper-base, only its shallowest layer)
    target_frame_rate: float = 12.5  # average frames in time down to about this rate
    per_language_norm: bool = True  # z-score each language group with its own statistics
    per_speaker_norm: bool = False  # z-score each known speaker instead (falls back to language)
    # a group's statistics pulled toward all clips' as if it had this many more clips (0 = its own; on
    # dev with 5 clips in total, 5 and 20 are within noise: benchmarks/results/dev_study_norm_prior.md)
    norm_prior_clips: int = 0
    pca_dim: int = 128  # 0 keeps the normalized features as they are
    pca_whiten: bool = False
    pca_max_frames: int = 8000
    # --- resonance network g and the resonance field
    hidden_dim: int = 128
    embed_dim: int = 64
    context: int = 3  # temporal kernel of g (1 = frame-wise MLP)
    # what that kernel sees beyond a clip's edges: "zeros", or its edge frames "replicate"d (on dev
    # -0.1 +- 0.1 UAR points, highlights as close to the edges: benchmarks/results/dev_study_edges_im.md)
    conv_edges: str = "zeros"
    dropout: float = 0.1
    tau: float = 0.1  # temperature of the resonance r = cos / tau and of p(c|x)
    pooling: str = "highlight"  # "highlight" (SERE) or "mean" (ablation)
    highlight_score: str = "peak"  # a frame's score: "peak" resonance or "contrast" (peak - mean)
    # highlights a_t = softmax_t(s_t / tau_a), s_t the score of the resonance averaged over the
    # highlight_window frames around t (1 = the frame alone). Scored on 6-frame segments (0.5 s, the
    # length of a training view), highlights can be sharper: tau_a 0.5 on segments beat tau_a 1 on
    # frames by 0.5 +- 0.2 UAR points on the dev seeds, tau_a 0.5 on frames did not (+0.1 +- 0.2)
    # (benchmarks/results/dev_study_windows*.md)
    tau_a: float = 0.5
    highlight_window: int = 6
    # frames at each end of a clip that cannot be highlights: the edges carry the decision too (1 or
    # 2 frames cost 1.1 +- 0.3 and 1.8 +- 0.4 UAR points on dev: benchmarks/results/dev_study_margin.md)
    highlight_margin: int = 0
    # --- optimisation
    # models trained with seeds seed, seed + 1000, ...; read as one (model.EnsembleModel). Three
    # members of 30 steps cost what one of 100 did and beat it on the dev seeds by 1.7 +- 0.6 UAR
    # points (benchmarks/results/dev_study.md)
    ensemble: int = 3
    steps: int = 30  # per member
    # share of the unlabeled clips predicted as each emotion that each later member also learns as
    # labeled (the surest predictions of the members before it). 0 = members independent: 20 % and
    # 50 % cost 0.8 and 0.9 +- 0.4 UAR points on dev (benchmarks/results/dev_study_pseudo.md)
    pseudo_shots: float = 0.0
    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch_unlabeled: int = 96
    # length of the random crops that make views: 6 frames (0.5 s at 12.5 frames/s) beat 20 by
    # 0.7 +- 0.3 UAR points on the dev seeds and train faster (benchmarks/results/dev_study_crop*.md)
    crop_frames: int = 6
    frame_drop: float = 0.2  # probability of dropping a frame from a view
    feature_noise: float = 0.0
    # --- TRIC: weights, and the curriculum (fractions of the steps)
    w_ll: float = 1.0
    w_lu: float = 0.5
    w_uu: float = 0.5
    lu_start: float = 0.1
    uu_start: float = 0.3
    ramp: float = 0.2
    ll_supcon: float = 0.5  # weight of the supervised-contrastive part of LL
    lu_align: float = 0.5  # weight of class-conditional prototype alignment inside LU
    uu_balanced: bool = False  # True: SwAV-style swapped balanced assignments between the views
    uu_threshold: float = 0.0  # view consistency only where the other view is this confident
    uu_neighbors: int = 5  # k of the neighbour-agreement part of UU (0 = off)
    uu_neighbor_weight: float = 0.0  # off: on dev it pulled clips toward same-speaker neighbours
    # weights of information maximization (clips confident, emotions diverse) and of supervised
    # contrast among the confident unlabeled clips by their pseudo-labels, inside UU: off, neither
    # moved the dev UAR (+-0.1; benchmarks/results/dev_study_edges_im.md, dev_study_uu_supcon.md)
    uu_im: float = 0.0
    uu_supcon: float = 0.0
    # --- balanced self-organisation of the unlabeled clips
    refresh_every: int = 15  # steps between full-pool Sinkhorn assignments
    sinkhorn_iters: int = 3
    sinkhorn_eps: float = 0.05
    sharpen: float = 0.5  # temperature applied to the balanced assignments
    keep_start: float = 0.2  # fraction of each emotion's most confident clips used at first ...
    keep_end: float = 0.5  # ... and at the end (confidence-gated pseudo-labels)
    balance: float = 1.0  # strength of the final class-balance correction on the unlabeled pool (0 = off)
    proto_momentum: float = 0.1  # prototype re-estimation from confident unlabeled clips per refresh
    # --- outputs
    highlight_fraction: float = 0.15  # share of frames reported as highlights
    # p(c|x) = softmax(logits / T) at prediction only (training and the argmax are unchanged): the
    # logits are cos / tau with tau = 0.1 (the ensemble's mean logits: mean confidence 76 % at 49 %
    # accuracy). T = 2.398 minimized NLL on the dev seeds; on the reported seeds ECE 27 -> 4 %
    # (benchmarks/results/calibration.md; chosen again after the segment-scored highlights)
    confidence_temperature: float = 2.398
    snapshot_every: int = 25  # steps between snapshots (plus step 0 and the last); 0 = none

    def __post_init__(self) -> None:
        _check(self)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.feature_range is not None:
            data["feature_range"] = list(self.feature_range)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SEREConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown SERE settings: {', '.join(sorted(unknown))}")
        data = dict(data)
        if isinstance(data.get("feature_range"), list):  # JSON has no tuples
            data["feature_range"] = tuple(data["feature_range"])
        return cls(**data)


#: Upper bounds, far above any useful value, so that a crafted or mistyped setting (a saved
#: model's ``model.json`` is a user's file) is refused instead of allocating gigabytes or looping
#: for hours.
_AT_MOST: dict[str, float] = {
    "num_threads": 256, "target_frame_rate": 1000.0, "norm_prior_clips": 1_000_000, "pca_dim": 4096,
    "pca_max_frames": 10_000_000, "hidden_dim": 4096, "embed_dim": 4096, "context": 64,
    "tau": 100.0, "tau_a": 100.0, "highlight_window": 10_000, "highlight_margin": 10_000, "ensemble": 16,
    "steps": 1_000_000, "lr": 10.0, "weight_decay": 10.0, "batch_unlabeled": 100_000, "crop_frames": 100_000,
    "feature_noise": 100.0, "w_ll": 1000.0, "w_lu": 1000.0, "w_uu": 1000.0, "ll_supcon": 1000.0,
    "lu_align": 1000.0, "uu_neighbors": 1000, "uu_neighbor_weight": 1000.0, "uu_im": 1000.0,
    "uu_supcon": 1000.0, "refresh_every": 1_000_000, "sinkhorn_iters": 1000, "sinkhorn_eps": 100.0,
    "sharpen": 100.0, "confidence_temperature": 1000.0, "snapshot_every": 1_000_000,
}
#: Lower bounds of the temperatures that divide logits and scores at prediction: below them the
#: float32 quotients overflow and every probability becomes NaN.
_AT_LEAST: dict[str, float] = {"tau": 1e-3, "tau_a": 1e-3, "confidence_temperature": 1e-3}
_MAX_FEATURE_COLUMN = 1_000_000


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
        else:  # feature_range: (start, stop) or None
            ok = value is None or (isinstance(value, tuple) and len(value) == 2 and all(
                isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value))
            what = "(start, stop) or None"
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
    need(c.conv_edges in CONV_EDGES, "conv_edges", f"must be one of {CONV_EDGES}")
    need(c.highlight_score in HIGHLIGHT_SCORES, "highlight_score", f"must be one of {HIGHLIGHT_SCORES}")
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
                 "highlight_fraction", "uu_threshold", "balance", "pseudo_shots"):
        need(0 <= getattr(c, name) <= 1, name, "must be in [0, 1]")
    for name in ("w_ll", "w_lu", "w_uu", "ll_supcon", "lu_align", "uu_neighbor_weight", "uu_im", "uu_supcon",
                 "highlight_margin", "norm_prior_clips", "weight_decay", "feature_noise", "snapshot_every",
                 "uu_neighbors", "num_threads"):
        need(getattr(c, name) >= 0, name, "must not be negative")
    if c.feature_range is not None:
        need(0 <= c.feature_range[0] < c.feature_range[1] <= _MAX_FEATURE_COLUMN,
             "feature_range", "must be (start, stop) with 0 <= start < stop")


def recommended_config(encoder_info: Any = None, **overrides: Any) -> SEREConfig:
    """The dev-tuned config for features of ``encoder_info`` (an ``EncoderInfo`` or a dict).

    For whisper-base read out at several layers (default (3, 6)) only the shallowest layer's
    columns are used: on the benchmark's dev seeds layer 3 alone beat layers 3+6 by about 2 UAR
    points and layer 6 alone by about 10, for SERE and the baselines alike. Other encoders use all
    their columns (nothing was tuned for them).

    >>> recommended_config({"name": "whisper-base", "dim": 1024, "layers": [3, 6]}).feature_range
    (0, 512)
    >>> recommended_config({"name": "prosody", "dim": 45, "layers": []}).feature_range is None
    True
    """
    info = encoder_info
    get = (lambda k: info.get(k)) if isinstance(info, dict) else (lambda k: getattr(info, k, None))
    settings: dict[str, Any] = {}
    layers = list(get("layers") or []) if info is not None else []
    if info is not None and get("name") == "whisper-base" and len(layers) > 1 and get("dim"):
        settings["feature_range"] = (0, int(get("dim")) // len(layers))
    settings.update(overrides)
    return SEREConfig(**settings)
