"""Candidate changes to SERE and its baselines, measured on the development seeds only.

The protocol's episodes (``common4`` by default, 5 per emotion or ``--shots 5-total``, the 12 tasks)
on dev seeds (100-104; never the reported 0-9), each candidate against its reference
(``Variant.against``) on the same episodes: the paired difference and its standard error say
whether a change is worth adopting. Every row goes into the ledger, ``benchmarks/studies.md``.

Candidates live here, outside the library, until the ledger adopts them: settings of ``SEREConfig``
or of a baseline, feature views (which whisper-base layers, how combined) and wrappers around a
method. Past candidates are in the commit the ledger names (most at the tag ``research/2026-12``).

The features are whisper-base's seven hidden states (input and six blocks) from one forward pass,
so any view of the layers can be compared on the same cache::

    python benchmarks/dev_study.py --corpora ../shared/corpora --name layers --variants sere_L1-4,logreg_L1-4

Runs from a clean commit only. Writes ``benchmarks/results/<name>.md`` and ``<name>.csv`` (one row
per variant and episode, the columns of ``cross_lingual.csv``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sere_core.benchmark import parse_seeds
from sere_core.benchmark import report as R
from sere_core.benchmark.corpora import load_corpora
from sere_core.benchmark.protocol import CLASS_SETS, CORPORA, DEV_SEEDS, SHOTS, tasks
from sere_core.benchmark.runner import BASELINE_PARAMS, BENCH_SERE_CONFIG, Plan, make_method, run_plan
from sere_core.benchmark.runner import layer_columns as columns
from sere_core.method import SERE
from sere_core.method.data import ClipFeatures, Prediction

log = logging.getLogger("dev_study")

# --- wrappers: a method on transformed features ------------------------------------------------------
Transform = Callable[[list[ClipFeatures], list[ClipFeatures]], Callable[[ClipFeatures], ClipFeatures]]


class Transformed:
    """Any method, fit and applied on transformed frames; ``transform(labeled, unlabeled)`` returns
    the per-clip function (it may learn from the unlabeled clips, never from labels)."""

    def __init__(self, inner, transform: Transform) -> None:
        self.inner, self.transform = inner, transform

    def fit(self, labeled, unlabeled=()):
        self.f_ = self.transform(list(labeled), list(unlabeled))
        self.inner.fit([self.f_(c) for c in labeled], [self.f_(c) for c in unlabeled])
        return self

    def predict(self, clips):
        return self.inner.predict([self.f_(c) for c in clips])


def layer_average(first: int, last: int) -> Transform:
    """The mean of layers ``first..last``, each z-scored first with the statistics of every clip's
    frames (labels unused): one 512-column view that mixes the layers with equal weight."""
    def make(labeled, unlabeled):
        frames = np.concatenate([c.frames for c in [*labeled, *unlabeled]])
        spans = [columns(layer, layer) for layer in range(first, last + 1)]
        stats = [(frames[:, a:b].mean(0), frames[:, a:b].std(0) + 1e-5) for a, b in spans]

        def apply(c: ClipFeatures) -> ClipFeatures:
            mixed = np.mean([(c.frames[:, a:b] - m) / s for (a, b), (m, s) in zip(spans, stats)], axis=0)
            return replace(c, frames=mixed.astype(np.float32))
        return apply
    return make


#: Prosody frames by clip id (``prosody`` encoder, pooled to the whisper frames' 12.5 per second),
#: loaded by ``main`` when a variant reads them (the forked workers inherit it).
PROSODY: dict[str, np.ndarray] = {}
PROSODY_POOL = 8  # 100 prosody frames per second -> 12.5
N_MELS = 40  # the prosody encoder's log-mel columns come first


def prosody_channels(frames: np.ndarray) -> np.ndarray:
    """``[T, 4]``: log F0, voicing, log energy and spectral tilt (the least-squares slope of the
    log-mel energies over the bands) from prosody-encoder frames."""
    mels = frames[:, :N_MELS]
    bands = np.arange(N_MELS) - (N_MELS - 1) / 2
    tilt = (mels - mels.mean(1, keepdims=True)) @ bands / float(bands @ bands)
    return np.column_stack([frames[:, N_MELS], frames[:, N_MELS + 1], frames[:, N_MELS + 2], tilt])


def with_prosody(view: tuple[int, int] | None, copies: int) -> Transform:
    """The layers of ``view`` (SERE's own where None) with the four prosody channels beside them,
    each repeated ``copies`` times: SERE z-scores every column per language and keeps the main PCA
    directions, so a channel repeated k times carries k times the variance of one encoder column
    into the projection."""
    a, b = columns(*(view or (2, 3)))  # layers 2-3: every member's view until #47

    def make(labeled, unlabeled):
        def apply(c: ClipFeatures) -> ClipFeatures:
            pros = prosody_channels(PROSODY[c.clip_id])
            t = min(len(pros), len(c.frames))
            extra = np.repeat(pros[:t], copies, axis=1)
            return replace(c, frames=np.concatenate([c.frames[:t, a:b], extra], 1).astype(np.float32))
        return apply
    return make


def emotion_directions(means: list[np.ndarray], emotions: list[str]) -> np.ndarray:
    """``[C - 1, D]`` orthonormal directions between the labeled clips' emotion means (their clip
    means standardized over the labeled clips): where the source says emotion lies."""
    x = np.stack(means)
    x = (x - x.mean(0)) / (x.std(0) + 1e-5)
    centres = np.stack([x[[e == c for e in emotions]].mean(0) for c in sorted(set(emotions))])
    q, _ = np.linalg.qr((centres - centres.mean(0)).T)
    return q.T[: len(centres) - 1]


def project_out(x: np.ndarray, directions: np.ndarray) -> np.ndarray:
    return x - (x @ directions.T) @ directions


def pseudo_speaker_norm(k: int, null_emotion: bool = False, cluster_view: tuple[int, int] | None = None) -> Transform:
    """Per-speaker normalization without speaker labels: the unlabeled clips of each language are
    clustered (k-means on their standardized clip means, which speakers dominate) into ``k``
    pseudo-speakers, and every clip of that language is z-scored with its nearest cluster's frame
    statistics; clips of other languages (the labeled source) are left to SERE's per-language
    normalization. With ``null_emotion`` the clustering ignores the directions between the labeled
    source's emotion means (so the clusters follow speakers more than arousal); ``cluster_view``: the
    layers whose clip means are clustered (SERE's own where None; layer 1's follow speakers best).
    Normalizes SERE's own layers."""
    from sklearn.cluster import KMeans

    a, b = columns(2, 3)  # every member's view until #47
    ca, cb = columns(*cluster_view) if cluster_view else (a, b)

    def make(labeled, unlabeled):
        null = emotion_directions([c.frames[:, ca:cb].mean(0) for c in labeled], [c.emotion for c in labeled]) \
            if null_emotion else np.zeros((0, cb - ca))
        fitted = {}
        for lang in sorted({c.language for c in unlabeled}):
            pool = [c.frames[:, a:b] for c in unlabeled if c.language == lang]
            means = np.stack([c.frames[:, ca:cb].mean(0) for c in unlabeled if c.language == lang])
            centre, scale = means.mean(0), means.std(0) + 1e-5
            km = KMeans(min(k, len(pool)), n_init=3, random_state=0).fit(
                project_out((means - centre) / scale, null))
            stats = []
            for j in range(km.n_clusters):
                frames = np.concatenate([f for f, lab in zip(pool, km.labels_) if lab == j])
                stats.append((frames.mean(0), frames.std(0) + 1e-5))
            fitted[lang] = (km, centre, scale, stats)

        def apply(c: ClipFeatures) -> ClipFeatures:
            frames = c.frames[:, a:b]
            if c.language in fitted:
                km, centre, scale, stats = fitted[c.language]
                key = (c.frames[:, ca:cb].mean(0) - centre) / scale
                mu, sd = stats[int(km.predict(project_out(key[None], null))[0])]
                frames = (frames - mu) / sd
            return replace(c, frames=frames.astype(np.float32))
        return apply
    return make


