"""Training time of SERE on cached features: 20 labeled clips and 1,500 unlabeled ones.

The target (#15): under 15 s on 2 CPU cores. Labeled: 5 EmoDB clips per emotion of ``common4``;
unlabeled: 1,500 RAVDESS and CASIA clips (their cached whisper-base features, as the benchmark
loads them). Fit (preprocessing, every ensemble member, the final balance) and predict of the 1,500
clips are timed separately, with 1 and with 2 torch threads, for the shipped default config: the
median of ``--repeats`` runs each, after one untimed warm-up fit (the first fit of a process pays
for torch's lazy set-up, about 3 s here, which no later fit does).

    SERE_CACHE_DIR=... python benchmarks/training_speed.py --corpora ../shared/corpora

Writes ``benchmarks/results/training_speed.md`` and ``training_speed.csv``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from sere_core.benchmark.corpora import load_corpora
from sere_core.benchmark.protocol import COMMON4, strip_label
from sere_core.benchmark.report import commit, machine
from sere_core.benchmark.runner import BENCH_SERE_CONFIG
from sere_core.encoders.whisper import SERE_VIEWS
from sere_core.method import SERE

log = logging.getLogger("training_speed")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpora", type=Path, default=Path("../shared/corpora"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--unlabeled", type=int, default=1500)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    by_corpus, _ = load_corpora(args.corpora, ["emodb", "ravdess", "casia"])
    rng = np.random.default_rng(0)
    labeled = []
    for emotion in COMMON4:
        pool = [b.clip for b in by_corpus["emodb"] if b.clip.emotion == emotion]
        labeled += [pool[i] for i in rng.choice(len(pool), 5, replace=False)]
    target = [strip_label(b.clip) for name in ("ravdess", "casia") for b in by_corpus[name]]
    unlabeled = [target[i] for i in rng.choice(len(target), args.unlabeled, replace=False)]
    seconds = sum(c.duration_s for c in unlabeled)
    SERE(replace(BENCH_SERE_CONFIG, steps=2)).fit(labeled, unlabeled[:100])  # warm-up, untimed
    rows = []
    for threads in (1, 2):
        cfg = replace(BENCH_SERE_CONFIG, num_threads=threads)
        fits, predicts = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            model = SERE(cfg).fit(labeled, unlabeled)
            fits.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            model.predict(unlabeled)
            predicts.append(time.perf_counter() - t0)
        rows.append({"labeled": len(labeled), "unlabeled": len(unlabeled), "threads": threads,
                     "ensemble": cfg.ensemble, "steps": cfg.steps, "crop_frames": cfg.crop_frames,
                     "repeats": args.repeats, "fit_s": round(float(np.median(fits)), 2),
                     "fit_s_min": round(min(fits), 2), "fit_s_max": round(max(fits), 2),
                     "predict_s": round(float(np.median(predicts)), 2), "commit": commit(),
                     "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}"})
        log.info("%d threads: fit %s s, predict %s s", threads, [round(f, 1) for f in fits],
                 [round(p, 1) for p in predicts])
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "training_speed.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = ["# SERE training time: 20 labeled + 1,500 unlabeled cached clips", "",
             f"- commit: `{commit()}`; machine: {machine()}; {rows[0]['date']}",
             f"- command: `python benchmarks/training_speed.py --corpora {args.corpora}`",
             f"- labeled: 20 EmoDB clips (5 per emotion of common4); unlabeled: {len(unlabeled)} RAVDESS and"
             f" CASIA clips ({seconds / 60:.0f} min of audio), whisper-base features from the cache",
             f"- config: the benchmark's (`runner.BENCH_SERE_CONFIG`: ensemble {rows[0]['ensemble']} x"
             f" {rows[0]['steps']} steps, each member on its layer view {list(SERE_VIEWS)}, crops of"
             f" {rows[0]['crop_frames']} frames); target: fit under 15 s on"
             " 2 cores",
             f"- the median of {args.repeats} runs (and their range), after one untimed warm-up fit", "",
             "| torch threads | fit (s) | fit range (s) | predict 1,500 clips (s) |", "|---|---|---|---|"]
    lines += [f"| {r['threads']} | {r['fit_s']:.1f} | {r['fit_s_min']:.1f}-{r['fit_s_max']:.1f} |"
              f" {r['predict_s']:.1f} |" for r in rows]
    (args.out / "training_speed.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
