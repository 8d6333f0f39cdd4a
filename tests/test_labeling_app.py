"""Labeling in real Chromium against ``python app.py``: every action acts on the clip on screen.

* Five label keys pressed within 300 ms label five different clips, each with its key.
* Undo is each labeler's own: it walks back my changes, never another person's, and it survives
  a reload.
* Two tabs of one project are shown different clips.
* A tab that did not start a training follows it: Start is disabled, the run's progress is shown,
  and its end too; Start pressed on a run already going says so once, without an error.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from app_server import (  # noqa: E402
    DEMO,
    LABEL_PAD,
    AppProcess,
    chromium,
    clip_on_screen,
    label_panel,
    open_page,
    open_project,
    pad_state,
    page_session,
    press_and_wait,
    tab,
    wait_answer,
    wait_ready,
)

from sere_core.app import AppContext, AppSettings, imports, projects  # noqa: E402
from sere_core.app.testing import local_caller  # noqa: E402
from sere_core.storage import (  # noqa: E402
    Clip,
    label_history,
    labels_for_project,
    open_database,
    session_scope,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("labeling_app")]  # one worker: its module fixture is made once
EMOTIONS = ["neutral", "happy", "sad", "angry"]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """A private server (one shared workspace) with a 16-clip project."""
    tmp = tmp_path_factory.mktemp("labeling")
    ctx = AppContext.open(AppSettings(data_dir=tmp / "data", cache_dir=tmp / "cache", encoder="prosody"))
    me = local_caller()
    pid = projects.create_project(ctx, me, "Labels", EMOTIONS).id
    imports.import_audio(ctx, me, pid, sorted((DEMO / "source").glob("*.flac"))[:16], "source", warm=False)
    imports.import_audio(ctx, me, pid, sorted((DEMO / "target").glob("*.flac"))[:6], "target", warm=False)
    ctx.close()
    server = AppProcess(tmp / "data", tmp / "cache", train_steps=100_000).start()  # runs until cancelled
    server.project = pid
    yield server
    server.stop()


def stored(app) -> dict[str, str]:
    """``{clip file name: label}`` in the database."""
    engine = open_database(f"sqlite:///{app.data_dir / 'sere.db'}")
    try:
        with session_scope(engine) as s:
            names = {c.id: c.original_name for c in s.query(Clip).filter(Clip.project_id == app.project)}
            return {names[c]: e for c, e in labels_for_project(s, app.project).items()}
    finally:
        engine.dispose()


def clear_labels(app) -> None:
    engine = open_database(f"sqlite:///{app.data_dir / 'sere.db'}")
    try:
        with session_scope(engine) as s:
            from sere_core.storage import Label, LabelEvent

            s.query(LabelEvent).delete()
            s.query(Label).delete()
    finally:
        engine.dispose()


def test_five_keys_within_300_ms_label_five_different_clips(app):
    clear_labels(app)
    with chromium() as browser:
        page = open_page(browser, app.url)
        open_project(page, "Labels")
        label_panel(page)
        before = page.inner_text("#sere-counts")
        # Five key presses sent by the page itself, so that they are truly within 300 ms.
        elapsed = page.evaluate("""() => {
            const t0 = performance.now();
            for (const key of ['1', '2', '3', '4', '1'])
                document.dispatchEvent(new KeyboardEvent('keydown', {key, bubbles: true}));
            return performance.now() - t0; }""")
        assert elapsed < 300
        page.wait_for_function("() => document.querySelector('#sere-counts')?.dataset.total === '5'", timeout=60000)
        _, rev = pad_state(page)
        page.wait_for_function(f"() => document.querySelector({LABEL_PAD!r}).parentElement.dataset.busy !== '1'")
        labels = stored(app)
        assert len(labels) == 5, labels  # five clips, none labeled twice
        assert sorted(labels.values()) == sorted(["neutral", "happy", "sad", "angry", "neutral"])
        assert "0/5" in before and not page.sere_errors


def test_undo_is_each_labelers_own_and_survives_a_reload(app):
    clear_labels(app)
    with chromium() as browser:
        ada, bo = open_page(browser, app.url), open_page(browser, app.url)  # two browsers: two labelers
        for page in (ada, bo):
            open_project(page, "Labels")
            label_panel(page)
        ada_clip = press_and_wait(ada, "2")  # ada: happy
        bo_clip = press_and_wait(bo, "3")  # bo: sad, on another clip
        assert ada_clip != bo_clip
        ada.reload()  # undo history lives in the database, not in the page
        wait_ready(ada)
        label_panel(ada)
        _, rev = pad_state(ada)
        ada.keyboard.press("u")
        wait_answer(ada, rev)
        assert clip_on_screen(ada) == ada_clip  # back to the clip whose label was undone
        assert stored(app) == {bo_clip: "sad"}  # bo's label untouched
        _, rev = pad_state(ada)
        ada.keyboard.press("u")  # nothing more of ada's: bo's label stays
        wait_answer(ada, rev)
        assert stored(app) == {bo_clip: "sad"}
        _, rev = pad_state(bo)
        bo.keyboard.press("u")
        wait_answer(bo, rev)
        assert stored(app) == {}
        assert not ada.sere_errors and not bo.sere_errors
    engine = open_database(f"sqlite:///{app.data_dir / 'sere.db'}")
    try:
        with session_scope(engine) as s:
            authors = {e.author for c in s.query(Clip).filter(Clip.project_id == app.project)
                       for e in label_history(s, c.id)}
            assert len(authors) == 2  # each change is its labeler's
    finally:
        engine.dispose()


def test_two_tabs_get_different_clips_and_follow_a_run_they_did_not_start(app):
    clear_labels(app)
    with chromium() as browser:
        first = open_page(browser, app.url)
        second = first.context.new_page()  # a second tab of the same browser
        second.sere_errors = []
        second.goto(app.url)
        wait_ready(second)
        for page in (first, second):
            open_project(page, "Labels")
            label_panel(page)
        assert clip_on_screen(first) != clip_on_screen(second)
        for key in "1234":
            press_and_wait(first, key)
        for key in "1234":
            press_and_wait(second, key)
        assert len(stored(app)) == 8
        tab(second, "4 · Train")  # the second tab waits on the Train tab; the first starts the run
        second.wait_for_selector("#sere-train:not([disabled])", timeout=30000)
        tab(first, "4 · Train")
        first.click("#sere-train")
        run = None
        deadline = time.monotonic() + 60
        while run is None and time.monotonic() < deadline:
            run = first.get_attribute("#sere-progress-text", "data-run")
        second.wait_for_selector(f"#sere-progress-text[data-run='{run}'][data-status=running], "
                                 f"#sere-progress-text[data-run='{run}'][data-status=queued]", timeout=30000)
        second.wait_for_selector("#sere-train[disabled]", timeout=30000)
        # Start pressed on a run already going (a page that had not seen it yet): said once, no error
        late = page_session(app.url, project=app.project)
        answer = late.call(late.handler("press_train"), [None, app.project])
        assert answer["success"] and sum("already training" in m for m in answer["log"]) == 1, answer
        assert f"data-run='{run}'" in str(answer["output"]["data"])  # and it shows that run
        first.click("#sere-cancel")  # the end of the run reaches the tab that did not start it
        second.wait_for_selector(f"#sere-progress-text[data-run='{run}'][data-status=cancelled]", timeout=60000)
        second.wait_for_selector("#sere-train:not([disabled])", timeout=30000)
        assert not first.sere_errors and not second.sere_errors
