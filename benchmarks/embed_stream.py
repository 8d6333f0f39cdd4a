"""Streaming ``sere embed`` over many files: wall time and peak memory, fresh, cached and resumed.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/embed_stream.py            # 1,000 and 10,000 files
    .venv/bin/python benchmarks/embed_stream.py --files 100 300   # a smoke run

The audio is generated (speech-like noise modulated at a syllable rate, a different signal per
file so every file is its own cache entry) in a temporary folder, two emotion subfolders. Each run
is the real command line, ``sere embed FOLDER --encoder prosody --out OUT --shard-mb S``, in its
own subprocess with a fresh ``--out``; peak RSS is that subprocess's own (``wait4``). Per file count:

1. ``fresh``: an empty cache, so every file is decoded and encoded;
2. ``cached``: again with the cache the fresh run filled (decoding only);
3. ``resumed``: an empty cache, SIGKILL once the journal in ``--out`` holds half the files, then
   the same command again; the row times the second command and counts the files it skipped.

Flat peak RSS from the smallest to the largest file count is the point: the frames are written in
shards as they come, never all held. Writes ``benchmarks/results/embed_stream.md`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from sere_core.audio import write_audio  # noqa: E402
from sere_core.benchmark.report import commit, machine, working_tree_dirty  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SERE = [sys.executable, "-c", "from sere_core.cli import main; main()"]
COLUMNS = ["commit", "machine", "encoder", "files", "seconds_per_file", "run", "wall_s", "files_per_s",
           "peak_rss_mb", "skipped_files", "cache_hits", "shard_mb", "omp_num_threads"]


def generate(folder: Path, n: int, seconds: float, seed: int = 0) -> None:
    """``n`` speech-like clips under ``folder/{happy,sad}/``; existing files are kept."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * 16000))) / 16000
    for i in range(n):
        path = folder / ("happy", "sad")[i % 2] / f"{i:06d}.wav"
        envelope = 0.25 + 0.75 * np.abs(np.sin(np.pi * 4.0 * t + rng.uniform(0, np.pi)))
        carrier = rng.standard_normal(t.size) + 0.5 * np.sin(2 * np.pi * rng.uniform(100, 250) * t)
        if not path.exists():
            write_audio(path, (0.18 * envelope * carrier).astype(np.float32), 16000)


def journal_files(out: Path) -> int:
    """Files the shards of ``out`` already hold (their safetensors metadata)."""
    from safetensors import safe_open

    total = 0
    for shard in out.glob("frames-*.safetensors"):
        try:
            with safe_open(str(shard), framework="np") as handle:
                total += len(json.loads(handle.metadata()["sere"])["files"])
        except (OSError, KeyError, ValueError):  # a shard being renamed into place
            pass
    return total


def run_embed(folder: Path, out: Path, cache: Path, shard_mb: float, kill_at: int | None = None) -> dict:
    """One ``sere embed`` subprocess: wall seconds, its own peak RSS, its summary lines."""
    env = {**os.environ, "SERE_CACHE_DIR": str(cache)}
    args = [*SERE, "embed", str(folder), "--encoder", "prosody", "--out", str(out), "--shard-mb", str(shard_mb)]
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if kill_at is not None:
        while journal_files(out) < kill_at and proc.poll() is None:
            time.sleep(0.5)
        if proc.poll() is not None:
            raise SystemExit(f"the run ended before its journal held {kill_at} files; use a smaller --shard-mb")
        proc.send_signal(signal.SIGKILL)
    stdout = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if kill_at is None and proc.returncode != 0:
        raise SystemExit(f"sere embed failed ({proc.returncode}):\n{stdout}")
    skipped = hits = 0
    for line in stdout.splitlines():
        if "were already done" in line:
            skipped = int(line.split()[0])
        if line.startswith("embedded ") and "from the cache" in line:
            hits = int(line.split("(")[1].split()[0])
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "skipped_files": skipped, "cache_hits": hits}


