"""The benchmark's corpora as frame features, embedded once through the shared cache.

Each corpus folder has ``manifest.csv`` and ``audio/``. Clips are embedded with
:func:`sere_core.features.embed_manifest` (so the benchmark, the CLI and the app share one
embedding cache), averaged in time to ``pool`` encoder frames per feature frame, and kept in a
per-corpus file under ``<cache>/benchmark/`` so later runs skip audio decoding altogether.
"""

from __future__ import annotations

import csv
import json
import logging
import zlib
from pathlib import Path

import numpy as np

from sere_core.benchmark.protocol import BenchClip
from sere_core.encoders import DEFAULT_ENCODER
from sere_core.errors import ManifestError
from sere_core.method.data import ClipFeatures
from sere_core.method.normalization import pool_frames

log = logging.getLogger(__name__)

BENCH_FORMAT = 1
#: The benchmark's read-out where none is given: every hidden state of whisper-base from one forward
#: pass, so that each method (SERE and each baseline) reads its own best view of the layers.
BENCH_ENCODER_OPTIONS: dict[str, dict] = {"whisper-base": {"layers": tuple(range(7))}}


def _rows(corpus_dir: Path) -> list[dict[str, str]]:
    manifest = corpus_dir / "manifest.csv"
    if not manifest.is_file():
        raise ManifestError(f"{manifest}: no manifest.csv in this corpus folder")
    with manifest.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _embed(corpus_dir: Path, rows: list[dict[str, str]], encoder, progress=None
           ) -> tuple[dict[str, np.ndarray], object]:
    """Frames per manifest path (relative), through ``embed_manifest`` and the embedding cache."""
    from sere_core.cache import EmbeddingCache
    from sere_core.features import embed_manifest
    from sere_core.manifests import ManifestEntry

    entries = [ManifestEntry(path=corpus_dir / r["path"], emotion=r.get("emotion") or None,
                             language=r.get("language") or None, speaker=r.get("speaker") or None)
               for r in rows]
    result = embed_manifest(entries, encoder, EmbeddingCache(), progress=progress)
    for failure in result.failures:
        log.warning("could not embed %s: %s", failure.path, failure.message)
    by_path: dict[str, list[np.ndarray]] = {}
    for clip in result.clips:
        by_path.setdefault(str(clip.path), []).append(clip.frames)
    frames = {}
    for row, entry in zip(rows, entries):
        parts = by_path.get(str(entry.path))
        if parts:
            frames[row["path"]] = np.concatenate(parts).astype(np.float32)
    return frames, result.encoder


def load_corpus(corpus_dir: Path, encoder_name: str = DEFAULT_ENCODER, pool: int = 4,
                store: Path | None = None, progress=None, **encoder_options) -> tuple[list[BenchClip], dict]:
    """All clips of one corpus folder; returns the clips and the encoder's info as a dict.
    ``encoder_options`` go to the encoder (for example whisper-base's ``layers``)."""
    from safetensors.numpy import load_file, save

    from sere_core.atomic import atomic_write_bytes
    from sere_core.encoders import cache_key, get_encoder

    corpus_dir = Path(corpus_dir).resolve()  # the embedding manifest takes absolute paths
    rows = _rows(corpus_dir)
    corpus = corpus_dir.name
    digest = f"{zlib.crc32((corpus_dir / 'manifest.csv').read_bytes()):08x}"
    if store is None:
        from sere_core.cache import default_cache_dir

        store = default_cache_dir() / "benchmark"
    encoder = get_encoder(encoder_name, **(encoder_options or BENCH_ENCODER_OPTIONS.get(encoder_name, {})))
    # the read-out (name, version, layers) is part of the name: another one never reads these frames
    stem = store / f"{encoder_name.replace(':', '_').replace('/', '_')}-{cache_key(encoder.info)[:12]}-{corpus}-{digest}-p{pool}"
    meta_path, data_path = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    if meta_path.is_file() and data_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        arrays = load_file(str(data_path))
        frames = {p: arrays[f"c{i}"].astype(np.float32) for i, p in enumerate(meta["paths"])}
        info = meta["encoder"]
    else:
        raw, enc = _embed(corpus_dir, rows, encoder, progress)
        from dataclasses import asdict

        info = asdict(enc)
        info["layers"] = list(info.get("layers") or [])
        frames = {p: pool_frames(f, pool) for p, f in raw.items()}
        store.mkdir(parents=True, exist_ok=True)
        paths = sorted(frames)
        # the data first, the metadata (which marks the entry complete) last, each atomically
        atomic_write_bytes(data_path, save({f"c{i}": frames[p].astype(np.float16) for i, p in enumerate(paths)}))
        atomic_write_bytes(meta_path, json.dumps({"format": BENCH_FORMAT, "paths": paths, "encoder": info,
                                                  "pool": pool}).encode("utf-8"))
    rate = float(info["frame_rate"]) / pool
    clips = []
    for r in rows:
        if r["path"] not in frames:
            continue
        feat = ClipFeatures(f"{corpus}/{r['path']}", frames[r["path"]], rate,
                            language=r.get("language") or corpus, speaker=f"{corpus}/{r.get('speaker')}",
                            emotion=r.get("emotion"))
        clips.append(BenchClip(corpus, r["path"], feat))
    log.info("%s: %d clips (%d in the manifest)", corpus, len(clips), len(rows))
    return clips, info


def load_corpora(root: Path, names, encoder_name: str = DEFAULT_ENCODER, pool: int = 4,
                 store: Path | None = None, **encoder_options) -> tuple[dict[str, list[BenchClip]], dict]:
    from tqdm import tqdm

    by_corpus, info = {}, {}
    for name in names:
        bar = tqdm(desc=f"features {name}", unit="file", leave=False)

        def progress(done: int, total: int, bar=bar) -> None:
            bar.total = total
            bar.update(done - bar.n)

        by_corpus[name], info = load_corpus(Path(root) / name, encoder_name, pool, store, progress,
                                            **encoder_options)
        bar.close()
    return by_corpus, info
