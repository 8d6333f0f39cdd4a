"""Candidate changes to SERE, measured on the development seeds only, paired against a reference.

The protocol's episodes (``common4``, 5 per emotion or ``--shots 5-total``, the 12 tasks) on dev
seeds (100-102 by default; never the reported 0-9), each candidate against its reference
(``Variant.against``, the default of its time) on the same episodes: the paired difference and its
standard error say whether a change is worth a benchmark rerun before anyone looks at the reported
seeds. Candidates are settings of ``SEREConfig`` (including a seed ensemble) and feature transforms
applied before any method sees the clips.

    SERE_CACHE_DIR=... python benchmarks/dev_study.py --corpora ../shared/corpora

Writes ``benchmarks/results/dev_study.md`` and ``dev_study.csv`` (one row per variant and episode,
the columns of ``cross_lingual.csv``).
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

from sere_core.benchmark import parse_seeds
from sere_core.benchmark import report as R
from sere_core.benchmark.corpora import load_corpora
from sere_core.benchmark.protocol import CORPORA, DEV_SEEDS, SHOTS, tasks
from sere_core.benchmark.runner import BENCH_SERE_CONFIG, Plan, make_method, run_plan
from sere_core.method import SERE
from sere_core.method.data import ClipFeatures

log = logging.getLogger("dev_study")
REFERENCE = "sere"


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


COLUMNS = slice(*BENCH_SERE_CONFIG.feature_range)  # whisper-base layer 3, as benchmarked


def clip_mean_removal(alpha: float) -> Transform:
    """Subtract ``alpha`` times each clip's own mean frame (cepstral-mean-style speaker removal)."""
    def make(labeled, unlabeled):
        return lambda c: replace(c, frames=(c.frames[:, COLUMNS] - alpha * c.frames[:, COLUMNS].mean(0)).astype(np.float32))
    return make


def frames_by_language(labeled, unlabeled) -> dict:
    """Each language's frames (benchmarked columns) for label-free statistics: its unlabeled clips,
    or its labeled ones where it has no unlabeled clip."""
    out = {}
    for lang in {c.language for c in [*labeled, *unlabeled]}:
        group = [c for c in unlabeled if c.language == lang] or [c for c in labeled if c.language == lang]
        out[lang] = np.concatenate([c.frames[:, COLUMNS] for c in group])
    return out


def nuisance_projection(k: int) -> Transform:
    """Remove the ``k`` main directions of the unlabeled clips' mean frames (z-scored per language):
    nuisance attribute projection, aimed at the speaker and sentence structure of the target."""
    def make(labeled, unlabeled):
        stats = {lang: (frames.mean(0), frames.std(0) + 1e-5)
                 for lang, frames in frames_by_language(labeled, unlabeled).items()}
        target = [c for c in unlabeled]
        means = np.stack([((c.frames[:, COLUMNS] - stats[c.language][0]) / stats[c.language][1]).mean(0) for c in target])
        u = np.linalg.svd(means - means.mean(0), full_matrices=False)[2][:k].T

        def apply(c: ClipFeatures) -> ClipFeatures:
            z = (c.frames[:, COLUMNS] - stats[c.language][0]) / stats[c.language][1]
            return replace(c, frames=(z - (z @ u) @ u.T).astype(np.float32))
        return apply
    return make


def language_whitening(shrink: float) -> Transform:
    """Per-language whitening (CORAL-style): z-score each language's frames, then map its frame
    covariance, shrunk toward the identity by ``shrink``, to the identity. Second-order statistics
    of the languages are aligned, not only their means and scales. Statistics from the unlabeled
    clips of each language (the labeled ones where a language has none); labels unused."""
    def make(labeled, unlabeled):
        maps = {}
        for lang, frames in frames_by_language(labeled, unlabeled).items():
            frames = frames.astype(np.float64)
            mean, std = frames.mean(0), frames.std(0) + 1e-5
            z = (frames - mean) / std
            cov = (1 - shrink) * np.cov(z, rowvar=False) + shrink * np.eye(z.shape[1])
            evals, evecs = np.linalg.eigh(cov)
            maps[lang] = (mean, std, (evecs / np.sqrt(np.maximum(evals, 1e-6))) @ evecs.T)

        def apply(c: ClipFeatures) -> ClipFeatures:
            mean, std, w = maps[c.language]
            return replace(c, frames=(((c.frames[:, COLUMNS] - mean) / std) @ w).astype(np.float32))
        return apply
    return make


