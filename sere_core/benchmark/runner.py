"""Run methods over the protocol's episodes and score them."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from sere_core.baselines import BASELINES
from sere_core.benchmark.protocol import (
    BenchClip,
    Episode,
    Task,
    accuracy,
    confusion,
    make_episode,
    uar,
)
from sere_core.benchmark.corpora import BENCH_ENCODER_OPTIONS
from sere_core.method import SERE, SEREConfig, recommended_config

BENCH_LAYERS: tuple[int, ...] = BENCH_ENCODER_OPTIONS["whisper-base"]["layers"]

#: SERE as benchmarked: ``recommended_config`` for the benchmark's whisper-base read-out (every layer).
BENCH_SERE_CONFIG = recommended_config({"name": "whisper-base", "dim": 512 * len(BENCH_LAYERS), "layers": BENCH_LAYERS})


def layer_columns(first: int, last: int) -> tuple[int, int]:
    """The columns of whisper-base layers ``first..last`` in the benchmark's read-out."""
    return BENCH_LAYERS.index(first) * 512, (BENCH_LAYERS.index(last) + 1) * 512


log = logging.getLogger(__name__)

#: Baseline settings chosen on the development seeds (see ``benchmarks/studies.md``): each baseline
#: reads its own best view of the layers (of 22 per baseline: layer subsets, their mean, mean and std
#: or the mean alone), so that SERE is compared with each at its best.
BASELINE_PARAMS: dict[str, dict] = {
    "nearest_prototype": {"feature_range": layer_columns(2, 4), "stats": "mean", "balance": 1.0},
    "logreg": {"feature_range": layer_columns(1, 4), "stats": "mean", "balance": 1.0, "C": 1.0},
    "label_spreading": {"feature_range": layer_columns(2, 2), "stats": "mean", "n_neighbors": 10, "alpha": 0.5},
    "proto_refine": {"feature_range": layer_columns(2, 2), "stats": "mean", "n_iter": 10, "temperature": 0.1},
    "kmeans_hungarian": {"feature_range": layer_columns(2, 2), "stats": "mean", "n_init": 4},
}

#: SERE and its ablations: each a change to the (tuned) default config.
SERE_VARIANTS: dict[str, dict] = {
    "sere": {},
    "sere_mean_pool": {"pooling": "mean"},
    "sere_no_ll": {"w_ll": 0.0},
    "sere_no_lu": {"w_lu": 0.0, "proto_momentum": 0.0},
    "sere_no_uu": {"w_uu": 0.0},
    "sere_no_lang_norm": {"per_language_norm": False},
    "sere_one_view": {"views": (layer_columns(2, 3),)},
    "sere_layer3": {"views": (layer_columns(3, 3),)},
}
ABLATIONS = ("sere", "sere_one_view", "sere_layer3", "sere_mean_pool", "sere_no_ll", "sere_no_lu", "sere_no_uu", "sere_no_lang_norm",
             "sere_spk")
METHODS = ("sere", *BASELINES)
SPEAKER_SUFFIX = "_spk"


def make_method(name: str, seed: int, sere_config: SEREConfig | None = None,
                baseline_params: dict[str, dict] | None = None):
    """A fresh estimator for a method name; ``<name>_spk`` adds per-speaker normalization."""
    speaker = name.endswith(SPEAKER_SUFFIX)
    base = name[: -len(SPEAKER_SUFFIX)] if speaker else name
    if base in SERE_VARIANTS:
        cfg = replace(sere_config or BENCH_SERE_CONFIG, seed=seed, snapshot_every=0, **SERE_VARIANTS[base])
        if speaker:
            cfg = replace(cfg, per_speaker_norm=True)
        return SERE(cfg)
    if base in BASELINES:
        params = dict((baseline_params or BASELINE_PARAMS).get(base, {}))
        return BASELINES[base](seed=seed, per_speaker_norm=speaker, **params)
    raise KeyError(f"unknown method {name!r}; known: {', '.join(METHODS)}, sere ablations "
                   f"{', '.join(SERE_VARIANTS)} and any of them with {SPEAKER_SUFFIX!r}")


@dataclass
class Result:
    method: str
    protocol: str
    episode: Episode
    uar: float
    accuracy: float
    confusion: np.ndarray
    fit_s: float
    #: Share of the scored clips with a highlight starting in their first EARLY_S seconds (None: the
    #: method reports no highlights).
    early_highlights: float | None = None

    def row(self, encoder: str) -> dict:
        e = self.episode
        early = "" if self.early_highlights is None else round(100 * self.early_highlights, 2)
        return {"method": self.method, "encoder": encoder, "class_set": e.class_set, "shots": e.shots,
                "source": e.task.source, "target": e.task.target, "seed": e.seed,
                "uar": round(100 * self.uar, 3), "accuracy": round(100 * self.accuracy, 3),
                "protocol": self.protocol, "n_classes": len(e.classes), "fit_s": round(self.fit_s, 3),
                "early_highlights": early}


#: A highlight starting this close to a clip's start sits on its boundary, not on its voice (#15).
EARLY_S = 0.1


