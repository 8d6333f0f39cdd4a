"""Scale: a 100,000-clip project in the resonance field, and the projection of the app-sized run.

    .venv/bin/python benchmarks/scale.py                   # 100,000 clips (the target)
    .venv/bin/python benchmarks/scale.py --clips 5000      # a smoke run
    .venv/bin/python benchmarks/scale.py --no-browser      # skip the Chromium part

Targets (from the issue; benchmark numbers, not timed tests): a 100,000-clip project whose map
uses WebGL markers and stays interactive, UMAP fitted on a sample and extended to the rest, a
review table that pages, and a peak memory under 4 GB.

Part 1 (app-sized projection): real SERE training snapshots of a synthetic cross-lingual task
(``sere_core.benchmark.synthetic``: 20 labeled source clips, 512 unlabeled target clips, the app's
100 steps with a snapshot every 8 = 14 snapshots x 532 clips), projected by the code before this
change (``git show 604ca1f:sere_core/viz/projection.py``, loaded from a temporary file) and after.

Part 2 (100,000 clips), in a temporary SQLite data folder through the app's own functions where
the app has one: clips inserted in bulk (the upload path would decode 100,000 audio files;
that is not what is measured here), predictions with ``storage.save_predictions``, SYNTHETIC
embeddings (four Gaussian clusters in 64-d that tighten from step 0 to the last of 14 snapshots;
no encoder, no training), the projection with ``viz.project_snapshots`` (as the training worker
runs it) and, alone, the final snapshot fitted on a 5,000-row sample and extended to all clips,
snapshots stored with ``storage.save_snapshot``, then what the Resonance field tab does:
``services.field_data`` -> ``figures.field_figure`` -> the figure JSON the field component
receives, one page of the review table (``services.predictions_page``) and pages of the clip
browser (``clip_browser.browse``: filters, search and sorting in the database). Optionally the figure is drawn by
headless Debian Chromium (software WebGL) with plotly.js: time to the first draw, a hover and a
zoom.

Writes ``benchmarks/results/scale.md`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
BEFORE_COMMIT = "604ca1f"
EMOTIONS = ("neutral", "happy", "sad", "angry")
MEMORY_TARGET_MB = 4096
CHROMIUM = os.environ.get("SERE_CHROMIUM", "/usr/bin/chromium")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def other_processes() -> list[str]:
    """Busy processes of other users of the machine (the run is contended when there are any)."""
    out = subprocess.run(["ps", "-eo", "pid,pcpu,args", "--sort=-pcpu"], capture_output=True, text=True)
    rows = []
    for line in out.stdout.splitlines()[1:]:
        pid, pcpu, args = line.split(None, 2)
        if int(pid) != os.getpid() and float(pcpu) >= 20.0 and not args.startswith("ps "):
            rows.append(f"{float(pcpu):.0f}% {args[:90]}")
    return rows[:6]


class Stages:
    """Seconds per named stage, with a detail line each."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, float, str]] = []

    def time(self, part: str, name: str, fn, detail=lambda result: ""):
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
        self.rows.append((part, name, seconds, detail(result)))
        print(f"{part:>5} {name:<48} {seconds:8.2f} s  {self.rows[-1][3]}", flush=True)
        return result


# ------------------------------------------------------------------------------ part 1


def app_sized_snapshots() -> tuple[list, list[str]]:
    import torch

    from sere_core.benchmark.synthetic import make_task, unlabel
    from sere_core.method import SERE, SEREConfig

    torch.set_num_threads(1)
    source, target = make_task(5, 128, dim=64, seed=3, signal=2.0)
    model = SERE(SEREConfig(steps=100, snapshot_every=8, num_threads=1)).fit(source, unlabel(target))
    return list(model.snapshots_), list(model.classes_)


