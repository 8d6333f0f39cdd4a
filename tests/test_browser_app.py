"""The demo, end to end, in a real Chromium: load the demo, label 5 clips with the keyboard, upload
target audio, train, watch the resonance field, review, export, reload.

Needs Debian's chromium (``apt-get install chromium``) and the playwright Python package; skipped
otherwise. Screenshots go to ``tmp/test-artifacts/browser/``. By default the fast stand-in encoder
is used so the test takes a couple of minutes; ``SERE_BROWSER_ENCODER=whisper-base`` runs the real
one (``SERE_CACHE_DIR`` makes reruns fast), ``SERE_BROWSER_STEPS`` sets the training steps.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser_app")]  # one worker: its module fixture is made once

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tmp" / "test-artifacts" / "browser"

sys.path.insert(0, str(Path(__file__).parent))
from app_server import chromium, free_port, open_page, pad_state, wait_answer  # noqa: E402


def _load_app_module():
    spec = importlib.util.spec_from_file_location("sere_app_under_test", REPO / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from sere_core.app import AppContext, AppSettings
    from sere_core.app.testing import NAME, BandEnergyEncoder

    tmp = tmp_path_factory.mktemp("browser")
    encoder = os.environ.get("SERE_BROWSER_ENCODER", NAME)
    cache = Path(os.environ["SERE_CACHE_DIR"]) if os.environ.get("SERE_CACHE_DIR") else tmp / "cache"
    ctx = AppContext.open(AppSettings(data_dir=tmp / "data", cache_dir=cache, encoder=encoder,
                                      train_steps=int(os.environ.get("SERE_BROWSER_STEPS", "30"))))
    if encoder == NAME:
        ctx.encoders.register(NAME, BandEnergyEncoder())
    module = _load_app_module()
    demo = module.build_app(ctx)
    port = free_port()
    demo.queue(default_concurrency_limit=4).launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
        **module.launch_options(ctx))
    yield f"http://127.0.0.1:{port}", ctx
    demo.close()
    ctx.close()


@pytest.fixture(scope="module")
def page(server):
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    with chromium() as browser:
        yield open_page(browser, server[0])


def shot(pg, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    pg.screenshot(path=str(path), full_page=True)
    return path


def tab(pg, name: str) -> None:
    pg.get_by_role("tab", name=name).click()
    pg.wait_for_timeout(400)


def counted(pg) -> int:
    return int(pg.get_attribute("#sere-counts", "data-total"))


def wait_total(pg, n: int, timeout: float = 20000) -> None:
    pg.wait_for_function(f"() => document.querySelector('#sere-counts')?.dataset.total === '{n}'", timeout=timeout)


def press_hint_key(pg) -> None:
    """Press the key the demo hint names for the clip on screen, and wait for the next clip."""
    hint = pg.inner_text("#sere-clip-hint")
    key = hint.split("press")[1].strip()[0]
    before = counted(pg)
    _, rev = pad_state(pg)
    pg.keyboard.press(key)
    wait_answer(pg, rev)
    assert counted(pg) == before + 1


def wait_clip(pg, pad: str, test: str) -> None:
    """Wait until the pad's clip id passes ``test`` (``"== '12'"``) and no action is on its way."""
    pg.wait_for_function(f"() => {{ const el = document.querySelector({pad!r});"
                         f" return el && el.dataset.clip {test} && el.parentElement.dataset.busy !== '1'; }}",
                         timeout=30000)


def make_uploads(folder: Path) -> list[Path]:
    """A 40-second 'interview' of 14 demo utterances with pauses, a broken recording and notes."""
    import soundfile as sf

    from sere_core.audio import write_audio

    parts = []
    for f in sorted((REPO / "data" / "demo" / "target").glob("*.flac"))[-14:]:
        x, sr = sf.read(f, dtype="float32")
        parts += [x, np.zeros(int(1.2 * sr), np.float32)]
    interview = write_audio(folder / "interview.wav", np.concatenate(parts), 16000)
    broken = folder / "broken.wav"
    broken.write_text("this is not a recording")
    notes = folder / "notes.txt"  # the picker takes it; the report says it is not audio
    notes.write_text("interview notes")
    return [interview, broken, notes]


