"""Calibrate SERE's confidence: choose the prediction temperature on dev seeds, report it on others.

SERE's logits are ``cos / tau`` with ``tau = 0.1``, so an uncalibrated softmax calls almost every
prediction 100 % sure. ``SEREConfig.confidence_temperature`` divides the logits at prediction time
(the predicted emotion never changes). This script fits SERE on the protocol's episodes
(``common4``, 5 per emotion, the 12 tasks), picks the temperature that minimizes the negative
log-likelihood of the target clips on the **development seeds** (100-104 by default) and reports
calibration on the **reported seeds** (0-4) at temperature 1 (the raw logits), at the current
default and at the chosen one: mean confidence next to accuracy, expected calibration error (ECE, 15 equal-width bins) and NLL.

    SERE_CACHE_DIR=... python benchmarks/calibration.py --corpora ../shared/corpora

Writes ``benchmarks/results/calibration.md`` and ``calibration.csv``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from sere_core.benchmark import parse_seeds
from sere_core.benchmark.corpora import load_corpora
from sere_core.benchmark.protocol import CORPORA, make_episode, tasks
from sere_core.benchmark.report import commit, machine
from sere_core.benchmark.runner import BENCH_SERE_CONFIG
from sere_core.encoders.whisper import SERE_VIEWS
from sere_core.method import SERE

log = logging.getLogger("calibration")
GRID = tuple(float(t) for t in np.round(np.geomspace(0.5, 20.0, 41), 3))
N_BINS = 15
_CORPORA: dict = {}


def _init(corpora_dir: str) -> None:
    _CORPORA.update(load_corpora(Path(corpora_dir), CORPORA)[0])


def _episode(args: tuple[str, str, int]) -> dict:
    """Log-probabilities at temperature 1 (from which any temperature follows) and the truth."""
    source, target, seed = args
    task = next(t for t in tasks() if (t.source, t.target) == (source, target))
    ep = make_episode(_CORPORA, task, "common4", "5-per-class", seed)
    config = replace(BENCH_SERE_CONFIG, seed=seed, snapshot_every=0, confidence_temperature=1.0)  # raw logits
    model = SERE(config).fit(ep.labeled, ep.unlabeled)
    proba = model.predict_proba(ep.test)
    truth = np.array([model.classes_.index(c.emotion) for c in ep.test])
    return {"task": task.code, "seed": seed, "logp": np.log(np.clip(proba, 1e-12, 1.0)), "truth": truth}


def scaled(logp: np.ndarray, temperature: float) -> np.ndarray:
    z = logp / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def metrics(episodes: list[dict], temperature: float) -> dict[str, float]:
    """Pooled over every target clip of the episodes."""
    probs = np.concatenate([scaled(e["logp"], temperature) for e in episodes])
    truth = np.concatenate([e["truth"] for e in episodes])
    conf, pred = probs.max(1), probs.argmax(1)
    correct = pred == truth
    nll = float(-np.log(np.clip(probs[np.arange(len(truth)), truth], 1e-12, 1.0)).mean())
    bins = np.minimum((conf * N_BINS).astype(int), N_BINS - 1)
    ece = sum(abs(conf[bins == b].mean() - correct[bins == b].mean()) * (bins == b).mean()
              for b in range(N_BINS) if (bins == b).any())
    return {"temperature": temperature, "accuracy": 100 * correct.mean(), "mean_confidence": 100 * conf.mean(),
            "ece": 100 * float(ece), "nll": nll, "clips": int(len(truth))}


def run(corpora_dir: Path, dev_seeds: list[int], report_seeds: list[int], workers: int) -> dict:
    jobs = [(t.source, t.target, s) for s in [*dev_seeds, *report_seeds] for t in tasks()]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers, initializer=_init, initargs=(str(corpora_dir),)) as pool:
        done = []
        for k, result in enumerate(pool.map(_episode, jobs), start=1):
            done.append(result)
            log.info("%d/%d episodes (%s seed %d)", k, len(jobs), result["task"], result["seed"])
    dev = [e for e in done if e["seed"] in dev_seeds]
    rep = [e for e in done if e["seed"] in report_seeds]
    chosen = min(GRID, key=lambda t: metrics(dev, t)["nll"])
    shown = sorted({1.0, BENCH_SERE_CONFIG.confidence_temperature, chosen})  # raw, current default, chosen
    return {"chosen": chosen, "current": BENCH_SERE_CONFIG.confidence_temperature, "wall_s": time.perf_counter() - t0,
            "rows": [{"seeds": name, **metrics(eps, t)} for name, eps in (("dev", dev), ("report", rep))
                     for t in shown]}


def write(out_dir: Path, res: dict, dev_seeds: list[int], report_seeds: list[int], command: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    cols = ["seeds", "temperature", "accuracy", "mean_confidence", "ece", "nll", "clips"]
    with (out_dir / "calibration.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols)
        writer.writeheader()
        for row in res["rows"]:
            writer.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
    lines = [
        "# SERE confidence calibration (common4, 5 per emotion, 12 tasks)", "",
        f"- command: `{command}`",
        f"- commit: `{commit()}`; date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {machine()}",
        f"- encoder: whisper-base, member views (layers) {list(SERE_VIEWS)} (the benchmark's SERE config); temperature "
        f"chosen on dev seeds "
        f"{dev_seeds} by NLL over the grid {GRID[0]}-{GRID[-1]}; reported on seeds {report_seeds}",
        f"- wall time: {res['wall_s'] / 60:.1f} min", "",
        f"Chosen temperature: **{res['chosen']}** (uncalibrated: 1; `SEREConfig.confidence_temperature` when "
        f"this ran: {res['current']:g}).", "",
        "| seeds | temperature | accuracy % | mean confidence % | ECE % | NLL | clips |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        lines.append(f"| {r['seeds']} | {r['temperature']:g} | {r['accuracy']:.1f} | {r['mean_confidence']:.1f} | "
                     f"{r['ece']:.1f} | {r['nll']:.3f} | {r['clips']} |")
    lines += ["", "Accuracy does not change with the temperature (the argmax is the same); a calibrated model "
              "has its mean confidence near its accuracy and a small ECE.", ""]
    (out_dir / "calibration.md").write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpora", type=Path, default=Path("../shared/corpora"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--dev-seeds", default="100-104")
    ap.add_argument("--report-seeds", default="0-4")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    if not (args.corpora / "emodb").is_dir():
        raise SystemExit(f"{args.corpora}: the benchmark corpora are not there")
    dev, rep = parse_seeds(args.dev_seeds), parse_seeds(args.report_seeds)
    res = run(args.corpora, dev, rep, args.workers)
    command = (f"python benchmarks/calibration.py --corpora {args.corpora} --dev-seeds {args.dev_seeds} "
               f"--report-seeds {args.report_seeds} --workers {args.workers}")
    write(args.out, res, dev, rep, command)
    log.info("chosen temperature %s", res["chosen"])


if __name__ == "__main__":
    main()
