"""``app.py`` builds its page from a context without launching anything, and passes the page
script and styles to ``launch`` (Gradio 6 takes them there, not in ``Blocks``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio")

from sere_core.app import AppContext, AppSettings  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def load_app():
    spec = importlib.util.spec_from_file_location("sere_app_module", REPO / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def ctx(tmp_path):
    c = AppContext.open(AppSettings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache"))
    yield c
    c.close()


def test_build_app_makes_the_seven_steps_with_clip_pads(ctx):
    app = load_app()
    demo = app.build_app(ctx)
    assert isinstance(demo, gr.Blocks)
    components = demo.config["components"]
    ids = {c.get("props", {}).get("elem_id") for c in components}
    expected = {"sere-load-demo", "sere-reset-demo", "sere-label-panel", "sere-train", "sere-cancel", "sere-field",
                "sere-field-panel", "sere-selection", "sere-color-by", "sere-review-table", "sere-review-panel",
                "sere-export-file", "sere-delete", "sere-rename"}
    assert expected <= ids
    pads = [c for c in components
            if c.get("props", {}).get("elem_id") in ("sere-label-panel", "sere-review-panel", "sere-field-panel")]
    assert len(pads) == 3
    for pad in pads:  # the keys and buttons: gr.HTML's js_on_load, not the page's DOM
        js = pad["props"]["js_on_load"]
        assert "keydown" in js and "trigger(\"act\"" in js and "watch(\"value\"" in js
    field = next(c for c in components if c.get("props", {}).get("elem_id") == "sere-field")
    js = field["props"]["js_on_load"]  # the map's clicks and selections: gr.HTML events, not a DOM hook
    assert "trigger(\"pick\"" in js and "trigger(\"lasso\"" in js and "querySelector(\"#" not in js
    labels = [c["props"].get("label") for c in components if c.get("type") == "tabitem"]
    assert [lab.split(" · ")[0] for lab in labels] == [str(i) for i in range(1, 8)]
    assert demo.sere_context is ctx


def test_only_the_documented_endpoints_are_public(ctx):
    """Every handler of the page is private; the public API is the README's table, nothing else."""
    import re

    app = load_app()
    demo = app.build_app(ctx)
    public = sorted(d["api_name"] for d in demo.config["dependencies"] if d.get("api_visibility") == "public")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Public API", 1)[1].split("\n## ", 1)[0]
    documented = sorted(re.findall(r"^\| `/(\w+)`", section, flags=re.M))
    assert public == documented and len(public) >= 5, (public, documented)
    assert set(demo.get_api_info()["named_endpoints"]) == {f"/{name}" for name in public}


def test_launch_options_serve_only_exports_and_plotly(ctx):
    app = load_app()
    options = app.launch_options(ctx)
    assert "head" not in options  # no page script: the field and the pads are gr.HTML components
    assert ".sere-pad" in options["css"]
    assert options["allowed_paths"] == [str(ctx.export_dir()), str(app.PLOTLY_JS)]
    assert app.PLOTLY_JS.name == "plotly.min.js" and app.PLOTLY_JS.stat().st_size > 1_000_000
    assert isinstance(options["theme"], gr.themes.Base)


def test_the_app_module_keeps_no_user_state_at_import():
    app = load_app()
    module_state = {k for k, v in vars(app).items()
                    if not k.startswith("_") and isinstance(v, (dict, list, set)) and k.isupper() is False}
    assert not module_state, module_state


@pytest.mark.slow
def test_the_app_starts_light_and_warms_up_in_the_background(tmp_path):
    """Opening the context imports no engine (the page is served within seconds); the warm-up then
    imports it in one thread while a request thread imports plotly (which once deadlocked on
    Python's import locks when two threads imported narwhals at once), readies the demo and its
    speech features, and compiles UMAP."""
    import subprocess
    import sys

    script = f"""
import sys, threading, time
from pathlib import Path
from sere_core.app import AppContext, AppSettings
from sere_core.app.pipeline import is_cached
from sere_core.app.warmup import engine_imported
t0 = time.perf_counter()
ctx = AppContext.open(AppSettings(data_dir=Path({str(tmp_path / 'data')!r}), cache_dir=Path({str(tmp_path / 'cache')!r}),
                                  encoder="prosody"))
opened = time.perf_counter() - t0
light = [m for m in ("torch", "transformers", "umap", "sklearn") if m in sys.modules]
before = threading.active_count()
ctx.jobs.start()
import plotly.express  # what a request thread may import while the warm-up imports
status = ctx.jobs.warmup.status()
assert ctx.jobs.warmup.done.wait(300)
info = ctx.encoders.info("prosody")
cached = sum(is_cached(ctx, c.audio_id, info) for c in ctx.demo_template.clips)
from sere_core.viz import umap_is_warm
print("light", light, "threads", before, "status", bool(status), "engine", engine_imported(),
      "cached", cached, "of", len(ctx.demo_template.clips), "umap", umap_is_warm(), "opened", round(opened, 1))
ctx.close()
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "light [] threads 1 status True engine True cached 72 of 72 umap True" in done.stdout, \
        done.stdout + done.stderr[-2000:]