class EMAdapted:
    """SERE, then its class statistics re-estimated on the unlabeled clips by EM, without gradients
    (after Emo-TTA): a von Mises-Fisher mixture on SERE's unit clip embeddings, started from its
    prototypes and its class-balance bias; each round sets the responsibilities from the prototypes
    and the priors, each prototype to the responsibility-weighted mean embedding (``keep`` of SERE's
    own kept) and, with ``priors``, the log priors to those of the mean responsibilities.
    Highlights stay SERE's."""

    def __init__(self, inner: SERE, keep: float = 0.5, priors: bool = False, rounds: int = 10) -> None:
        self.inner, self.keep, self.priors, self.rounds = inner, keep, priors, rounds

    def _logits(self, z: np.ndarray) -> np.ndarray:
        return z @ self.mu_.T / self.inner.config.tau + self.log_prior_

    def fit(self, labeled, unlabeled=()):
        self.inner.fit(labeled, unlabeled)
        z, start = self.inner.transform(unlabeled), self.inner.prototypes_
        members = getattr(self.inner.model_, "members", [self.inner.model_])
        self.mu_ = start
        self.log_prior_ = np.mean([m.class_bias.numpy() for m in members], axis=0)
        for _ in range(self.rounds):
            logits = self._logits(z)
            r = np.exp(logits - logits.max(1, keepdims=True))
            r /= r.sum(1, keepdims=True)
            self.mu_ = _unit(self.keep * start + (1 - self.keep) * _unit(r.T @ z))
            if self.priors:
                self.log_prior_ = np.log(r.mean(0) + 1e-6)
        return self

    def predict(self, clips):
        return decide(self.inner.predict(clips), self.inner.classes_, self._logits(self.inner.transform(clips)))


