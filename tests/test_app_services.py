"""The app's services as plain function calls (no Gradio): demo, import, labeling, training,
results and exports. A fast stand-in encoder keeps the demo's features quick to compute."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from sere_core import storage as st
from sere_core.app import (
    AppContext,
    AppSettings,
    exports,
    imports,
    labeling,
    projects,
    review,
    training,
    views,
)
from sere_core.app import demo as dm
from sere_core.app import figures as fg
from sere_core.app.access import Caller
from sere_core.app.demo import demo_reference
from sere_core.app.label_queue import LabelQueue
from sere_core.app.messages import user_message
from sere_core.app.pipeline import unweighted_recall
from sere_core.app.suggest import diverse_order, pooled_embedding
from sere_core.app.testing import NAME, BandEnergyEncoder, local_caller
from sere_core.audio import write_audio
from sere_core.errors import (
    ActiveRunError,
    EmotionError,
    InvalidDataError,
    NotFoundError,
    SereError,
    TrainingDataError,
)
from sere_core.method import SEREConfig

pytestmark = pytest.mark.xdist_group("app_services")  # one worker: its module fixture is made once

ME = local_caller()  # the shared workspace of a private server

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo"


def open_ctx(tmp: Path, steps: int = 12) -> AppContext:
    ctx = AppContext.open(AppSettings(data_dir=tmp / "data", cache_dir=tmp / "cache", encoder=NAME,
                                      train_steps=steps, snapshots=4))
    ctx.encoders.register(NAME, BandEnergyEncoder())
    return ctx


@pytest.fixture
def ctx(tmp_path):
    c = open_ctx(tmp_path)
    yield c
    c.close()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The demo project with 5 corpus labels per emotion, trained once for the module."""
    tmp = tmp_path_factory.mktemp("trained")
    c = open_ctx(tmp)
    summary = dm.load_demo(c, ME, warm=False)
    dm.apply_reference_labels(c, ME, summary.id)
    run_id = training.start_training(c, ME, summary.id)
    assert c.jobs.wait(timeout=600)
    yield c, summary.id, run_id
    c.close()


# --- projects and the demo -----------------------------------------------------------------------

def test_demo_files_are_small_licensed_and_consistent():
    total = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert total < 8_000_000
    for name in ("README.md", "LICENSE-DEMO.md", "build_demo.py"):
        assert (REPO / "data" / name).is_file()
    licence = (REPO / "data" / "LICENSE-DEMO.md").read_text()
    assert "CC BY-NC-SA 4.0" in licence and "1188976" in licence and "CC0-1.0" in licence
    src = list(csv.DictReader((DEMO / "source.csv").open()))
    tgt = list(csv.DictReader((DEMO / "target.csv").open()))
    truth = list(csv.DictReader((DEMO / "target_truth.csv").open()))
    assert {r["emotion"] for r in src} == set(projects.DEFAULT_EMOTIONS)
    assert all(sum(r["emotion"] == e for r in src) == 8 for e in projects.DEFAULT_EMOTIONS)
    assert "emotion" not in tgt[0]
    assert sorted(r["path"] for r in tgt) == sorted(r["path"] for r in truth)
    assert all((DEMO / r["path"]).is_file() for r in src + tgt)
    import soundfile as sf

    # 16 kHz mono: reading the demo needs no resampling, so the warm-up reads it before the engine
    assert {(sf.info(DEMO / r["path"]).samplerate, sf.info(DEMO / r["path"]).channels) for r in src + tgt} == {(16000, 1)}
    # different speakers per emotion, several actors per emotion in the target
    for e in projects.DEFAULT_EMOTIONS:
        assert len({r["speaker"] for r in src if r["emotion"] == e}) == 8
    by_path = {r["path"]: r for r in tgt}
    for e in projects.DEFAULT_EMOTIONS:
        assert len({by_path[r["path"]]["speaker"] for r in truth if r["emotion"] == e}) >= 8