@dataclass(frozen=True)
class Variant:
    what: str
    make: Callable[[int], object]
    against: str = REFERENCE  # the method it is paired with


#: The reference is pinned to the study's first run: one 100-step model on 20-frame views with
#: frame-level highlights at tau_a 1, the default until the three-member ensemble, the 6-frame views
#: and the 6-frame highlight scores it found replaced it. Each variant changes only what its name says.
SINGLE = {"ensemble": 1, "steps": 100, "crop_frames": 20, "tau_a": 1.0, "highlight_window": 1}
#: The later references, each the default of its time: the three-member ensemble
#: (``sere_ensemble3_steps30``), then on 6-frame views (``sere_ens3_crop6``), then with highlights
#: scored on 6-frame segments at tau_a 0.5 (``sere_c6_window6_0.5``, the default since)
ENSEMBLE = {"ensemble": 3, "steps": 30}
CROP6 = {**ENSEMBLE, "crop_frames": 6}
SEGMENTS = {**CROP6, "highlight_window": 6, "tau_a": 0.5}


def _sere(**settings) -> Callable[[int], object]:
    return lambda seed: SERE(replace(BENCH_SERE_CONFIG, seed=seed, snapshot_every=0, **{**SINGLE, **settings}))


def _paired(against: str, base: dict) -> Callable[..., Variant]:
    """Variants that change the reference ``against`` (built from ``base``), paired with it."""
    return lambda what, **settings: Variant(what, _sere(**{**base, **settings}), against)


_vs_ensemble = _paired("sere_ensemble3_steps30", ENSEMBLE)
_vs_crop6 = _paired("sere_ens3_crop6", CROP6)
_vs_segments = _paired("sere_c6_window6_0.5", SEGMENTS)


