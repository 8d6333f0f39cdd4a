"""sere_core.storage against SQLite and (when a server can be started) PostgreSQL."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import IntegrityError

sys.path.insert(0, str(Path(__file__).parent))
from pg_server import db_url, postgres_admin_url, postgres_url  # noqa: E402,F401  (fixtures)

from sere_core.errors import (  # noqa: E402
    ActiveRunError,
    EmotionError,
    EmotionInUseError,
    InvalidDataError,
    NotFoundError,
    ProjectExistsError,
    RunStateError,
    SchemaVersionError,
    SereError,
    StorageError,
)
from sere_core.storage import (  # noqa: E402
    MIGRATIONS,
    SCHEMA_VERSION,
    Clip,
    ClipRole,
    Label,
    LabelEvent,
    Migration,
    Prediction,
    Project,
    RunStatus,
    SchemaVersion,
    StorageConfig,
    TrainingRun,
    active_run,
    add_clip,
    cancel_run,
    clips_for_project,
    create_project,
    create_run,
    delete_project,
    fail_run,
    finish_run,
    get_label,
    get_project,
    get_run,
    heartbeat,
    init_schema,
    label_counts,
    label_history,
    labels_for_project,
    latest_run,
    list_projects,
    mark_stale_runs_failed,
    open_database,
    ClipFilter,
    clip_facets,
    prediction_page,
    predictions_for_run,
    remove_label,
    save_predictions,
    save_snapshot,
    schema_version,
    session_factory,
    session_scope,
    set_label,
    snapshots_for_run,
    start_run,
    Undone,
    ensure_workspace,
    undo_last,
    owned_clip,
    owned_project,
    owned_run,
    workspace_usage,
    take_lease,
    leased_by_others,
    release_leases,
    orphan_recordings,
    referenced_audio_ids,
    delete_workspace,
    idle_workspaces,
    WorkspaceKind,
    update_emotions,
    update_progress,
)
from sere_core.storage import labels as labels_module  # noqa: E402
from sere_core.storage import projects as projects_module  # noqa: E402
from sere_core.storage import runs as runs_module  # noqa: E402
from sere_core.storage.models import utcnow  # noqa: E402

EMOTIONS = ["angry", "happy", "neutral", "sad"]
WS = "local"  # the shared workspace of a private server


def _ws(s, key=WS):
    return ensure_workspace(s, key, "shared" if key == WS else "anonymous").id


@pytest.fixture
def engine(db_url):
    engine = open_database(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def factory(engine):
    return session_factory(engine)


def _project(factory, name="Yoruba pilot", emotions=EMOTIONS, n_clips=2):
    with session_scope(factory) as s:
        project = create_project(s, name, emotions, "whisper-base", source_language="en", workspace=_ws(s))
        clip_ids = [
            add_clip(
                s, project.id, audio_id=f"{i:064x}", original_name=f"clip{i}.wav", duration_s=2.0,
                role="target", language="yo", speaker=f"spk{i % 2}",
            ).id
            for i in range(n_clips)
        ]
        return project.id, clip_ids


# ---------------------------------------------------------------------------------- database


def test_sqlite_default_location_and_pragmas(tmp_path, monkeypatch):
    monkeypatch.setenv("SERE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SERE_DATABASE_URL", raising=False)
    engine = open_database()
    try:
        assert engine.url.database == str(tmp_path / "data" / "sere.db")
        assert (tmp_path / "data" / "sere.db").is_file()
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert schema_version(engine) == SCHEMA_VERSION
    finally:
        engine.dispose()


def test_database_url_from_env_and_normalization(tmp_path, monkeypatch):
    other = tmp_path / "elsewhere.db"
    monkeypatch.setenv("SERE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SERE_DATABASE_URL", f"sqlite:///{other}")
    engine = open_database()
    engine.dispose()
    assert other.is_file() and not (tmp_path / "data" / "sere.db").exists()
    config = StorageConfig.from_env(database_url="postgres://u:pw@db.example/sere")
    assert config.database_url == "postgresql+psycopg://u:pw@db.example/sere"
    assert not config.is_sqlite


def test_unreachable_or_malformed_database_is_a_storage_error(tmp_path):
    with pytest.raises(StorageError, match="not a database URL"):
        open_database("not a url")
    # A PostgreSQL socket folder where no server listens; the password must not leak.
    with pytest.raises(StorageError, match="Cannot open the database") as info:
        open_database(f"postgresql+psycopg://sere:hunter2@/sere?host={tmp_path}&connect_timeout=2")
    assert "hunter2" not in str(info.value)


def test_project_survives_restart_with_utc_times(db_url):
    engine = open_database(db_url)
    project_id, clip_ids = _project(session_factory(engine))
    with session_scope(engine) as s:
        set_label(s, clip_ids[0], "sad", author="ade")
    engine.dispose()

    engine = open_database(db_url)  # a restart: new engine, schema already current
    try:
        with session_scope(engine) as s:
            project = get_project(s, project_id)
            assert project.emotions == EMOTIONS  # order kept
            assert project.source_language == "en"
            assert project.created_at.tzinfo is not None
            assert project.created_at.utcoffset() == timedelta(0)
            assert abs(utcnow() - project.created_at) < timedelta(minutes=5)
            assert [p.name for p in list_projects(s, workspace=WS)] == ["Yoruba pilot"]
            assert get_label(s, clip_ids[0]) == "sad"
            assert [c.id for c in clips_for_project(s, project_id, role=ClipRole.TARGET)] == clip_ids
            assert clips_for_project(s, project_id, role="source") == []
    finally:
        engine.dispose()


def test_session_scope_rolls_back_on_error(factory):
    with pytest.raises(RuntimeError):
        with session_scope(factory) as s:
            create_project(s, "doomed", EMOTIONS, "prosody", workspace=_ws(s))
            raise RuntimeError("handler failed")
    with session_scope(factory) as s:
        assert list_projects(s, workspace=WS) == []


# ---------------------------------------------------------------------------------- projects


@pytest.mark.parametrize(
    "emotions, fragment",
    [
        (["happy"], "2 to 10"),
        ([f"e{i}" for i in range(11)], "2 to 10"),
        (["happy", "  "], "empty"),
        (["happy", "Happy"], "listed twice"),
        ("happy,sad", "list of names"),
        (["happy", None], "empty"),
    ],
)
def test_emotion_validation(tmp_path, emotions, fragment):
    # Pure validation, the same on every backend: SQLite only, to keep the suite fast.
    engine = open_database(f"sqlite:///{tmp_path / 'sere.db'}")
    with session_scope(engine) as s:
        with pytest.raises(EmotionError, match=fragment) as info:
            create_project(s, "p", emotions, "prosody", workspace=_ws(s))
        assert isinstance(info.value, SereError) and isinstance(info.value, ValueError)
        assert list_projects(s, workspace=WS) == []
    engine.dispose()


def test_project_names_are_unique_and_errors_leave_session_usable(factory):
    with session_scope(factory) as s:
        create_project(s, "pilot", ["happy", "sad"], "prosody", workspace=_ws(s))
    with session_scope(factory) as s:
        with pytest.raises(ProjectExistsError, match="pilot"):
            create_project(s, " pilot ", ["happy", "sad"], "prosody", workspace=_ws(s))
        create_project(s, "second", [" happy ", "sad"], "prosody", workspace=_ws(s))  # same transaction still works
    with session_scope(factory) as s:
        assert [(p.name, p.emotions) for p in list_projects(s, workspace=WS)] == [
            ("pilot", ["happy", "sad"]),
            ("second", ["happy", "sad"]),
        ]
        with pytest.raises(NotFoundError):
            get_project(s, 9999)


def test_update_emotions_refuses_removing_used_emotion(factory):
    project_id, clip_ids = _project(factory)
    with session_scope(factory) as s:
        set_label(s, clip_ids[0], "angry")
    with session_scope(factory) as s:
        with pytest.raises(EmotionInUseError, match=r"'angry' \(1 clips\)"):
            update_emotions(s, project_id, ["happy", "neutral", "sad"])
        project = update_emotions(s, project_id, ["sad", "angry", "calm"])  # reorder, add, drop unused
        assert project.emotions == ["sad", "angry", "calm"]
    with session_scope(factory) as s:
        assert get_project(s, project_id).emotions == ["sad", "angry", "calm"]
        assert label_counts(s, project_id) == {"sad": 0, "angry": 1, "calm": 0}


def test_delete_project_cascades_and_waits_for_training(factory):
    project_id, clip_ids = _project(factory)
    with session_scope(factory) as s:
        set_label(s, clip_ids[0], "happy")
        run = create_run(s, project_id, {"epochs": 3})
        run_id = run.id
    with session_scope(factory) as s:
        with pytest.raises(ActiveRunError, match="cancel"):
            delete_project(s, project_id)
        cancel_run(s, run_id)
        prediction = {"emotion": "happy", "confidence": 0.9, "probabilities": {"happy": 0.9}, "highlights": []}
        save_predictions(s, run_id, {clip_ids[0]: prediction})
        delete_project(s, project_id)
    with session_scope(factory) as s:
        for model in (Project, Clip, Label, LabelEvent, TrainingRun, Prediction):
            assert s.scalar(select(func.count()).select_from(model)) == 0, model.__name__


# ------------------------------------------------------------------------------------- clips


def test_add_clip_is_idempotent_per_project_audio_role(factory):
    project_id, _ = _project(factory, n_clips=0)
    kwargs = dict(audio_id="a" * 64, original_name="long.wav", duration_s=3.0, language="yo")
    with session_scope(factory) as s:
        first = add_clip(s, project_id, role="target", start_s=1.0, **kwargs)
        again = add_clip(s, project_id, role=ClipRole.TARGET, **{**kwargs, "original_name": "renamed.wav"})
        source = add_clip(s, project_id, role="source", **kwargs)
        assert again.id == first.id and again.original_name == "long.wav"
        assert source.id != first.id
        assert (first.start_s, first.end_s) == (1.0, 4.0)
    with session_scope(factory) as s:
        assert len(clips_for_project(s, project_id)) == 2
        with pytest.raises(InvalidDataError, match="duration_s"):
            add_clip(s, project_id, audio_id="b" * 64, original_name="x.wav", duration_s=0.0, role="target")
        with pytest.raises(InvalidDataError, match="role"):
            add_clip(s, project_id, audio_id="b" * 64, original_name="x.wav", duration_s=1.0, role="other")
        with pytest.raises(InvalidDataError, match="duration_s"):
            add_clip(s, project_id, audio_id="b" * 64, original_name="x.wav", duration_s=math.nan, role="target")
    # The database itself refuses a duplicate, not only add_clip.
    with pytest.raises(IntegrityError):
        with session_scope(factory) as s:
            s.add(Clip(project_id=project_id, audio_id="a" * 64, original_name="dup.wav", duration_s=1.0,
                       start_s=0.0, end_s=1.0, role=ClipRole.TARGET))
            s.flush()


def test_add_clip_racing_itself_returns_one_clip(factory, monkeypatch):
    """Two handlers adding the same upload at once (a double click): one clip, no error."""
    project_id, _ = _project(factory, n_clips=0)
    barrier = threading.Barrier(2)
    results: list[int] = []
    errors: list[BaseException] = []
    check_number = projects_module.finite_float

    def slow_check(*args, **kwargs):  # runs between "not there yet" and the insert
        time.sleep(0.2)
        return check_number(*args, **kwargs)

    monkeypatch.setattr(projects_module, "finite_float", slow_check)

    def add() -> None:
        try:
            barrier.wait(timeout=10)
            with session_scope(factory) as s:
                results.append(
                    add_clip(s, project_id, audio_id="c" * 64, original_name="c.wav", duration_s=1.0, role="target").id
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert len(results) == 2 and results[0] == results[1]
    with session_scope(factory) as s:
        assert [c.id for c in clips_for_project(s, project_id)] == results[:1]


# -------------------------------------------------------------------------------- workspaces


def test_another_workspaces_ids_answer_not_found(factory):
    """A project, clip or run of another workspace is found exactly like one that does not exist."""
    project_id, (clip, _) = _project(factory)
    with session_scope(factory) as s:
        run_id = create_run(s, project_id).id
        theirs = create_project(s, "Yoruba pilot", EMOTIONS, "prosody", workspace=_ws(s, "anon:b")).id
    with session_scope(factory) as s:
        assert owned_project(s, WS, project_id).id == project_id
        assert owned_clip(s, WS, clip, project_id).id == clip
        assert owned_run(s, WS, run_id, project_id).id == run_id
        assert owned_project(s, WS, project_id, lock=True).id == project_id
        for lookup, args in ((owned_project, (project_id,)), (owned_clip, (clip,)), (owned_run, (run_id,))):
            with pytest.raises(NotFoundError) as foreign:
                lookup(s, "anon:b", *args)
            with pytest.raises(NotFoundError) as missing:
                lookup(s, "anon:b", 10**6)
            assert str(foreign.value).replace(str(args[0]), "N") == str(missing.value).replace(str(10**6), "N")
        with pytest.raises(NotFoundError):
            owned_clip(s, WS, clip, theirs)  # a clip of my project, asked for as one of another
        assert [p.id for p in list_projects(s, workspace="anon:b")] == [theirs]
        assert [p.id for p in list_projects(s, workspace=WS)] == [project_id]
        assert list_projects(s, workspace="anon:nobody") == []


def test_workspace_usage_and_expiry(factory):
    project_id, clips = _project(factory, n_clips=3)
    with session_scope(factory) as s:
        create_run(s, project_id)
        usage = workspace_usage(s, WS)
        assert (usage.projects, usage.clips, usage.active_runs) == (1, 3, 1)
        assert workspace_usage(s, "anon:nobody").projects == 0
        ws = _ws(s, "anon:idle")
        create_project(s, "idle one", EMOTIONS, "prosody", workspace=ws)
        later = utcnow() + timedelta(days=8)
        assert [w.key for w in idle_workspaces(s, WorkspaceKind.ANONYMOUS, later)] == ["anon:idle"]
        assert idle_workspaces(s, WorkspaceKind.SHARED, later) == []  # training: never idle
        assert idle_workspaces(s, WorkspaceKind.ANONYMOUS, utcnow() - timedelta(days=1)) == []
        delete_workspace(s, "anon:idle")
        assert list_projects(s, workspace="anon:idle") == []
        assert referenced_audio_ids(s, [f"{0:064x}", "f" * 64]) == {f"{0:064x}"}
        assert orphan_recordings(s) == []


def test_leases_keep_a_clip_for_one_tab(factory):
    project_id, (a, b) = _project(factory)
    with session_scope(factory) as s:
        take_lease(s, project_id, a, "tab-1")
        assert leased_by_others(s, project_id, "tab-2") == {a}
        assert leased_by_others(s, project_id, "tab-1") == set()
        take_lease(s, project_id, b, "tab-1")  # a tab holds one clip: a is free again
        assert leased_by_others(s, project_id, "tab-2") == {b}
        take_lease(s, project_id, b, "tab-2")  # taking a held clip moves it (the caller decides)
        assert leased_by_others(s, project_id, "tab-1") == {b}
        take_lease(s, project_id, a, "tab-3", now=utcnow() - timedelta(hours=1))  # long expired
        assert leased_by_others(s, project_id, "tab-1") == {b}
        release_leases(s, "tab-2")
        assert leased_by_others(s, project_id, "tab-1") == set()


# ------------------------------------------------------------------------------------ labels


def test_set_undo_and_history(factory):
    project_id, (clip, other) = _project(factory)
    with session_scope(factory) as s:
        set_label(s, clip, "happy", author="ade", session_id="tab-1")
        set_label(s, clip, "sad", author="ade", session_id="tab-1")
        set_label(s, other, "angry", author="bola")
        with pytest.raises(EmotionError, match="'joy' is not an emotion"):
            set_label(s, clip, "joy")
    with session_scope(factory) as s:
        assert get_label(s, clip) == "sad"
        assert undo_last(s, project_id, "ade", session_id="tab-2") == Undone(clip, "happy", kept=False)
        assert get_label(s, clip) == "happy"
        assert undo_last(s, project_id, "ade") == Undone(clip, None, kept=False)  # back to unlabeled
        assert get_label(s, clip) is None
        assert undo_last(s, project_id, "ade") is None  # nothing of ade's left to undo
        assert get_label(s, other) == "angry"  # bola's label was never touched
        history = label_history(s, clip)
        assert [(e.action.value, e.emotion, e.previous_emotion) for e in history] == [
            ("set", "happy", None),
            ("set", "sad", "happy"),
            ("undo", "happy", "sad"),
            ("undo", None, "happy"),
        ]
        assert history[2].reverts_event_id == history[1].id and history[2].author == "ade"
        assert history[2].session_id == "tab-2" and history[0].session_id == "tab-1"
        assert all(e.created_at.tzinfo is not None for e in history)
    with session_scope(factory) as s:
        set_label(s, clip, "neutral", author="ade")
        assert remove_label(s, clip, author="ade").previous_emotion == "neutral"
        assert remove_label(s, clip) is None  # nothing to remove, nothing recorded
        assert undo_last(s, project_id, "ade").emotion == "neutral"  # undo the removal
        assert labels_for_project(s, project_id) == {clip: "neutral", other: "angry"}
        assert label_counts(s, project_id) == {"angry": 1, "happy": 0, "neutral": 1, "sad": 0}
        assert len(label_history(s, clip)) == 7


def test_undo_reverts_my_change_never_anothers(factory):
    """Ade labels a clip, Bola relabels it: Ade's undo marks Ade's change undone and keeps Bola's
    label; Bola's own undo then restores Ade's."""
    project_id, (clip, other) = _project(factory)
    with session_scope(factory) as s:
        set_label(s, clip, "happy", author="ade")
        set_label(s, other, "sad", author="ade")
        set_label(s, clip, "angry", author="bola")
    with session_scope(factory) as s:
        assert undo_last(s, project_id, "ade") == Undone(other, None, kept=False)  # my newest first
        assert undo_last(s, project_id, "ade") == Undone(clip, "angry", kept=True)
        assert get_label(s, clip) == "angry"
        assert undo_last(s, project_id, "ade") is None
        assert undo_last(s, project_id, "bola") == Undone(clip, "happy", kept=False)
        assert get_label(s, clip) == "happy"
    other_project, (foreign, _) = _project(factory, name="other")
    with session_scope(factory) as s:
        set_label(s, foreign, "sad", author="chi")
        assert undo_last(s, project_id, "chi") is None  # another project's changes are not this one's


def test_undo_refuses_to_restore_removed_emotion(factory):
    project_id, (clip, _) = _project(factory)
    with session_scope(factory) as s:
        set_label(s, clip, "angry", author="ade")
        set_label(s, clip, "sad", author="ade")
        update_emotions(s, project_id, ["happy", "neutral", "sad"])
    with session_scope(factory) as s:
        with pytest.raises(EmotionError, match="no longer an emotion"):
            undo_last(s, project_id, "ade")
        assert get_label(s, clip) == "sad"


def test_two_sessions_label_one_clip_last_write_wins(factory):
    _, (clip, _) = _project(factory)
    alice, bob = factory(), factory()
    try:
        set_label(alice, clip, "happy", author="alice")
        alice.commit()
        set_label(bob, clip, "sad", author="bob")
        bob.commit()
    finally:
        alice.close()
        bob.close()
    with session_scope(factory) as s:
        assert get_label(s, clip) == "sad"
        assert [(e.author, e.emotion, e.previous_emotion) for e in label_history(s, clip)] == [
            ("alice", "happy", None),
            ("bob", "sad", "happy"),
        ]


def test_concurrent_labeling_from_two_threads_keeps_both(factory, monkeypatch):
    _, (clip, _) = _project(factory)
    barrier = threading.Barrier(2)
    read_current = labels_module._current

    def slow_read(session, clip_id):  # widen the read-then-write window a race would need
        found = read_current(session, clip_id)
        time.sleep(0.2)
        return found

    monkeypatch.setattr(labels_module, "_current", slow_read)
    errors: list[BaseException] = []

    def label(author: str, emotion: str) -> None:
        try:
            barrier.wait(timeout=10)
            with session_scope(factory) as s:
                set_label(s, clip, emotion, author=author)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=label, args=args) for args in (("alice", "happy"), ("bob", "sad"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    with session_scope(factory) as s:
        first, second = label_history(s, clip)
        assert {first.author, second.author} == {"alice", "bob"}
        assert first.previous_emotion is None
        assert second.previous_emotion == first.emotion  # serialized: the second saw the first
        assert get_label(s, clip) == second.emotion  # last write wins


# -------------------------------------------------------------------------------------- runs


def test_one_active_run_per_project(factory, monkeypatch):
    project_id, _ = _project(factory)
    other_id, _ = _project(factory, name="other", n_clips=0)
    with session_scope(factory) as s:
        run = create_run(s, project_id, {"epochs": 5})
        assert run.status is RunStatus.QUEUED
        create_run(s, other_id)  # other projects are independent
    with session_scope(factory) as s:
        with pytest.raises(ActiveRunError, match="already training"):
            create_run(s, project_id)
        assert active_run(s, project_id).id == run.id

    # The database enforces it too, for writers that skip the check...
    with pytest.raises(IntegrityError):
        with session_scope(factory) as s:
            s.add(TrainingRun(project_id=project_id, status=RunStatus.RUNNING, config={}, losses=[], metrics={}))
            s.flush()
    # ...and create_run turns a lost race into the typed error.
    monkeypatch.setattr(runs_module, "active_run", lambda session, project_id: None)
    with session_scope(factory) as s:
        with pytest.raises(ActiveRunError):
            create_run(s, project_id)
    monkeypatch.undo()

    with session_scope(factory) as s:
        start_run(s, run.id)
        finish_run(s, run.id, metrics={"uar": 0.61})
        follow_up = create_run(s, project_id)  # allowed once the first ended
        assert latest_run(s, project_id).id == follow_up.id
        assert s.scalar(select(func.count()).where(TrainingRun.project_id == project_id)) == 2


def test_run_lifecycle_progress_and_cancel(factory):
    project_id, _ = _project(factory)
    with session_scope(factory) as s:
        run_id = create_run(s, project_id, {"lr": np.float32(0.5), "seed": np.int64(3)}).id
    with session_scope(factory) as s:
        run = start_run(s, run_id, total_steps=10)
        assert run.status is RunStatus.RUNNING and run.worker_pid > 0 and run.worker_host
        assert update_progress(s, run_id, step=4, losses={"tric": 0.5, "ce": float("nan")})
        with pytest.raises(RunStateError, match="only a queued run"):
            start_run(s, run_id)
    with session_scope(factory) as s:
        run = get_run(s, run_id)
        assert run.config == {"lr": 0.5, "seed": 3}
        assert (run.step, run.progress) == (4, pytest.approx(0.4))
        assert run.losses == [{"step": 4, "tric": 0.5, "ce": None}]  # NaN stored as null
        cancel_run(s, run_id)
    with session_scope(factory) as s:
        assert update_progress(s, run_id, step=5) is False  # the worker's cue to stop
        with pytest.raises(RunStateError, match="cancelled"):
            finish_run(s, run_id)
        run = fail_run(s, run_id, "worker crashed after cancel")
        assert run.status is RunStatus.CANCELLED and run.error is None and run.step == 4
        assert run.finished_at is not None

    with session_scope(factory) as s:
        assert heartbeat(s, run_id) is False  # cancelled: no more heartbeats either

    with session_scope(factory) as s:
        failing = create_run(s, project_id)
        start_run(s, failing.id)
        fail_run(s, failing.id, "CUDA out of memory")
    with session_scope(factory) as s:
        run = get_run(s, failing.id)
        assert (run.status, run.error) == (RunStatus.FAILED, "CUDA out of memory")
        assert active_run(s, project_id) is None


def test_loss_history_stays_bounded(factory, monkeypatch):
    monkeypatch.setattr(runs_module, "MAX_LOSS_POINTS", 4)
    project_id, _ = _project(factory)
    with session_scope(factory) as s:
        run_id = create_run(s, project_id).id
        start_run(s, run_id, total_steps=6)
        before = get_run(s, run_id).heartbeat_at
        for step in range(1, 7):
            assert update_progress(s, run_id, step=step, losses={"tric": 1.0 / step})
        assert heartbeat(s, run_id, now=before + timedelta(seconds=30))
    with session_scope(factory) as s:
        run = get_run(s, run_id)
        steps = [point["step"] for point in run.losses]
        assert len(steps) <= 4 and steps[-1] == 6 and steps == sorted(steps)
        assert run.progress == pytest.approx(1.0)
        assert run.heartbeat_at == before + timedelta(seconds=30)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_mark_stale_runs_failed(factory):
    ids = {}
    for name in ("silent", "dead", "alive", "queued_old", "done"):
        project_id, _ = _project(factory, name=name, n_clips=0)
        with session_scope(factory) as s:
            ids[name] = create_run(s, project_id).id
    t0 = utcnow()
    with session_scope(factory) as s:
        start_run(s, ids["silent"], worker_pid=_dead_pid(), worker_host="another-host", now=t0 - timedelta(hours=1))
        start_run(s, ids["dead"], worker_pid=_dead_pid(), now=t0)
        start_run(s, ids["alive"], now=t0)  # this process, fresh heartbeat
        get_run(s, ids["queued_old"]).heartbeat_at = t0 - timedelta(hours=2)
        start_run(s, ids["done"], worker_pid=_dead_pid(), now=t0 - timedelta(hours=3))
        finish_run(s, ids["done"], now=t0 - timedelta(hours=3))
    with session_scope(factory) as s:
        failed = mark_stale_runs_failed(s, now=t0 + timedelta(seconds=5), stale_after_s=600)
        assert sorted(r.id for r in failed) == sorted([ids["silent"], ids["dead"], ids["queued_old"]])
    with session_scope(factory) as s:
        for name in ("silent", "dead", "queued_old"):
            run = get_run(s, ids[name])
            assert run.status is RunStatus.FAILED
            assert "app was restarted during training" in run.error
            assert run.finished_at is not None
        assert "is gone" in get_run(s, ids["dead"]).error
        assert get_run(s, ids["alive"]).status is RunStatus.RUNNING
        assert get_run(s, ids["done"]).status is RunStatus.SUCCEEDED
        assert mark_stale_runs_failed(s, now=t0 + timedelta(seconds=6)) == []  # nothing left to fail


def test_a_run_of_an_earlier_process_with_this_pid_is_failed(factory):
    """A restarted container's app is pid 1 again: the run that the killed pid 1 was training is
    not this process's, although its pid is (issue 14: it stayed "running" for 600 s)."""
    from sere_core.storage import runs

    ids = {}
    for name in ("earlier", "mine"):
        project_id, _ = _project(factory, name=name, n_clips=0)
        with session_scope(factory) as s:
            ids[name] = create_run(s, project_id, worker_pid=os.getpid()).id
    with session_scope(factory) as s:
        start_run(s, ids["earlier"])
        start_run(s, ids["mine"])
        assert get_run(s, ids["mine"]).worker_instance == runs.PROCESS_INSTANCE
        get_run(s, ids["earlier"]).worker_instance = "0" * 32  # what the killed process wrote
    with session_scope(factory) as s:
        failed = mark_stale_runs_failed(s)
        assert [r.id for r in failed] == [ids["earlier"]]
        assert "earlier instance of this app" in get_run(s, ids["earlier"]).error
        assert get_run(s, ids["mine"]).status is RunStatus.RUNNING


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process start times are read from /proc")
def test_a_run_whose_pid_another_program_got_is_failed(factory):
    """The killed worker's pid now belongs to a program that started after the run: the run is
    abandoned, although that pid is alive and the heartbeat is only a minute old."""
    ids = {}
    for name in ("reused", "alive"):
        project_id, _ = _project(factory, name=name, n_clips=0)
        with session_scope(factory) as s:
            ids[name] = create_run(s, project_id).id
    t0 = utcnow()
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with session_scope(factory) as s:
            start_run(s, ids["reused"], worker_pid=worker.pid, now=t0 - timedelta(seconds=60))
            start_run(s, ids["alive"], worker_pid=worker.pid, now=t0 + timedelta(seconds=1))
        with session_scope(factory) as s:
            failed = mark_stale_runs_failed(s, now=t0 + timedelta(seconds=2))
            assert [r.id for r in failed] == [ids["reused"]]
            assert "another program has its pid now" in get_run(s, ids["reused"]).error
            assert get_run(s, ids["alive"]).status is RunStatus.RUNNING
    finally:
        worker.kill()
        worker.wait()


