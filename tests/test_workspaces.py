"""Workspaces at the service level: one visitor never reaches another's projects, clips, runs,
exports or audio; limits per workspace; idle anonymous workspaces expire and free the audio nobody
else uses; visitor tokens; the bounded training pool.

The same boundary through the running app (HTTP, gradio_client, real browsers) is in
``test_workspaces_app.py``.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

from sere_core import storage as st
from sere_core.app import (
    AppContext,
    AppSettings,
    WorkspaceLimits,
    exports,
    imports,
    labeling,
    projects,
    review,
    training,
    views,
)
from sere_core.app import demo as dm
from sere_core.app.access import Caller, caller_for, new_token, token_id
from sere_core.app.context import PER_VISITOR, SINGLE
from sere_core.app.label_queue import LabelQueue
from sere_core.app.testing import NAME, BandEnergyEncoder
from sere_core.errors import LimitError, NotFoundError, SereError
from sere_core.storage.models import utcnow

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo"
SECRET = b"s" * 64


def open_ctx(tmp: Path, **settings) -> AppContext:
    base = dict(data_dir=tmp / "data", cache_dir=tmp / "cache", encoder=NAME, train_steps=6, snapshots=2,
                workspaces=PER_VISITOR)
    ctx = AppContext.open(AppSettings(**{**base, **settings}))
    ctx.encoders.register(NAME, BandEnergyEncoder())
    return ctx


def visitor(ctx: AppContext, username: str | None = None, tab: str = "") -> Caller:
    return caller_for(ctx.settings.workspaces, ctx.secret, new_token(ctx.secret), username=username, tab=tab)


@pytest.fixture
def ctx(tmp_path):
    c = open_ctx(tmp_path)
    yield c
    c.close()


def test_visitor_tokens_are_signed_and_name_a_workspace_each():
    token = new_token(SECRET)
    assert token_id(token, SECRET) and token_id(token, b"t" * 64) is None
    a, b = caller_for(PER_VISITOR, SECRET, token), caller_for(PER_VISITOR, SECRET, new_token(SECRET))
    assert a.workspace != b.workspace and a.kind is st.WorkspaceKind.ANONYMOUS
    assert token.split(".")[0] not in a.workspace  # the token's secret part is never stored
    tampered = token[:-1] + ("1" if token[-1] == "0" else "0")
    for forged in (None, "", "x" * 57, tampered, token + "x", 42, {"token": token}):
        assert caller_for(PER_VISITOR, SECRET, forged) is None
    alice = caller_for(PER_VISITOR, SECRET, None, username="alice")
    assert (alice.workspace, alice.labeler, alice.kind) == ("user:alice", "user:alice", st.WorkspaceKind.USER)
    assert caller_for(PER_VISITOR, SECRET, token, username="alice").workspace == "user:alice"
    shared = [caller_for(SINGLE, SECRET, t) for t in (token, new_token(SECRET))]
    assert {c.workspace for c in shared} == {st.SHARED_WORKSPACE}  # one workspace, two labelers
    assert shared[0].labeler != shared[1].labeler


def test_a_visitor_reaches_nothing_of_another(ctx, tmp_path):
    a, b = visitor(ctx, tab="a"), visitor(ctx, tab="b")
    demo = dm.load_demo(ctx, a, warm=False)
    pid = demo.id
    dm.apply_reference_labels(ctx, a, pid)
    run_id = training.start_training(ctx, a, pid)
    assert ctx.jobs.wait(timeout=300)
    with ctx.session() as s:
        clip = st.unlabeled_clip_ids(s, pid)[0]
        target = st.unlabeled_clip_ids(s, pid, "target")[0]
    csv_path = exports.export_predictions(ctx, a, pid)

    assert projects.list_projects(ctx, b) == []
    not_found = [
        lambda: projects.get_summary(ctx, b, pid),
        lambda: projects.rename_project(ctx, b, pid, "mine now"),
        lambda: projects.set_emotions(ctx, b, pid, "a, b"),
        lambda: projects.delete_project(ctx, b, pid),
        lambda: imports.import_audio(ctx, b, pid, [DEMO / "source" / "de_s03_01.flac"], "source", warm=False),
        lambda: imports.import_labels_file(ctx, b, pid, csv_path),
        lambda: labeling.label_clip(ctx, b, pid, clip, "happy"),
        lambda: labeling.label_counts(ctx, b, pid),
        lambda: labeling.undo(ctx, b, pid),
        lambda: labeling.suggest_clips(ctx, b, pid),
        lambda: dm.apply_reference_labels(ctx, b, pid),
        lambda: training.start_training(ctx, b, pid),
        lambda: training.training_status(ctx, b, pid),
        lambda: training.cancel_training(ctx, b, pid),
        lambda: review.clip_view(ctx, b, clip),
        lambda: review.field_data(ctx, b, pid),
        lambda: review.predictions_page(ctx, b, pid),
        lambda: review.confirm_prediction(ctx, b, pid, target),
        lambda: review.next_to_review(ctx, b, pid),
        lambda: exports.export_predictions(ctx, b, pid),
        lambda: exports.export_labels(ctx, b, pid),
        lambda: exports.export_model(ctx, b, pid),
    ]
    for attempt in not_found:
        with pytest.raises(NotFoundError, match="not found"):
            attempt()
    mine = projects.create_project(ctx, b, "B's own", "happy, sad")
    with pytest.raises(NotFoundError):  # A's clip named as a clip of B's project
        labeling.label_clip(ctx, b, mine.id, clip, "happy")
    with pytest.raises(NotFoundError):  # A's run named as a run of B's project
        review.field_data(ctx, b, mine.id, run_id)
    # the screens show B nothing of A's
    assert views.project_screen(ctx, b, pid).project is None
    assert views.project_screen(ctx, b, pid).projects == [("B's own", mine.id)]
    assert views.labeling_screen(ctx, b, pid, LabelQueue()).clip is None
    assert views.training_screen(ctx, b, pid).status is None
    assert views.results_screen(ctx, b, pid).field is None
    # and A's work is as A left it
    assert labeling.label_counts(ctx, a, pid) == {e: 5 for e in projects.DEFAULT_EMOTIONS}
    assert training.training_status(ctx, a, pid).run_id == run_id
    # each workspace has its own demo, made of rows: the audio files are shared
    theirs = dm.load_demo(ctx, b, warm=False)
    assert theirs.id != pid and theirs.n_labeled == 0
    with ctx.session() as s:
        assert s.query(st.Recording).count() == 72


def test_exports_live_in_unguessable_folders(ctx):
    a = visitor(ctx)
    pid = dm.load_demo(ctx, a, warm=False).id
    dm.apply_reference_labels(ctx, a, pid)
    first, second = exports.export_labels(ctx, a, pid), exports.export_labels(ctx, a, pid)
    assert first.parent != second.parent and first.parent.parent == ctx.export_dir()
    assert len(first.parent.name) == 32 and f"project-{pid}" not in str(first)  # nothing to guess from
    old = time.time() - exports.KEEP_EXPORTS_S - 60
    import os

    os.utime(first.parent, (old, old))
    exports.export_labels(ctx, a, pid)
    assert not first.parent.exists() and second.exists()  # an hour old: gone at the next export


def test_limits_per_workspace(tmp_path):
    limits = WorkspaceLimits(projects=2, clips=3, megabytes=1, active_runs=1)
    ctx = open_ctx(tmp_path, visitor_limits=limits, train_steps=100_000)
    try:
        a = visitor(ctx)
        demo = dm.load_demo(ctx, a, warm=False)  # the demo's clips and audio are not counted
        pid = projects.create_project(ctx, a, "one", "happy, sad").id
        with pytest.raises(LimitError, match="at most 2 projects"):
            projects.create_project(ctx, a, "two", "happy, sad")
        files = sorted((DEMO / "source").glob("*.flac"))[:5]
        report = imports.import_audio(ctx, a, pid, files, "source", warm=False)
        assert report.added == 3 and [f.reason for f in report.failures] == ["limit", "limit"]
        assert "at most 3 clips" in report.failures[0].message and "limit" in report.markdown()
        dm.apply_reference_labels(ctx, a, demo.id)
        training.start_training(ctx, a, demo.id)
        with ctx.session() as s:
            for clip_id, emotion in zip(st.unlabeled_clip_ids(s, pid), ("happy", "sad")):
                st.set_label(s, clip_id, emotion)
        with pytest.raises(LimitError, match="at most 1 trainings at a time"):
            training.start_training(ctx, a, pid)
        training.cancel_training(ctx, a, demo.id)
        b = visitor(ctx)  # another workspace has its own room
        assert projects.create_project(ctx, b, "one", "happy, sad").name == "one"
    finally:
        ctx.close()
    single = open_ctx(tmp_path / "single", workspaces=SINGLE, visitor_limits=limits)
    try:  # a private server's one workspace has no limits
        everyone = visitor(single)
        for name in ("p1", "p2", "p3"):
            projects.create_project(single, everyone, name, "a, b")
    finally:
        single.close()


def test_idle_anonymous_workspaces_expire_and_free_the_audio_nobody_else_uses(ctx, tmp_path):
    a, b, alice = visitor(ctx), visitor(ctx), visitor(ctx, "alice")
    for caller in (a, b, alice):
        dm.load_demo(ctx, caller, warm=False)
    own = projects.create_project(ctx, a, "A's interviews", "happy, sad").id
    unique = tmp_path / "mine.flac"
    import numpy as np
    import soundfile as sf

    x, sr = sf.read(DEMO / "target" / "en_a01_01.flac", dtype="float32")
    sf.write(unique, np.concatenate([x, x[::-1]]), sr)  # audio no one else has
    [clip] = imports.import_audio(ctx, a, own, [unique], "target", warm=False).clip_ids
    with ctx.session() as s:
        rec = st.clip_records(s, own, [clip])[0]
    blob, segment = ctx.blobs.path_for(rec.stored_path), ctx.segments.path(rec.audio_id)
    ctx.cache.put(rec.audio_id, ctx.encoders.info(NAME), np.zeros((3, 64), np.float32))
    cached = ctx.cache.path(rec.audio_id, ctx.encoders.info(NAME))
    assert blob.is_file() and segment.is_file() and cached.is_file()

    later = utcnow() + timedelta(days=ctx.settings.idle_days, hours=1)
    with ctx.session() as s:  # B came back yesterday; A and alice did not
        st.find_workspace(s, b.workspace).last_seen_at = later - timedelta(days=1)
    assert projects.expire_idle_workspaces(ctx, now=later) == [a.workspace]
    assert projects.list_projects(ctx, a) == []
    assert not blob.exists() and not segment.exists() and not cached.exists()  # only A used them
    for caller in (b, alice):  # the demo audio they share is still there
        [summary] = projects.list_projects(ctx, caller)
        with ctx.session() as s:
            first = st.unlabeled_clip_ids(s, summary.id)[0]
        assert review.clip_view(ctx, caller, first).samples.size > 0
    assert projects.expire_idle_workspaces(ctx, now=later) == []


def test_rename_and_delete_a_project(ctx):
    a = visitor(ctx)
    first = projects.create_project(ctx, a, "Pilot", "happy, sad")
    projects.create_project(ctx, a, "Other", "happy, sad")
    assert projects.rename_project(ctx, a, first.id, "  Pilot 2 ").name == "Pilot 2"
    with pytest.raises(SereError, match="already exists"):
        projects.rename_project(ctx, a, first.id, "Other")
    with pytest.raises(SereError, match="name"):
        projects.rename_project(ctx, a, first.id, "  ")
    imports.import_audio(ctx, a, first.id, sorted((DEMO / "source").glob("*.flac"))[:2], "source", warm=False)
    assert projects.delete_project(ctx, a, first.id) == "Pilot 2"
    assert [p.name for p in projects.list_projects(ctx, a)] == ["Other"]
    with pytest.raises(NotFoundError):
        projects.get_summary(ctx, a, first.id)


def test_the_worker_pool_is_bounded_and_queues_in_order(tmp_path):
    ctx = open_ctx(tmp_path, workers=1, train_steps=100_000, workspaces=SINGLE)
    try:
        me = visitor(ctx)
        ids = []
        for name in ("first", "second", "third"):
            pid = projects.create_project(ctx, me, name, "happy, sad").id
            report = imports.import_audio(ctx, me, pid, sorted((DEMO / "source").glob("*.flac"))[:4], "source",
                                          warm=False)
            for clip_id, emotion in zip(report.clip_ids, ("happy", "sad", "happy", "sad")):
                labeling.label_clip(ctx, me, pid, clip_id, emotion)
            training.start_training(ctx, me, pid)
            ids.append(pid)
        deadline = time.monotonic() + 120
        while training.training_status(ctx, me, ids[0]).status != "running" and time.monotonic() < deadline:
            time.sleep(0.1)
        statuses = [training.training_status(ctx, me, pid) for pid in ids]
        assert [s.status for s in statuses] == ["running", "queued", "queued"]
        assert [s.queue_position for s in statuses] == [0, 1, 2]
        training.cancel_training(ctx, me, ids[1])  # a waiting run is dropped from the queue
        assert training.training_status(ctx, me, ids[2]).queue_position == 1
        training.cancel_training(ctx, me, ids[0])
        while training.training_status(ctx, me, ids[2]).status != "running" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert training.training_status(ctx, me, ids[1]).status == "cancelled"
        assert training.training_status(ctx, me, ids[2]).queue_position == 0
        training.cancel_training(ctx, me, ids[2])
        assert ctx.jobs.wait(timeout=60)
    finally:
        ctx.close()


def test_uploaded_clips_get_their_features_in_the_background_after_trainings(tmp_path):
    """An upload queues its clips' features at once (the training then finds them cached); the
    computation waits while another project trains."""
    from sere_core.app.pipeline import is_cached

    ctx = open_ctx(tmp_path, workers=2, train_steps=100_000, workspaces=SINGLE)
    try:
        me = visitor(ctx)
        busy = dm.load_demo(ctx, me, warm=False).id
        dm.apply_reference_labels(ctx, me, busy)
        training.start_training(ctx, me, busy)
        deadline = time.monotonic() + 120
        while training.training_status(ctx, me, busy).status != "running" and time.monotonic() < deadline:
            time.sleep(0.1)
        pid = projects.create_project(ctx, me, "uploads", "happy, sad").id
        report = imports.import_audio(ctx, me, pid, sorted((DEMO / "target").glob("*.flac"))[:6], "target")
        status = ctx.jobs.embed_status(pid)
        while not status.paused and time.monotonic() < deadline:  # waits for the other project
            time.sleep(0.05)
        assert status.paused and status.done < len(report.clip_ids)
        training.cancel_training(ctx, me, busy)
        assert ctx.jobs.wait(timeout=120)
        info = ctx.encoders.info(NAME)
        with ctx.session() as s:
            records = st.clip_records(s, pid)
        assert all(is_cached(ctx, r.audio_id, info) for r in records)
        assert (status.done, status.total, status.running, status.paused) == (6, 6, False, False)
    finally:
        ctx.close()