VARIANTS: dict[str, Variant] = {
    "sere": Variant("one 100-step model (the default until `ensemble=3, steps=30`; the reference)", _sere()),
    "sere_steps60": Variant("60 training steps instead of 100 (curriculum scaled)", _sere(steps=60)),
    "sere_steps40": Variant("40 training steps", _sere(steps=40)),
    "sere_steps30": Variant("30 training steps", _sere(steps=30)),
    "sere_tau_a_0.5": Variant("sharper highlights: tau_a 0.5 instead of 1", _sere(tau_a=0.5)),
    "sere_tau_a_0.25": Variant("sharper highlights: tau_a 0.25", _sere(tau_a=0.25)),
    "sere_mean_pool": Variant("mean pooling (the ablation)", _sere(pooling="mean")),
    "sere_ensemble3": Variant("`ensemble=3`: three seeds read as one space (3x the training time)",
                              _sere(ensemble=3)),
    "sere_ensemble3_steps40": Variant("`ensemble=3`, 40 steps each (1.2x the training time)",
                                      _sere(ensemble=3, steps=40)),
    "sere_ensemble3_steps30": Variant("`ensemble=3`, 30 steps each (about one 100-step model)",
                                      _sere(ensemble=3, steps=30)),
    "sere_ensemble5_steps20": Variant("`ensemble=5`, 20 steps each (the default's cost)",
                                      _sere(ensemble=5, steps=20), "sere_ensemble3_steps30"),
    "sere_ensemble5_steps30": Variant("`ensemble=5`, 30 steps each (1.7x the default's training time)",
                                      _sere(ensemble=5, steps=30), "sere_ensemble3_steps30"),
    "sere_ens3_refresh5": _vs_ensemble("default ensemble, pool re-assigned every 5 steps instead of 15",
        refresh_every=5),
    "sere_ens3_keep70": _vs_ensemble("default ensemble, confident share of pseudo-labels rising to 70 % (not 50 %)",
        keep_end=0.7),
    "sere_ens3_lr5e-3": _vs_ensemble("default ensemble, learning rate 5e-3 instead of 3e-3",
        lr=5e-3),
    "sere_ens3_tau_a_0.25": _vs_ensemble("default ensemble, sharper highlights: tau_a 0.25 instead of 1",
        tau_a=0.25),
    "sere_ens3_tau_a_0.1": _vs_ensemble("default ensemble, highlights on a few frames: tau_a 0.1",
        tau_a=0.1),
    "sere_ens3_crop40": _vs_ensemble("default ensemble, views of 40 frames (3.2 s, most of a clip) instead of 20",
        crop_frames=40),
    "sere_ens3_crop10": _vs_ensemble("default ensemble, views of 10 frames (0.8 s) instead of 20",
        crop_frames=10),
    "sere_ens3_crop6": _vs_ensemble("default ensemble, views of 6 frames (0.5 s) instead of 20",
        crop_frames=6),
    "sere_ens3_crop14": _vs_ensemble("default ensemble, views of 14 frames (1.1 s) instead of 20",
        crop_frames=14),
    "sere_c6_mean_pool": _vs_crop6("mean pooling on the default (6-frame views, ensemble of 3)", pooling="mean"),
    "sere_c6_window3": _vs_crop6("default, highlight scores from resonance averaged over 3 frames (0.24 s)",
        highlight_window=3),
    "sere_c6_window6": _vs_crop6("default, highlight scores from resonance averaged over 6 frames (0.5 s)",
        highlight_window=6),
    "sere_c6_window6_0.5": _vs_crop6("default, 6-frame highlight scores at tau_a 0.5",
        highlight_window=6, tau_a=0.5),
    "sere_c6_tau_a_0.5": _vs_crop6("default, frame-level highlight scores at tau_a 0.5", tau_a=0.5),
    "sere_c6_window3_0.5": _vs_crop6("default, 3-frame highlight scores at tau_a 0.5",
        highlight_window=3, tau_a=0.5),
    "sere_c6_window6_0.25": _vs_crop6("default, 6-frame highlight scores at tau_a 0.25",
        highlight_window=6, tau_a=0.25),
    "sere_c6_window10_0.5": _vs_crop6("default, 10-frame (0.8 s) highlight scores at tau_a 0.5",
        highlight_window=10, tau_a=0.5),
    "sere_c6_window10_0.25": _vs_crop6("default, 10-frame highlight scores at tau_a 0.25",
        highlight_window=10, tau_a=0.25),
    "sere_c6w_uu1": _vs_segments("default (segment highlights), UU weight 1 instead of 0.5", w_uu=1.0),
    "sere_c6w_uu_early": _vs_segments("default (segment highlights), UU from 10 % of the steps instead of 30 %",
        uu_start=0.1),
    "sere_c6w_steps0": _vs_segments("default without any training step (random g, prototypes from the shots, "
        "balance correction)", steps=0),
    "sere_c6w_steps10": _vs_segments("default with 10 steps per member instead of 30", steps=10),
    "sere_c6w_steps90": _vs_segments("default with 90 steps per member (3x the training time)", steps=90),
    "sere_clip_mean_0.5": Variant("half of each clip's mean frame removed before SERE",
                                  lambda seed: Transformed(_sere()(seed), clip_mean_removal(0.5))),
    "sere_whiten_0.3": Variant("`ensemble=3, steps=30` on per-language whitened frames (shrinkage 0.3)",
                               lambda seed: Transformed(_sere(**ENSEMBLE)(seed), language_whitening(0.3)),
                               "sere_ensemble3_steps30"),
    "sere_whiten_0.7": Variant("`ensemble=3, steps=30` on per-language whitened frames (shrinkage 0.7)",
                               lambda seed: Transformed(_sere(**ENSEMBLE)(seed), language_whitening(0.7)),
                               "sere_ensemble3_steps30"),
    "logreg_whiten_0.3": Variant("logistic regression on per-language whitened frames (shrinkage 0.3)",
                                 lambda seed: Transformed(make_method("logreg", seed), language_whitening(0.3)),
                                 "logreg"),
    "logreg": Variant("logistic regression, the best baseline", lambda seed: make_method("logreg", seed)),
    "logreg_nap2": Variant("logistic regression after removing the 2 main directions of the target's clip means",
                           lambda seed: Transformed(make_method("logreg", seed), nuisance_projection(2)), "logreg"),
}