# ------------------------------------------------------------------------- predictions & snapshots


@dataclass(frozen=True)
class _MethodPrediction:  # the shape of sere_core.method's Prediction
    emotion: str
    confidence: float
    probabilities: dict
    highlights: list


def test_prediction_page_sorts_cuts_and_filters_in_the_database(factory):
    """The review table's query, on SQLite and PostgreSQL: NULLS LAST, ties by clip id, a total."""
    project_id, c = _project(factory, n_clips=5)
    with session_scope(factory) as s:
        run_id = create_run(s, project_id).id
        confidence = {c[0]: 0.9, c[1]: 0.2, c[2]: 0.5, c[3]: 0.2}  # c[4] has no prediction
        save_predictions(s, run_id, {k: {"emotion": "happy", "confidence": v, "probabilities": {},
                                         "highlights": [[0.1, 0.2]]} for k, v in confidence.items()})
        set_label(s, c[2], "sad")
    with session_scope(factory) as s:
        rows, total = prediction_page(s, run_id)
        assert total == 5 and [r.clip_id for r in rows] == [c[1], c[3], c[2], c[0], c[4]]
        assert (rows[-1].emotion, rows[-1].confidence, rows[-1].highlights) == (None, None, [])
        assert rows[2].label == "sad" and rows[0].highlights == [[0.1, 0.2]]
        rows, _ = prediction_page(s, run_id, descending=True)
        assert [r.clip_id for r in rows] == [c[0], c[2], c[1], c[3], c[4]]
        page, total = prediction_page(s, run_id, offset=1, limit=2)
        assert total == 5 and [r.clip_id for r in page] == [c[3], c[2]]
        todo, total = prediction_page(s, run_id, unlabeled_only=True)
        assert total == 4 and c[2] not in [r.clip_id for r in todo]
        with pytest.raises(InvalidDataError, match="order must be one of"):
            prediction_page(s, run_id, order="loudness")


