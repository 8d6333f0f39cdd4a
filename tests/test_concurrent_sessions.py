"""Several people use one app at once: four real browser sessions on one server (two on the same
project), and the same rules at the service level on SQLite and PostgreSQL.

* Two people labeling one project are shown different clips; each label lands on the clip its
  labeler saw, and each labeler's queue (skips) is their own.
* No session sees another's unsaved state (the emotion list being edited).
* Two people labeling one clip: both writes are in the label history, the last one is current,
  and neither person's other labels are lost.
* One training run per project: the second Train says so once, without errors, and follows the
  run; other projects train.

Every wait is on a state the page sets (``data-ready``, the pad's ``data-rev``, the run's
``data-status``), never on "something changed".
"""

from __future__ import annotations

import sys
import threading
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
from sere_core.app import imports, labeling, projects, training  # noqa: E402
from sere_core.app.messages import user_message  # noqa: E402
from sere_core.app.testing import local_caller  # noqa: E402
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
    unlabeled_clip_ids,
)

ME = local_caller()  # the shared workspace of a private server
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
        ids[name] = projects.create_project(ctx, ME, name, emotions).id
        imports.import_audio(ctx, ME, ids[name], SOURCE, "source", language="de", warm=False)
        imports.import_audio(ctx, ME, ids[name], TARGET, "target", language="en", warm=False)
    return ids


def emotions_box(page):
    """The project's emotion list on the Project tab (inside a closed accordion at first)."""
    tab(page, "1 · Project")
    box = page.locator("#sere-emotions").get_by_role("textbox")
    if not box.count():
        page.get_by_text("Edit the open project").click()
    box.wait_for(timeout=30000)
    # a box in a just-opened accordion takes its value after it appears: wait for that value
    # before typing, or the value arriving afterwards replaces what was typed
    page.wait_for_function("el => el.value !== ''", arg=box.element_handle(), timeout=30000)
    return box


def _runs(session, project_id: int) -> list[TrainingRun]:
    return list(session.query(TrainingRun).filter(TrainingRun.project_id == project_id))


# ------------------------------------------------------------------------------ four browsers


@pytest.mark.browser
@pytest.mark.slow
def test_four_browser_sessions_at_once(tmp_path):
    four_browser_sessions(tmp_path)


