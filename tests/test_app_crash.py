"""The running app killed with SIGKILL, then restarted on the same data: nothing confirmed is lost.

The real ``app.py`` runs in a child process and a real Chromium drives it. Scenario 1 kills it right
after a label was confirmed on the page; scenario 2 (SQLite and PostgreSQL) kills it in the middle
of a training run. After the restart every confirmed label is there, the interrupted run is failed
with an explanation, the project opens and a new run starts.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from app_server import (  # noqa: E402
    DEMO,
    AppProcess,
    chromium,
    come_back,
    label_panel,
    open_page,
    open_project,
    press_and_wait,
    tab,
)
from pg_server import db_url, postgres_admin_url, postgres_url  # noqa: E402,F401  (fixtures)

from sere_core.app import imports, labeling, projects, training  # noqa: E402
from sere_core.app.testing import local_caller  # noqa: E402
from sere_core.storage import (  # noqa: E402
    SHARED_WORKSPACE,
    Clip,
    RunStatus,
    TrainingRun,
    label_history,
    labels_for_project,
    list_projects,
    open_database,
    session_scope,
)


ME = local_caller()  # the shared workspace of a private server
SOURCE = sorted((DEMO / "source").glob("*.flac"))[:12]
TARGET = sorted((DEMO / "target").glob("*.flac"))[:8]
EMOTIONS = ["neutral", "happy", "sad", "angry"]


def _stored_labels(url: str, project: str) -> dict[str, str]:
    """``{clip file name: label}`` read straight from the database."""
    engine = open_database(url)
    try:
        with session_scope(engine) as s:
            pid = next(p.id for p in list_projects(s, workspace=SHARED_WORKSPACE) if p.name == project)
            labels = labels_for_project(s, pid)
            return {s.get(Clip, cid).original_name: emotion for cid, emotion in labels.items()}
    finally:
        engine.dispose()


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.browser
@pytest.mark.slow
def test_sigkill_right_after_a_label_is_confirmed(tmp_path):
    app = AppProcess(tmp_path / "data", tmp_path / "cache")
    url = f"sqlite:///{app.data_dir / 'sere.db'}"
    confirmed: dict[str, str] = {}
    with chromium() as browser:
        try:
            page = open_page(browser, app.start().url)
            page.get_by_label("Name", exact=True).fill("Kill while labeling")
            page.get_by_role("button", name="Create project").click()
            page.wait_for_selector("#sere-project-line:has-text('Kill while labeling')", timeout=30000)
            page.set_input_files("#sere-src-upload input[type=file]", [str(p) for p in SOURCE])
            page.wait_for_selector(f"text={len(SOURCE)} clips added", timeout=120000)
            label_panel(page)
            for key in "123412":
                confirmed[press_and_wait(page, key)] = EMOTIONS[int(key) - 1]
            app.kill()  # the page has shown the next clip: the label was confirmed
        finally:
            app.stop()
        assert len(confirmed) == 6
        assert _stored_labels(url, "Kill while labeling") == confirmed

        try:  # the restart: the same browser finds its open project again, with its labels
            page = come_back(page, app.start(same_port=True).url)
            # nobody chooses the project: the browser kept it (gr.BrowserState, a key fixed across restarts)
            page.wait_for_selector("#sere-project-line:has-text('Kill while labeling')", timeout=30000)
            label_panel(page)
            assert page.get_attribute("#sere-counts", "data-total") == "6"
            assert press_and_wait(page, "3") not in confirmed  # labeling goes on with the next clip
            assert not page.sere_errors, page.sere_errors
        finally:
            app.stop()
    assert len(_stored_labels(url, "Kill while labeling")) == 7


def _prepare_project(data_dir: Path, cache_dir: Path, database_url: str | None) -> None:
    """A project with source and target clips and 6 labels, made through the services."""
    from sere_core.app import AppContext, AppSettings

    ctx = AppContext.open(AppSettings(data_dir=data_dir, cache_dir=cache_dir, database_url=database_url,
                                      encoder="prosody"))
    try:
        summary = projects.create_project(ctx, ME, "Kill while training", EMOTIONS)
        source = imports.import_audio(ctx, ME, summary.id, SOURCE, "source", language="de", warm=False)
        imports.import_audio(ctx, ME, summary.id, TARGET, "target", language="en", warm=False)
        for clip_id, emotion in zip(source.clip_ids, EMOTIONS + EMOTIONS[:2]):
            labeling.label_clip(ctx, ME, summary.id, clip_id, emotion)
    finally:
        ctx.close()


def _run(url: str, run_id: int | None = None) -> TrainingRun | None:
    engine = open_database(url)
    try:
        with session_scope(engine) as s:
            query = s.query(TrainingRun).order_by(TrainingRun.id.desc())
            run = query.filter(TrainingRun.id == run_id).one() if run_id else query.first()
            s.expunge_all()
            return run
    finally:
        engine.dispose()


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.postgres
def test_sigkill_during_training_on_postgresql(tmp_path, postgres_url):
    _sigkill_during_training(tmp_path, postgres_url)


#: The app as a container runs it: pid 1 of a pid namespace of its own, at every start.
CONTAINER = ("unshare", "--pid", "--fork", "--mount-proc", "--kill-child")


@pytest.mark.browser
@pytest.mark.slow
def test_sigkill_during_training_on_sqlite_in_a_container(tmp_path):
    """The restarted app has the pid the killed one had: the run is still failed at once. Where no
    pid namespace can be made, the app runs as a plain process (the same test on SQLite)."""
    probe = subprocess.run([*CONTAINER, sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True)
    contained = probe.returncode == 0 and probe.stdout.strip() == "1"
    run = _sigkill_during_training(tmp_path, f"sqlite:///{tmp_path / 'data' / 'sere.db'}",
                                   CONTAINER if contained else ())
    assert not contained or run.worker_pid == 1


def _sigkill_during_training(tmp_path, db_url, prefix=()):
    """Kill the app inside a training run, restart it: the run is failed, a new one starts."""
    database_url = None if db_url.startswith("sqlite") else db_url
    url = db_url if database_url else f"sqlite:///{tmp_path / 'data' / 'sere.db'}"
    _prepare_project(tmp_path / "data", tmp_path / "cache", database_url)
    app = AppProcess(tmp_path / "data", tmp_path / "cache", train_steps=100_000, database_url=database_url,
                     prefix=prefix)
    with chromium() as browser:
        try:
            page = open_page(browser, app.start().url)
            open_project(page, "Kill while training")
            tab(page, "4 · Train")
            page.click("#sere-train")
            page.wait_for_selector("#sere-progress-text[data-status=running]", timeout=60000)
            deadline = time.monotonic() + 120
            while (run := _run(url)).step == 0 and time.monotonic() < deadline:  # inside the training loop
                time.sleep(0.3)
            assert run.status is RunStatus.RUNNING and run.step > 0
            children = app.children()
            app.kill()
            after_kill = _files(tmp_path / "data")
        finally:
            app.stop()
        # Training ran in a thread of the app: nothing it started outlives it or writes on.
        # (A namespace's processes die with its first one, which can take the kernel a moment.)
        deadline = time.monotonic() + 10
        while [pid for pid in children if Path(f"/proc/{pid}").exists()] and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]
        assert _files(tmp_path / "data") == after_kill
        assert _run(url, run.id).status is RunStatus.RUNNING  # nobody could record the end...

        try:
            page = open_page(browser, app.start().url)
            killed = _run(url, run.id)  # ...until the restart did
            assert killed.status is RunStatus.FAILED and "restarted during training" in killed.error
            open_project(page, "Kill while training")
            tab(page, "4 · Train")
            page.wait_for_selector("#sere-progress-text[data-status=failed]", timeout=30000)
            assert "restarted during training" in page.inner_text("#sere-progress-text")
            page.click("#sere-train")  # not blocked by the dead run
            page.wait_for_selector(f"#sere-progress-text:has-text('Run {run.id + 1}')", timeout=60000)
            page.wait_for_selector("#sere-progress-text[data-status=running]", timeout=60000)
            assert not page.sere_errors, page.sere_errors
        finally:
            app.stop()

    engine = open_database(url)
    try:
        with session_scope(engine) as s:
            pid = next(p.id for p in list_projects(s, workspace=SHARED_WORKSPACE) if p.name == "Kill while training")
            labels = labels_for_project(s, pid)
            assert sorted(labels.values()) == sorted(EMOTIONS + EMOTIONS[:2])
            assert all(len(label_history(s, cid)) == 1 for cid in labels)
    finally:
        engine.dispose()
    return run


def test_a_run_queued_by_an_app_that_died_is_failed_at_the_next_start(tmp_path, db_url):
    """Killed between queueing a run and starting it: the restart must not leave the project blocked."""
    from sere_core.app import AppContext, AppSettings
    from sere_core.storage import create_run

    database_url = None if db_url.startswith("sqlite") else db_url
    settings = AppSettings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", database_url=database_url)
    ctx = AppContext.open(settings)
    try:
        project = projects.create_project(ctx, ME, "Queued", EMOTIONS)
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        with ctx.session() as s:
            run_id = create_run(s, project.id, worker_pid=dead.pid).id
    finally:
        ctx.close()
    ctx = AppContext.open(settings)
    try:
        status = training.training_status(ctx, ME, project.id)
        assert status.run_id == run_id and status.status == "failed" and "restarted" in status.error
    finally:
        ctx.close()
