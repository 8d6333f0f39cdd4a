"""Several people use one app at once: four real browser sessions on one server (two on the same
project), and the same rules at the service level on SQLite and PostgreSQL.

* No session sees another's unsaved state (the emotion list being edited, the labeling queue).
* Two people labeling one clip: both writes are in the label history, the last one is current,
  and neither person's other labels are lost.
* One training run per project: the second Train gets a clear message; other projects train.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from app_server import (  # noqa: E402
    DEMO,
    AppProcess,
    chromium,
    clip_on_screen,
    label_panel,
    open_page,
    open_project,
    press_and_wait,
    tab,
)
from pg_server import db_url, postgres_admin_url, postgres_url  # noqa: E402,F401  (fixtures)

from sere_core.app import AppContext, AppSettings  # noqa: E402
from sere_core.app import services as sv  # noqa: E402
from sere_core.errors import ActiveRunError  # noqa: E402
from sere_core.storage.models import ACTIVE_STATUSES  # noqa: E402
from sere_core.storage import (  # noqa: E402
    Clip,
    Project,
    TrainingRun,
    label_history,
    labels_for_project,
    open_database,
    session_scope,
)

SOURCE = sorted((DEMO / "source").glob("*.flac"))[:8]
TARGET = sorted((DEMO / "target").glob("*.flac"))[:4]
PROJECTS = {"Shared": "neutral, happy, sad, angry", "Carol's": "calm, excited", "Dan's": "joy, anger, fear"}
BUSY = "already training"


def _context(data_dir: Path, database_url: str | None, train_steps: int = 100_000) -> AppContext:
    return AppContext.open(AppSettings(data_dir=data_dir, cache_dir=data_dir.parent / "cache",
                                       database_url=database_url, encoder="prosody", train_steps=train_steps))


def _make_projects(ctx: AppContext) -> dict[str, int]:
    ids = {}
    for name, emotions in PROJECTS.items():
        ids[name] = sv.create_project(ctx, name, emotions).id
        sv.import_audio(ctx, ids[name], SOURCE, "source", language="de", warm=False)
        sv.import_audio(ctx, ids[name], TARGET, "target", language="en", warm=False)
    return ids


def emotions_box(page):
    """The project's emotion list on the Project tab (inside a closed accordion at first)."""
    tab(page, "1 · Project")
    box = page.locator("#sere-emotions").get_by_role("textbox")
    if not box.count():
        page.get_by_text("Edit the emotions of the open project").click()
    box.wait_for(timeout=30000)
    return box


def _runs(session, project_id: int) -> list[TrainingRun]:
    return list(session.query(TrainingRun).filter(TrainingRun.project_id == project_id))


# ------------------------------------------------------------------------------ four browsers


@pytest.mark.browser
@pytest.mark.slow
def test_four_browser_sessions_at_once(tmp_path):
    ctx = _context(tmp_path / "data", None)
    try:
        ids = _make_projects(ctx)
    finally:
        ctx.close()
    clip = [p.name for p in SOURCE]  # the labeling order of a fresh queue
    app = AppProcess(tmp_path / "data", tmp_path / "cache", train_steps=100_000)
    with chromium() as browser:
        try:
            app.start()
            pages = {who: open_page(browser, app.url) for who in "ABCD"}
            a, b, c, d = pages.values()
            for page, name in ((a, "Shared"), (b, "Shared"), (c, "Carol's"), (d, "Dan's")):
                open_project(page, name)
                label_panel(page)

            # A and B label the same clip differently, one after the other
            assert clip_on_screen(a) == clip_on_screen(b) == clip[0]
            assert press_and_wait(a, "1") == clip[0]  # neutral
            assert press_and_wait(b, "2") == clip[0]  # happy, over A's label (B's screen was not refreshed)
            # B skips three clips; A's queue is A's own: A's next clip is not where B is
            for expected in clip[1:4]:
                assert press_and_wait(b, "s") == expected
            assert clip_on_screen(b) == clip[4]
            assert press_and_wait(a, "3") == clip[1]  # sad
            assert clip_on_screen(a) == clip[2]
            assert press_and_wait(b, "4") == clip[4]  # angry
            assert press_and_wait(a, "1") == clip[2]  # neutral
            for page, keys in ((c, "12"), (d, "23")):  # meanwhile in the other projects
                for key in keys:
                    press_and_wait(page, key)

            # An emotion list being edited is A's alone until saved
            emotions_box(a).fill("neutral, happy, sad, angry, bored")
            b.reload()  # B's page asks the server for everything again
            b.locator("#sere-project-line", has_text="Shared").wait_for(timeout=30000)
            for page, emotions in ((b, PROJECTS["Shared"]), (c, PROJECTS["Carol's"]), (d, PROJECTS["Dan's"])):
                assert emotions_box(page).input_value() == emotions
            assert emotions_box(a).input_value() == "neutral, happy, sad, angry, bored"

            # A and B press Train together: one run; the other is told why
            for page in (a, b):
                tab(page, "4 · Train")
                page.wait_for_selector("#sere-train:not([disabled])", timeout=30000)
            a.click("#sere-train", no_wait_after=True)
            b.click("#sere-train", no_wait_after=True)
            told = None
            deadline = time.monotonic() + 60
            while told is None and time.monotonic() < deadline:
                told = next((who for who, page in (("A", a), ("B", b))
                             if page.get_by_text(BUSY).count()), None)
                time.sleep(0.2)
            assert told is not None, "neither session was told that the project is already training"
            winner = b if told == "A" else a
            winner.wait_for_selector("#sere-progress-text[data-status=running]", timeout=60000)
            # C and D train their own projects meanwhile
            for page in (c, d):
                tab(page, "4 · Train")
                page.click("#sere-train")
                page.wait_for_selector("#sere-progress-text[data-status=queued], "
                                       "#sere-progress-text[data-status=running]", timeout=60000)
                assert not page.get_by_text(BUSY).count()
            for page in pages.values():
                assert not page.sere_errors, page.sere_errors
        finally:
            app.stop()

    engine = open_database(f"sqlite:///{tmp_path / 'data' / 'sere.db'}")
    try:
        with session_scope(engine) as s:
            names = {cl.id: cl.original_name for cl in s.query(Clip).filter(Clip.project_id == ids["Shared"])}
            by_name = {n: i for i, n in names.items()}
            assert {names[i]: e for i, e in labels_for_project(s, ids["Shared"]).items()} == {
                clip[0]: "happy", clip[1]: "sad", clip[2]: "neutral", clip[4]: "angry"}
            first, second = label_history(s, by_name[clip[0]])
            assert (first.emotion, second.emotion, second.previous_emotion) == ("neutral", "happy", "neutral")
            session_a, session_b = first.session_id, second.session_id
            assert session_a and session_b and session_a != session_b
            assert [e.session_id for n in clip[1:3] for e in label_history(s, by_name[n])] == [session_a] * 2
            assert [e.session_id for e in label_history(s, by_name[clip[4]])] == [session_b]
            assert sorted(labels_for_project(s, ids["Carol's"]).values()) == ["calm", "excited"]
            assert sorted(labels_for_project(s, ids["Dan's"]).values()) == ["anger", "fear"]
            assert [len(_runs(s, ids[n])) for n in PROJECTS] == [1, 1, 1]
            assert s.get(Project, ids["Shared"]).emotions == PROJECTS["Shared"].split(", ")  # A never saved
    finally:
        engine.dispose()