def test_the_clip_browser_filters_in_the_database(factory):
    """Every filter of the clip browser, on SQLite and PostgreSQL, also before any training."""
    project_id, c = _project(factory, n_clips=6)
    with session_scope(factory) as s:
        rows, total = prediction_page(s, None, project_id=project_id, order="name")
        assert total == 6 and all(r.emotion is None and r.role == "target" and r.language == "yo" for r in rows)
        run_id = create_run(s, project_id).id
        save_predictions(s, run_id, {k: {"emotion": "happy" if i % 2 else "sad", "confidence": 0.1 + 0.15 * i,
                                         "probabilities": {}, "highlights": []} for i, k in enumerate(c[:5])})
        set_label(s, c[0], "sad")
    with session_scope(factory) as s:
        def ids(**where):
            rows, total = prediction_page(s, run_id, order="name", where=ClipFilter(**where))
            assert total == len(rows)
            return [r.clip_id for r in rows]

        assert ids() == c
        assert ids(predicted="happy") == [c[1], c[3]]
        assert ids(labeled=True) == [c[0]] and ids(labeled=False) == c[1:]
        assert ids(min_confidence=0.3, max_confidence=0.6) == [c[2], c[3]]  # 0.4 and 0.55
        assert ids(speaker="spk1") == [c[1], c[3], c[5]] and ids(language="xx") == []
        assert ids(role="source") == [] and ids(role="target") == c
        assert ids(name="CLIP3") == [c[3]]  # any case
        assert ids(name="_") == [] and ids(name="%") == []  # LIKE wildcards are taken literally
        assert clip_facets(s, project_id) == {"language": ["yo"], "speaker": ["spk0", "spk1"]}