@pytest.mark.corpus
def test_the_demo_set_is_rebuilt_byte_identically_from_the_corpora(tmp_path):
    import hashlib
    import importlib.util
    import os

    corpora = Path(os.environ.get("SERE_CORPORA", REPO.parent / "shared" / "corpora"))
    if not (corpora / "emodb" / "manifest.csv").is_file() or not (corpora / "ravdess" / "manifest.csv").is_file():
        pytest.skip(f"the development corpora are not at {corpora} (set SERE_CORPORA)")
    spec = importlib.util.spec_from_file_location("build_demo", REPO / "data" / "build_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stats = module.build(corpora, tmp_path / "demo")
    assert stats["source"] == 32 and stats["target"] == 40

    def digest(root: Path) -> dict[str, str]:
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    assert digest(tmp_path / "demo") == digest(DEMO)


def test_parse_and_create_projects(ctx):
    assert projects.parse_emotions("a, b;c\n d") == ["a", "b", "c", "d"]
    summary = projects.create_project(ctx, ME, "Pilot", "joy, anger, calm")
    assert summary.emotions == ["joy", "anger", "calm"] and summary.n_source == 0
    assert [p.name for p in projects.list_projects(ctx, ME)] == ["Pilot"]
    with pytest.raises(SereError, match="already exists"):
        projects.create_project(ctx, ME, "Pilot", "a, b")
    with pytest.raises(SereError, match="name"):
        projects.create_project(ctx, ME, "  ", "a, b")
    with pytest.raises(SereError, match="2 to 10"):
        projects.create_project(ctx, ME, "Other", "only-one")
    assert projects.set_emotions(ctx, ME, summary.id, "joy, anger, calm, fear").emotions[-1] == "fear"


def unlabeled(ctx, pid):
    with ctx.session() as s:
        return st.unlabeled_clip_ids(s, pid)


def test_load_demo_makes_one_unlabeled_copy_per_workspace(ctx):
    summary = dm.load_demo(ctx, ME, warm=False)
    assert (summary.n_source, summary.n_target, summary.n_labeled) == (32, 40, 0) and summary.is_demo
    assert summary.emotions == list(projects.DEFAULT_EMOTIONS)
    reference = demo_reference(ctx, "demo")
    assert len(reference) == 72 and set(reference.values()) == set(projects.DEFAULT_EMOTIONS)
    assert dm.load_demo(ctx, ME, warm=False).id == summary.id  # the same one again
    # the hint is there for the labeler, and the demo shortcut labels 5 per emotion
    clip = unlabeled(ctx, summary.id)[0]
    assert review.clip_view(ctx, ME, clip).reference in projects.DEFAULT_EMOTIONS
    assert dm.apply_reference_labels(ctx, ME, summary.id) == 20
    assert labeling.label_counts(ctx, ME, summary.id) == {e: 5 for e in projects.DEFAULT_EMOTIONS}
    # another workspace gets its own, fresh copy: rows only, the audio is shared
    other = local_caller("someone-else")
    other = type(other)("anon:other", st.WorkspaceKind.ANONYMOUS, "anon:other")
    theirs = dm.load_demo(ctx, other, warm=False)
    assert theirs.id != summary.id and theirs.n_labeled == 0
    with ctx.session() as s:
        assert s.query(st.Recording).count() == 72  # one recording per demo file, for every workspace
    # Reset: a fresh copy, labels gone; the audio stays (the other workspace uses it)
    fresh = dm.reset_demo(ctx, ME, warm=False)
    assert fresh.id != summary.id and fresh.n_labeled == 0
    assert [p.id for p in projects.list_projects(ctx, ME)] == [fresh.id]
    assert review.clip_view(ctx, other, unlabeled(ctx, theirs.id)[0]).samples.size > 0


# --- importing -----------------------------------------------------------------------------------

def test_import_reports_every_file_and_splits_long_recordings(ctx, tmp_path):
    project = projects.create_project(ctx, ME, "Uploads", projects.DEFAULT_EMOTIONS)
    import soundfile as sf

    parts = []
    for f in sorted((DEMO / "target").glob("*.flac"))[:14]:
        x, sr = sf.read(f, dtype="float32")
        parts += [x, np.zeros(int(1.2 * sr), np.float32)]
    long_path = write_audio(tmp_path / "interview.wav", np.concatenate(parts), 16000)
    good = tmp_path / "one.flac"
    good.write_bytes((DEMO / "target" / "en_a01_01.flac").read_bytes())
    text = tmp_path / "fake.wav"
    text.write_text("not audio at all")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    silent = write_audio(tmp_path / "silence.wav", np.zeros(16000 * 2, np.float32), 16000)
    report = imports.import_audio(ctx, ME, project.id, [long_path, good, text, notes, silent], "target",
                             language="en", warm=False)
    assert report.files == 5
    assert report.split_files == 1 and report.added >= 3
    reasons = {f.file: f.reason for f in report.failures}
    assert set(reasons) == {"fake.wav", "notes.txt", "silence.wav"}
    assert reasons["silence.wav"] == "silent"
    md = report.markdown()
    assert "rejected" in md and "fake.wav" in md
    # the same audio again is recognised, not added twice
    again = imports.import_audio(ctx, ME, project.id, [good], "target", warm=False)
    assert again.added == 0 and again.duplicates == 1
    with pytest.raises(InvalidDataError):
        imports.import_audio(ctx, ME, project.id, [], "target")


def test_a_zip_with_a_manifest_brings_its_labels(ctx, tmp_path):
    project = projects.create_project(ctx, ME, "Zipped", projects.DEFAULT_EMOTIONS)
    archive = tmp_path / "clips.zip"
    rows = list(csv.DictReader((DEMO / "source.csv").open()))[:3]
    with zipfile.ZipFile(archive, "w") as zf:
        lines = ["path,emotion,language,speaker"]
        for r in rows:
            zf.write(DEMO / r["path"], arcname=Path(r["path"]).name)
            lines.append(f"{Path(r['path']).name},{r['emotion'].upper()},de,{r['speaker']}")
        zf.writestr("labels.csv", "\n".join(lines) + "\n")
    report = imports.import_audio(ctx, ME, project.id, [archive], "source", warm=False)
    assert report.added == 3 and report.labeled == 3, report.markdown()
    assert sum(labeling.label_counts(ctx, ME, project.id).values()) == 3


# --- labeling ------------------------------------------------------------------------------------

def test_labels_act_on_the_clip_named_and_undo_is_per_labeler(ctx):
    summary = dm.load_demo(ctx, ME, warm=False)
    pid = summary.id
    first, second = unlabeled(ctx, pid)[:2]
    ada, bo = local_caller("ada", "tab-a"), local_caller("bo", "tab-b")
    assert labeling.label_clip(ctx, ada, pid, first, "happy") == "happy"
    assert labeling.label_counts(ctx, ME, pid)["happy"] == 1 and first not in unlabeled(ctx, pid)
    labeling.label_clip(ctx, bo, pid, second, "sad")
    labeling.label_clip(ctx, ada, pid, second, "angry")  # ada relabels bo's clip
    assert labeling.undo(ctx, bo, pid) == st.Undone(second, "angry", kept=True)  # bo's undo keeps ada's label
    assert labeling.undo(ctx, ada, pid) == st.Undone(second, "sad", kept=False)
    assert labeling.undo(ctx, ada, pid) == st.Undone(first, None, kept=False)
    assert labeling.undo(ctx, ada, pid) is None
    with pytest.raises(SereError, match="not an emotion"):
        labeling.label_clip(ctx, ada, pid, first, "bored")
    with pytest.raises(SereError, match="not found"):  # a clip id of another project
        labeling.label_clip(ctx, ada, projects.create_project(ctx, ME, "other", "a, b").id, first, "a")


def test_two_tabs_are_shown_different_clips_and_a_skip_moves_on(ctx):
    pid = dm.load_demo(ctx, ME, warm=False).id
    a, b = local_caller("ada", "tab-a"), local_caller("ada", "tab-b")
    shown_a = views.labeling_screen(ctx, a, pid, LabelQueue())
    shown_b = views.labeling_screen(ctx, b, pid, LabelQueue())
    assert shown_a.clip.clip_id != shown_b.clip.clip_id and not shown_a.shared and not shown_b.shared
    again = views.labeling_screen(ctx, a, pid, shown_a.queue)  # shown again: the same clip
    assert again.clip.clip_id == shown_a.clip.clip_id and again.left == 32
    skipped = views.labeling_screen(ctx, a, pid, again.queue.skip(shown_a.clip.clip_id))
    assert skipped.clip.clip_id not in (shown_a.clip.clip_id, shown_b.clip.clip_id)
    assert views.labeling_screen(ctx, b, pid, shown_b.queue).clip.clip_id == shown_b.clip.clip_id


def test_suggestions_cover_the_recordings(ctx):
    summary = dm.load_demo(ctx, ME, warm=False)
    order = labeling.suggest_clips(ctx, ME, summary.id)
    assert sorted(order) == sorted(unlabeled(ctx, summary.id))
    speakers = {review.clip_view(ctx, ME, c).speaker for c in order[:10]}
    assert len(speakers) >= 5


def test_diverse_order_picks_typical_clips_from_every_cluster():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=float)
    x = np.concatenate([c + rng.normal(scale=0.5, size=(6, 2)) for c in centres])
    order = diverse_order(x, n_clusters=4)
    assert sorted(order) == list(range(24))
    assert {i // 6 for i in order[:4]} == {0, 1, 2, 3}
    assert 0 not in diverse_order(x, n_clusters=4, labeled=[0])
    assert pooled_embedding(np.ones((5, 3))).shape == (6,)


# --- training and results ------------------------------------------------------------------------

def test_training_needs_two_labeled_emotions(ctx):
    summary = dm.load_demo(ctx, ME, warm=False)
    ready = views.training_screen(ctx, ME, summary.id).readiness
    assert not ready.ok and "two emotions" in ready.notes[0]
    with pytest.raises(TrainingDataError):
        training.start_training(ctx, ME, summary.id)
    assert training.training_status(ctx, ME, summary.id) is None
    assert review.field_data(ctx, ME, summary.id) is None
    assert review.predictions_table(ctx, ME, summary.id).empty
    with pytest.raises(InvalidDataError, match="train"):
        exports.export_predictions(ctx, ME, summary.id)


@pytest.mark.slow
def test_training_stores_predictions_snapshots_and_a_model(trained):
    ctx, pid, run_id = trained
    status = training.training_status(ctx, ME, pid)
    assert status.status == "succeeded", status.error
    assert status.run_id == run_id and status.step == status.total_steps == 12 * SEREConfig().ensemble
    assert {"ll", "total"} <= set(status.losses[-1])
    history = status.history()
    assert list(history.columns) == ["step", "term", "value"] and len(history)
    m = status.metrics
    assert m["n_labeled"] == 20 and m["n_unlabeled"] == 52 and m["reference_clips"] == 40
    assert 0.0 <= m["reference_uar"] <= 1.0
    assert review.latest_result(ctx, ME, pid) == run_id

    field = review.field_data(ctx, ME, pid)
    assert len(field.points) == 72
    assert field.points["labeled"].sum() == 20
    assert set(field.points["role"]) == {"source", "target"}
    assert list(field.prototypes["emotion"]) == sorted(projects.DEFAULT_EMOTIONS)
    assert field.snapshot_frames["step"].nunique() >= 4
    value = fg.field_value(field)
    assert len(value["figure"]["frames"]) == field.snapshot_frames["step"].nunique()
    assert value["key"].startswith(f"run-{run_id}-emotion-")
    assert set(field.points["language"]) == {"de", "en"} and field.points["changed"].isna().all()  # one run
    # the ensemble's models each vote: the share that decides otherwise (0, 1/3 or 2/3 of three)
    split = field.points["disagreement"]
    if field.members > 1:
        assert split.notna().all() and set(split.round(2)) <= {round(k / field.members, 2) for k in range(field.members)}
    else:
        assert split.isna().all()
    # the replay's steps are each model's, the loss curve's run through the models one after another
    members = SEREConfig().ensemble
    assert field.members == status.members == members
    assert field.snapshot_frames["step"].max() == status.total_steps // members
    if members > 1:
        prefix = value["figure"]["layout"]["sliders"][0]["currentvalue"]["prefix"]
        assert prefix == f"run {run_id} · training step (each of {members} models) "
        assert len(fg.loss_figure(status).layout.shapes) == members  # one band per model

    table = review.predictions_table(ctx, ME, pid)
    assert len(table) == 40 and list(table["confidence"]) == sorted(table["confidence"])
    most = review.predictions_table(ctx, ME, pid, sort="most confident first")
    assert most["confidence"].iloc[0] == table["confidence"].max()

    view = review.clip_view(ctx, ME, int(table["clip"].iloc[0]))
    assert view.prediction is not None and view.role == "target"
    assert abs(sum(view.prediction.probabilities.values()) - 1) < 1e-4
    assert all(0 <= a < b <= view.duration_s + 0.05 for a, b in view.prediction.highlights)
    assert fg.clip_waveform(view).layout.shapes
    # the highlights sit on the voice, not on the trimmed clip's silent start (#15): real speech, real weights
    from sere_core.benchmark.runner import early_highlight_share

    predictions = [review.clip_view(ctx, ME, int(c)).prediction for c in table["clip"]]
    assert early_highlight_share(predictions) <= 0.1
    assert "Finished" in fg.progress_html(status)


@pytest.mark.slow
def test_review_confirmations_become_labels_and_exports_round_trip(trained, tmp_path):
    ctx, pid, run_id = trained
    table = review.predictions_table(ctx, ME, pid)
    clip = int(table["clip"].iloc[0])
    emotion = review.confirm_prediction(ctx, ME, pid, clip)
    assert emotion == table["predicted"].iloc[0]
    other = next(e for e in projects.DEFAULT_EMOTIONS if e != emotion)
    review.confirm_prediction(ctx, ME, pid, int(table["clip"].iloc[1]), other)
    after = review.predictions_table(ctx, ME, pid)
    assert after.set_index("clip").loc[clip, "your label"] == emotion

    pred_csv = exports.export_predictions(ctx, ME, pid)
    rows = list(csv.DictReader(pred_csv.open(encoding="utf-8")))
    assert len(rows) == 72
    assert {"predicted_emotion", "confidence", "highlights", "p_angry"} <= set(rows[0])

    labels_csv = exports.export_labels(ctx, ME, pid)
    result = imports.import_labels_file(ctx, ME, pid, labels_csv)
    assert result.applied == 0 and result.unchanged == 22 and not result.rejected

    model_zip = exports.export_model(ctx, ME, pid)
    with zipfile.ZipFile(model_zip) as zf:
        zf.extractall(tmp_path / "unzipped")
    from sere_core.method import SERE

    model = SERE.load(tmp_path / "unzipped" / "model")
    assert model.classes_ == sorted(projects.DEFAULT_EMOTIONS)
    about = json.loads((tmp_path / "unzipped" / "model" / "sere-project.json").read_text())
    assert about["run_id"] == run_id


@pytest.mark.slow
def test_one_run_at_a_time_and_cancel(tmp_path):
    ctx = open_ctx(tmp_path, steps=5000)
    try:
        summary = dm.load_demo(ctx, ME, warm=False)
        dm.apply_reference_labels(ctx, ME, summary.id, per_emotion=2)
        training.start_training(ctx, ME, summary.id)
        with pytest.raises(ActiveRunError):
            training.start_training(ctx, ME, summary.id)
        import time

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            status = training.training_status(ctx, ME, summary.id)
            if status.status == "running" and status.step > 0:
                break
            time.sleep(0.2)
        cancelled = training.cancel_training(ctx, ME, summary.id)
        assert cancelled.status == "cancelled"
        assert ctx.jobs.wait(timeout=120)
        status = training.training_status(ctx, ME, summary.id)
        assert status.status == "cancelled" and status.step < 5000
        assert training.cancel_training(ctx, ME, summary.id) is None
    finally:
        ctx.close()


def test_a_run_left_running_by_a_dead_process_is_failed_at_start(tmp_path):
    ctx = open_ctx(tmp_path)
    summary = projects.create_project(ctx, ME, "Crashed", "a, b")
    from sere_core import storage as st

    with ctx.session() as s:
        run = st.create_run(s, summary.id, {})
        st.start_run(s, run.id, worker_pid=2**22 + 12345)
    ctx.close()
    ctx = open_ctx(tmp_path)
    try:
        status = training.training_status(ctx, ME, summary.id)
        assert status.status == "failed" and "restarted" in status.error
    finally:
        ctx.close()


def test_small_helpers():
    assert unweighted_recall(["a", "a", "b"], ["a", "b", "b"]) == pytest.approx(0.75)
    assert unweighted_recall([], []) is None
    html = fg.counts_html({"happy": 2, "sad": 0}, 5)
    assert "happy 2/5" in html and "data-total='2'" in html
    assert "No training" in fg.progress_html(None)
    assert fg.field_figure(None).layout.annotations and fg.field_value(None)["key"] == "empty"
    assert user_message(TrainingDataError("label more")) == "label more"
    assert "server log" in user_message(RuntimeError("boom"))


def test_field_actions_on_a_selection_stay_in_the_callers_project(trained, tmp_path):
    from sere_core.app import field

    c, pid, _run = trained
    data = review.field_data(c, ME, pid)
    targets = [int(x) for x in data.points.loc[data.points.role == "target", "clip_id"]]
    picked = targets[:5]
    # the next clip after a label: an unlabeled one, nearest on the map or least confident
    nearest = field.next_clip(c, ME, pid, picked[0], "nearest unlabeled neighbour")
    least = field.next_clip(c, ME, pid, picked[0], "least confident")
    labeled = set(st_labels(c, pid))
    assert nearest not in labeled and least not in labeled and picked[0] not in (nearest, least)
    conf = data.points.set_index(data.points.clip_id.astype(int))["confidence"]
    assert conf[least] == conf[[i for i in conf.index if i not in labeled and i != picked[0]]].min()

    assert field.label_clips(c, ME, pid, picked, "sad").changed == 5
    assert all(st_labels(c, pid)[i] == "sad" for i in picked)
    again = field.label_clips(c, ME, pid, picked, "sad")
    assert (again.changed, again.unchanged) == (0, 5)  # nothing doubled in the history
    accepted = field.accept_predictions(c, ME, pid, picked)
    preds = {int(r.clip_id): r.predicted for r in data.points.itertuples()}
    assert accepted.changed == sum(preds[i] != "sad" for i in picked)
    assert all(st_labels(c, pid)[i] == preds[i] for i in picked)
    assert field.label_clips(c, ME, pid, picked, None).changed == 5
    assert not set(picked) & set(st_labels(c, pid))
    samples, rate, n = field.playlist(c, ME, pid, picked)
    assert n == 5 and rate == 16000 and len(samples) > 5 * field.PLAYLIST_GAP_S * rate
    path = field.export_selection(c, ME, pid, picked)
    rows = list(csv.DictReader(path.open()))
    assert sorted(int(r["clip_id"]) for r in rows) == sorted(picked)
    # a stranger's workspace: every action on these clips says "not found"
    stranger = Caller("visitor:someone-else", ME.kind, "stranger")
    for act in (lambda: field.label_clips(c, stranger, pid, picked, "sad"),
                lambda: field.accept_predictions(c, stranger, pid, picked),
                lambda: field.playlist(c, stranger, pid, picked),
                lambda: field.export_selection(c, stranger, pid, picked),
                lambda: field.next_clip(c, stranger, pid, picked[0], "least confident")):
        with pytest.raises(NotFoundError):
            act()
    with pytest.raises(InvalidDataError, match="Select some clips"):
        field.label_clips(c, ME, pid, [], "sad")
    with pytest.raises(EmotionError):
        field.label_clips(c, ME, pid, picked, "bored")
    assert not set(picked) & set(st_labels(c, pid))  # the refused batch changed nothing


def st_labels(c, pid) -> dict[int, str]:
    with c.session() as s:
        return st.labels_for_project(s, pid)


def test_a_finished_runs_summary_counts_its_targets_and_checks_them_against_the_corpus(trained):
    c, pid, run_id = trained
    summary = review.results_summary(c, ME, pid)
    assert summary.run_id == run_id and sum(summary.counts.values()) == len(summary.confidences) == 40
    assert summary.changed is None  # the first run: nothing to compare with
    assert len(summary.truth) == 40 and summary.truth_source == "the corpus labels of the demo"
    assert 0.0 <= summary.uar <= 1.0 and "UAR" in summary.markdown()
    stranger = Caller("visitor:someone-else", ME.kind, "stranger")
    with pytest.raises(NotFoundError):
        review.results_summary(c, stranger, pid)


def test_a_live_view_of_a_training_snapshot_is_quick_and_stable():
    from sere_core.app.pipeline import time_left
    from sere_core.viz import live_projection

    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(c, 0.1, size=(50, 16)) for c in (-1.0, 1.0)])
    xy, pxy = live_projection(x, np.stack([np.full(16, -1.0), np.full(16, 1.0)]))
    assert xy.shape == (100, 2) and pxy.shape == (2, 2)
    assert np.sign(xy[:50, 0].mean()) == np.sign(pxy[0, 0]) != np.sign(pxy[1, 0])  # each cluster by its prototype
    again, _ = live_projection(x, np.stack([np.full(16, -1.0), np.full(16, 1.0)]))
    assert np.allclose(xy, again)  # the same snapshot is drawn the same way
    assert time_left(10.0, 25, 100) == "about 30 s left" and time_left(1.0, 100, 100) == ""


def test_target_clips_to_label_next_are_uncertain_and_varied(trained):
    c, pid, run_id = trained
    with c.session() as s:
        order = review.suggest_targets(s, pid, run_id)
        preds = st.predictions_for_run(s, run_id)
        labels = st.labels_for_project(s, pid)
    targets = [int(x) for x in review.field_data(c, ME, pid).points.query("role == 'target'").clip_id]
    assert sorted(order) == sorted(t for t in targets if t not in labels)  # every open target clip, once
    unsure = sorted(order, key=lambda i: preds[i].confidence)[:20]
    assert set(order[:20]) == set(unsure)  # the least confident first ...
    assert order[:20] != unsure  # ... but in a varied order, not by confidence
    page = review.predictions_page(c, ME, pid, sort=review.SUGGESTED)
    assert list(page.rows["clip"]) == order[:len(page.rows)] and page.total == len(order)
    assert review.next_to_review(c, ME, pid, review.SUGGESTED) == order[0]
    assert review.next_to_review(c, ME, pid, review.SUGGESTED, current=order[0]) == order[1]