# ------------------------------------------------------------------- services, both databases


def _at_once(*people) -> None:
    """Run each function in its own thread (they meet at a barrier inside) and wait for all."""
    threads = [threading.Thread(target=f) for f in people]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)


def test_concurrent_labels_and_one_run_per_project(tmp_path, db_url):
    database_url = None if db_url.startswith("sqlite") else db_url
    ctx = _context(tmp_path / "data", database_url)
    try:
        ids = _make_projects(ctx)
        with ctx.session() as s:
            shared, *own = [cl.id for cl in s.query(Clip).filter(Clip.project_id == ids["Shared"],
                                                                 Clip.role == "source").order_by(Clip.id)]
        start = threading.Barrier(2)
        errors: list[BaseException] = []

        def person(session_id: str, emotion: str, mine: list[int]) -> None:
            try:
                start.wait(timeout=30)
                for clip_id in mine:
                    sv.label_clip(ctx, shared, emotion, session_id=session_id)
                    sv.label_clip(ctx, clip_id, emotion, session_id=session_id)
            except BaseException as exc:  # reported below
                errors.append(exc)

        _at_once(lambda: person("alice", "happy", own[:3]), lambda: person("bob", "sad", own[3:6]))
        assert not errors, errors
        with ctx.session() as s:
            history = label_history(s, shared)
            assert len(history) == 6  # every write recorded, none lost
            assert all(e.previous_emotion == p.emotion for p, e in zip(history, history[1:]))  # serialized
            labels = labels_for_project(s, ids["Shared"])
            assert labels[shared] == history[-1].emotion  # the last write is current
            assert [labels[c] for c in own[:6]] == ["happy"] * 3 + ["sad"] * 3

        outcomes: list[object] = []

        def press_train() -> None:
            start.wait(timeout=30)
            try:
                outcomes.append(sv.start_training(ctx, ids["Shared"]))
            except ActiveRunError as exc:
                outcomes.append(exc)

        _at_once(press_train, press_train)
        run_ids = [o for o in outcomes if isinstance(o, int)]
        refused = [o for o in outcomes if isinstance(o, ActiveRunError)]
        assert len(run_ids) == 1 and len(refused) == 1, outcomes
        assert BUSY in sv.user_message(refused[0])
        for clip_id, emotion in zip(sv.unlabeled_clip_ids(ctx, ids["Carol's"]), ("calm", "excited")):
            sv.label_clip(ctx, clip_id, emotion)
        other_run = sv.start_training(ctx, ids["Carol's"])  # another project is not blocked
        with ctx.session() as s:
            assert [r.id for r in _runs(s, ids["Shared"])] == run_ids
            assert [(r.id, r.status in ACTIVE_STATUSES) for r in _runs(s, ids["Carol's"])] == [(other_run, True)]
        for name in ("Shared", "Carol's"):
            sv.cancel_training(ctx, ids[name])
        assert ctx.jobs.wait(timeout=120)
    finally:
        ctx.close()