def test_predictions_and_snapshots_round_trip(factory):
    project_id, clip_ids = _project(factory, n_clips=3)
    other_project, other_clips = _project(factory, name="other", n_clips=1)
    with session_scope(factory) as s:
        run_id = create_run(s, project_id).id
        preds = {
            clip_ids[0]: _MethodPrediction("happy", 0.7, {"happy": 0.7, "sad": 0.3}, [(0.5, 1.25)]),
            clip_ids[1]: {
                "emotion": "sad",
                "confidence": np.float32(0.5),
                "probabilities": {"sad": 0.5, "happy": 0.5},
                "highlights": [],
            },
        }
        assert save_predictions(s, run_id, preds) == 2
        # Saving again replaces rather than duplicates.
        save_predictions(s, run_id, {clip_ids[1]: _MethodPrediction("happy", 0.9, {"happy": 0.9, "sad": 0.1}, [])})
        with pytest.raises(InvalidDataError, match="not in the project"):
            save_predictions(s, run_id, {other_clips[0]: preds[clip_ids[0]]})
        with pytest.raises(InvalidDataError, match="confidence"):
            save_predictions(s, run_id, {clip_ids[2]: {**preds[clip_ids[1]], "confidence": 1.5}})
        # an ensemble's agreement is optional, a share (rounding above 1 is 1)
        agreed = {"emotion": "happy", "confidence": 0.9, "probabilities": {"happy": 0.9, "sad": 0.1},
                  "highlights": [], "agreement": 1 + 1e-7}
        save_predictions(s, run_id, {clip_ids[1]: agreed})
        with pytest.raises(InvalidDataError, match="agreement of clip"):
            save_predictions(s, run_id, {clip_ids[2]: {**agreed, "agreement": 1.5}})

        rng = np.random.default_rng(0)
        frames = [rng.normal(size=(3, 2)).astype(np.float32) for _ in range(4)]
        for index, coords in enumerate(frames):
            save_snapshot(s, run_id, index, step=index * 10, clip_ids=clip_ids, coords=coords,
                          prototypes=np.eye(2, dtype=np.float32) * index)
        save_snapshot(s, run_id, 3, step=31, clip_ids=clip_ids[::-1], coords=frames[3][::-1])  # replaced
        with pytest.raises(InvalidDataError, match=r"shape \[3, 2\]"):
            save_snapshot(s, run_id, 9, step=0, clip_ids=clip_ids, coords=np.zeros((2, 2)))
        with pytest.raises(InvalidDataError, match="NaN"):
            save_snapshot(s, run_id, 9, step=0, clip_ids=clip_ids, coords=np.full((3, 2), np.nan))

    with session_scope(factory) as s:
        stored = predictions_for_run(s, run_id)
        assert list(stored) == clip_ids[:2]
        first = stored[clip_ids[0]]
        assert (first.emotion, first.confidence, first.highlights) == ("happy", pytest.approx(0.7), [[0.5, 1.25]])
        assert first.probabilities == {"happy": pytest.approx(0.7), "sad": pytest.approx(0.3)}
        assert stored[clip_ids[1]].emotion == "happy"
        assert first.agreement is None and stored[clip_ids[1]].agreement == 1.0
        assert s.scalar(select(func.count()).select_from(Prediction)) == 2

        snaps = snapshots_for_run(s, run_id)
        assert [(sn.index, sn.step) for sn in snaps] == [(0, 0), (1, 10), (2, 20), (3, 31)]
        for sn, coords in zip(snaps[:3], frames[:3], strict=True):
            assert sn.clip_ids == tuple(clip_ids)
            assert sn.coords.dtype == np.float32 and sn.coords.shape == (3, 2)
            np.testing.assert_array_equal(sn.coords, coords)  # float32 round trip is exact
        np.testing.assert_array_equal(snaps[2].prototypes, np.eye(2) * 2)
        assert snaps[3].clip_ids == tuple(clip_ids[::-1]) and snaps[3].prototypes is None
        np.testing.assert_array_equal(snaps[3].coords, frames[3][::-1])


