"""The app as a visitor meets it, measured on the real server (``python app.py``) driven over HTTP
exactly as the page drives it (``tests/app_server.py``'s ``RawSession``: Gradio's upload route,
``queue/join`` and the event stream), each server on fresh data and cache folders:

1. **start**: seconds from ``python app.py`` until the page is served (``GET /`` answers), and until
   the background warm-up (engine, demo, encoder, demo features, UMAP) is done;
2. **first visit**: as soon as the page is served, a visitor presses "Load demo", "Demo: label 5
   per emotion for me" and "Start training", and waits, polling as the page does (every 2 s),
   until the trained resonance field is shown;
3. **screens**: how long a label (the labeling pad: label, then the next clip on screen) and a
   confirmation in Review (confirm, then the next clip to review) take to answer, on that demo
   and on a 10,000-clip project;
4. **upload**: N target clips (default 500 RAVDESS clips of the four emotions, features not
   cached) uploaded through Gradio's upload route into the target upload box of a project whose
   20 source labels are set, "Start training" pressed as soon as the upload report is back, until
   the plotted predictions: the background embedding that starts with the upload is inside the
   clock;
5. **latency while training**: ``GET /`` and the Train tab's timer tick (``poll``), idle and while
   a training runs.

Parts 1-3 are three fresh starts (median and range); part 4 runs ``--upload-runs`` times.

    .venv/bin/python benchmarks/app_pipeline.py --corpora ../shared/corpora
    .venv/bin/python benchmarks/app_pipeline.py --quick      # 40 upload clips, 1 run each: a smoke run

Writes ``benchmarks/results/app_pipeline.md`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from app_server import RawSession, free_port, page_session  # noqa: E402

from sere_core.benchmark.report import commit, cpu_busy_seconds, cpu_model, working_tree_dirty  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
EMOTIONS = ("neutral", "happy", "sad", "angry")
SORT = "least confident first"
COLOR = "emotion"  # the field's colour
TARGETS = {"start": 10.0, "first visit": 20.0, "screen": 0.5, "upload": 30.0, "latency": 1.0}


def corpora_dir(option: str | None) -> Path:
    return Path(option or os.environ.get("SERE_CORPORA") or ROOT.parent / "shared" / "corpora")


def machine() -> dict:
    import gradio
    import torch

    return {"commit": commit(), "dirty": working_tree_dirty(),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu_model(),
            "cores": os.cpu_count(), "torch": torch.__version__, "gradio": gradio.__version__,
            "python": platform.python_version()}


def spread(values: list[float]) -> str:
    """``median (min-max)``."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


# ------------------------------------------------------------------------------ the server