def write_markdown(path: Path, results: Sequence, names: Sequence[str], seeds: Sequence[int],
                   wall_s: float, command: str, shots: str = SHOTS[0]) -> None:
    lines = [f"# SERE candidates on the development seeds (common4, {shots})", "",
             f"- commit: `{R.commit()}`{' (working tree modified)' if R.working_tree_dirty() else ''};"
             f" machine: {R.machine()}; {datetime.now(timezone.utc):%Y-%m-%d}",
             f"- seeds: {list(seeds)} (development seeds; the reported seeds are 0-9); 12 tasks;"
             f" wall time: {wall_s / 60:.1f} min",
             f"- command: `{command}`",
             "- Δ: the variant minus the method it is compared with (`sere` unless named), paired by episode,"
             " ± its standard error (UAR points); *above*/*below*: beyond two standard errors.", "",
             "| variant | what changes | mean UAR | Δ | reading | s per episode |",
             "|---|---|---|---|---|---|"]
    for name in names:
        against = VARIANTS[name].against
        paired = name != against and against in names
        diff, se, n = R.paired_difference(results, name, against) if paired else (0.0, float("nan"), 0)
        if n and against != REFERENCE:
            diff_cell = f"{R.paired_cell(diff, se)} vs {against}"
        else:
            diff_cell = R.paired_cell(diff, se)
        fit_s = np.mean([r.fit_s for r in results if r.method == name])
        lines.append(f"| {name} | {VARIANTS[name].what} | {R.mean_uar(results, name):.1f} | {diff_cell} | "
                     f"{R.reading(diff, se)} | {fit_s:.1f} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpora", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--seeds", default=f"{DEV_SEEDS[0]}-{DEV_SEEDS[2]}")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="comma-separated; each runs with the method it is paired with")
    ap.add_argument("--shots", default=SHOTS[0], choices=SHOTS)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    seeds = parse_seeds(args.seeds)
    if set(seeds) & set(range(10)):
        ap.error("the reported seeds 0-9 are not for choosing settings; use the development seeds")
    requested = [n for n in args.variants.split(",") if n]
    unknown = [n for n in requested if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    names: list[str] = []  # each variant after the method it is paired with
    for name in requested:
        names += [n for n in (VARIANTS[name].against, name) if n not in names]
    t0 = time.perf_counter()
    by_corpus, info = load_corpora(args.corpora, CORPORA)
    plan = Plan(tasks(), ["common4"], [args.shots], seeds, names)
    results = run_plan(plan, by_corpus, make=lambda name, seed: VARIANTS[name].make(seed), workers=args.workers)
    encoder = f"{info.get('name')} (layers {info.get('layers')}, version {info.get('version')})"
    args.out.mkdir(parents=True, exist_ok=True)
    R.write_csv(results, encoder, args.out / "dev_study.csv")
    command = "python benchmarks/dev_study.py " + " ".join(sys.argv[1:] if argv is None else argv)
    write_markdown(args.out / "dev_study.md", results, names, seeds, time.perf_counter() - t0, command, args.shots)
    log.info("wrote %s", args.out / "dev_study.md")


if __name__ == "__main__":
    main()
