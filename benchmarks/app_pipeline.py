"""The app's pipeline end to end: 500 target clips from upload to a plotted resonance field, and
how fast the page answers while a training run is going.

    .venv/bin/python benchmarks/app_pipeline.py                  # 500 clips (the target)
    .venv/bin/python benchmarks/app_pipeline.py --quick          # 40 clips, a smoke run
    .venv/bin/python benchmarks/app_pipeline.py --corpora /path/to/corpora --clips 200

Targets (from the issue; benchmark numbers, not timed tests):

1. upload of 500 target clips -> plotted predictions in under 2 minutes on 2 CPU cores, with the
   features *not* cached (a fresh temporary ``SERE_CACHE_DIR`` and ``SERE_DATA_DIR``) and the
   default encoder (``whisper-base``);
2. the page answers within 1 s while training runs.

Part 1 drives the app's own service functions in this process, in the order a user does: create a
project, upload the demo's 32 German source clips (``import_audio``, the function behind the upload
box; the background feature warming it starts is awaited, as it would finish while the user labels),
label 5 per emotion (``label_clip``), then - the timed part - upload N English target clips (real
RAVDESS speech from ``$SERE_CORPORA``/``--corpora``, copied to a temporary upload folder; the corpus
is never copied into the repository) with ``import_audio``, train with the app's default settings
(``start_training``: the same worker thread the Train button starts, run to its end), and build what
the Resonance field tab shows (``field_data`` -> ``figures.field_figure`` -> ``gr.Plot``'s JSON, plus
the predictions table). Stage times come from the run's own phase lines (the worker reports
"Computing speech features", "Training SERE", ...) and from wrappers around the projection, the
decoder and the encoder (wrapping adds microseconds). UMAP's numba warm-up runs first, as
``build_app`` starts it when the app starts.

Part 2 starts the real app (``app.py``'s ``build_app`` + ``launch`` with the same queue settings as
``main``) in a subprocess on 127.0.0.1 and a free port, on the same data folder, then times GETs of
``/``, ``/config`` and ``/gradio_api/info``: first with the app idle, then while a training run
(started through the services inside the server process, as the Train button does) is running.

Writes ``benchmarks/results/app_pipeline.md`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import queue
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sere_core.benchmark.report import commit, cpu_busy_seconds, cpu_model, working_tree_dirty  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TARGET_TOTAL_S = 120.0
TARGET_LATENCY_S = 1.0
EMOTIONS = ("neutral", "happy", "sad", "angry")
SHOTS = 5
ENDPOINTS = ("/", "/config", "/gradio_api/info")
#: The Train tab's 1 s timer tick (``poll``: progress, loss curve), called through Gradio's queue.
POLL = "poll (Train tab timer tick)"
MARK = "@@bench "


# ------------------------------------------------------------------------------ machine


def corpora_dir(option: str | None) -> Path:
    return Path(option or os.environ.get("SERE_CORPORA") or ROOT.parent / "shared" / "corpora")


def own_cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def other_benchmarks() -> list[str]:
    """Command lines of other ``sere_core.benchmark`` processes (they would contend)."""
    try:
        out = subprocess.run(["pgrep", "-af", "sere_core.benchmark"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line for line in out.stdout.splitlines() if line.strip() and str(os.getpid()) != line.split()[0]]


def machine() -> dict:
    cpu, sha, dirty = cpu_model(), commit(), working_tree_dirty()
    import gradio
    import torch

    return {
        "commit": sha,
        "dirty": dirty,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gradio": gradio.__version__,
        "python": platform.python_version(),
        "nice": os.nice(0),
    }


# ------------------------------------------------------------------------------ clips


def pick_target_clips(corpora: Path, n: int) -> list[tuple[Path, str, str]]:
    """``n`` RAVDESS clips of the four app emotions, spread evenly over the sorted manifest:
    ``(path, emotion, speaker)``."""
    manifest = corpora / "ravdess" / "manifest.csv"
    if not manifest.is_file():
        raise SystemExit(f"no RAVDESS manifest at {manifest}; pass --corpora or set $SERE_CORPORA")
    with manifest.open(newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["emotion"] in EMOTIONS]
    rows.sort(key=lambda r: r["path"])
    if n > len(rows):
        raise SystemExit(f"only {len(rows)} RAVDESS clips of {', '.join(EMOTIONS)}; ask for fewer")
    picked = [rows[(i * len(rows)) // n] for i in range(n)]
    return [(corpora / "ravdess" / r["path"], r["emotion"], r["speaker"]) for r in picked]


# ------------------------------------------------------------------------------ part 1: pipeline


class Timer:
    """Accumulated seconds and calls of a wrapped function, per stage."""

    def __init__(self) -> None:
        self.stage = "setup"
        self.seconds: dict[tuple[str, str], float] = {}
        self.calls: dict[tuple[str, str], int] = {}

    def wrap(self, name: str, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                key = (self.stage, name)
                self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - start
                self.calls[key] = self.calls.get(key, 0) + 1

        return wrapper

    def get(self, stage: str, name: str) -> tuple[float, int]:
        return self.seconds.get((stage, name), 0.0), self.calls.get((stage, name), 0)


class PhaseLog(dict):
    """Stands in for ``JobManager._phase``: records when each phase line first appears."""

    def __init__(self) -> None:
        super().__init__()
        self.marks: list[tuple[float, str]] = []

    def __setitem__(self, key, value) -> None:
        head = str(value).split(":")[0]
        if not self.marks or self.marks[-1][1] != head:
            self.marks.append((time.perf_counter(), head))
        super().__setitem__(key, value)


def pipeline(args: argparse.Namespace, work: Path) -> dict:
    """Part 1, in this process. Returns the stage timings and what the run produced."""
    os.environ["SERE_DATA_DIR"] = str(work / "data")
    os.environ["SERE_CACHE_DIR"] = str(work / "cache")

    import gradio as gr

    import sere_core.audio
    import sere_core.viz
    from sere_core.app import AppContext, AppSettings
    from sere_core.app import figures as fg
    from sere_core import storage as st
    from sere_core.app import imports, labeling, projects, review, training
    from sere_core.app.testing import local_caller
    from sere_core.viz import start_umap_warm_up

    me = local_caller("benchmark")

    timer = Timer()
    # wrappers around the functions the pipeline looks up at call time (module attributes)
    sere_core.audio.load_audio = timer.wrap("decode", sere_core.audio.load_audio)
    sere_core.viz.project_snapshots = timer.wrap("projection", sere_core.viz.project_snapshots)

    out: dict = {"setup": {}, "stages": [], "notes": []}
    settings = AppSettings.from_env()
    out["encoder"] = settings.encoder
    out["train_config"] = None
    t0 = time.perf_counter()
    start_umap_warm_up().join()  # what build_app starts when the app starts
    out["setup"]["umap_warm_up_s"] = time.perf_counter() - t0

    ctx = AppContext.open(settings)
    ctx.encoders.encode = timer.wrap("encode", ctx.encoders.encode)
    ctx.segments.put = timer.wrap("listening copy (FLAC write)", ctx.segments.put)
    ctx.cache.put = timer.wrap("cache write", ctx.cache.put)
    try:
        # --- setup: project, source clips (features warmed in the background as in the app), labels
        t0 = time.perf_counter()
        summary = projects.create_project(ctx, me, "Benchmark: German -> English", list(EMOTIONS), source_language="de")
        pid = summary.id
        demo = ROOT / "data" / "demo"
        with (demo / "source.csv").open(newline="", encoding="utf-8") as handle:
            source_rows = list(csv.DictReader(handle))
        report = imports.import_audio(ctx, me, pid, [demo / r["path"] for r in source_rows], "source", language="de")
        out["setup"]["source_import_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        ctx.jobs.wait(timeout=600)
        out["setup"]["source_features_s"] = time.perf_counter() - t1
        warm = ctx.jobs.embed_status(pid)
        if warm is not None and warm.error:
            raise SystemExit(f"source feature warming failed: {warm.error}")
        by_name = {Path(r["path"]).name: r["emotion"] for r in source_rows}
        names = {cid: name for cid, name in _clip_names(ctx, pid).items()}
        counts = dict.fromkeys(EMOTIONS, 0)
        for cid in report.clip_ids:
            emotion = by_name.get(names[cid])
            if emotion in counts and counts[emotion] < SHOTS:
                labeling.label_clip(ctx, me, pid, cid, emotion)
                counts[emotion] += 1
        out["setup"]["source_clips"] = report.added
        out["setup"]["labeled"] = sum(counts.values())
        out["setup"]["total_s"] = time.perf_counter() - t0

        # --- the "upload": the browser sends the files, Gradio stores them in a temporary folder
        picked = pick_target_clips(corpora_dir(args.corpora), args.clips)
        uploads = work / "uploads"
        uploads.mkdir()
        paths = []
        for src, _, _ in picked:
            dst = uploads / src.name
            shutil.copyfile(src, dst)
            paths.append(dst)
        truth_by_name = {src.name: emotion for src, emotion, _ in picked}
        audio_s = sum(_duration(p) for p in paths)
        out["target_audio_s"] = audio_s

        busy0, own0, wall0 = cpu_busy_seconds(), own_cpu_seconds(), time.monotonic()
        load0 = os.getloadavg()[0]
        stages: list[tuple[str, float, str]] = []
        start = time.perf_counter()

        # 1. upload -> clips (decode, resample, normalize, trim, VAD; blob copy; listening copy; rows)
        timer.stage = "import"
        t = time.perf_counter()
        target_report = imports.import_audio(ctx, me, pid, paths, "target", language="en", warm=False)
        stages.append(("import + decode", time.perf_counter() - t,
                       f"{target_report.added} clips added, {len(target_report.failures)} rejected"))

        # 2. Train: the worker thread the Train button starts (embed -> fit -> predict -> project -> save)
        timer.stage = "train"
        phases = PhaseLog()
        ctx.jobs._phase = phases
        t = time.perf_counter()
        run_id = training.start_training(ctx, me, pid)
        queued = time.perf_counter() - t
        ctx.jobs.wait(timeout=1800)
        with ctx.session() as s:
            out["train_config"] = st.get_run(s, run_id).config["sere"]  # what the run used
        train_end = time.perf_counter()
        status = training.training_status(ctx, me, pid)
        if status is None or status.status != "succeeded":
            raise SystemExit(f"training did not succeed: {status}")
        marks = phases.marks + [(train_end, "(worker ended)")]
        at = {name: tm for tm, name in reversed(marks)}  # first time each phase was seen

        def span(a: str, b: str) -> float:
            return at[b] - at[a]

        proj_s, _ = timer.get("train", "projection")
        enc_s, enc_n = timer.get("train", "encode")
        dec_s, dec_n = timer.get("train", "decode")
        stages.append(("start run (readiness, queue)", at["Reading the clips"] - t, f"start_training returned in {queued:.2f} s"))
        stages.append(("read clips from the database", span("Reading the clips", "Computing speech features"), ""))
        stages.append(("embedding (features not cached)", span("Computing speech features", "Training SERE"),
                       f"encoder {enc_s:.1f} s over {enc_n} clips, re-decoding the uploads {dec_s:.1f} s "
                       f"({dec_n} files), cache writes {timer.get('train', 'cache write')[0]:.1f} s"))
        stages.append(("training (fit)", span("Training SERE", "Predicting every clip"),
                       f"{out['train_config'].get('ensemble', 1)} x {out['train_config']['steps']} steps"))
        stages.append(("prediction", span("Predicting every clip", "Drawing the resonance field"), ""))
        stages.append(("projection (UMAP of the snapshots)", proj_s, ""))
        stages.append(("save model, predictions, snapshots",
                       span("Drawing the resonance field", "Done") - proj_s, ""))
        stages.append(("worker exit", train_end - at["Done"], ""))

        # 3. the Resonance field tab: field data -> plotly figure -> gr.Plot JSON, and the table
        timer.stage = "figure"
        t = time.perf_counter()
        data = review.field_data(ctx, me, pid)
        t_data = time.perf_counter() - t
        t = time.perf_counter()
        fig = fg.field_figure(data)
        t_fig = time.perf_counter() - t
        t = time.perf_counter()
        plot = gr.Plot().postprocess(fig)
        t_json = time.perf_counter() - t
        t = time.perf_counter()
        table = review.predictions_table(ctx, me, pid)
        t_table = time.perf_counter() - t
        total = time.perf_counter() - start
        stages.append(("field data from the database", t_data,
                       f"{len(data.points)} points, {len(data.snapshot_frames)} replay rows"))
        stages.append(("plotly figure (field_figure)", t_fig, ""))
        stages.append(("figure JSON for the page (gr.Plot)", t_json, f"{len(plot.plot) / 1e6:.1f} MB"))
        stages.append(("predictions table", t_table, f"{len(table)} rows"))
        wall = time.monotonic() - wall0
        others = max(0.0, (cpu_busy_seconds() - busy0 - (own_cpu_seconds() - own0)) / wall)

        # sanity: do the predictions mean anything? (RAVDESS labels; not a target)
        names = _clip_names(ctx, pid)
        preds = {int(r.clip): r.predicted for r in table.itertuples()}
        pairs = [(truth_by_name[names[c]], p) for c, p in preds.items() if names.get(c) in truth_by_name]
        from sere_core.app.pipeline import unweighted_recall

        accuracy = sum(a == b for a, b in pairs) / len(pairs) if pairs else float("nan")
        uar = unweighted_recall([a for a, _ in pairs], [b for _, b in pairs]) if pairs else None
        out.update(
            project_id=pid, run_id=run_id, stages=stages, total_s=total, others_cores=others,
            load_during=(load0, os.getloadavg()[0]), n_target=target_report.added,
            failures=[f.__dict__ for f in target_report.failures][:5],
            import_detail={k: timer.get("import", k) for k in ("decode", "listening copy (FLAC write)")},
            phases=[(round(tm - start, 2), name) for tm, name in marks],
            fit_time_s=status.metrics.get("fit_time_s"), projection=status.metrics.get("projection"),
            accuracy=accuracy, uar=uar, n_checked=len(pairs),
            peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        )
    finally:
        ctx.close()
    return out


def _clip_names(ctx, project_id: int) -> dict[int, str]:
    from sere_core.app.pipeline import clip_records

    with ctx.session() as s:
        return {r.clip_id: r.name for r in clip_records(s, project_id)}


def _duration(path: Path) -> float:
    import soundfile as sf

    info = sf.info(str(path))
    return info.frames / info.samplerate


# ------------------------------------------------------------------------------ part 2: the server


def serve(project_id: int) -> None:
    """Child process: the real app on a free port; trains on ``train`` from stdin, stops on ``quit``."""
    import importlib.util
    import socket

    def say(**kw) -> None:
        print(MARK + json.dumps(kw), flush=True)

    spec = importlib.util.spec_from_file_location("sere_app_benchmarked", ROOT / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    from sere_core.app import AppContext, training
    from sere_core.app.testing import local_caller
    from sere_core.audio import AudioConfig
    from sere_core.viz import start_umap_warm_up

    me = local_caller("benchmark")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    ctx = AppContext.open()
    demo = app.build_app(ctx)
    demo.queue(default_concurrency_limit=4).launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
        max_file_size=f"{int(AudioConfig().max_file_mb)}mb", **app.launch_options(ctx))
    started = time.perf_counter() - t0
    start_umap_warm_up().join()  # the warm-up build_app started; wait so it does not blur the idle numbers
    say(event="ready", port=port, start_s=started, warm_s=time.perf_counter() - t0)
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "train":
                run_id = training.start_training(ctx, me, project_id)
                say(event="run", run_id=run_id, t=time.time())
                last = None
                while ctx.jobs.is_running_here(run_id):
                    phase = (ctx.jobs.phase(run_id) or "").split(":")[0]
                    if phase != last:
                        say(event="phase", phase=phase, t=time.time())
                        last = phase
                    time.sleep(0.05)
                status = training.training_status(ctx, me, project_id)
                say(event="done", t=time.time(), status=status.status if status else None,
                    error=status.error if status else None)
            elif command == "quit":
                break
    finally:
        demo.close()
        ctx.close()


class Server:
    def __init__(self, work: Path, project_id: int) -> None:
        env = dict(os.environ, SERE_DATA_DIR=str(work / "data"), SERE_CACHE_DIR=str(work / "cache"),
                   GRADIO_ANALYTICS_ENABLED="False")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child-serve", str(project_id)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env)
        self.events: queue.Queue = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith(MARK):
                self.events.put(json.loads(line[len(MARK):]))
            else:
                self.log.append(line.rstrip())
        self.events.put({"event": "exit"})

    def expect(self, event: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"server: no {event!r} within {timeout:.0f} s; log tail:\n" + "\n".join(self.log[-30:]))
            try:
                ev = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if ev["event"] == "exit":
                raise RuntimeError("server exited; log tail:\n" + "\n".join(self.log[-30:]))
            if ev["event"] == event:
                return ev
            self.on_event(ev)

    def on_event(self, ev: dict) -> None:  # phase lines while we wait for something else
        pass

    def send(self, command: str) -> None:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()


def get(url: str, timeout: float = 10.0) -> tuple[float, int, int]:
    """Seconds for one GET (connect to last byte), status and body bytes; 10 s cap."""
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read()
            return time.perf_counter() - start, resp.status, len(body)
    except Exception:  # noqa: BLE001 - a failed or timed-out request counts as its time, status 0
        return time.perf_counter() - start, 0, 0


def latency(work: Path, project_id: int, rounds: int, gap_s: float) -> dict:
    """Part 2: idle rounds, then rounds while a training run is active in the server."""
    server = Server(work, project_id)
    result: dict = {"idle": [], "training": [], "phases": []}
    try:
        ready = server.expect("ready", timeout=240)
        base = f"http://127.0.0.1:{ready['port']}"
        result["server_start_s"], result["server_warm_s"] = ready["start_s"], ready["warm_s"]
        for path in ENDPOINTS:  # first hits build caches (page template, API info): not counted
            get(base + path)
        from gradio_client import Client

        client = Client(base, verbose=False)

        def tick() -> tuple[float, int, int]:
            start = time.perf_counter()
            try:
                value = client.predict(project_id, "least confident first", api_name="/poll")
                return time.perf_counter() - start, 200, len(str(value))
            except Exception:  # noqa: BLE001 - counted as failed
                return time.perf_counter() - start, 0, 0

        def one_round(label: str) -> list[tuple]:
            rows = [(path, *get(base + path)) for path in ENDPOINTS]
            rows.append((POLL, *tick()))
            return [(*row, label if label == "idle" else phase["now"]) for row in rows]

        phase = {"now": "queued"}
        tick()  # the first call through the queue sets things up: not counted
        for _ in range(rounds):
            result["idle"] += one_round("idle")
            time.sleep(gap_s)

        done = threading.Event()

        def on_event(ev: dict) -> None:
            if ev["event"] == "phase":
                phase["now"] = ev["phase"]
                result["phases"].append((ev["t"], ev["phase"]))
            elif ev["event"] == "done":
                result["done"] = ev
                done.set()

        server.on_event = on_event
        server.send("train")
        run = server.expect("run", timeout=60)
        result["run_id"], t_run = run["run_id"], run["t"]

        def pump() -> None:
            while not done.is_set():
                try:
                    ev = server.events.get(timeout=0.2)
                except queue.Empty:
                    continue
                if ev["event"] == "exit":
                    done.set()
                else:
                    on_event(ev)

        pumper = threading.Thread(target=pump, daemon=True)
        pumper.start()
        # wait until the run is really training (not reading clips), at most 60 s
        deadline = time.monotonic() + 60
        while phase["now"] not in ("Training SERE",) and not done.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        n = 0
        deadline = time.monotonic() + 300
        while n < rounds and not done.is_set() and time.monotonic() < deadline:
            result["training"] += one_round("training")
            n += 1
            time.sleep(gap_s)
        result["rounds_while_training"] = n
        done.wait(timeout=600)
        pumper.join(timeout=5)
        end = result.get("done", {}).get("t")
        result["run_s"] = (end - t_run) if end else None
        result["run_status"] = result.get("done", {}).get("status")
    finally:
        server.stop()
    return result


def summarize(samples: list[tuple]) -> dict[str, dict]:
    out = {}
    for path in (*ENDPOINTS, POLL):
        times = [s[1] for s in samples if s[0] == path]
        if not times:
            continue
        out[path] = {
            "n": len(times),
            "median_ms": 1000 * statistics.median(times),
            "p90_ms": 1000 * sorted(times)[max(0, int(round(0.9 * len(times))) - 1)],
            "max_ms": 1000 * max(times),
            "failed": sum(1 for s in samples if s[0] == path and s[2] != 200),
            "bytes": max((s[3] for s in samples if s[0] == path), default=0),
            "phases": sorted({s[4] for s in samples if s[0] == path}),
        }
    return out


# ------------------------------------------------------------------------------ results


def write_results(meta: dict, args: argparse.Namespace, part1: dict, part2: dict | None,
                  load: tuple[float, float], others_running: tuple[list[str], list[str]], command: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = [meta["commit"], meta["date"], meta["cpu"], meta["cores"], meta["torch"]]
    idle = summarize(part2["idle"]) if part2 else {}
    busy = summarize(part2["training"]) if part2 else {}
    with open(RESULTS / "app_pipeline.csv", "w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["part", "item", "n", "seconds", "median_ms", "max_ms", "target", "meets", "clips", "detail",
                    "others_cores", "commit", "date", "cpu", "cores", "torch"])
        for name, seconds, detail in part1["stages"]:
            w.writerow(["pipeline", name, "", f"{seconds:.3f}", "", "", "", "", part1["n_target"], detail,
                        f"{part1['others_cores']:.2f}", *stamp])
        meets = "yes" if part1["total_s"] <= TARGET_TOTAL_S * args.clips / 500 else "no"
        w.writerow(["pipeline", "total (upload -> plotted predictions)", "", f"{part1['total_s']:.3f}", "", "",
                    f"{TARGET_TOTAL_S * args.clips / 500:.0f}", meets, part1["n_target"], "",
                    f"{part1['others_cores']:.2f}", *stamp])
        for label, table in (("idle", idle), ("while training", busy)):
            for path, r in table.items():
                w.writerow([f"latency {label}", path if path == POLL else f"GET {path}", r["n"], "", f"{r['median_ms']:.1f}", f"{r['max_ms']:.1f}",
                            f"{TARGET_LATENCY_S * 1000:.0f} ms" if label != "idle" else "",
                            ("yes" if r["max_ms"] <= TARGET_LATENCY_S * 1000 else "no") if label != "idle" else "",
                            "", f"failed {r['failed']}; phases {'/'.join(r['phases'])}", "", *stamp])

    cores = meta["cores"] or 1
    # the load average after includes this benchmark's own work: only the one before says "busy"
    contended = (load[0] > 0.5 * cores or part1["others_cores"] > 0.3 or any(others_running))
    scale = args.clips / 500
    target_total = TARGET_TOTAL_S * scale
    total = part1["total_s"]
    lines = [
        "# App pipeline: upload -> plotted predictions, and page latency during training",
        "",
        "Written by `benchmarks/app_pipeline.py` (see its docstring for exactly what is driven).",
        "",
        f"- command: `{command}`" + (f" (niceness {meta['nice']})" if meta["nice"] else ""),
        f"- commit: `{meta['commit']}`" + (" (working tree had uncommitted changes to tracked files)" if meta["dirty"] else "")
        + f", date: {meta['date']}",
        f"- CPU: {meta['cpu']}, {meta['cores']} cores; torch {meta['torch']} (default threads {meta['torch_threads']}), "
        f"gradio {meta['gradio']}, Python {meta['python']}",
        f"- encoder: `{part1['encoder']}`; features not cached (fresh temporary `SERE_CACHE_DIR` and `SERE_DATA_DIR`)",
        f"- target clips: {part1['n_target']} RAVDESS clips (English; neutral/happy/sad/angry), "
        f"{part1['target_audio_s']:.0f} s of audio in all; source: the demo's {part1['setup']['source_clips']} German "
        f"EmoDB clips, {part1['setup']['labeled']} labeled (5 per emotion)",
        f"- training settings: the app's defaults (`training_config`: {part1['train_config'].get('ensemble', 1)} "
        f"member(s) of {part1['train_config']['steps']} steps, "
        f"snapshot every {part1['train_config']['snapshot_every']}, num_threads {part1['train_config'].get('num_threads')}, "
        f"per-speaker normalization {part1['train_config'].get('per_speaker_norm')})",
        f"- load average (1 min) before / after: {load[0]:.2f} / {load[1]:.2f}; other processes used "
        f"{part1['others_cores']:.2f} cores during the timed pipeline",
    ]
    if contended:
        lines.append("- **the machine was contended while this ran**" + (
            f": another `sere_core.benchmark` was running (at start: {len(others_running[0])} processes, "
            f"at end: {len(others_running[1])})" if any(others_running) else "")
            + "; the timings are slower than on an idle machine.")
    else:
        lines.append("- no other benchmark was running; the machine was quiet.")
    if args.clips != 500:
        lines.append(f"- **{args.clips} clips, not 500**: the target below is scaled to {target_total:.0f} s "
                     "(a smoke run, not the measurement).")
    lines += [
        "",
        "## 1. Upload of the target clips -> plotted predictions",
        "",
        f"Total: **{total:.1f} s** against a target of {target_total:.0f} s: "
        f"**{'met' if total <= target_total else 'not met'}**.",
        "",
        "| stage | seconds | share | detail |",
        "| --- | ---: | ---: | --- |",
    ]
    for name, seconds, detail in part1["stages"]:
        lines.append(f"| {name} | {seconds:.2f} | {100 * seconds / total:.0f}% | {detail} |")
    lines.append(f"| **total** | **{total:.2f}** | 100% | target {target_total:.0f} s |")
    dec_s, dec_n = part1["import_detail"]["decode"]
    flac_s, _ = part1["import_detail"]["listening copy (FLAC write)"]
    lines += [
        "",
        f"Inside the import: decoding {dec_s:.1f} s ({dec_n} files), listening copies (FLAC) {flac_s:.1f} s, "
        "the rest is copying the upload into the blob store and the database rows.",
        "",
        "Before the clock started (not counted, as in the app it happens while the user works): UMAP "
        f"warm-up {part1['setup']['umap_warm_up_s']:.1f} s (started by `build_app`), source import "
        f"{part1['setup']['source_import_s']:.1f} s, source features (background warming, includes loading "
        f"whisper-base) {part1['setup']['source_features_s']:.1f} s.",
        "",
        "Phase lines of the worker (seconds after the upload started): "
        + ", ".join(f"{t:.1f} {name}" for t, name in part1["phases"]),
        "",
        f"Sanity check (not a target): the predictions agree with RAVDESS's labels on "
        f"{100 * part1['accuracy']:.0f}% of {part1['n_checked']} clips (UAR "
        f"{100 * (part1['uar'] or 0):.0f}%, chance 25%). Peak RSS of the process {part1['peak_rss_mb']:.0f} MB.",
    ]
    if part2:
        lines += [
            "",
            "## 2. Page latency while training runs",
            "",
            f"The real app (`build_app` + `launch`, queue concurrency 4) in a subprocess on 127.0.0.1; it started "
            f"in {part2['server_start_s']:.1f} s. A second training run of the same project (features now "
            f"cached, so the run is fit + predict + projection + save: {part2['run_s'] or float('nan'):.1f} s, "
            f"{part2['run_status']}) was started through the services inside the server process, as the "
            f"Train button does. Each round: sequential GETs (a fresh connection each, the whole body read) and one "
            f"call of the Train tab's timer handler `poll` through Gradio's queue with `gradio_client` (what "
            f"the open page does every second during training: progress, phase, loss curve), rounds "
            f"{args.gap:.2f} s apart: {args.requests} rounds idle, then up to {args.requests} rounds while the "
            f"run was in its training phase ({part2.get('rounds_while_training', 0)} done).",
            "",
            "| endpoint | when | n | median ms | p90 ms | max ms | target | meets | response bytes | phases seen |",
            "| --- | --- | ---: | ---: | ---: | ---: | --- | --- | ---: | --- |",
        ]
        for label, table in (("idle", idle), ("training", busy)):
            for path, r in table.items():
                target = f"{TARGET_LATENCY_S * 1000:.0f} ms" if label == "training" else "-"
                meets = ("yes" if r["max_ms"] <= TARGET_LATENCY_S * 1000 and not r["failed"] else "no") \
                    if label == "training" else "-"
                lines.append(f"| {path if path == POLL else 'GET ' + path} | {label} | {r['n']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | "
                             f"{r['max_ms']:.1f} | {target} | {meets} | {r['bytes']} | {', '.join(r['phases'])} |")
    (RESULTS / "app_pipeline.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=500, help="target clips to upload (default 500)")
    parser.add_argument("--corpora", default=None, help="corpora folder (default $SERE_CORPORA or ../shared/corpora)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 40 clips, 8 latency rounds")
    parser.add_argument("--requests", type=int, default=20, help="latency rounds (each GETs every endpoint)")
    parser.add_argument("--gap", type=float, default=0.25, help="seconds between latency rounds")
    parser.add_argument("--no-latency", action="store_true", help="skip part 2 (the server)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--child-serve", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_serve is not None:
        serve(args.child_serve)
        return
    if args.quick:
        args.clips = 40 if "--clips" not in sys.argv else args.clips
        args.requests = 8 if "--requests" not in sys.argv else args.requests
    command = ".venv/bin/python benchmarks/app_pipeline.py" + ("".join(f" {a}" for a in sys.argv[1:]))

    running_before = other_benchmarks()
    load_before = os.getloadavg()[0]
    meta = machine()
    work = Path(tempfile.mkdtemp(prefix="sere-app-bench-"))
    try:
        print(f"part 1: {args.clips} target clips, work folder {work}", flush=True)
        part1 = pipeline(args, work)
        for name, seconds, detail in part1["stages"]:
            print(f"  {name:40s} {seconds:8.2f} s  {detail}")
        print(f"  {'total':40s} {part1['total_s']:8.2f} s  (target {TARGET_TOTAL_S * args.clips / 500:.0f} s)",
              flush=True)
        part2 = None
        if not args.no_latency:
            print("part 2: page latency while training", flush=True)
            part2 = latency(work, part1["project_id"], args.requests, args.gap)
            for label in ("idle", "training"):
                for path, r in summarize(part2[label]).items():
                    print(f"  {label:8s} {path[:30]:30s} n={r['n']:3d} median {r['median_ms']:7.1f} ms  "
                          f"max {r['max_ms']:7.1f} ms  failed {r['failed']}")
        write_results(meta, args, part1, part2, (load_before, os.getloadavg()[0]),
                      (running_before, other_benchmarks()), command)
        print(f"wrote {RESULTS / 'app_pipeline.md'} and {RESULTS / 'app_pipeline.csv'}")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