def test_the_demo_end_to_end(page, server, tmp_path):
    try:
        walk_the_demo(page, server, tmp_path)
    except Exception:
        shot(page, "failure")
        raise


def walk_the_demo(page, server, tmp_path):
    pg, (_url, ctx) = page, server
    # 1 Project: load the demo
    shot(pg, "01-start")
    pg.click("#sere-load-demo")
    pg.wait_for_selector("#sere-clip-hint:has-text('corpus labels')", timeout=60000)
    assert "Demo" in pg.inner_text("#sere-project-line")

    # 2 Source clips: suggestions, then 5 labels with the keyboard (with an undo and a skip)
    _, rev = pad_state(pg)
    pg.click("#sere-suggest")
    pg.wait_for_selector("text=suggested order", timeout=120000)
    wait_answer(pg, rev)  # the pad shows the first suggested clip
    for _ in range(4):
        press_hint_key(pg)
    pg.keyboard.press("u")
    wait_total(pg, 3)
    press_hint_key(pg)
    press_hint_key(pg)
    assert counted(pg) == 5
    clip, rev = pad_state(pg)
    pg.keyboard.press("s")
    wait_answer(pg, rev)
    assert pad_state(pg)[0] != clip and counted(pg) == 5
    shot(pg, "02-labeling")
    # the demo shortcut tops up to 5 per emotion, so the training has a full few-shot set
    pg.click("#sere-demo-labels")
    wait_total(pg, 20)

    # 3 Target audio: a long recording is split, a broken file is reported
    tab(pg, "3 · Target audio")
    uploads = make_uploads(tmp_path)
    pg.set_input_files("#sere-tgt-upload input[type=file]", [str(p) for p in uploads])
    pg.wait_for_selector("#sere-tgt-report:has-text('rejected')", timeout=120000)
    report = pg.inner_text("#sere-tgt-report")
    assert "broken.wav" in report and "notes.txt" in report and "split at pauses" in report
    shot(pg, "03-target-upload")

    # 4 Train: progress while it runs, then the results
    tab(pg, "4 · Train")
    pg.click("#sere-train")
    pg.wait_for_selector("#sere-progress-text[data-status=running]", timeout=60000)
    pg.wait_for_timeout(1500)
    shot(pg, "04-training")
    pg.wait_for_selector("#sere-progress-text[data-status=succeeded]", timeout=900000)
    pg.wait_for_selector("#sere-metrics:has-text('Demo check')", timeout=30000)
    shot(pg, "05-trained")

    # 5 Resonance field: replay frames restored, replay runs, a click selects a clip
    tab(pg, "5 · Resonance field")
    pg.wait_for_selector("#sere-field .js-plotly-plot", timeout=30000)
    pg.wait_for_function("() => window.sereFieldFrames() > 1", timeout=30000)
    n_frames = pg.evaluate("window.sereFieldFrames()")
    gd = "document.querySelector('#sere-field .js-plotly-plot')"
    pg.evaluate(f"() => SerePlotly.animate({gd}, ['0'], {{mode: 'immediate', frame: {{duration: 0}}, transition: {{duration: 0}}}})")
    pg.wait_for_timeout(500)
    shot(pg, "06-field-step-0")
    pg.locator("#sere-field").get_by_text("▶ replay").click()
    pg.wait_for_function(f"() => {gd}._fullLayout.sliders[0].active === {n_frames - 1}", timeout=60000)
    pg.wait_for_timeout(1200)
    field_png = ARTIFACTS / "resonance-field.png"
    pg.locator("#sere-field").screenshot(path=str(field_png))
    # click a target-language point
    point = pg.evaluate(f"""() => {{
        const gd = {gd};
        for (const t of gd._fullData) {{
            if (!t.customdata || t.meta?.kind !== 'clips') continue;
            for (let i = 0; i < t.x.length; i++) {{
                if (t.x[i] === null || t.marker.symbol[i] !== 'circle') continue;
                const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
                return {{x: r.left + xa._offset + xa.l2p(t.x[i]), y: r.top + ya._offset + ya.l2p(t.y[i]), name: t.customdata[i][1]}};
            }}
        }}
    }}""")
    pg.mouse.move(point["x"] - 3, point["y"] - 3)
    pg.mouse.click(point["x"], point["y"])
    pg.wait_for_selector("#sere-field-panel .sere-pad:has-text('Predicted')", timeout=30000)
    assert "target language" in pg.inner_text("#sere-field-panel")
    chosen = pg.evaluate(f"() => ({gd}.layout.annotations || []).filter(a => a.name === 'sere-chosen')"
                         ".map(a => [a.x, a.y])")
    assert len(chosen) == 1  # the chosen point is marked on the map
    shot(pg, "07-field-selected")

    # 6 Review: choose the least confident clip, confirm with Enter, undo it with U
    tab(pg, "6 · Review")
    pg.locator("#sere-review-table [data-testid='cell-0-1']").click()
    review_pad = "#sere-review-panel .sere-pad"
    pg.wait_for_selector(f"{review_pad}:has-text('Predicted')", timeout=30000)
    chosen, _ = pad_state(pg, review_pad)
    pg.keyboard.press("Enter")
    wait_clip(pg, review_pad, f"!= '{chosen}'")  # on to the next clip to review
    pg.keyboard.press("u")
    wait_clip(pg, review_pad, f"== '{chosen}'")  # back to the clip whose label was undone
    pg.keyboard.press("Enter")
    wait_clip(pg, review_pad, f"!= '{chosen}'")
    shot(pg, "08-review")
    assert ctx is not None and sum(sv_counts(ctx).values()) >= 21

    # Retrain, reload the page while it runs: the run is still shown (and can be cancelled)
    pg.click("#sere-retrain")
    pg.wait_for_selector("#sere-progress-text:has-text('Run 2')", timeout=30000)
    pg.reload()
    pg.wait_for_selector("#sere-project-line[data-ready]:has-text('Demo')", timeout=30000)
    tab(pg, "4 · Train")
    pg.wait_for_selector("#sere-progress-text:has-text('Run 2')", timeout=30000)
    if pg.get_attribute("#sere-progress-text", "data-status") in ("queued", "running"):
        # a short run may end between reading its status and the press: press only an enabled Cancel
        pg.evaluate("() => { const b = document.querySelector('#sere-cancel'); if (!b.disabled) b.click(); }")
        pg.wait_for_selector("#sere-progress-text[data-status=cancelled], "
                             "#sere-progress-text[data-status=succeeded]", timeout=60000)
    shot(pg, "08b-after-reload")

    # 7 Export: predictions, labels, model
    tab(pg, "7 · Export")
    for button, stem in (("#sere-exp-pred", "-predictions"), ("#sere-exp-labels", "-labels"),
                         ("#sere-exp-model", "-model")):
        pg.click(button)
        pg.wait_for_function("s => document.querySelector('#sere-export-file').innerText.includes(s)",
                             arg=stem, timeout=60000)
    exported = sorted(p.name for p in ctx.export_dir().rglob("*") if p.is_file())
    assert any(n.endswith("predictions.csv") for n in exported)
    assert any(n.endswith("labels.csv") for n in exported)
    assert any(n.endswith("model.zip") for n in exported)
    shot(pg, "09-export")

    # A reload keeps the project and its results
    pg.reload()
    pg.wait_for_selector("#sere-project-line[data-ready]:has-text('Demo')", timeout=30000)
    tab(pg, "5 · Resonance field")
    pg.wait_for_function("() => window.sereFieldFrames() > 1", timeout=30000)
    assert not pg.sere_errors, pg.sere_errors


def sv_counts(ctx) -> dict[str, int]:
    from sere_core.app import labeling, projects
    from sere_core.app.testing import local_caller

    me = local_caller()
    pid = projects.list_projects(ctx, me)[0].id
    return labeling.label_counts(ctx, me, pid, role=None)