def bench(n: int, seconds: float, shard_mb: float, work: Path) -> list[dict]:
    folder = work / f"audio-{n}"
    generate(folder, n, seconds)
    rows = []
    fresh = run_embed(folder, work / f"out-{n}-fresh", work / f"cache-{n}", shard_mb)
    rows.append({"run": "fresh", **fresh})
    rows.append({"run": "cached", **run_embed(folder, work / f"out-{n}-cached", work / f"cache-{n}", shard_mb)})
    out, cache = work / f"out-{n}-resumed", work / f"cache-{n}-resumed"
    run_embed(folder, out, cache, shard_mb, kill_at=n // 2)
    rows.append({"run": "resumed", **run_embed(folder, out, cache, shard_mb)})
    for row in rows:
        row.update(files=n, seconds_per_file=seconds, files_per_s=n / row["wall_s"], shard_mb=shard_mb)
        print(f"{n:>6} files  {row['run']:<8} {row['wall_s']:7.1f} s  {row['peak_rss_mb']:6.0f} MB peak RSS  "
              f"skipped {row['skipped_files']}, cache hits {row['cache_hits']}", flush=True)
    return rows


def write_results(rows: list[dict], meta: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with (RESULTS / "embed_stream.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (round(v, 3) if isinstance(v, float) else v)
                             for k, v in {**meta, "encoder": "prosody", **row}.items() if k in COLUMNS})
    lines = [
        "# Streaming `sere embed`: wall time and peak memory over many files",
        "",
        "Written by `benchmarks/embed_stream.py` (its docstring says exactly what runs).",
        "",
        f"- command: `{meta['command']}`",
        f"- commit: `{meta['commit']}`; machine: {meta['machine']}; load average (1 min) before/after: "
        f"{meta['load_before']:.2f} / {meta['load_after']:.2f}",
        "- encoder: `prosody`; generated speech-like audio, one 16 kHz WAV per clip; each run a fresh "
        "`sere embed` subprocess (peak RSS is its own)",
        f"- `--shard-mb {rows[0]['shard_mb']:g}`; `OMP_NUM_THREADS={meta['omp_num_threads']}`",
        "",
        "| files | clip length (s) | run | wall (s) | files/s | peak RSS (MB) | skipped (journal) | cache hits |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['files']} | {r['seconds_per_file']:g} | {r['run']} | {r['wall_s']:.1f} | "
                     f"{r['files_per_s']:.0f} | {r['peak_rss_mb']:.0f} | {r['skipped_files']} | {r['cache_hits']} |")
    by_run = {(r["files"], r["run"]): r for r in rows}
    counts = sorted({r["files"] for r in rows})
    small, large = by_run[(counts[0], "fresh")], by_run[(counts[-1], "fresh")]
    lines += [
        "",
        f"Peak RSS of a fresh run: {small['peak_rss_mb']:.0f} MB at {counts[0]} files, "
        f"{large['peak_rss_mb']:.0f} MB at {counts[-1]} files. Holding every clip's float32 frames, as "
        f"`sere embed` did before it streamed, would add about "
        f"{counts[-1] * large['seconds_per_file'] * 100 * 45 * 4 / 2**20:.0f} MB at {counts[-1]} files "
        "(prosody: 100 frames/s x 45 values); now at most one shard (`--shard-mb`) is held.",
        "",
        "`resumed` is the second command after a SIGKILL at half the files: it skips what the journal "
        "(the shards in `--out`) holds without decoding it, and takes the files the killed run encoded "
        "but had not yet written to a shard from the cache.",
        "",
    ]
    (RESULTS / "embed_stream.md").write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--seconds", type=float, default=0.5, help="length of each generated clip")
    parser.add_argument("--shard-mb", type=float, default=1.0,
                        help="small enough that the journal shows progress before the kill at half")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="sere-embed-bench-") as work:
        for n in sorted(args.files):
            rows += bench(n, args.seconds, args.shard_mb, Path(work))
    dirty = " + uncommitted changes" if working_tree_dirty() else ""
    meta = {"commit": commit() + dirty, "machine": machine(), "load_before": load_before,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
            "load_after": os.getloadavg()[0], "command": " ".join(["python", *sys.argv])}
    write_results(rows, meta)


if __name__ == "__main__":
    main()