class GraphSmoothed:
    """SERE, then its probabilities smoothed over a k-nearest-neighbour graph of the clips being
    predicted, in SERE's own resonance space (label propagation on the output, as in LaplacianShot
    or "learning with local and global consistency"): ``F = (1 - alpha) P + alpha S F``, with ``S``
    the symmetric, degree-normalized cosine graph. Highlights stay SERE's."""

    def __init__(self, inner: SERE, k: int = 10, alpha: float = 0.5, rounds: int = 20) -> None:
        self.inner, self.k, self.alpha, self.rounds = inner, k, alpha, rounds

    def fit(self, labeled, unlabeled=()):
        self.inner.fit(labeled, unlabeled)
        return self

    def predict(self, clips):
        clips = list(clips)
        preds = self.inner.predict(clips)
        if len(clips) <= self.k:
            return preds
        p = probabilities(preds, self.inner.classes_)
        z = self.inner.transform(clips)
        sim = z @ z.T
        np.fill_diagonal(sim, -np.inf)
        nearest = np.argsort(-sim, axis=1)[:, : self.k]
        w = np.zeros_like(sim)
        rows = np.repeat(np.arange(len(z)), self.k)
        w[rows, nearest.ravel()] = np.maximum(sim[rows, nearest.ravel()], 0.0)
        w = np.maximum(w, w.T)
        d = 1.0 / np.sqrt(np.maximum(w.sum(1), 1e-8))
        s = w * d[:, None] * d[None, :]
        f = p
        for _ in range(self.rounds):
            f = (1 - self.alpha) * p + self.alpha * s @ f
        return decide(preds, self.inner.classes_, f)


class Fused:
    """SERE's and another method's decisions in one: their log-probabilities averaged, ``weight`` on
    the other's (late fusion of the resonance space with an utterance-level view)."""

    def __init__(self, inner: SERE, other, weight: float = 0.5) -> None:
        self.inner, self.other, self.weight = inner, other, weight

    def fit(self, labeled, unlabeled=()):
        self.inner.fit(labeled, unlabeled)
        self.other.fit(labeled, unlabeled)
        return self

    def predict(self, clips):
        clips = list(clips)
        preds = self.inner.predict(clips)
        order = [list(self.other.classes_).index(c) for c in self.inner.classes_]
        mine, theirs = probabilities(preds, self.inner.classes_), self.other.predict_proba(clips)[:, order]
        log_p = (1 - self.weight) * np.log(np.maximum(mine, 1e-12)) + self.weight * np.log(np.maximum(theirs, 1e-12))
        return decide(preds, self.inner.classes_, log_p)