# -------------------------------------------------------------------------------- migrations


def _index_names(engine, table):
    return {ix["name"] for ix in inspect(engine).get_indexes(table)}


def test_fresh_database_runs_every_migration_once(db_url):
    engine = open_database(db_url, migrate=False)
    try:
        assert schema_version(engine) == 0
        assert init_schema(engine) == SCHEMA_VERSION == len(MIGRATIONS)
        assert init_schema(engine) == SCHEMA_VERSION  # a second start changes nothing
        with session_scope(engine) as s:
            assert s.scalars(select(SchemaVersion.version).order_by(SchemaVersion.version)).all() == list(
                range(1, SCHEMA_VERSION + 1)
            )
        # Every migration is idempotent on its own.
        with engine.begin() as conn:
            for migration in MIGRATIONS:
                migration.apply(conn)
        assert "uq_training_runs_one_active_per_project" in _index_names(engine, "training_runs")
    finally:
        engine.dispose()


def test_upgrade_from_version_1(db_url):
    engine = open_database(db_url, migrate=False)
    try:
        assert init_schema(engine, MIGRATIONS[:1]) == 1
        # Make it look like a database of the release before migration 2: no unique index, and
        # two runs of one project left "running".
        with engine.begin() as conn:
            conn.execute(text("DROP INDEX IF EXISTS uq_training_runs_one_active_per_project"))
        project_id, _ = _project(session_factory(engine), n_clips=0)
        with session_scope(engine) as s:
            older = TrainingRun(project_id=project_id, status=RunStatus.RUNNING, config={}, losses=[], metrics={})
            newer = TrainingRun(project_id=project_id, status=RunStatus.QUEUED, config={}, losses=[], metrics={})
            s.add(older)
            s.flush()
            s.add(newer)
            s.flush()
            older_id, newer_id = older.id, newer.id
        assert schema_version(engine) == 1

        assert init_schema(engine) == SCHEMA_VERSION
        assert "uq_training_runs_one_active_per_project" in _index_names(engine, "training_runs")
        with session_scope(engine) as s:
            assert get_run(s, older_id).status is RunStatus.FAILED
            assert "Superseded" in get_run(s, older_id).error
            assert get_run(s, newer_id).status is RunStatus.QUEUED
            assert get_project(s, project_id).emotions == EMOTIONS  # data kept
        with pytest.raises(IntegrityError):
            with session_scope(engine) as s:
                s.add(TrainingRun(project_id=project_id, status=RunStatus.RUNNING, config={}, losses=[], metrics={}))
                s.flush()
    finally:
        engine.dispose()