def early_highlight_share(predictions: Sequence) -> float | None:
    """Share of ``predictions`` with a highlight span starting before :data:`EARLY_S` (None when
    no prediction carries highlights).

    >>> from sere_core.method.data import Prediction
    >>> early_highlight_share([Prediction("sad", 1.0, {}, [(0.0, 0.2)]), Prediction("sad", 1.0, {}, [(0.5, 0.9)])])
    0.5
    """
    if not any(p.highlights for p in predictions):
        return None
    return float(np.mean([any(start < EARLY_S for start, _ in p.highlights) for p in predictions]))


def run_episode(method: str, episode: Episode, make: Callable = make_method, protocol: str = "transductive") -> Result:
    model = make(method, episode.seed)
    t0 = time.perf_counter()
    model.fit(episode.labeled, episode.unlabeled)
    predictions = model.predict(episode.test)
    fit_s = time.perf_counter() - t0
    cm = confusion([c.emotion for c in episode.test], [p.emotion for p in predictions], episode.classes)
    return Result(method, protocol, episode, uar(cm), accuracy(cm), cm, fit_s, early_highlight_share(predictions))


@dataclass
class Plan:
    tasks: Sequence[Task]
    class_sets: Sequence[str]
    shots: Sequence[str]
    seeds: Sequence[int]
    methods: Sequence[str]
    inductive: bool = False
    results: list[Result] = field(default_factory=list)

    def episodes(self, by_corpus: dict[str, list[BenchClip]]) -> Iterable[Episode]:
        for class_set in self.class_sets:
            for shots in self.shots:
                for task in self.tasks:
                    for seed in self.seeds:
                        yield make_episode(by_corpus, task, class_set, shots, seed, self.inductive)

    @property
    def size(self) -> int:
        return len(self.tasks) * len(self.class_sets) * len(self.shots) * len(self.seeds) * len(self.methods)


def _slim(result: Result) -> Result:
    """The result without the episode's features (cheap to send between processes)."""
    e = result.episode
    light = Episode(e.task, e.class_set, e.shots, e.seed, e.classes, [], [], [])
    return replace(result, episode=light)


_SHARED: dict = {}


def _run_one(args) -> list[Result]:
    class_set, shots, task, seed, methods, inductive = args
    episode = make_episode(_SHARED["by_corpus"], task, class_set, shots, seed, inductive)
    protocol = "inductive" if inductive else "transductive"
    return [_slim(run_episode(m, episode, _SHARED["make"], protocol)) for m in methods]


def run_plan(plan: Plan, by_corpus: dict[str, list[BenchClip]], make: Callable = make_method,
             bar=None, workers: int = 1) -> list[Result]:
    """Every episode of ``plan`` with every method; ``workers`` > 1 runs episodes in that many
    forked single-threaded processes (the features are shared copy-on-write)."""
    jobs = [(cs, sh, t, seed, tuple(plan.methods), plan.inductive)
            for cs in plan.class_sets for sh in plan.shots for t in plan.tasks for seed in plan.seeds]
    _SHARED.update(by_corpus=by_corpus, make=make)
    if workers > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(workers) as pool:
            outputs = pool.imap(_run_one, jobs)
            for out in outputs:
                _collect(plan, out, bar)
    else:
        for job in jobs:
            _collect(plan, _run_one(job), bar)
    return plan.results


def _collect(plan: Plan, out: list[Result], bar) -> None:
    for result in out:
        plan.results.append(result)
        e = result.episode
        log.debug("%s %s %s %s seed %d: UAR %.1f (%.1fs)", result.method, e.class_set, e.shots,
                  e.task.code, e.seed, 100 * result.uar, result.fit_s)
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"{e.task.code} {result.method} {100 * result.uar:.1f}")


# --- in-language ceiling --------------------------------------------------------------------------
def ceiling(clips: Sequence[BenchClip], classes: Sequence[str] | None = None, n_folds: int = 5,
            C: float = 1.0) -> float:
    """Speaker-independent cross-validated logistic regression inside one corpus (UAR)."""
    from sere_core.baselines import LogisticRegressionBaseline
    from sere_core.benchmark.protocol import strip_label

    items = [b.clip for b in clips if classes is None or b.clip.emotion in classes]
    labels = sorted({c.emotion for c in items})
    speakers = sorted({c.speaker for c in items})
    folds = min(n_folds, len(speakers))
    fold_of = {s: i % folds for i, s in enumerate(speakers)}
    y_true, y_pred = [], []
    for k in range(folds):
        train = [c for c in items if fold_of[c.speaker] != k]
        test = [c for c in items if fold_of[c.speaker] == k]
        params = {k: v for k, v in BASELINE_PARAMS["logreg"].items() if k != "balance"}
        model = LogisticRegressionBaseline(**{**params, "C": C}).fit(train, [strip_label(c) for c in test])
        y_true += [c.emotion for c in test]
        y_pred += [p.emotion for p in model.predict(test)]
    return uar(confusion(y_true, y_pred, labels))