class Server:
    """``python app.py`` on a free port with its own data and cache folders (the app's defaults
    otherwise: encoder, workers, threads)."""

    def __init__(self, work: Path, encoder: str) -> None:
        self.work, self.port = work, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = work / f"app-{self.port}.log"
        work.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SERE_", "GRADIO_"))}
        env.update(SERE_DATA_DIR=str(work / "data"), SERE_CACHE_DIR=str(work / "cache"), SERE_ENCODER=encoder,
                   GRADIO_SERVER_PORT=str(self.port), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        self.started, self.wall_start = time.perf_counter(), time.time()
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, stdout=log,
                                         stderr=subprocess.STDOUT)
        self.served_s = self._wait_served()

    def _wait_served(self, timeout: float = 180.0) -> float:
        while time.perf_counter() - self.started < timeout:
            if self.proc.poll() is not None:
                raise SystemExit(f"the app exited:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - self.started
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit("the app was not served within 3 minutes")

    def warmed_s(self, timeout: float = 300.0) -> float:
        """Seconds from the start until the warm-up said it was done (the time of its log line)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"^(\S+ \S+) INFO sere_core.app.warmup: warmed up", self.log.read_text(errors="replace"),
                              flags=re.M)
            if found:
                logged = dt.datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                return logged - self.wall_start
            time.sleep(0.2)
        raise SystemExit("the warm-up did not end within 5 minutes")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def timed(session: RawSession, name: str, data: list, event: dict | None = None) -> tuple[float, list]:
    start = time.perf_counter()
    answer = session.call(session.handler(name), data, event, timeout=600)
    if not answer["success"]:
        raise SystemExit(f"{name} failed: {answer['output']}")
    return time.perf_counter() - start, answer["output"]["data"]


def label_pad(data: list) -> dict:
    return next(x for x in data if isinstance(x, dict) and x.get("kind") == "label")


def review_pad(data: list) -> dict:
    return next(x for x in data if isinstance(x, dict) and x.get("kind") == "review")


def field_shown(data: list) -> bool:
    """Whether a poll's answer carries the trained resonance field (the field component's value
    with a finished run's figure, not the live view of a run still training)."""
    return any(isinstance(x, dict) and str(x.get("key", "")).startswith("run-") and x.get("figure") for x in data)


def wait_for_field(session: RawSession, pid: int, timeout: float = 900.0) -> list[str]:
    """Poll as the page does (every 2 s) until the trained field comes; returns the phases seen,
    each with the seconds since the call."""
    phases: list[str] = []
    start = time.perf_counter()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, data = timed(session, "poll", [None, pid, None, None, None, SORT, COLOR])
        for x in data:
            if isinstance(x, str) and "sere-progress-text" in x:
                phase = re.sub(r"<[^>]+>", "", x).split(":", 1)[-1].split("·")[0].split(":")[0].strip()
                if not phases or phases[-1].split(" (")[0] != phase:
                    phases.append(f"{phase} ({time.perf_counter() - start:.1f} s)")
        if field_shown(data):
            return phases
        time.sleep(2.0)
    raise SystemExit("no trained field within 15 minutes")


# ------------------------------------------------------------------------------ parts 1-3


def first_visit(work: Path, encoder: str, actions: int) -> dict:
    """Parts 1-3 on one fresh server."""
    server = Server(work, encoder)
    out: dict = {"served_s": server.served_s}
    try:
        t0 = time.perf_counter()
        page = page_session(server.url)
        steps = {"open the page": time.perf_counter() - t0}
        steps["Load demo"], data = timed(page, "load_demo", [None, SORT, COLOR])
        pid = data[0]
        steps["label 5 per emotion"] = timed(page, "demo_labels", [None, pid, None])[0]
        steps["Start training"] = timed(page, "press_train", [None, pid])[0]
        out["phases"] = [f"{k} {v:.1f} s" for k, v in steps.items()] + wait_for_field(page, pid)
        out["first_visit_s"] = time.perf_counter() - t0
        out["warmed_s"] = server.warmed_s()
        out["screens"] = screens(page, pid, actions)
    finally:
        server.stop()
    return out


def screens(page: RawSession, pid: int, actions: int) -> dict:
    """Seconds per label (labeling pad) and per confirmation (review pad), ``actions`` of each."""
    _, data = timed(page, "open_project", [None, pid, SORT, COLOR])
    clip = label_pad(data)["clip"]
    label = []
    for i in range(actions):
        if clip is None:
            break
        seconds, data = timed(page, "label_act", [None, pid, None],
                              {"action": "label", "clip": clip, "emotion": EMOTIONS[i % 4]})
        label.append(seconds)
        clip = label_pad(data)["clip"]
    table = timed(page, "show_page", [None, pid, SORT, 1])[1][0]  # the least confident first
    clip = table["data"][0][0] if table and table.get("data") else None
    confirm = []
    for _ in range(actions):
        if clip is None:
            break
        seconds, data = timed(page, "review_act", [None, pid, SORT, 1], {"action": "confirm", "clip": clip})
        confirm.append(seconds)
        clip = review_pad(data)["clip"]
    return {"label": label, "confirm": confirm}


def big_project(work: Path, n: int) -> int:
    """A ``n``-clip project (2 % source clips, the rest target) with real listening copies and a
    finished run that predicted every target clip; returns its id."""
    import numpy as np

    from sere_core import storage as st
    from sere_core.app import AppContext, AppSettings, projects
    from sere_core.app.testing import local_caller

    me = local_caller("benchmark")
    ctx = AppContext.open(AppSettings(data_dir=work / "data", cache_dir=work / "cache"))
    try:
        pid = projects.create_project(ctx, me, f"{n:,} clips", EMOTIONS).id
        rng = np.random.default_rng(0)
        n_source = max(50, n // 50)
        with ctx.session() as s:
            clips = []
            for i in range(n):
                audio_id = f"{i:064x}"
                ctx.segments.put(audio_id, (0.1 * rng.standard_normal(6400)).astype(np.float32), 16000)
                clips.append(st.add_clip(s, pid, audio_id=audio_id, original_name=f"clip_{i:06d}.wav", duration_s=0.4,
                                         role="source" if i < n_source else "target", speaker=f"s{i % 40}").id)
            run = st.create_run(s, pid, {"sere": {"ensemble": 1}})
            st.start_run(s, run.id, total_steps=1)
            probs = rng.dirichlet(np.ones(4), size=n)
            st.save_predictions(s, run.id, {c: {"emotion": EMOTIONS[int(p.argmax())], "confidence": float(p.max()),
                                                "probabilities": dict(zip(EMOTIONS, p.tolist())), "highlights": []}
                                            for c, p in zip(clips[n_source:], probs[n_source:])})
            st.finish_run(s, run.id)
        return pid
    finally:
        ctx.close()


def big_screens(work: Path, encoder: str, n: int, runs: int, actions: int) -> list[dict]:
    pid = big_project(work, n)
    out = []
    for _ in range(runs):
        server = Server(work, encoder)
        try:
            out.append(screens(page_session(server.url, project=pid), pid, actions))
        finally:
            server.stop()
    return out


# ------------------------------------------------------------------------------ part 4 and 5


def pick_target_clips(corpora: Path, n: int) -> list[tuple[Path, str]]:
    """``n`` RAVDESS clips of the four app emotions, spread evenly over the sorted manifest."""
    manifest = corpora / "ravdess" / "manifest.csv"
    if not manifest.is_file():
        raise SystemExit(f"no RAVDESS manifest at {manifest}; pass --corpora or set $SERE_CORPORA")
    with manifest.open(newline="", encoding="utf-8") as handle:
        rows = sorted((r for r in csv.DictReader(handle) if r["emotion"] in EMOTIONS), key=lambda r: r["path"])
    return [(corpora / "ravdess" / rows[(i * len(rows)) // n]["path"], rows[(i * len(rows)) // n]["emotion"])
            for i in range(n)]


def upload_run(work: Path, encoder: str, clips: list[tuple[Path, str]], latency_rounds: int) -> dict:
    """Part 4 (and, with ``latency_rounds``, part 5) on one fresh server."""
    from sere_core.app import AppContext, AppSettings, demo, imports, labeling, projects
    from sere_core.app.testing import local_caller

    me = local_caller("benchmark")
    ctx = AppContext.open(AppSettings(data_dir=work / "data", cache_dir=work / "cache", encoder=encoder))
    try:  # the setup a user does before: a project, the demo's German clips, 5 labels per emotion
        pid = projects.create_project(ctx, me, "Upload benchmark", EMOTIONS, source_language="de").id
        files = sorted((ROOT / "data" / "demo" / "source").glob("*.flac"))
        report = imports.import_audio(ctx, me, pid, files, "source", language="de", warm=False)
        truth = demo.demo_template(ctx).reference
        with ctx.session() as s:
            from sere_core.storage import clip_records

            audio = {r.clip_id: r.audio_id for r in clip_records(s, pid)}
        done = dict.fromkeys(EMOTIONS, 0)
        for clip in report.clip_ids:
            emotion = truth[audio[clip]]
            if done[emotion] < 5:
                labeling.label_clip(ctx, me, pid, clip, emotion)
                done[emotion] += 1
    finally:
        ctx.close()
    uploads = work / "uploads"
    uploads.mkdir()
    paths = []
    for src, _ in clips:
        paths.append(uploads / src.name)
        shutil.copyfile(src, paths[-1])
    server = Server(work, encoder)
    out: dict = {"clips": len(paths)}
    try:
        server.warmed_s()  # the demo's (and so these source clips') features are ready before anyone asks
        page = page_session(server.url, project=pid)
        busy0, t0 = cpu_busy_seconds(), time.perf_counter()
        sent = page.upload(paths)
        out["http_upload_s"] = time.perf_counter() - t0
        _, data = timed(page, "upload_target", [None, pid, sent, "en", None])
        out["import_s"] = time.perf_counter() - t0
        out["report"] = re.sub(r"\s+", " ", data[0])[:200]
        timed(page, "press_train", [None, pid])
        out["phases"] = wait_for_field(page, pid)
        out["total_s"] = time.perf_counter() - t0
        out["cores_busy"] = (cpu_busy_seconds() - busy0) / out["total_s"]
        if latency_rounds:
            out["latency"] = latency(server, page, pid, latency_rounds)
    finally:
        server.stop()
    return out


def latency(server: Server, page: RawSession, pid: int, rounds: int) -> dict:
    """Part 5: GET / and one poll per round, idle, then while a training (a retrain) runs."""
    def one_round() -> tuple[float, float]:
        start = time.perf_counter()
        with urllib.request.urlopen(server.url, timeout=30) as response:
            response.read()
        get_s = time.perf_counter() - start
        return get_s, timed(page, "poll", [None, pid, None, None, None, SORT, COLOR])[0]

    idle = [one_round() for _ in range(rounds)]
    timed(page, "press_train", [None, pid])
    training = []
    deadline = time.monotonic() + 300
    while len(training) < rounds and time.monotonic() < deadline:
        status = page.call(page.handler("poll"), [None, pid, None, None, None, SORT, COLOR])
        if "data-status='running'" not in json.dumps(status["output"]) and not training:
            time.sleep(0.2)
            continue
        training.append(one_round())
        time.sleep(0.25)
    return {"idle": idle, "training": training}


# ------------------------------------------------------------------------------ report


def write(meta: dict, args: argparse.Namespace, visits: list[dict], big: list[dict], uploads: list[dict],
          command: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, list[float], float]] = []  # (part, item, values, target)
    rows.append(("start", "page served (GET / answers)", [v["served_s"] for v in visits], TARGETS["start"]))
    rows.append(("start", "background warm-up done", [v["warmed_s"] for v in visits], float("nan")))
    rows.append(("first visit", "Load demo -> label 5 per emotion -> Train -> field shown",
                 [v["first_visit_s"] for v in visits], TARGETS["first visit"]))
    for where, runs in (("demo (72 clips)", [v["screens"] for v in visits]), (f"{args.big:,}-clip project", big)):
        for kind, what in (("label", "a label in the labeling view"), ("confirm", "a confirmation in Review")):
            medians = [statistics.median(r[kind]) for r in runs if r[kind]]
            worst = [max(r[kind]) for r in runs if r[kind]]
            rows.append(("screens", f"{what}, {where} (median of each run)", medians, TARGETS["screen"]))
            rows.append(("screens", f"{what}, {where} (slowest of each run)", worst, TARGETS["screen"]))
    n = uploads[0]["clips"] if uploads else 0
    target_upload = TARGETS["upload"] * n / 500
    rows.append(("upload", f"{n} target clips: upload -> plotted predictions", [u["total_s"] for u in uploads],
                 target_upload))
    rows.append(("upload", "of which the HTTP upload", [u["http_upload_s"] for u in uploads], float("nan")))
    rows.append(("upload", "of which upload -> import report", [u["import_s"] for u in uploads], float("nan")))
    lat = uploads[0].get("latency") if uploads else None
    if lat:
        for label in ("idle", "training"):
            for k, name in ((0, "GET /"), (1, "poll (Train tab timer tick)")):
                values = [r[k] for r in lat[label]]
                rows.append((f"latency {label}", name, values, TARGETS["latency"] if label == "training" else float("nan")))

    def meets(values: list[float], target: float) -> str:
        if not values or target != target:
            return "-"
        return "yes" if statistics.median(values) <= target else "no"

    stamp = [meta["commit"], meta["date"], meta["cpu"], meta["cores"]]
    with open(RESULTS / "app_pipeline.csv", "w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["part", "item", "runs", "median_s", "min_s", "max_s", "target_s", "meets", "commit", "date",
                    "cpu", "cores"])
        for part, item, values, target in rows:
            w.writerow([part, item, len(values), *(f"{f(values):.3f}" if values else "" for f in
                                                   (statistics.median, min, max)),
                        "" if target != target else f"{target:g}", meets(values, target), *stamp])
    lines = [
        "# The app as a visitor meets it: start, first visit, screens, upload, latency",
        "",
        "Written by `benchmarks/app_pipeline.py` (its docstring says exactly what is driven): the real "
        "server (`python app.py`), driven over HTTP as the page drives it, each server on fresh data and "
        "cache folders.",
        "",
        f"- command: `{command}`",
        f"- commit: `{meta['commit']}`" + (" (working tree had uncommitted changes to tracked files)" if meta["dirty"]
                                           else "") + f", date: {meta['date']}",
        f"- CPU: {meta['cpu']}, {meta['cores']} cores; torch {meta['torch']}, gradio {meta['gradio']}, "
        f"Python {meta['python']}; encoder `{args.encoder}`; the app's defaults otherwise",
        f"- runs: {len(visits)} fresh starts (parts 1-3), {len(big)} servers on the {args.big:,}-clip project, "
        f"{len(uploads)} upload run(s); {args.actions} labels and confirmations per run",
        "",
        "| part | what | runs | seconds: median (range) | target | met |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for part, item, values, target in rows:
        lines.append(f"| {part} | {item} | {len(values)} | {spread(values)} | "
                     f"{'-' if target != target else f'{target:g} s'} | {meets(values, target)} |")
    lines += ["", "Phases the Train tab showed during the first visits: "
              + " / ".join(" → ".join(v["phases"]) for v in visits)]
    for i, u in enumerate(uploads, 1):
        lines += ["", f"Upload run {i}: {u['report']} Phases: {' → '.join(u['phases'])}. The process and its "
                      f"children kept {u['cores_busy']:.1f} cores busy on average."]
    (RESULTS / "app_pipeline.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=500, help="target clips to upload (default 500)")
    parser.add_argument("--corpora", default=None, help="corpora folder (default $SERE_CORPORA or ../shared/corpora)")
    parser.add_argument("--encoder", default="whisper-base", help="the app's encoder (default whisper-base)")
    parser.add_argument("--starts", type=int, default=3, help="fresh starts for parts 1-3 (default 3)")
    parser.add_argument("--upload-runs", type=int, default=3, help="runs of part 4 (default 3)")
    parser.add_argument("--big", type=int, default=10_000, help="clips of the large project (default 10,000)")
    parser.add_argument("--actions", type=int, default=8, help="labels and confirmations per run (default 8)")
    parser.add_argument("--rounds", type=int, default=15, help="latency rounds (part 5)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 start, 40 clips, 1 upload run")
    args = parser.parse_args()
    if args.quick:
        args.clips, args.starts, args.upload_runs, args.big, args.rounds = 40, 1, 1, 2000, 4
    command = ".venv/bin/python benchmarks/app_pipeline.py" + "".join(f" {a}" for a in sys.argv[1:])
    meta = machine()
    clips = pick_target_clips(corpora_dir(args.corpora), args.clips)
    work = Path(tempfile.mkdtemp(prefix="sere-app-bench-"))
    try:
        visits = []
        for i in range(args.starts):
            visits.append(first_visit(work / f"visit-{i}", args.encoder, args.actions))
            v = visits[-1]
            print(f"start {i + 1}: served {v['served_s']:.1f} s, warmed {v['warmed_s']:.1f} s, first visit "
                  f"{v['first_visit_s']:.1f} s, label {statistics.median(v['screens']['label']):.3f} s, confirm "
                  f"{statistics.median(v['screens']['confirm']):.3f} s", flush=True)
        big = big_screens(work / "big", args.encoder, args.big, args.starts, args.actions)
        print("big project:", [{k: round(statistics.median(v), 3) for k, v in r.items() if v} for r in big], flush=True)
        uploads = []
        for i in range(args.upload_runs):
            uploads.append(upload_run(work / f"upload-{i}", args.encoder, clips, args.rounds if i == 0 else 0))
            print(f"upload {i + 1}: {uploads[-1]['total_s']:.1f} s ({uploads[-1]['phases']})", flush=True)
        write(meta, args, visits, big, uploads, command)
        print(f"wrote {RESULTS / 'app_pipeline.md'} and {RESULTS / 'app_pipeline.csv'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