def old_projection_module():
    """The projection module as it was before this change, loaded from a temporary file."""
    text = subprocess.run(["git", "show", f"{BEFORE_COMMIT}:sere_core/viz/projection.py"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp(prefix="sere-old-projection-")) / "old_projection.py"
    path.write_text(text, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("old_projection", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_projection"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def separation(coords: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(coords, labels))


def part1(stages: Stages) -> dict:
    from sere_core.viz import project_snapshots, warm_up_umap

    snaps, classes = stages.time("app", "SERE training (synthetic task, 100 steps)", app_sized_snapshots,
                                 lambda r: f"{len(r[0])} snapshots x {len(r[0][0].clip_ids)} clips")
    stages.time("app", "UMAP numba warm-up (once per process)", warm_up_umap)
    old = old_projection_module()
    truth = {c: c.split("-")[1] for c in snaps[-1].clip_ids}  # synthetic ids: language-emotion-index
    labels = np.array([truth[c] for c in snaps[-1].clip_ids])
    out = {"rows": sum(len(s.clip_ids) for s in snaps), "snapshots": len(snaps)}
    for name, fn in (("before", old.project_snapshots), ("after", project_snapshots)):
        frames, _, projection = stages.time(
            "app", f"projection {name} ({BEFORE_COMMIT if name == 'before' else 'this change'})",
            lambda fn=fn: fn(snaps, classes), lambda r: f"{r[2].method}, {len(r[0])} rows")
        out[name] = stages.rows[-1][2]
        out[f"{name}_separation"] = [round(separation(c, labels), 2) for c in projection.coords]
    return out


# ------------------------------------------------------------------------------ part 2


def synthetic_embeddings(n: int, steps: int, dim: int = 64, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """``steps`` snapshots ``[n, dim]`` of four clusters that tighten over training, and the emotion per clip."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(EMOTIONS), dim)).astype(np.float32) * 3
    y = rng.integers(0, len(EMOTIONS), size=n)
    noise = rng.normal(size=(n, dim)).astype(np.float32)
    snaps = []
    for k in range(steps):
        alpha = k / max(1, steps - 1)
        jitter = rng.normal(size=(n, dim)).astype(np.float32) * 0.3
        snaps.append(noise * (2.0 - 1.5 * alpha) + alpha * centres[y] + jitter)
    return snaps, y


def part2(stages: Stages, n: int, work: Path, browser: bool) -> dict:
    from sqlalchemy import insert

    from sere_core import storage as st
    from sere_core.app import AppContext, AppSettings
    from sere_core.app import figures as fg
    from sere_core.app import clip_browser, projects, review
    from sere_core.app.testing import local_caller
    from sere_core.method import Snapshot
    from sere_core.viz import fit_projection, project_snapshots, umap_is_warm, warm_up_umap

    me = local_caller("benchmark")

    if not umap_is_warm():  # the app warms UMAP up when it starts
        stages.time("100k", "UMAP numba warm-up (once per process)", warm_up_umap)
    steps = list(range(0, 100, 8)) + [100]
    out: dict = {"clips": n, "snapshots": len(steps)}
    ctx = AppContext.open(AppSettings(data_dir=work / "data", cache_dir=work / "cache"))
    try:
        project = projects.create_project(ctx, me, "scale benchmark", EMOTIONS)

        def insert_clips() -> list[int]:
            rows = [{"project_id": project.id, "audio_id": f"{i:064x}", "original_name": f"interview_{i:06d}.wav",
                     "language": "en", "speaker": f"spk{i % 400:03d}", "duration_s": 3.0, "start_s": 0.0,
                     "end_s": 3.0, "role": st.ClipRole.SOURCE if i < 20 else st.ClipRole.TARGET}
                    for i in range(n)]
            with ctx.session() as s:
                s.execute(insert(st.Clip), rows)
            with ctx.session() as s:
                return [c.id for c in st.clips_for_project(s, project.id)]

        clip_ids = stages.time("100k", "insert clips (bulk, one transaction)", insert_clips, lambda r: f"{len(r)} clips")
        embeddings, y = stages.time("100k", "synthetic embeddings (not the app's work)",
                                    lambda: synthetic_embeddings(n, len(steps)),
                                    lambda r: f"{len(r[0])} x {r[0][0].shape}")
        rng = np.random.default_rng(1)

        def predictions() -> dict:
            conf = rng.uniform(0.3, 1.0, size=n)
            return {cid: {"emotion": EMOTIONS[y[i]], "confidence": float(conf[i]),
                          "probabilities": {e: round(float(conf[i]) if k == y[i] else float(1 - conf[i]) / 3, 4)
                                            for k, e in enumerate(EMOTIONS)},
                          "highlights": [[0.4, 1.1]]} for i, cid in enumerate(clip_ids)}

        preds = predictions()

        def save_predictions() -> int:
            with ctx.session() as s:
                run = st.create_run(s, project.id, {})
                st.start_run(s, run.id)
                st.save_predictions(s, run.id, preds)
                return run.id

        run_id = stages.time("100k", "save predictions (storage.save_predictions)", save_predictions)
        del preds
        snaps = [Snapshot(step, tuple(str(c) for c in clip_ids), x,
                          np.stack([x[y == k].mean(0) for k in range(len(EMOTIONS))]))
                 for step, x in zip(steps, embeddings)]
        del embeddings
        final = stages.time("100k", "fit UMAP on 5,000 + extend to all (final snapshot)",
                            lambda: fit_projection([snaps[-1].embeddings], [snaps[-1].prototypes]),
                            lambda p: p.method)
        out["final_separation"] = round(separation_sample(final.coords[0], y), 2)
        frames, protos, projection = stages.time(
            "100k", "project_snapshots (what the training worker runs)",
            lambda: project_snapshots(snaps, list(EMOTIONS)),
            lambda r: f"{r[2].method}, {len(r[0])} rows: {n} final + {len(steps) - 1} x replay sample")

        def save_snapshots() -> None:
            with ctx.session() as s:
                for index, snap in enumerate(snaps):
                    rows = frames[frames["step"] == snap.step]
                    prow = protos[protos["step"] == snap.step]
                    st.save_snapshot(s, run_id, index, snap.step, [int(c) for c in rows["clip_id"]],
                                     rows[["x", "y"]].to_numpy(), prow[["x", "y"]].to_numpy())
                st.finish_run(s, run_id, metrics={"classes": list(EMOTIONS)})

        stages.time("100k", "save snapshots + finish run", save_snapshots)
        del snaps, frames, protos, projection
        data = stages.time("100k", "field data from the database (services.field_data)",
                           lambda: review.field_data(ctx, me, project.id),
                           lambda d: f"{len(d.points)} points, {len(d.snapshot_frames)} replay rows")
        fig = stages.time("100k", "plotly figure (figures.field_figure)", lambda: fg.field_figure(data),
                          lambda f: f"{type(f.data[0]).__name__}, {f.layout.meta.get('moving_clips')} clips move")
        text = stages.time("100k", "figure JSON (what the field component receives)", fig.to_json,
                           lambda t: f"{len(t) / 1e6:.1f} MB")
        out["json_mb"] = len(text) / 1e6
        recoloured = stages.time("100k", "field coloured by confidence (figures.field_value)",
                                 lambda: fg.field_value(data, "confidence"),
                                 lambda v: f"{len(json.dumps(v['figure'])) / 1e6:.1f} MB")
        del recoloured
        for what, where, order, page_no in (
                ("every clip, by file name, page 1", {}, "file name", 1),
                ("every clip, by file name, page 1000", {}, "file name", 1000),
                ("target, not labeled, predicted angry, confidence 20-60 %, least confident first",
                 {"role": "target", "labeled": "not labeled", "predicted": "angry", "min_confidence": 20,
                  "max_confidence": 60}, "least confident first", 1),
                ("file name contains '04217'", {"name": "04217"}, "file name", 1),
                ("one speaker of 400, most confident first", {"speaker": "spk123"}, "most confident first", 1)):
            stages.time("100k", f"clip browser: {what}",
                        lambda: clip_browser.browse(ctx, me, project.id, clip_browser.clip_filter(**where), order,
                                                    page_no), lambda p: p.caption())
        page = stages.time("100k", "review table, page 1 (least confident first)",
                           lambda: review.predictions_page(ctx, me, project.id), lambda p: p.caption())
        out["page_rows"] = len(page.rows)
        stages.time("100k", "review table, page 500 (most confident first)",
                    lambda: review.predictions_page(ctx, me, project.id, sort="most confident first", page=500),
                    lambda p: p.caption())
        stages.time("100k", "next clip to review", lambda: review.next_to_review(ctx, me, project.id))
        out["peak_rss_mb"] = peak_rss_mb()
        if browser:
            out["browser"] = draw_in_chromium(stages, fg.field_figure(data), work)
    finally:
        ctx.close()
    return out


def separation_sample(coords: np.ndarray, labels: np.ndarray, n: int = 5000) -> float:
    pick = np.random.default_rng(0).choice(len(coords), size=min(n, len(coords)), replace=False)
    return separation(coords[pick], labels[pick])


PAGE = """<!doctype html><html><head><meta charset="utf-8"><script src="plotly.min.js"></script></head>
<body><div id="plot" style="width:1100px;height:700px"></div><script>
window.marks = {};
fetch("figure.json").then(r => r.json()).then(fig => {
  const t0 = performance.now();
  const div = document.getElementById("plot");
  Plotly.newPlot(div, fig.data, fig.layout).then(() => {
    window.marks.draw_ms = performance.now() - t0;
    return Plotly.addFrames(div, fig.frames || []);
  }).then(() => { window.marks.ready = true; });
});
</script></body></html>"""


def draw_in_chromium(stages: Stages, fig, work: Path) -> dict:
    """Time plotly.js drawing the figure in headless Chromium, then a hover and a zoom."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"skipped": "playwright is not installed"}
    if not Path(CHROMIUM).exists():
        return {"skipped": f"no Chromium at {CHROMIUM}"}
    import plotly

    site = work / "site"
    site.mkdir()
    (site / "plotly.min.js").write_bytes((Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes())
    (site / "figure.json").write_text(fig.to_json(), encoding="utf-8")
    (site / "index.html").write_text(PAGE, encoding="utf-8")
    server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "8765"], cwd=site,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result: dict = {}
    try:
        time.sleep(1.0)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"])
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            start = time.perf_counter()
            page.goto("http://127.0.0.1:8765/index.html")
            page.wait_for_function("window.marks.ready === true", timeout=300_000)
            result["load_and_draw_s"] = time.perf_counter() - start
            result["plotly_draw_ms"] = page.evaluate("window.marks.draw_ms")
            result["webgl"] = page.evaluate("!!document.createElement('canvas').getContext('webgl')")
            result["hover_ms"] = page.evaluate("""() => { const div = document.getElementById('plot');
                const t = performance.now(); Plotly.Fx.hover(div, {xpx: 500, ypx: 300}, 'xy');
                return performance.now() - t; }""")
            result["zoom_ms"] = page.evaluate("""async () => { const div = document.getElementById('plot');
                const [a, b] = div.layout.xaxis.range, [c, d] = div.layout.yaxis.range;
                const t = performance.now();
                await Plotly.relayout(div, {'xaxis.range': [a + (b - a) / 4, b - (b - a) / 4],
                                            'yaxis.range': [c + (d - c) / 4, d - (d - c) / 4]});
                return performance.now() - t; }""")
            result["first_frame_ms"] = page.evaluate("""async () => { const div = document.getElementById('plot');
                const t = performance.now();
                await Plotly.animate(div, [div.layout.meta.steps[0].toString()],
                                     {mode: 'immediate', frame: {duration: 0, redraw: true}, transition: {duration: 0}});
                return performance.now() - t; }""")
            browser.close()
    except Exception as exc:  # the browser part is optional evidence: report, do not fail the run
        result["error"] = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        server.terminate()
        server.wait(timeout=10)
    stages.rows.append(("100k", "Chromium: load + draw the figure", result.get("load_and_draw_s", float("nan")),
                        json.dumps({k: (round(v, 1) if isinstance(v, float) else v) for k, v in result.items()})))
    print(result, flush=True)
    return result


# ------------------------------------------------------------------------------ results


def write_results(meta: dict, stages: Stages, app: dict, big: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with (RESULTS / "scale.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["part", "stage", "seconds", "detail", "commit", "date"])
        for part, name, seconds, detail in stages.rows:
            writer.writerow([part, name, f"{seconds:.3f}", detail, meta["commit"], meta["date"]])
    lines = [
        "# Scale: a 100,000-clip resonance field, and the app-sized projection",
        "",
        "Written by `benchmarks/scale.py` (its docstring says exactly what is measured).",
        "",
        f"- command: `{meta['command']}`",
        f"- commit: `{meta['commit']}`{' (with uncommitted changes)' if meta['dirty'] else ' (clean tree)'}, "
        f"date: {meta['date']}",
        f"- machine: {meta['machine']}",
        f"- load average (1 min) before / after: {meta['load_before']:.2f} / {meta['load_after']:.2f}",
        f"- busy processes of others at the start: {'; '.join(meta['others']) or 'none'}",
        "- **the 100,000 clips' features are SYNTHETIC** (four Gaussian clusters in 64-d that tighten over "
        "14 snapshots); no audio, encoder or training is involved in part 2.",
        "",
        "## 1. The app-sized projection (532 clips x 14 snapshots), before and after",
        "",
        f"{app['rows']} rows. Before: {app['before']:.1f} s; after: **{app['after']:.1f} s**.",
        "",
        "2-D silhouette of the true emotions per snapshot (the replay's story: from mixed to separated):",
        "",
        f"- before: {app['before_separation']}",
        f"- after: {app['after_separation']}",
        "",
        "## 2. 100,000 clips",
        "",
        "| part | stage | seconds | detail |",
        "| --- | --- | ---: | --- |",
    ]
    for part, name, seconds, detail in stages.rows:
        lines.append(f"| {part} | {name} | {seconds:.2f} | {detail.replace('|', '/')} |")
    mem_ok = "met" if big["peak_rss_mb"] < MEMORY_TARGET_MB else "NOT met"
    lines += [
        "",
        f"Peak RSS of the benchmark process (everything above, both parts): **{big['peak_rss_mb']:.0f} MB** "
        f"against {MEMORY_TARGET_MB} MB: {mem_ok}. Figure JSON: {big['json_mb']:.1f} MB; a review page holds "
        f"{big['page_rows']} rows. 2-D silhouette of the final snapshot (5,000-clip sample): "
        f"{big['final_separation']}.",
        "",
    ]
    (RESULTS / "scale.md").write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=100_000)
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--skip-app", action="store_true", help="skip part 1 (the app-sized projection)")
    args = parser.parse_args()

    from sere_core.benchmark.report import commit, machine, working_tree_dirty

    meta = {"command": " ".join([".venv/bin/python", "benchmarks/scale.py", *sys.argv[1:]]),
            "commit": commit(), "dirty": working_tree_dirty(), "machine": machine(),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load_before": os.getloadavg()[0], "others": other_processes()}
    stages = Stages()
    app = part1(stages) if not args.skip_app else {"rows": 0, "before": float("nan"), "after": float("nan"),
                                                    "before_separation": [], "after_separation": []}
    with tempfile.TemporaryDirectory(prefix="sere-scale-") as tmp:
        big = part2(stages, args.clips, Path(tmp), not args.no_browser)
    meta["load_after"] = os.getloadavg()[0]
    write_results(meta, stages, app, big)
    print((RESULTS / "scale.md").read_text())


if __name__ == "__main__":
    main()
