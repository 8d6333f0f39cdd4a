"""Encoder speed: seconds of compute per second of audio, on 3 s and 10 s clips.

    .venv/bin/python benchmarks/encoders.py                 # all available encoders
    .venv/bin/python benchmarks/encoders.py --experiments   # + the whisper-base speed-ups tried

Each encoder runs in its own subprocess (so peak RSS is its own), loads once, encodes each clip
twice as warm-up, then ``--runs`` times; the median is reported (min alongside). Clips are real
speech from ``$SERE_CORPORA`` (default ``../shared/corpora``; 10 s clips are concatenations),
else a synthetic harmonic signal. Writes ``benchmarks/results/encoders.md`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from sere_core.benchmark.report import commit, cpu_busy_seconds, cpu_model  # noqa: E402

SR = 16000
CLIP_SECONDS = (3.0, 10.0)
TARGET = {"whisper-base": 0.033}
RESULTS = ROOT / "benchmarks" / "results"


# ------------------------------------------------------------------------------ clips


def corpora_dir() -> Path:
    return Path(os.environ.get("SERE_CORPORA", ROOT.parent / "shared" / "corpora"))


def speech_clips() -> tuple[dict[float, np.ndarray], str]:
    """``{seconds: samples}`` and where they came from."""
    folder = corpora_dir()
    pieces: list[np.ndarray] = []
    sources: list[str] = []
    try:
        import soundfile as sf

        for corpus in ("emovo", "ravdess", "casia", "emodb"):
            for path in sorted((folder / corpus / "audio").rglob("*.flac"))[:40:4]:
                data, rate = sf.read(path, dtype="float32")
                if rate == SR and data.ndim == 1:
                    pieces.append(data)
                    sources.append(f"{corpus}/{path.name}")
                if sum(p.shape[0] for p in pieces) > 12 * SR:
                    break
            if sum(p.shape[0] for p in pieces) > 12 * SR:
                break
    except (ImportError, OSError, RuntimeError):
        pieces = []
    if sum(p.shape[0] for p in pieces) > 11 * SR:
        longest = max(pieces, key=len)
        three = longest[: 3 * SR] if longest.shape[0] >= 3 * SR else np.concatenate(pieces)[: 3 * SR]
        ten = np.concatenate(pieces)[: 10 * SR]
        return {3.0: three, 10.0: ten}, f"real speech ({len(sources)} clips from {folder}, e.g. {sources[0]})"
    rng = np.random.default_rng(0)
    clips = {}
    for seconds in CLIP_SECONDS:
        t = np.arange(int(seconds * SR)) / SR
        phase = 2 * np.pi * np.cumsum(120 + 40 * np.sin(2 * np.pi * 0.7 * t)) / SR
        x = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3.5 * t)) ** 2
        clips[seconds] = (0.1 * x + 0.005 * rng.standard_normal(t.shape[0])).astype(np.float32)
    return clips, "synthetic harmonic signal (corpora not found)"


# ------------------------------------------------------------------------------ child: one encoder


CPU_TIMES: list[float] = []  # process CPU seconds of the calls timed last (see time_calls)


def time_calls(fn, warmup: int, runs: int) -> list[float]:
    """Wall seconds of ``runs`` calls after ``warmup`` calls; their CPU seconds go to CPU_TIMES.

    With one torch thread, CPU time is close to what the call would take on an idle machine,
    which makes it the steadier number when other work shares the cores.
    """
    for _ in range(warmup):
        fn()
    times = []
    CPU_TIMES.clear()
    for _ in range(runs):
        cpu = time.process_time()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        CPU_TIMES.append(time.process_time() - cpu)
    return times


def child(name: str, threads: int | None, runs: int) -> dict:
    import torch

    from sere_core.encoders import get_encoder

    if threads is not None:
        torch.set_num_threads(threads)
    clips, source = speech_clips()
    encoder = get_encoder(name)
    start = time.perf_counter()
    encoder.load()
    load_s = time.perf_counter() - start
    rows = []
    for seconds, samples in clips.items():
        times = time_calls(lambda: encoder.encode(samples), warmup=2, runs=runs)
        rows.append(
            {
                "clip_s": seconds,
                "median_s_per_s": statistics.median(times) / seconds,
                "min_s_per_s": min(times) / seconds,
                "cpu_s_per_s": statistics.median(CPU_TIMES) / seconds,
                "runs": runs,
            }
        )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "encoder": name,
        "threads": torch.get_num_threads(),
        "load_s": load_s,
        "peak_rss_mb": peak_mb,
        "dim": encoder.info.dim,
        "frame_rate": encoder.info.frame_rate,
        "version": encoder.info.version,
        "source": source,
        "rows": rows,
    }


def experiments(runs: int) -> dict:
    """whisper-base speed-ups tried on the 3 s and 10 s clips (fp32 SDPA is the default)."""
    import torch

    from sere_core.encoders import get_encoder
    from sere_core.encoders.whisper import log_mel, whisper_hidden_states

    clips, _ = speech_clips()
    encoder = get_encoder("whisper-base")
    encoder.load()
    frames = encoder._frames
    model = frames.encoder
    reference = {s: encoder.encode(x) for s, x in clips.items()}

    def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        num = (a * b).sum(-1)
        den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
        return num / den

    def run_variant(module, samples, autocast: bool = False) -> np.ndarray:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            mel = log_mel(torch.from_numpy(samples))[None]
            return whisper_hidden_states(module, mel, (3, 6))[0].float().numpy()

    results = []

    def record(label: str, fn_for_clip, note: str = "") -> None:
        for seconds, samples in clips.items():
            try:
                out = fn_for_clip(samples)
                times = time_calls(lambda: fn_for_clip(samples), warmup=1, runs=runs)
            except Exception as exc:  # noqa: BLE001 - report what failed and go on
                results.append({"variant": label, "clip_s": seconds, "error": str(exc)[:120]})
                continue
            err = None
            if isinstance(out, np.ndarray) and out.shape == reference[seconds].shape:
                cos = cosines(out, reference[seconds])
                err = {
                    "max_abs_err": float(np.abs(out - reference[seconds]).max()),
                    "mean_frame_cos": float(cos.mean()),
                    "min_frame_cos": float(cos.min()),
                }
            results.append(
                {
                    "variant": label,
                    "clip_s": seconds,
                    "median_s_per_s": statistics.median(times) / seconds,
                    "cpu_s_per_s": statistics.median(CPU_TIMES) / seconds,
                    "note": note,
                    **(err or {}),
                }
            )

    record("default (fp32, SDPA, unpadded)", encoder.encode)
    previous = model.config._attn_implementation
    model.config._attn_implementation = "eager"
    record("eager attention", encoder.encode)
    model.config._attn_implementation = previous
    record("bf16 autocast", lambda x: run_variant(model, x, autocast=True))

    def padded(x: np.ndarray) -> np.ndarray:
        audio = np.zeros(30 * SR, dtype=np.float32)
        audio[: x.shape[0]] = x
        with torch.inference_mode():
            out = whisper_hidden_states(model, log_mel(torch.from_numpy(audio))[None], (3, 6))[0]
        return out[: reference[x.shape[0] / SR].shape[0]].numpy()

    record("padded to 30 s (HF/openai style)", padded, "differs from unpadded by design; the cost avoided")

    quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    record("dynamic int8 Linear", lambda x: run_variant(quantized, x))

    for seconds, samples in clips.items():
        batch = [samples] * 4
        times = time_calls(lambda: encoder.encode_batch(batch), warmup=1, runs=max(3, runs // 2))
        results.append(
            {
                "variant": "batch of 4 equal clips",
                "clip_s": seconds,
                "median_s_per_s": statistics.median(times) / (4 * seconds),
                "cpu_s_per_s": statistics.median(CPU_TIMES) / (4 * seconds),
                "note": "per second of audio",
            }
        )
    with torch.inference_mode():
        mel = log_mel(torch.from_numpy(clips[10.0]))
        times = time_calls(lambda: log_mel(torch.from_numpy(clips[10.0])), warmup=1, runs=runs)
    results.append(
        {
            "variant": "log-mel only",
            "clip_s": 10.0,
            "median_s_per_s": statistics.median(times) / 10.0,
            "cpu_s_per_s": statistics.median(CPU_TIMES) / 10.0,
            "note": str(tuple(mel.shape)),
        }
    )
    return {"threads": torch.get_num_threads(), "results": results}


# ------------------------------------------------------------------------------ parent


def machine() -> dict:
    cpu, sha = cpu_model(), commit()
    import torch

    return {
        "commit": sha,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def wait_until_quiet(max_wait_s: float, threshold_cores: float = 0.3) -> float:
    """Wait (up to ``max_wait_s``) until other processes use less than ``threshold_cores``.

    Returns the CPU use of others (in cores) seen last, measured over 2 s.
    """
    deadline = time.monotonic() + max_wait_s
    while True:
        before, start = cpu_busy_seconds(), time.monotonic()
        time.sleep(2.0)
        others = (cpu_busy_seconds() - before) / (time.monotonic() - start)
        if others < threshold_cores or time.monotonic() >= deadline:
            return others
        time.sleep(3.0)


def run_child(args: list[str], wait_quiet_s: float) -> dict:
    idle_others = wait_until_quiet(wait_quiet_s) if wait_quiet_s > 0 else float("nan")
    busy0 = cpu_busy_seconds()
    own0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT)
    wall = time.monotonic() - start
    own1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child {args} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    own = (own1.ru_utime - own0.ru_utime) + (own1.ru_stime - own0.ru_stime)
    result["others_cores_before"] = idle_others
    result["others_cores_during"] = max(0.0, (cpu_busy_seconds() - busy0 - own) / wall) if busy0 else float("nan")
    return result


def write_results(meta: dict, encoders: list[dict], tried: dict | None, load: tuple[float, float]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "encoders.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["encoder", "threads", "clip_s", "median_s_per_s", "min_s_per_s", "cpu_s_per_s", "runs", "target_s_per_s",
             "load_s", "peak_rss_mb", "others_cores", "commit", "date", "cpu", "cores", "torch"]
        )
        for enc in encoders:
            for row in enc["rows"]:
                writer.writerow(
                    [enc["encoder"], enc["threads"], row["clip_s"], f"{row['median_s_per_s']:.5f}",
                     f"{row['min_s_per_s']:.5f}", f"{row['cpu_s_per_s']:.5f}", row["runs"],
                     TARGET.get(enc["encoder"], ""),
                     f"{enc['load_s']:.2f}", f"{enc['peak_rss_mb']:.0f}", f"{enc['others_cores_during']:.2f}",
                     meta["commit"], meta["date"],
                     meta["cpu"], meta["cores"], meta["torch"]]
                )
    cores = meta["cores"] or 1
    others = [enc["others_cores_during"] for enc in encoders] + ([tried["others_cores_during"]] if tried else [])
    contended = max(load) > 0.5 * cores or any(o > 0.3 for o in others)
    lines = [
        "# Encoder speed",
        "",
        "Seconds of compute per second of audio (lower is better), median over the timed runs after two",
        "warm-up calls; weights already loaded. Written by `benchmarks/encoders.py`.",
        "",
        f"- commit: `{meta['commit']}`, date: {meta['date']}",
        f"- CPU: {meta['cpu']}, {meta['cores']} cores; torch {meta['torch']} (default threads "
        f"{meta['torch_threads']}), Python {meta['python']}",
        f"- clips: {encoders[0]['source'] if encoders else '-'}",
        f"- target: whisper-base <= {TARGET['whisper-base']} s/s on 3 s and 10 s clips",
        f"- load average (1 min) before / after: {load[0]:.2f} / {load[1]:.2f}"
        + (
            " -- **other work shared the machine during some of these runs**: rows whose `others` is"
            " above ~0.3 are contended (with both cores busy, 2 torch threads wait on each other at"
            " every op, and 1 thread is the faster setting)."
            if contended
            else ""
        ),
        "",
        "`others` is the CPU used by other processes while that encoder was timed, in cores (of",
        f"{meta['cores']}): above ~0.3 the numbers are contended.",
        "",
        "`CPU s/s` is the process's CPU time per second of audio; with 1 thread it approximates the",
        "wall time on an idle machine (with 2 threads it includes the threads' waiting).",
        "",
        "| encoder | threads | clip | median s/s | min s/s | CPU s/s | target | meets | load s | peak RSS MB | others |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for enc in encoders:
        target = TARGET.get(enc["encoder"])
        for row in enc["rows"]:
            meets = "" if target is None else ("yes" if row["median_s_per_s"] <= target else "no")
            lines.append(
                f"| {enc['encoder']} | {enc['threads']} | {row['clip_s']:.0f} s | {row['median_s_per_s']:.4f} | "
                f"{row['min_s_per_s']:.4f} | {row['cpu_s_per_s']:.4f} | {target if target else '-'} | {meets or '-'} | "
                f"{enc['load_s']:.1f} | {enc['peak_rss_mb']:.0f} | {enc['others_cores_during']:.2f} |"
            )
    if tried:
        lines += [
            "",
            f"## whisper-base: what was tried ({tried['threads']} threads; others used "
            f"{tried['others_cores_during']:.2f} cores meanwhile)",
            "",
            "Errors are against the default output (layers 3 + 6): max |difference|, and the mean and",
            "lowest per-frame cosine.",
            "",
            "| variant | clip | median s/s | CPU s/s | max abs err | mean frame cos | min frame cos | note |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in tried["results"]:
            if "error" in r:
                lines.append(f"| {r['variant']} | {r['clip_s']:.0f} s | failed | | | | | {r['error']} |")
                continue
            err = f"{r['max_abs_err']:.3g}" if "max_abs_err" in r else ""
            mean_cos = f"{r['mean_frame_cos']:.4f}" if "mean_frame_cos" in r else ""
            min_cos = f"{r['min_frame_cos']:.4f}" if "min_frame_cos" in r else ""
            lines.append(
                f"| {r['variant']} | {r['clip_s']:.0f} s | {r['median_s_per_s']:.4f} | {r['cpu_s_per_s']:.4f} | "
                f"{err} | {mean_cos} | {min_cos} | {r.get('note', '')} |"
            )
    (RESULTS / "encoders.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--experiments", action="store_true", help="also time the whisper-base variants tried")
    parser.add_argument(
        "--wait-quiet", type=float, default=60.0,
        help="seconds to wait, before each measurement, for other processes to leave the CPU (0: don't)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "experiments":
        print(json.dumps(experiments(args.runs)))
        return
    if args.child:
        print(json.dumps(child(args.child, args.threads, args.runs)))
        return

    from sere_core.encoders import list_encoders

    load_before = os.getloadavg()[0]
    meta = machine()
    available = {s.name for s in list_encoders() if s.available}
    results = []
    for name in ("whisper-base", "prosody"):
        if name not in available:
            print(f"skipping {name}: not available here")
            continue
        for threads in ([None, 1] if name == "whisper-base" and (os.cpu_count() or 1) > 1 else [None]):
            extra = ["--threads", str(threads)] if threads else []
            result = run_child(["--child", name, "--runs", str(args.runs), *extra], args.wait_quiet)
            results.append(result)
            for row in result["rows"]:
                print(f"{name:14s} threads={result['threads']} {row['clip_s']:4.0f} s  {row['median_s_per_s']:.4f} s/s")
    tried = (
        run_child(["--child", "experiments", "--runs", str(args.runs)], args.wait_quiet) if args.experiments else None
    )
    write_results(meta, results, tried, (load_before, os.getloadavg()[0]))
    print(f"wrote {RESULTS / 'encoders.md'} and {RESULTS / 'encoders.csv'}")


if __name__ == "__main__":
    main()
