"""Rebuild the demo set in ``data/demo`` from the development corpora (a developer tool).

Users never need the corpora: the demo clips are committed. This script only documents, and
reproduces, exactly which clips were taken and how:

    python data/build_demo.py --corpora ../shared/corpora        # or $SERE_CORPORA

* source (German, labeled by the user): EmoDB, 8 clips per emotion, 8 different speakers per
  emotion (a rotation over the 10 speakers, so speaker and emotion are not confounded);
* target (English, unlabeled): RAVDESS, 10 clips per emotion from 12 actors (6 female, 6 male),
  "strong" intensity where the corpus has it (neutral has only "normal"), clips quieter than
  -30 dBFS peak skipped.

Emotions: neutral, happy, sad, angry. The FLAC bytes are copied unchanged (16 kHz mono 16-bit, as
staged in the corpora folder), so the output is byte-identical on every run. File names are
neutral (they do not give the emotion away); ``target_truth.csv`` keeps the answer, for tests.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import shutil
import sys
from pathlib import Path

EMOTIONS = ("neutral", "happy", "sad", "angry")
SOURCE_PER_EMOTION = 8
TARGET_PER_EMOTION = 10
TARGET_ACTORS = ("Actor_01", "Actor_02", "Actor_03", "Actor_04", "Actor_05", "Actor_06",
                 "Actor_11", "Actor_12", "Actor_15", "Actor_16", "Actor_21", "Actor_22")
MIN_PEAK_DBFS = -30.0
HERE = Path(__file__).resolve().parent


def _read_manifest(corpus: Path) -> list[dict[str, str]]:
    path = corpus / "manifest.csv"
    if not path.is_file():
        raise SystemExit(f"{path} not found: pass --corpora pointing at the shared corpora folder.")
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _peak_dbfs(path: Path) -> float:
    import numpy as np
    import soundfile as sf

    x, _ = sf.read(str(path), dtype="float32", always_2d=False)
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    return -120.0 if peak <= 0 else 20 * float(np.log10(peak))


def select_source(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """EmoDB: per emotion, one clip from each of 8 speakers, speakers and sentences rotated."""
    speakers = sorted({r["speaker"] for r in rows})
    chosen = []
    for e_idx, emotion in enumerate(EMOTIONS):
        picked = 0
        for k in range(len(speakers)):
            if picked == SOURCE_PER_EMOTION:
                break
            spk = speakers[(2 * e_idx + k) % len(speakers)]
            clips = sorted(r["path"] for r in rows if r["speaker"] == spk and r["emotion"] == emotion)
            if not clips:
                continue
            row = next(r for r in rows if r["path"] == clips[(e_idx + k) % len(clips)])
            chosen.append(row)
            picked += 1
        if picked < SOURCE_PER_EMOTION:
            raise SystemExit(f"EmoDB has only {picked} speakers with {emotion!r} clips.")
    return chosen


def select_target(rows: list[dict[str, str]], corpus: Path) -> list[dict[str, str]]:
    """RAVDESS: per emotion, one clip from each of 10 of the 12 actors (rotated), strong intensity."""
    chosen = []
    for e_idx, emotion in enumerate(EMOTIONS):
        picked = 0
        for k in range(len(TARGET_ACTORS)):
            if picked == TARGET_PER_EMOTION:
                break
            actor = TARGET_ACTORS[(e_idx + k) % len(TARGET_ACTORS)]
            cands = sorted(
                (r for r in rows if r["speaker"] == actor and r["emotion"] == emotion),
                key=lambda r: r["path"],
            )
            # file name fields: modality-vocal-emotion-intensity-statement-repetition-actor
            strong = [r for r in cands if Path(r["path"]).stem.split("-")[3] == "02"]
            pool = strong or cands
            statement = "01" if k % 2 == 0 else "02"
            pool = sorted(pool, key=lambda r: (Path(r["path"]).stem.split("-")[4] != statement, r["path"]))
            for r in pool:
                if _peak_dbfs(corpus / r["path"]) >= MIN_PEAK_DBFS:
                    chosen.append(r)
                    picked += 1
                    break
        if picked < TARGET_PER_EMOTION:
            raise SystemExit(f"RAVDESS gave only {picked} usable {emotion!r} clips.")
    return chosen


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def build(corpora: Path, out: Path) -> dict[str, int]:
    """Write ``out/{source,target}/*.flac`` and the manifests; returns counts and total bytes."""
    emodb, ravdess = corpora / "emodb", corpora / "ravdess"
    src_rows = select_source(_read_manifest(emodb))
    tgt_rows = select_target(_read_manifest(ravdess), ravdess)
    if out.exists():
        shutil.rmtree(out)
    (out / "source").mkdir(parents=True)
    (out / "target").mkdir(parents=True)

    source_csv, per_speaker = [], {}
    for r in sorted(src_rows, key=lambda r: (r["speaker"], r["path"])):
        n = per_speaker[r["speaker"]] = per_speaker.get(r["speaker"], 0) + 1
        rel = f"source/de_s{r['speaker']}_{n:02d}.flac"
        shutil.copyfile(emodb / r["path"], out / rel)
        source_csv.append([rel, r["emotion"], "de", f"emodb-{r['speaker']}", r["gender"],
                           Path(r["path"]).name])

    target_csv, truth_csv, per_actor = [], [], {}
    # Order by a hash of the original name so emotions are mixed in the listing, yet deterministic.
    for r in sorted(tgt_rows, key=lambda r: hashlib.sha256(r["path"].encode()).hexdigest()):
        actor = r["speaker"].replace("Actor_", "a")
        n = per_actor[actor] = per_actor.get(actor, 0) + 1
        rel = f"target/en_{actor}_{n:02d}.flac"
        shutil.copyfile(ravdess / r["path"], out / rel)
        target_csv.append([rel, "en", f"ravdess-{r['speaker']}", r["gender"]])
        truth_csv.append([rel, r["emotion"], Path(r["path"]).name])

    _write_csv(out / "source.csv", ["path", "emotion", "language", "speaker", "gender", "original_file"],
               source_csv)
    _write_csv(out / "target.csv", ["path", "language", "speaker", "gender"], sorted(target_csv))
    _write_csv(out / "target_truth.csv", ["path", "emotion", "original_file"], sorted(truth_csv))
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"source": len(source_csv), "target": len(target_csv), "bytes": total}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpora", type=Path,
                        default=Path(os.environ.get("SERE_CORPORA", HERE.parent.parent / "shared" / "corpora")),
                        help="folder holding emodb/ and ravdess/ (default: $SERE_CORPORA or ../shared/corpora)")
    parser.add_argument("--out", type=Path, default=HERE / "demo", help="output folder (replaced)")
    args = parser.parse_args(argv)
    stats = build(args.corpora.resolve(), args.out.resolve())
    print(f"wrote {stats['source']} source and {stats['target']} target clips, "
          f"{stats['bytes'] / 1e6:.2f} MB, to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