class LayerWeighted(torch.nn.Module):
    """g behind a learned softmax weighting of the layers (the SUPERB weighted sum): frames
    ``[B, T, L * W]`` (L layers of W columns side by side) -> ``sum_l softmax(gain * p)_l x_l``.
    ``gain`` lets the weights move within SERE's few steps: Adam moves ``p`` by about the learning
    rate a step, so the logits move ``gain`` times that."""

    def __init__(self, net: torch.nn.Module, n_layers: int, width: int, gain: float = 30.0) -> None:
        super().__init__()
        self.net, self.shape, self.gain = net, (n_layers, width), gain
        self.p = torch.nn.Parameter(torch.zeros(n_layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.gain * self.p, 0)
        return self.net(torch.einsum("btlw,l->btw", x.reshape(*x.shape[:2], *self.shape), w), mask)


class SUPERBWeighted(SERE):
    """SERE on a learned softmax weighting of ``n_layers`` whisper-base layers (each z-scored per
    language; no PCA, since a PCA of the layers side by side would mix them before the weighting)."""

    def __init__(self, config, n_layers: int) -> None:
        super().__init__(config)
        self.n_layers = n_layers

    def _build_member(self, in_dim: int, n_classes: int):
        member = super()._build_member(in_dim // self.n_layers, n_classes)
        member.net = LayerWeighted(member.net, self.n_layers, in_dim // self.n_layers)
        member.in_dim = in_dim
        return member


def _superb(first: int, last: int) -> Callable[[int], SERE]:
    cfg = replace(BENCH_SERE_CONFIG, snapshot_every=0, views=(columns(first, last),), pca_dim=0)
    return lambda seed: SUPERBWeighted(replace(cfg, seed=seed), last - first + 1)


def probabilities(predictions: Sequence[Prediction], classes: Sequence[str]) -> np.ndarray:
    """``[N, C]``: each prediction's probabilities, columns in the order of ``classes``."""
    return np.array([[p.probabilities[c] for c in classes] for p in predictions])


def decide(predictions: Sequence[Prediction], classes: Sequence[str], scores: np.ndarray) -> list[Prediction]:
    """The predictions with the emotion a wrapper's ``scores [N, C]`` pick (their highlights and
    probabilities stay the inner method's)."""
    return [replace(p, emotion=classes[k]) for p, k in zip(predictions, scores.argmax(1))]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


# --- variants ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    what: str
    make: Callable[[int], object]
    against: str  # the method it is paired with (itself for a reference)


def _sere(view: tuple[int, int] | None = None, **settings) -> Callable[[int], SERE]:
    """SERE as benchmarked; where ``view`` (first, last) is given, every member reads those layers."""
    cfg = replace(BENCH_SERE_CONFIG, snapshot_every=0, **{"views": (columns(*view),), **settings}
                  if view else settings)
    return lambda seed: SERE(replace(cfg, seed=seed))


def _baseline(name: str, view: tuple[int, int] = (3, 3), stats: str = "mean_std", **settings) -> Callable[[int], object]:
    """A baseline with its benchmarked settings, on the layers ``view`` and utterance ``stats``."""
    params = {**BASELINE_PARAMS[name], "feature_range": columns(*view), "stats": stats, **settings}
    return lambda seed: make_method(name, seed, baseline_params={name: params})


def _views() -> dict[str, tuple[str, tuple[int, int]]]:
    return {"L1-4": ("layers 1-4 side by side", (1, 4)), "L2-4": ("layers 2-4 side by side", (2, 4)),
            "L0-6": ("all seven hidden states side by side", (0, 6)), "L2": ("layer 2", (2, 2)),
            "L4": ("layer 4", (4, 4))}


def build_variants() -> dict[str, Variant]:
    out = {"sere": Variant("the shipped default (reference)", _sere(), "sere"),
           "sere_L3": Variant("SERE on layer 3 (the default until #15)", _sere((3, 3)), "sere")}
    for key, (what, view) in _views().items():
        out[f"sere_{key}"] = Variant(f"SERE on {what}", _sere(view), "sere")
    for first, last in ((2, 3), (1, 3), (2, 5)):
        out[f"sere_L{first}-{last}"] = Variant(f"SERE on layers {first}-{last} side by side", _sere((first, last)), "sere")
    out["sere_avgL1-4"] = Variant("SERE on the mean of layers 1-4 (each z-scored)",
                                  lambda seed: Transformed(_sere(views=())(seed),
                                                           layer_average(1, 4)), "sere")
    for key, (what, view) in {"": ("layers 2-3", None), "_L1-4": ("layers 1-4", (1, 4)),
                              "_L2-4": ("layers 2-4", (2, 4))}.items():
        ref = f"sere{key}"
        for copies in (16, 32):
            out[f"sere{key}_prosody{copies}"] = Variant(
                f"SERE on {what} with log F0, voicing, log energy and spectral tilt beside them ({copies} copies "
                "each)", lambda seed, v=view, k=copies: Transformed(_sere(views=())(seed), with_prosody(v, k)),
                ref)
        out[f"sere{key}_em"] = Variant(f"SERE on {what}, then EM on the target's class statistics (half SERE's "
                                       "prototypes kept)", lambda seed, v=view: EMAdapted(_sere(v)(seed)), ref)
        out[f"sere{key}_em_free"] = Variant(f"SERE on {what}, then EM on the target's class statistics (free)",
                                            lambda seed, v=view: EMAdapted(_sere(v)(seed), keep=0.0), ref)
        out[f"sere{key}_em_priors"] = Variant(f"SERE on {what}, then EM on the target's class statistics and "
                                              "priors (half SERE's prototypes kept)",
                                              lambda seed, v=view: EMAdapted(_sere(v)(seed), priors=True), ref)
        for eps in (0.1, 0.2):
            out[f"sere{key}_eps{eps}"] = Variant(f"SERE on {what}, entropic Sinkhorn: eps {eps} instead of 0.05",
                                                 _sere(view, sinkhorn_eps=eps), ref)
    for first, last in ((0, 6), (1, 4)):
        out[f"sere_superb_L{first}-{last}"] = Variant(
            f"SERE on a learned softmax weighting of layers {first}-{last} (SUPERB; z-scored, no PCA)",
            _superb(first, last), "sere")
    for k in (8, 16):
        for suffix, view, null in (("", None, False), ("_null", None, True), ("_L1", (1, 1), False),
                                   ("_L1_null", (1, 1), True)):
            means = "its layer-1 clip means" if view else "its clip means"
            nulled = ", the source's emotion directions projected out" if null else ""
            out[f"sere_pseudo_spk{k}{suffix}"] = Variant(
                f"SERE with the target z-scored per pseudo-speaker ({k} k-means clusters of {means}{nulled})",
                lambda seed, n=k, v=view, e=null: Transformed(_sere(views=())(seed),
                                                              pseudo_speaker_norm(n, e, v)), "sere")
    out["sere_edges_clip"] = Variant("SERE before #15's highlights on speech: a window at a clip's edge averages the "
                                     "frames it has, tau_a 0.5", _sere(highlight_edges="clip", tau_a=0.5), "sere")
    out["sere_mean_pool"] = Variant("SERE with mean pooling (the ablation's)", _sere(pooling="mean"), "sere")
    for k, alpha in ((10, 0.5), (10, 0.8), (20, 0.5)):
        out[f"sere_knn{k}_a{alpha}"] = Variant(
            f"SERE, then its probabilities smoothed over a {k}-nearest-neighbour graph of the scored clips in "
            f"its resonance space (alpha {alpha})", lambda seed, n=k, a=alpha: GraphSmoothed(_sere()(seed), n, a), "sere")
    for key, views, n in (("views3_ens3", ((2, 3), (2, 4), (1, 3)), 9), ("views2", ((2, 3), (1, 3)), 2),
                          ("views3b", ((2, 3), (1, 3), (1, 4)), 3), ("views4", ((2, 3), (2, 4), (1, 3), (1, 4)), 4),
                          ("views5", ((2, 3), (2, 4), (1, 3), (1, 4), (2, 5)), 5)):
        out[f"sere_{key}"] = Variant(
            f"SERE with {n} members on layers {', '.join(f'{a}-{b}' for a, b in views)} (member i on the "
            f"(i mod {len(views)})-th)",
            _sere(views=tuple(columns(*v) for v in views), ensemble=n), "sere")
    for weight in (0.3, 0.5):
        out[f"sere_fuse_logreg{weight}"] = Variant(
            f"SERE's and the benchmarked logreg's log-probabilities averaged ({weight} on logreg's)",
            lambda seed, w=weight: Fused(_sere()(seed), make_method("logreg", seed), w), "sere")
    for name in BASELINE_PARAMS:
        out[name] = Variant(f"{name}, as benchmarked (reference)", lambda seed, n=name: make_method(n, seed), name)
        out[f"{name}_L3"] = Variant(f"{name} on layer 3, mean and std (as benchmarked until #15)", _baseline(name), name)
        out[f"{name}_mean"] = Variant(f"{name} on layer 3, mean only", _baseline(name, stats="mean"), name)
        for key, (what, view) in _views().items():
            out[f"{name}_{key}"] = Variant(f"{name} on {what}, mean and std", _baseline(name, view), name)
            out[f"{name}_{key}_mean"] = Variant(f"{name} on {what}, mean only",
                                                _baseline(name, view, stats="mean"), name)
        out[f"{name}_avgL1-4"] = Variant(f"{name} on the mean of layers 1-4 (each z-scored), mean and std",
                                         lambda seed, n=name: Transformed(_baseline(n, feature_range=None)(seed),
                                                                          layer_average(1, 4)), name)
    return out


VARIANTS = build_variants()


# --- report --------------------------------------------------------------------------------------------
def write_markdown(path: Path, results: Sequence, names: Sequence[str], seeds: Sequence[int], wall_s: float,
                   command: str, class_set: str, shots: str) -> None:
    lines = [f"# Candidates on the development seeds ({class_set}, {shots})", "",
             f"- commit: `{R.commit()}`; machine: {R.machine()}; {datetime.now(timezone.utc):%Y-%m-%d}",
             f"- seeds: {list(seeds)} (development seeds; the reported seeds are 0-9); 12 tasks;"
             f" wall time: {wall_s / 60:.1f} min",
             f"- command: `{command}`",
             "- Δ: the variant minus its reference, paired by episode, ± its standard error (UAR points);"
             " *above*/*below*: beyond two standard errors. Early highlights: share of the scored clips"
             " with a highlight starting in their first 0.1 s.", "",
             "| variant | what changes | mean UAR | Δ | vs | reading | early highlights % | s per episode |",
             "|---|---|---|---|---|---|---|---|"]
    for name in names:
        against = VARIANTS[name].against
        diff, se, _ = R.paired_difference(results, name, against) if name != against else (0.0, float("nan"), 0)
        mine = [r for r in results if r.method == name]
        lines.append(f"| {name} | {VARIANTS[name].what} | {R.mean_uar(results, name):.1f} | "
                     f"{R.paired_cell(diff, se)} | {against if name != against else '–'} | "
                     f"{R.reading(diff, se)} | {R.early_cell(results, name)} | {np.mean([r.fit_s for r in mine]):.1f} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def study_order(requested: Sequence[str]) -> list[str]:
    """Each requested variant after the method it is paired with, each once (a reference is paired
    with itself, so asking for it alone runs it once)."""
    return list(dict.fromkeys(n for name in requested for n in (VARIANTS[name].against, name)))


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpora", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--name", default="dev_study", help="the results files' name: <out>/<name>.md and .csv")
    ap.add_argument("--seeds", default=f"{DEV_SEEDS[0]}-{DEV_SEEDS[-1]}")
    ap.add_argument("--variants", required=True, help="comma-separated; each runs with its reference")
    ap.add_argument("--class-set", default="common4", choices=CLASS_SETS)
    ap.add_argument("--shots", default=SHOTS[0], choices=SHOTS)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if R.working_tree_dirty():
        ap.error("the working tree has changes: a study runs from a clean commit, which its results name")
    seeds = parse_seeds(args.seeds)
    if set(seeds) & set(range(10)):
        ap.error("the reported seeds 0-9 are not for choosing settings; use the development seeds")
    requested = [n for n in args.variants.split(",") if n]
    unknown = [n for n in requested if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    names = study_order(requested)
    t0 = time.perf_counter()
    by_corpus, info = load_corpora(args.corpora, CORPORA)  # every whisper-base layer
    if any("prosody" in n for n in names):
        prosody, _ = load_corpora(args.corpora, CORPORA, "prosody", pool=PROSODY_POOL)
        PROSODY.update({b.clip.clip_id: b.clip.frames for clips in prosody.values() for b in clips})
    plan = Plan(tasks(), [args.class_set], [args.shots], seeds, names)
    with tqdm(total=plan.size, unit="fit", desc=args.name) as bar:  # a study runs for minutes
        results = run_plan(plan, by_corpus, make=lambda name, seed: VARIANTS[name].make(seed), bar=bar,
                           workers=args.workers)
    encoder = f"{info.get('name')} (layers {info.get('layers')}, version {info.get('version')})"
    args.out.mkdir(parents=True, exist_ok=True)
    R.write_csv(results, encoder, args.out / f"{args.name}.csv")
    command = "python benchmarks/dev_study.py " + " ".join(sys.argv[1:] if argv is None else argv)
    write_markdown(args.out / f"{args.name}.md", results, names, seeds, time.perf_counter() - t0, command,
                   args.class_set, args.shots)
    log.info("wrote %s", args.out / f"{args.name}.md")


if __name__ == "__main__":
    main()