def test_upgrade_from_version_2_adds_the_worker_instance(db_url):
    engine = open_database(db_url, migrate=False)
    try:
        assert init_schema(engine, MIGRATIONS[:2]) == 2
        with engine.begin() as conn:  # a database of the release before migration 3
            conn.execute(text("ALTER TABLE training_runs DROP COLUMN worker_instance"))
        assert "worker_instance" not in {c["name"] for c in inspect(engine).get_columns("training_runs")}
        assert init_schema(engine) == SCHEMA_VERSION
        project_id, _ = _project(session_factory(engine), n_clips=0)
        with session_scope(engine) as s:
            run_id = create_run(s, project_id, worker_pid=os.getpid()).id
        with session_scope(engine) as s:
            assert get_run(s, run_id).worker_instance is not None
    finally:
        engine.dispose()


def _v3_database(db_url):
    """A database exactly as the release at schema version 3 made it (``tests/legacy``), with a
    demo project, another project, clips, labels and a finished run."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("models_v3", Path(__file__).parent / "legacy" / "models_v3.py")
    old = sys.modules.setdefault("models_v3", importlib.util.module_from_spec(spec))
    if not hasattr(old, "Base"):
        spec.loader.exec_module(old)
    engine = open_database(db_url, migrate=False)
    with engine.begin() as conn:
        old.Base.metadata.create_all(conn)
        for m in MIGRATIONS[:3]:
            conn.execute(old.SchemaVersion.__table__.insert().values(version=m.version, description=m.description,
                                                                     applied_at=utcnow()))
    with session_scope(engine) as s:
        demo = old.Project(name="Demo: German → English", emotions=EMOTIONS, encoder="prosody")
        mine = old.Project(name="Yoruba pilot", emotions=EMOTIONS, encoder="prosody")
        s.add_all([demo, mine])
        s.flush()
        clips = [old.Clip(project_id=p.id, audio_id=f"{i:064x}", original_name=f"c{i}.wav", duration_s=1.0,
                          end_s=1.0, role=old.ClipRole.SOURCE) for i, p in enumerate([demo, mine, mine])]
        s.add_all(clips)
        s.flush()
        s.add(old.Label(clip_id=clips[1].id, emotion="sad"))
        s.add(old.LabelEvent(clip_id=clips[1].id, action=old.LabelAction.SET, emotion="sad"))
        s.add(old.TrainingRun(project_id=mine.id, status=old.RunStatus.SUCCEEDED, config={}, losses=[], metrics={}))
        ids = demo.id, mine.id, [c.id for c in clips]
    return engine, ids


def test_upgrade_from_version_3_puts_every_project_in_the_shared_workspace(db_url):
    engine, (demo, mine, clips) = _v3_database(db_url)
    try:
        assert schema_version(engine) == 3
        assert init_schema(engine) == SCHEMA_VERSION
        assert init_schema(engine) == SCHEMA_VERSION  # a second start changes nothing
        with session_scope(engine) as s:
            assert [(p.id, p.template) for p in list_projects(s, workspace=WS)] == [(demo, "demo"), (mine, None)]
            assert get_label(s, clips[1]) == "sad" and len(label_history(s, clips[1])) == 1
            assert latest_run(s, mine).status is RunStatus.SUCCEEDED
            # names are unique per workspace now, not across the server
            again = create_project(s, "Yoruba pilot", EMOTIONS, "prosody", workspace=_ws(s, "anon:x"))
            assert [p.id for p in list_projects(s, workspace="anon:x")] == [again.id]
            with pytest.raises(ProjectExistsError):
                create_project(s, "Yoruba pilot", EMOTIONS, "prosody", workspace=_ws(s))
        with session_scope(engine) as s:  # the references to projects survived the table's rebuild
            delete_project(s, mine)
        with session_scope(engine) as s:
            assert [c.id for c in clips_for_project(s, demo)] == clips[:1]
            assert s.scalar(select(func.count()).select_from(Clip)) == 1
            assert s.scalar(select(func.count()).select_from(TrainingRun)) == 0
            assert get_label(s, clips[1]) is None
    finally:
        engine.dispose()


def test_failed_migration_rolls_back_and_newer_database_is_refused(db_url):
    engine = open_database(db_url)
    try:
        def broken(conn):
            conn.execute(text("CREATE TABLE half_done (id INTEGER PRIMARY KEY)"))
            raise RuntimeError("disk on fire")

        last = SCHEMA_VERSION
        with pytest.raises(SchemaVersionError, match=f"version {last + 1}.*disk on fire.*left at version {last}"):
            init_schema(engine, (*MIGRATIONS, Migration(last + 1, "broken", broken)))
        assert schema_version(engine) == last
        assert not inspect(engine).has_table("half_done")  # the DDL was rolled back too

        with pytest.raises(SchemaVersionError, match="without gaps"):
            init_schema(engine, (MIGRATIONS[0], Migration(3, "skips 2", lambda conn: None)))

        with engine.begin() as conn:
            conn.execute(SchemaVersion.__table__.insert().values(version=99, description="future", applied_at=utcnow()))
        with pytest.raises(SchemaVersionError, match="newer than this SERE Studio"):
            open_database(str(engine.url.render_as_string(hide_password=False)))
    finally:
        engine.dispose()


def test_times_are_aware_utc_even_from_other_timezones(factory):
    project_id, _ = _project(factory)
    local = utcnow().astimezone(timezone(timedelta(hours=-5)))
    with session_scope(factory) as s:
        run = create_run(s, project_id, now=local)
        run_id = run.id
    with session_scope(factory) as s:
        stored = s.scalar(select(TrainingRun.created_at).where(TrainingRun.id == run_id))
        assert stored.tzinfo is not None and stored.utcoffset() == timedelta(0)
        assert stored == local  # same instant
