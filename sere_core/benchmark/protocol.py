"""The cross-lingual protocol (``shared/docs/benchmark-protocol.md``), as plain functions.

Tasks are ordered corpus pairs S -> T; a task, a class set, a shot setting and a seed fix the
labeled shots (drawn from S) and the unlabeled pool (every T clip in the task's classes), so every
method sees exactly the same data.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sere_core.method.data import ClipFeatures

CORPORA = ("emodb", "casia", "ravdess", "emovo")
CODES = {"emodb": "B", "casia": "C", "ravdess": "E", "emovo": "O"}
COMMON4 = ("angry", "happy", "neutral", "sad")
CLASS_SETS = ("common4", "pairwise")
SHOTS = ("5-per-class", "5-total")
REPORT_SEEDS = tuple(range(10))
DEV_SEEDS = (100, 101, 102, 103, 104)
PAPER_MEAN_UAR = 47.75


@dataclass(frozen=True, eq=False)
class BenchClip:
    """A corpus clip: its features (``clip.emotion`` is the gold label) and where it came from."""

    corpus: str
    path: str
    clip: ClipFeatures


@dataclass(frozen=True)
class Task:
    source: str
    target: str

    @property
    def code(self) -> str:
        return f"{CODES.get(self.source, self.source)}->{CODES.get(self.target, self.target)}"


@dataclass(frozen=True, eq=False)
class Episode:
    """One run's data: the shots, the unlabeled pool and the clips scored (with gold labels)."""

    task: Task
    class_set: str
    shots: str
    seed: int
    classes: tuple[str, ...]
    labeled: list[ClipFeatures]
    unlabeled: list[ClipFeatures]
    test: list[ClipFeatures]


def tasks(corpora: Sequence[str] = CORPORA) -> list[Task]:
    return [Task(s, t) for s in corpora for t in corpora if s != t]


def task_classes(by_corpus: dict[str, list[BenchClip]], task: Task, class_set: str) -> tuple[str, ...]:
    if class_set == "common4":
        return COMMON4
    if class_set == "pairwise":
        src = {b.clip.emotion for b in by_corpus[task.source]}
        tgt = {b.clip.emotion for b in by_corpus[task.target]}
        return tuple(sorted(src & tgt))
    raise ValueError(f"unknown class set {class_set!r}; use one of {CLASS_SETS}")


def episode_rng(seed: int, *parts: str) -> np.random.Generator:
    """A generator fixed by the seed and the episode's names (stable across runs and machines)."""
    return np.random.default_rng([seed, zlib.crc32("/".join(parts).encode("utf-8"))])


def sample_shots(pool: Sequence[BenchClip], classes: Sequence[str], shots: str,
                 rng: np.random.Generator, k: int = 5) -> list[BenchClip]:
    """``5-per-class``: k clips of every emotion; ``5-total``: k clips in all, at least one per
    emotion while k allows (with more emotions than k, k emotions drawn at random get one each)."""
    by_class = {c: [b for b in pool if b.clip.emotion == c] for c in classes}
    chosen: list[BenchClip] = []
    if shots == "5-per-class":
        for c in classes:
            idx = rng.choice(len(by_class[c]), size=min(k, len(by_class[c])), replace=False)
            chosen += [by_class[c][i] for i in sorted(idx)]
        return chosen
    if shots != "5-total":
        raise ValueError(f"unknown shot setting {shots!r}; use one of {SHOTS}")
    order = [classes[i] for i in rng.permutation(len(classes))]
    firsts = order[: min(k, len(classes))]
    taken: set[int] = set()
    for c in firsts:
        i = int(rng.integers(len(by_class[c])))
        chosen.append(by_class[c][i])
        taken.add(id(by_class[c][i]))
    rest = [b for c in firsts for b in by_class[c] if id(b) not in taken]
    extra = max(0, k - len(chosen))
    if extra:
        chosen += [rest[i] for i in sorted(rng.choice(len(rest), size=extra, replace=False))]
    return chosen


def strip_label(clip: ClipFeatures) -> ClipFeatures:
    return ClipFeatures(clip.clip_id, clip.frames, clip.frame_rate, clip.language, clip.speaker, None)


def make_episode(by_corpus: dict[str, list[BenchClip]], task: Task, class_set: str, shots: str,
                 seed: int, inductive: bool = False) -> Episode:
    """Transductive: the unlabeled pool is every T clip of the task's classes and is also what is
    scored. Inductive: half of T's speakers (drawn with the seed) are the unlabeled pool, the other
    half is scored."""
    classes = task_classes(by_corpus, task, class_set)
    src = [b for b in by_corpus[task.source] if b.clip.emotion in classes]
    tgt = [b.clip for b in by_corpus[task.target] if b.clip.emotion in classes]
    rng = episode_rng(seed, task.source, task.target, class_set, shots)
    labeled = [b.clip for b in sample_shots(src, classes, shots, rng)]
    if not inductive:
        return Episode(task, class_set, shots, seed, classes, labeled, [strip_label(c) for c in tgt], tgt)
    speakers = sorted({c.speaker for c in tgt})
    perm = episode_rng(seed, "inductive", task.target).permutation(len(speakers))
    seen = {speakers[i] for i in perm[: len(speakers) // 2]}
    pool = [strip_label(c) for c in tgt if c.speaker in seen]
    test = [c for c in tgt if c.speaker not in seen]
    return Episode(task, class_set, shots, seed, classes, labeled, pool, test)


# --- metrics --------------------------------------------------------------------------------------
def confusion(y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """Counts ``[C, C]``: rows are the true emotion, columns the predicted one (predictions outside
    ``classes`` are impossible here: a method only predicts emotions it was shown)."""
    index = {c: i for i, c in enumerate(classes)}
    m = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        m[index[t], index[p]] += 1
    return m


def uar(cm: np.ndarray) -> float:
    """Unweighted average recall over the emotions present (an emotion without shots still counts)."""
    support = cm.sum(1)
    has = support > 0
    return float((np.diag(cm)[has] / support[has]).mean())


def accuracy(cm: np.ndarray) -> float:
    return float(np.trace(cm) / max(cm.sum(), 1))
