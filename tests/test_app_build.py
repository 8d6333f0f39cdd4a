"""``app.py`` builds its page from a context without launching anything, and passes the page
script and styles to ``launch`` (Gradio 6 takes them there, not in ``Blocks``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio")

from sere_core.app import AppContext, AppSettings  # noqa: E402
from sere_core.storage import MAX_EMOTIONS  # noqa: E402

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


def test_build_app_makes_the_seven_steps_with_keyboard_targets(ctx):
    app = load_app()
    demo = app.build_app(ctx)
    assert isinstance(demo, gr.Blocks)
    ids = {c.get("props", {}).get("elem_id") for c in demo.config["components"]}
    expected = {"sere-load-demo", "sere-label-panel", "sere-skip", "sere-undo", "sere-train", "sere-cancel",
                "sere-field", "sere-clicked", "sere-review-table", "sere-confirm", "sere-export-file"}
    assert expected <= ids
    assert {f"sere-emo-{i}" for i in range(1, MAX_EMOTIONS + 1)} <= ids
    labels = [c["props"].get("label") for c in demo.config["components"] if c.get("type") == "tabitem"]
    assert [lab.split(" · ")[0] for lab in labels] == [str(i) for i in range(1, 8)]
    assert demo.sere_context is ctx


def test_launch_options_carry_the_page_script_and_serve_only_exports(ctx):
    app = load_app()
    options = app.launch_options(ctx)
    head = options["head"]
    assert head.startswith("<script>") and "keydown" in head and "plotly_click" in head
    assert "addFrames" in head  # the replay frames gr.Plot drops are restored from layout.meta
    assert "#sere-field" in options["css"] or ".sere-progress" in options["css"]
    assert options["allowed_paths"] == [str(ctx.export_dir())]
    assert isinstance(options["theme"], gr.themes.Base)


def test_the_app_module_keeps_no_user_state_at_import():
    app = load_app()
    module_state = {k for k, v in vars(app).items()
                    if not k.startswith("_") and isinstance(v, (dict, list, set)) and k.isupper() is False}
    assert not module_state, module_state


def test_the_app_imports_what_its_threads_need_before_starting_them(tmp_path):
    """A request importing plotly while the UMAP warm-up imported scikit-learn (both import narwhals)
    once deadlocked on Python's import locks in CI (``_DeadlockError``). Opening the context and starting
    the warm-up must leave the heavy packages imported, in a fresh interpreter, before any thread runs."""
    import subprocess
    import sys

    script = f"""
import sys, threading
from pathlib import Path
from sere_core.app import AppContext, AppSettings
from sere_core.viz import start_umap_warm_up
ctx = AppContext.open(AppSettings(data_dir=Path({str(tmp_path / 'data')!r}),
                                  cache_dir=Path({str(tmp_path / 'cache')!r})))
before = threading.active_count()
thread = start_umap_warm_up()
needed = ["torch", "torchaudio", "transformers.models.whisper.modeling_whisper", "sere_core.method", "umap",
          "sklearn", "numba", "narwhals.stable.v1"]
missing = [m for m in needed if m not in sys.modules]
import plotly.express  # what a request thread imports, while the warm-up compiles
thread.join(120)
ctx.close()
print("missing", missing, "threads", before)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "missing [] threads 1" in done.stdout, done.stdout + done.stderr[-2000:]
