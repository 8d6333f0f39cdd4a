"""Do clusters of clip means follow speakers or emotions? A diagnostic for pseudo-speakers (ledger #46).

Per-speaker normalization adds about 4 UAR points where the clips name their speakers; without
speaker labels, pseudo-speakers would have to come from clustering. For each corpus, every clip's
mean frame on a few whisper-base views is standardized, optionally reduced by PCA, and clustered by
k-means; the normalized mutual information (NMI) of the clusters with the corpus's speaker ids and
with its emotion labels says which one the clusters follow (labels are read only to score them).

    python benchmarks/speaker_clusters.py --corpora ../shared/corpora

Runs from a clean commit only, like ``dev_study.py``. Writes ``benchmarks/results/speaker_clusters.md``
and ``speaker_clusters.csv``.
"""

from __future__ import annotations

import argparse
import csv
import logging
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import normalized_mutual_info_score

from sere_core.benchmark.corpora import load_corpora
from sere_core.benchmark.protocol import CORPORA
from sere_core.benchmark.report import commit, machine, working_tree_dirty
from sere_core.benchmark.runner import layer_columns

log = logging.getLogger("speaker_clusters")

VIEWS = ((0, 1), (1, 1), (2, 3))  # layer 0-1, layer 1 alone, SERE's layers 2-3
PCA_DIMS = (0, 8, 32)  # 0: no PCA
CLUSTERS = (8, 16)  # the pseudo-speaker counts the dev studies tried


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpora", type=Path, default=Path("../shared/corpora"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    if working_tree_dirty():  # a ledger study: its results name a commit that made them
        ap.error("the working tree has changes: a study runs from a clean commit, which its results name")
    by_corpus, _ = load_corpora(args.corpora, CORPORA)
    rows = []
    for corpus, loaded in by_corpus.items():
        clips = [b.clip for b in loaded]
        speakers, emotions = [c.speaker for c in clips], [c.emotion for c in clips]
        for view in VIEWS:
            a, b = layer_columns(*view)
            x = np.stack([c.frames[:, a:b].mean(0) for c in clips])
            x = (x - x.mean(0)) / (x.std(0) + 1e-5)
            for dim in PCA_DIMS:
                y = PCA(dim, random_state=0).fit_transform(x) if dim else x
                for k in CLUSTERS:
                    found = KMeans(k, n_init=3, random_state=0).fit_predict(y)
                    rows.append({"corpus": corpus, "speakers": len(set(speakers)), "layers": f"{view[0]}-{view[1]}",
                                 "pca": dim, "clusters": k,
                                 "nmi_speaker": round(normalized_mutual_info_score(speakers, found), 3),
                                 "nmi_emotion": round(normalized_mutual_info_score(emotions, found), 3)})
        log.info("%s done", corpus)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "speaker_clusters.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = ["# Clusters of clip means: speakers or emotions?", "",
             f"- commit: `{commit()}`; machine: {machine()}; {datetime.now(timezone.utc):%Y-%m-%d}",
             "- command: `python benchmarks/speaker_clusters.py --corpora ../shared/corpora`",
             "- k-means on each clip's standardized mean frame (PCA 0 = none); each cell: NMI of the clusters"
             " with the speaker ids / with the emotions (higher follows more).", "",
             "| corpus (speakers) | layers | PCA | " + " | ".join(f"k {k}" for k in CLUSTERS) + " |",
             "|---|---|---|" + "---|" * len(CLUSTERS)]
    for corpus in by_corpus:
        for view in VIEWS:
            for dim in PCA_DIMS:
                mine = [r for r in rows if r["corpus"] == corpus and r["layers"] == f"{view[0]}-{view[1]}"
                        and r["pca"] == dim]
                cells = " | ".join(f"{r['nmi_speaker']:.2f} / {r['nmi_emotion']:.2f}" for r in mine)
                lines.append(f"| {corpus} ({mine[0]['speakers']}) | {view[0]}-{view[1]} | {dim} | {cells} |")
    (args.out / "speaker_clusters.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    log.info("wrote %s", args.out / "speaker_clusters.md")


if __name__ == "__main__":
    main()
