"""The cross-lingual benchmark: protocol, runner and report, behind one function.

``python -m sere_core.benchmark`` and ``sere benchmark`` both call :func:`run_benchmark`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from sere_core.encoders import DEFAULT_ENCODER

log = logging.getLogger(__name__)

#: The baseline with the best dev-seed mean UAR (common4, 5-per-class); it joins SERE in the
#: inductive check and gets a per-speaker row in the ablation.
BEST_BASELINE = "logreg"


def parse_seeds(text: str) -> list[int]:
    """``"0-9"`` or ``"0,3,5"`` or ``"100-104,7"`` -> a list of seeds.

    >>> parse_seeds("0-2,7")
    [0, 1, 2, 7]
    """
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            seeds += list(range(int(a), int(b) + 1))
        else:
            seeds.append(int(part))
    return seeds


def run_benchmark(corpora_dir: Path, out_dir: Path, *, seeds: Sequence[int] = tuple(range(10)),
                  methods: Sequence[str] | None = None, class_sets: Sequence[str] | None = None,
                  shots: Sequence[str] | None = None, corpora: Sequence[str] | None = None,
                  encoder: str = DEFAULT_ENCODER, ablation: bool = True, inductive: bool = True,
                  ceiling: bool = True, ablation_seeds: int = 5, command: str = "",
                  features_store: Path | None = None, progress: bool = True, workers: int = 1,
                  ablation_only: bool = False) -> dict:
    """Run the protocol and write ``cross_lingual.{csv,md}`` (and ``ablation.{csv,md}``) to ``out_dir``.
    Returns the mean UAR per (class set, shots, method)."""
    from tqdm import tqdm

    from sere_core.benchmark import protocol as P
    from sere_core.benchmark import report as R
    from sere_core.benchmark.corpora import load_corpora
    from sere_core.benchmark.runner import ABLATIONS, METHODS, Plan, ceiling as ceiling_uar, run_plan

    t0 = time.perf_counter()
    methods = list(methods or METHODS)
    class_sets = list(class_sets or P.CLASS_SETS)
    shots = list(shots or P.SHOTS)
    corpora = list(corpora or P.CORPORA)
    by_corpus, info = load_corpora(Path(corpora_dir), corpora, encoder)
    enc_name = f"{info.get('name', encoder)} (layers {info.get('layers')}, version {info.get('version')})"
    tasks = P.tasks(corpora)
    if ablation_only:  # only the ablation table: its own 'sere' and best-baseline runs
        methods, class_sets, shots, inductive, ceiling, ablation = ["sere", BEST_BASELINE], ["common4"], ["5-per-class"], False, False, True
        seeds = list(seeds)[:ablation_seeds]
    main_plan = Plan(tasks, class_sets, shots, seeds, methods)
    ind_plan = None
    if inductive and "common4" in class_sets and "5-per-class" in shots:
        ind_methods = [m for m in ("sere", BEST_BASELINE) if m in methods]
        ind_plan = Plan(tasks, ["common4"], ["5-per-class"], seeds, ind_methods, inductive=True)
    abl_seeds = list(seeds)[:ablation_seeds]
    abl_plan = None
    if ablation:
        extra = [m for m in (*ABLATIONS, f"{BEST_BASELINE}_spk") if m not in methods]
        abl_plan = Plan(tasks, ["common4"], ["5-per-class"], abl_seeds, extra)
    total = sum(p.size for p in (main_plan, ind_plan, abl_plan) if p is not None)
    bar = tqdm(total=total, unit="fit", desc="benchmark", disable=not progress)
    out_dir = Path(out_dir)
    # the main table first, written as soon as it is complete
    main = run_plan(main_plan, by_corpus, bar=bar, workers=workers)
    ind = run_plan(ind_plan, by_corpus, bar=bar, workers=workers) if ind_plan else []
    ceilings = {}
    if ceiling:
        for corpus in corpora:
            ceilings[corpus] = {"common4": ceiling_uar(by_corpus[corpus], P.COMMON4),
                                "all emotions": ceiling_uar(by_corpus[corpus])}
    chance = {"common4": "25.0%"}
    for cs in class_sets:
        if cs == "pairwise":
            sizes = sorted({len(P.task_classes(by_corpus, t, cs)) for t in tasks})
            chance["pairwise"] = ", ".join(f"{100 / n:.1f}% ({n} emotions)" for n in sizes)
    if not ablation_only:
        R.write_csv(main + ind, enc_name, out_dir / "cross_lingual.csv")
        R.write_markdown(out_dir / "cross_lingual.md", results=main, inductive=ind, ceilings=ceilings,
                         methods=methods, tasks=tasks, class_sets=class_sets, shots=shots, seeds=seeds,
                         encoder=enc_name, wall_s=time.perf_counter() - t0, command=command, chance=chance)
        log.info("main table written after %.1f min", (time.perf_counter() - t0) / 60)
    if abl_plan is not None:
        t1 = time.perf_counter()
        run_plan(abl_plan, by_corpus, bar=bar, workers=workers)
        abl_methods = [*ABLATIONS, f"{BEST_BASELINE}_spk", BEST_BASELINE]
        abl = [r for r in main if r.episode.class_set == "common4" and r.episode.shots == "5-per-class"
               and r.episode.seed in abl_seeds and r.method in abl_methods] + abl_plan.results
        R.write_csv(abl, enc_name, out_dir / "ablation.csv")
        R.write_ablation(out_dir / "ablation.md", abl, [m for m in abl_methods if any(r.method == m for r in abl)],
                         tasks, abl_seeds, enc_name, command, time.perf_counter() - t1)
    bar.close()
    wall = time.perf_counter() - t0
    summary = {}
    for cs in class_sets:
        for sh in shots:
            sub = [r for r in main if r.episode.class_set == cs and r.episode.shots == sh]
            summary[(cs, sh)] = {m: R.mean_uar(sub, m) for m in methods}
    log.info("benchmark done in %.1f min", wall / 60)
    return summary
