"""Results files: ``cross_lingual.{csv,md}`` and ``ablation.{csv,md}``."""

from __future__ import annotations

import csv
import platform
import subprocess
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sere_core.benchmark.protocol import CODES, PAPER_MEAN_UAR, Task
from sere_core.benchmark.runner import EARLY_S, Result

COLUMNS = ("method", "encoder", "class_set", "shots", "source", "target", "seed", "uar", "accuracy",
           "protocol", "n_classes", "fit_s", "early_highlights")

_REPO = Path(__file__).resolve().parents[2]  # the checkout, for an editable install


def commit() -> str:
    """The short hash of HEAD (the results name the code that made them)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=False, cwd=_REPO)
        return out.stdout.strip() or "uncommitted"
    except OSError:
        return "unknown"


def working_tree_dirty() -> bool:
    """True when tracked files differ from HEAD (then ``commit()`` alone does not name the code)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                             text=True, timeout=10, check=False, cwd=_REPO)
        return bool(out.stdout.strip())
    except OSError:
        return False


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine() -> str:
    import os

    return f"{cpu_model()}, {os.cpu_count()} cores visible ({platform.system()} {platform.release()})"


def cpu_busy_seconds() -> float:
    """CPU seconds spent busy on all cores since boot (from /proc/stat; 0 where unavailable): the
    difference over a run, less the run's own CPU time, says how contended the machine was."""
    import os

    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    ticks = [int(f) for f in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def write_csv(results: Sequence[Result], encoder: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for r in results:
            writer.writerow(r.row(encoder))


def _fmt(values: Sequence[float]) -> str:
    v = 100 * np.asarray(values)
    return f"{v.mean():.1f} ± {v.std():.1f}"


def summary_table(results: Sequence[Result], methods: Sequence[str], tasks: Sequence[Task]) -> list[str]:
    """Per task: mean ± std over seeds; last row: mean over tasks (± std over seeds of that mean)."""
    cell: dict[tuple[str, str], list[float]] = defaultdict(list)
    by_seed: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in results:
        cell[(r.method, r.episode.task.code)].append(r.uar)
        by_seed[(r.method, r.episode.seed)].append(r.uar)
    lines = ["| task | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for t in tasks:
        lines.append(f"| {t.code} ({t.source}→{t.target}) | "
                     + " | ".join(_fmt(cell[(m, t.code)]) if cell[(m, t.code)] else "–" for m in methods) + " |")
    means = []
    for m in methods:
        seeds = [np.mean(v) for (mm, _s), v in sorted(by_seed.items()) if mm == m]
        means.append(f"**{_fmt(seeds)}**" if seeds else "–")
    lines.append("| **mean of 12** | " + " | ".join(means) + " |")
    return lines


def mean_uar(results: Sequence[Result], method: str) -> float:
    vals = [r.uar for r in results if r.method == method]
    return 100 * float(np.mean(vals)) if vals else float("nan")


def early_cell(results: Sequence[Result], method: str) -> str:
    """The mean share (%) of scored clips with a highlight starting in their first
    :data:`~sere_core.benchmark.runner.EARLY_S` seconds, over ``method``'s episodes ("–" without highlights)."""
    early = [r.early_highlights for r in results if r.method == method and r.early_highlights is not None]
    return f"{100 * np.mean(early):.0f}" if early else "–"


def paired_difference(results: Sequence[Result], a: str, b: str) -> tuple[float, float, int]:
    """Mean UAR difference ``a - b`` (points) over the episodes both methods ran, its standard error
    and the number of pairs. Pairing by episode (task, class set, shots, seed, protocol) removes the
    shot-draw noise both methods share, which dominates the spread of either mean on its own.

    >>> from types import SimpleNamespace as N
    >>> ep = lambda s: N(task=N(code="B->C"), class_set="common4", shots="5-per-class", seed=s)
    >>> rs = [N(method=m, protocol="transductive", episode=ep(s), uar=u)
    ...       for m, s, u in [("a", 0, .5), ("b", 0, .4), ("a", 1, .6), ("b", 1, .4), ("b", 2, .9)]]
    >>> tuple(round(v, 2) for v in paired_difference(rs, "a", "b"))
    (15.0, 5.0, 2)
    """
    def key(r: Result) -> tuple:
        e = r.episode
        return (e.task.code, e.class_set, e.shots, e.seed, r.protocol)

    first = {key(r): r.uar for r in results if r.method == a}
    second = {key(r): r.uar for r in results if r.method == b}
    d = 100 * np.array([first[k] - second[k] for k in first if k in second])
    if len(d) == 0:
        return float("nan"), float("nan"), 0
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return float(d.mean()), se, len(d)


def reading(diff: float, se: float) -> str:
    """Words for a paired difference: beyond two standard errors, or within the noise."""
    if not np.isfinite(se):
        return "–"
    if diff + 2 * se < 0:
        return "below"
    if diff - 2 * se > 0:
        return "above"
    return "within noise (±2 SE)"


def paired_cell(diff: float, se: float) -> str:
    return f"{diff:+.1f} ± {se:.1f}" if np.isfinite(se) else "–"


def confusion_section(results: Sequence[Result], method: str, class_set: str, shots: str) -> list[str]:
    sums: dict[str, np.ndarray] = {}
    classes: dict[str, tuple[str, ...]] = {}
    for r in results:
        e = r.episode
        if r.method == method and e.class_set == class_set and e.shots == shots:
            sums[e.task.code] = sums.get(e.task.code, 0) + r.confusion
            classes[e.task.code] = e.classes
    out = [f"Rows: true emotion; columns: predicted; summed over seeds ({method}, {class_set}, {shots}).", ""]
    for code, cm in sums.items():
        cls = classes[code]
        out += [f"**{code}**", "", "| true \\ pred | " + " | ".join(cls) + " |", "|---" * (len(cls) + 1) + "|"]
        out += [f"| {c} | " + " | ".join(str(int(v)) for v in row) + " |" for c, row in zip(cls, cm)]
        out.append("")
    return out


def write_markdown(path: Path, *, results: Sequence[Result], inductive: Sequence[Result],
                   ceilings: dict[str, dict[str, float]], methods: Sequence[str], tasks: Sequence[Task],
                   class_sets: Sequence[str], shots: Sequence[str], seeds: Sequence[int], encoder: str,
                   wall_s: float, command: str, chance: dict[str, str]) -> None:
    lines = [
        "# Cross-lingual few-shot speech emotion recognition",
        "",
        f"- encoder: `{encoder}`; commit: `{commit()}`; machine: {machine()}",
        f"- wall time: {wall_s / 60:.1f} min (features from the cache); seeds: {list(seeds)}",
        f"- command: `{command}`",
        "- protocol: `shared/docs/benchmark-protocol.md`; metric: UAR (macro recall, %), mean ± std over seeds;",
        "  the unlabeled pool is every target clip of the task's classes (transductive), and is what is scored.",
        f"- paper reference (its own class sets and English corpus, indicative only): mean UAR {PAPER_MEAN_UAR}%"
        " over 12 tasks (pairwise).",
        "- chance: " + "; ".join(f"{k}: {v}" for k, v in chance.items()),
        "- `5-total`: five shots in all, one per emotion while five allow (with more than five emotions,"
        " the emotions without a shot cannot be predicted and score zero recall).",
        "",
        "## Summary: mean UAR over the 12 tasks",
        "",
        "| class set | shots | " + " | ".join(methods) + " |",
        "|---" * (len(methods) + 2) + "|",
    ]
    rows = {(cs, sh): [r for r in results if r.episode.class_set == cs and r.episode.shots == sh]
            for cs in class_sets for sh in shots}  # one class set and shots: a row of each table
    for (cs, sh), sub in rows.items():
        lines.append(f"| {cs} | {sh} | " + " | ".join(f"{mean_uar(sub, m):.1f}" for m in methods) + " |")
    lines.append("")
    baselines = [m for m in methods if m != "sere"]
    if "sere" in methods and baselines:
        lines += ["SERE against the best baseline of each row, paired by episode (same task, shots and seed):"
                  " mean difference ± its standard error, in UAR points.", "",
                  "| class set | shots | best baseline | SERE − best baseline | reading | pairs |",
                  "|---|---|---|---|---|---|"]
        for (cs, sh), sub in rows.items():
            best = max(baselines, key=lambda m: mean_uar(sub, m))
            diff, se, n = paired_difference(sub, "sere", best)
            lines.append(f"| {cs} | {sh} | {best} | {paired_cell(diff, se)} | {reading(diff, se)} | {n} |")
        lines.append("")
    if "sere" in methods:
        lines += [f"SERE's highlights: share of the scored clips with a highlight starting in their first {EARLY_S} s"
                  " (where a trimmed clip's padding and Whisper's boundary frames are).", "",
                  "| class set | shots | early highlights % |", "|---|---|---|"]
        for (cs, sh), sub in rows.items():
            lines.append(f"| {cs} | {sh} | {early_cell(sub, 'sere')} |")
        lines.append("")
    for (cs, sh), sub in rows.items():
        lines += [f"## {cs}, {sh}", ""] + summary_table(sub, methods, tasks) + [""]
    if inductive:
        ind_methods = sorted({r.method for r in inductive}, key=lambda m: (m != "sere", m))
        lines += ["## Inductive check (common4, 5-per-class)", "",
                  "Unlabeled pool: the clips of half of the target's speakers; scored: the other half.", ""]
        lines += summary_table(inductive, ind_methods, tasks) + [""]
    if ceilings:
        lines += ["## In-language supervised ceiling", "",
                  "Logistic regression on the same utterance features, speaker-independent cross-validation"
                  " (5 folds by speaker, or one per speaker when fewer).", "",
                  "| corpus | " + " | ".join(next(iter(ceilings.values()))) + " |",
                  "|---" * (len(next(iter(ceilings.values()))) + 1) + "|"]
        for corpus, vals in ceilings.items():
            lines.append(f"| {corpus} ({CODES.get(corpus, '')}) | " + " | ".join(f"{100 * v:.1f}" for v in vals.values()) + " |")
        lines.append("")
    lines += ["## Confusion matrices (SERE, common4)", ""]
    for sh in shots:
        lines += confusion_section(results, "sere", "common4", sh)
    lines += ["## How the settings were chosen", "",
              "On the development seeds (100-104) only, with the reported seeds run once afterwards; every"
              " question, its paired difference and its verdict: `benchmarks/studies.md`."]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_ablation(path: Path, results: Sequence[Result], methods: Sequence[str], tasks: Sequence[Task],
                   seeds: Sequence[int], encoder: str, command: str, wall_s: float) -> None:
    notes = {
        "sere": "full method",
        "sere_mean_pool": "mean pooling instead of emotional-highlight pooling",
        "sere_no_ll": "without the labeled-labeled term",
        "sere_no_lu": "without the labeled-unlabeled term (and prototype refinement from unlabeled clips)",
        "sere_no_uu": "without the unlabeled-unlabeled term",
        "sere_no_lang_norm": "one global z-score instead of per-language normalization",
        "sere_one_view": "every member on layers 2-3 (a seed ensemble) instead of layers 2-3, 2-4 and 1-3",
        "sere_layer3": "every member on whisper-base layer 3 alone",
        "sere_spk": "full method + per-speaker normalization (uses the speaker column)",
    }
    lines = ["# SERE ablation (common4, 5-per-class)", "",
             f"- encoder: `{encoder}`; commit: `{commit()}`; machine: {machine()}",
             f"- seeds: {list(seeds)}; wall time: {wall_s / 60:.1f} min; command: `{command}`", "",
             "- Δ: the variant minus the full method, paired by episode (task and seed), ± its standard"
             " error; *below* means more than two standard errors below.", "",
             f"- early highlights: share of the scored clips with a highlight starting in their first {EARLY_S} s.", "",
             "| variant | what changes | mean UAR | Δ vs sere | reading | early highlights % |",
             "|---|---|---|---|---|---|"]
    for m in methods:
        diff, se, _ = paired_difference(results, m, "sere") if m != "sere" else (0.0, float("nan"), 0)
        lines.append(f"| {m} | {notes.get(m, m.replace('_spk', ' + per-speaker normalization'))} | "
                     f"{mean_uar(results, m):.1f} | {paired_cell(diff, se)} | {reading(diff, se)} | "
                     f"{early_cell(results, m)} |")
    lines += ["", "## Per task", ""] + summary_table(results, methods, tasks)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