def four_browser_sessions(tmp_path: Path) -> None:
    ctx = _context(tmp_path / "data", None)
    try:
        ids = _make_projects(ctx)
    finally:
        ctx.close()
    app = AppProcess(tmp_path / "data", tmp_path / "cache", train_steps=100_000)
    labeled: dict[str, list[tuple[str, str]]] = {"A": [], "B": []}  # what each saw and pressed
    with chromium() as browser:
        try:
            app.start()
            pages = {who: open_page(browser, app.url) for who in "ABCD"}
            a, b, c, d = pages.values()
            for page, name in ((a, "Shared"), (b, "Shared"), (c, "Carol's"), (d, "Dan's")):
                open_project(page, name)
                label_panel(page)

            # A and B on one project see different clips, and label what they see
            assert clip_on_screen(a) != clip_on_screen(b)
            labeled["A"].append((press_and_wait(a, "1"), "neutral"))
            labeled["B"].append((press_and_wait(b, "2"), "happy"))
            skipped = [press_and_wait(b, "s") for _ in range(3)]  # B's skips are B's queue alone
            assert clip_on_screen(b) not in skipped and clip_on_screen(a) != clip_on_screen(b)
            labeled["A"].append((press_and_wait(a, "3"), "sad"))
            labeled["B"].append((press_and_wait(b, "4"), "angry"))
            labeled["A"].append((press_and_wait(a, "1"), "neutral"))
            for page, keys in ((c, "12"), (d, "23")):  # meanwhile in the other projects
                for key in keys:
                    press_and_wait(page, key)

            # An emotion list being edited is A's alone until saved
            emotions_box(a).fill("neutral, happy, sad, angry, bored")
            b.reload()  # B's page asks the server for everything again
            b.wait_for_selector("#sere-project-line[data-ready]:has-text('Shared')", timeout=30000)
            for page, emotions in ((b, PROJECTS["Shared"]), (c, PROJECTS["Carol's"]), (d, PROJECTS["Dan's"])):
                assert emotions_box(page).input_value() == emotions
            assert emotions_box(a).input_value() == "neutral, happy, sad, angry, bored"

            # A and B press Train together: one run; the other is told once, and follows it
            for page in (a, b):
                tab(page, "4 · Train")
                page.wait_for_selector("#sere-train:not([disabled])", timeout=30000)
            for page in (a, b):  # within milliseconds (a click waits for its button; B's may be
                page.evaluate("document.querySelector('#sere-train').click()")  # disabled by then)
            for page in (a, b):
                page.wait_for_selector("#sere-progress-text[data-status=running]", timeout=60000)
                page.wait_for_selector("#sere-train[disabled]", timeout=30000)
                page.wait_for_selector("#sere-cancel:not([disabled])", timeout=30000)
            told = [who for who, page in (("A", a), ("B", b)) if page.get_by_text(BUSY).count()]
            assert len(told) <= 1, told  # the second press, if B's Start was still enabled, is told once
            assert a.get_attribute("#sere-progress-text", "data-run") == b.get_attribute("#sere-progress-text", "data-run")
            # C and D train their own projects meanwhile
            for page in (c, d):
                tab(page, "4 · Train")
                page.click("#sere-train")
                page.wait_for_selector("#sere-progress-text[data-status=queued], "
                                       "#sere-progress-text[data-status=running]", timeout=60000)
                assert not page.get_by_text(BUSY).count()
            for page in pages.values():
                assert not page.sere_errors, page.sere_errors
                assert not page.locator(".error").count()  # no red error badge anywhere
        finally:
            app.stop()

    engine = open_database(f"sqlite:///{tmp_path / 'data' / 'sere.db'}")
    try:
        with session_scope(engine) as s:
            names = {cl.id: cl.original_name for cl in s.query(Clip).filter(Clip.project_id == ids["Shared"])}
            by_name = {n: i for i, n in names.items()}
            stored = {names[i]: e for i, e in labels_for_project(s, ids["Shared"]).items()}
            assert stored == dict(labeled["A"] + labeled["B"])  # five clips, each with what was pressed on it
            assert len(stored) == 5
            sessions = {who: {e.session_id for n, _ in done for e in label_history(s, by_name[n])}
                        for who, done in labeled.items()}
            assert all(len(v) == 1 for v in sessions.values()) and sessions["A"] != sessions["B"]
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

        def person(name: str, emotion: str, mine: list[int]) -> None:
            caller = local_caller(name, f"tab-{name}")
            try:
                start.wait(timeout=30)
                for clip_id in mine:
                    labeling.label_clip(ctx, caller, ids["Shared"], shared, emotion)
                    labeling.label_clip(ctx, caller, ids["Shared"], clip_id, emotion)
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
                outcomes.append(training.start_training(ctx, ME, ids["Shared"]))
            except ActiveRunError as exc:
                outcomes.append(exc)

        _at_once(press_train, press_train)
        run_ids = [o for o in outcomes if isinstance(o, int)]
        refused = [o for o in outcomes if isinstance(o, ActiveRunError)]
        assert len(run_ids) == 1 and len(refused) == 1, outcomes
        assert BUSY in user_message(refused[0])
        with ctx.session() as s:
            carols = unlabeled_clip_ids(s, ids["Carol's"])
        for clip_id, emotion in zip(carols, ("calm", "excited")):
            labeling.label_clip(ctx, ME, ids["Carol's"], clip_id, emotion)
        other_run = training.start_training(ctx, ME, ids["Carol's"])  # another project is not blocked
        with ctx.session() as s:
            assert [r.id for r in _runs(s, ids["Shared"])] == run_ids
            assert [(r.id, r.status in ACTIVE_STATUSES) for r in _runs(s, ids["Carol's"])] == [(other_run, True)]
        for name in ("Shared", "Carol's"):
            training.cancel_training(ctx, ME, ids[name])
        assert ctx.jobs.wait(timeout=120)
    finally:
        ctx.close()
