"""The app's services as plain function calls (no Gradio): demo, import, labeling, training,
results and exports. A fast stand-in encoder keeps the demo's features quick to compute."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from sere_core.app import AppContext, AppSettings
from sere_core.app import figures as fg
from sere_core.app import services as sv
from sere_core.app.pipeline import demo_reference, unweighted_recall
from sere_core.app.suggest import diverse_order, pooled_embedding
from sere_core.app.testing import NAME, BandEnergyEncoder
from sere_core.audio import write_audio
from sere_core.errors import ActiveRunError, InvalidDataError, SereError, TrainingDataError
from sere_core.method import SEREConfig

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
    summary, _ = sv.load_demo(c, warm=False)
    sv.apply_reference_labels(c, summary.id)
    run_id = sv.start_training(c, summary.id)
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
    assert {r["emotion"] for r in src} == set(sv.DEFAULT_EMOTIONS)
    assert all(sum(r["emotion"] == e for r in src) == 8 for e in sv.DEFAULT_EMOTIONS)
    assert "emotion" not in tgt[0]
    assert sorted(r["path"] for r in tgt) == sorted(r["path"] for r in truth)
    assert all((DEMO / r["path"]).is_file() for r in src + tgt)
    # different speakers per emotion, several actors per emotion in the target
    for e in sv.DEFAULT_EMOTIONS:
        assert len({r["speaker"] for r in src if r["emotion"] == e}) == 8
    by_path = {r["path"]: r for r in tgt}
    for e in sv.DEFAULT_EMOTIONS:
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
    assert sv.parse_emotions("a, b;c\n d") == ["a", "b", "c", "d"]
    summary = sv.create_project(ctx, "Pilot", "joy, anger, calm")
    assert summary.emotions == ["joy", "anger", "calm"] and summary.n_source == 0
    assert [p.name for p in sv.list_projects(ctx)] == ["Pilot"]
    with pytest.raises(SereError, match="already exists"):
        sv.create_project(ctx, "Pilot", "a, b")
    with pytest.raises(SereError, match="name"):
        sv.create_project(ctx, "  ", "a, b")
    with pytest.raises(SereError, match="2 to 10"):
        sv.create_project(ctx, "Other", "only-one")
    assert sv.set_emotions(ctx, summary.id, "joy, anger, calm, fear").emotions[-1] == "fear"


def test_load_demo_finishes_an_interrupted_build_and_keeps_labels(ctx):
    """A crash in the middle of "Load demo" leaves a partial project; the next click completes it."""
    def crash_after(n):
        def progress(done, total, desc):
            if done >= n:
                raise KeyboardInterrupt("simulated crash")
        return progress

    with pytest.raises(KeyboardInterrupt):
        sv.load_demo(ctx, warm=False, progress=crash_after(40))
    (partial,) = sv.list_projects(ctx)
    assert partial.name == sv.DEMO_PROJECT_NAME and partial.n_source + partial.n_target < 72
    sv.label_clip(ctx, sv.next_clip_to_label(ctx, partial.id), "sad")
    summary, report = sv.load_demo(ctx, warm=False)
    assert summary.id == partial.id and (summary.n_source, summary.n_target) == (32, 40)
    assert 0 < report.added < 72 and report.duplicates > 0 and not report.failures
    assert summary.n_labeled == 1 and sv.label_counts(ctx, summary.id)["sad"] == 1
    assert len(demo_reference(ctx, summary.id)) == 72


def test_load_demo_builds_an_unlabeled_project_once(ctx):
    summary, report = sv.load_demo(ctx, warm=False)
    assert (summary.n_source, summary.n_target, summary.n_labeled) == (32, 40, 0)
    assert report.added == 72 and not report.failures
    assert summary.emotions == list(sv.DEFAULT_EMOTIONS)
    reference = demo_reference(ctx, summary.id)
    assert len(reference) == 72 and set(reference.values()) == set(sv.DEFAULT_EMOTIONS)
    again, report2 = sv.load_demo(ctx, warm=False)
    assert again.id == summary.id and report2.added == 0
    # the hint is there for the labeler, and the demo shortcut labels 5 per emotion
    clip = sv.next_clip_to_label(ctx, summary.id)
    assert sv.clip_view(ctx, clip).reference in sv.DEFAULT_EMOTIONS
    assert sv.apply_reference_labels(ctx, summary.id) == 20
    assert sv.label_counts(ctx, summary.id) == {e: 5 for e in sv.DEFAULT_EMOTIONS}


# --- importing -----------------------------------------------------------------------------------

def test_import_reports_every_file_and_splits_long_recordings(ctx, tmp_path):
    project = sv.create_project(ctx, "Uploads", sv.DEFAULT_EMOTIONS)
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
    report = sv.import_audio(ctx, project.id, [long_path, good, text, notes, silent], "target",
                             language="en", warm=False)
    assert report.files == 5
    assert report.split_files == 1 and report.added >= 3
    reasons = {f.file: f.reason for f in report.failures}
    assert set(reasons) == {"fake.wav", "notes.txt", "silence.wav"}
    assert reasons["silence.wav"] == "silent"
    md = report.markdown()
    assert "rejected" in md and "fake.wav" in md
    # the same audio again is recognised, not added twice
    again = sv.import_audio(ctx, project.id, [good], "target", warm=False)
    assert again.added == 0 and again.duplicates == 1
    with pytest.raises(InvalidDataError):
        sv.import_audio(ctx, project.id, [], "target")


def test_a_zip_with_a_manifest_brings_its_labels(ctx, tmp_path):
    project = sv.create_project(ctx, "Zipped", sv.DEFAULT_EMOTIONS)
    archive = tmp_path / "clips.zip"
    rows = list(csv.DictReader((DEMO / "source.csv").open()))[:3]
    with zipfile.ZipFile(archive, "w") as zf:
        lines = ["path,emotion,language,speaker"]
        for r in rows:
            zf.write(DEMO / r["path"], arcname=Path(r["path"]).name)
            lines.append(f"{Path(r['path']).name},{r['emotion'].upper()},de,{r['speaker']}")
        zf.writestr("labels.csv", "\n".join(lines) + "\n")
    report = sv.import_audio(ctx, project.id, [archive], "source", warm=False)
    assert report.added == 3 and report.labeled == 3, report.markdown()
    assert sum(sv.label_counts(ctx, project.id).values()) == 3


# --- labeling ------------------------------------------------------------------------------------

def test_labeling_queue_skip_and_undo(ctx):
    summary, _ = sv.load_demo(ctx, warm=False)
    first = sv.next_clip_to_label(ctx, summary.id)
    second = sv.next_clip_to_label(ctx, summary.id, skipped=[first])
    assert second != first
    assert sv.next_clip_to_label(ctx, summary.id, order=[second, first]) == second
    sv.label_clip(ctx, first, "happy", session_id="tab-1")
    assert sv.label_counts(ctx, summary.id)["happy"] == 1
    assert first not in sv.unlabeled_clip_ids(ctx, summary.id)
    sv.label_clip(ctx, first, "sad")
    assert sv.undo_label(ctx, first) == "happy"
    assert sv.undo_label(ctx, first) is None
    with pytest.raises(SereError, match="not an emotion"):
        sv.label_clip(ctx, first, "bored")


def test_suggestions_cover_the_recordings(ctx):
    summary, _ = sv.load_demo(ctx, warm=False)
    order = sv.suggest_clips(ctx, summary.id)
    assert sorted(order) == sorted(sv.unlabeled_clip_ids(ctx, summary.id))
    speakers = {sv.clip_view(ctx, c).speaker for c in order[:10]}
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
    summary, _ = sv.load_demo(ctx, warm=False)
    ok, notes = sv.training_readiness(ctx, summary.id)
    assert not ok and "two emotions" in notes[0]
    with pytest.raises(TrainingDataError):
        sv.start_training(ctx, summary.id)
    assert sv.training_status(ctx, summary.id) is None
    assert sv.field_data(ctx, summary.id) is None
    assert sv.predictions_table(ctx, summary.id).empty
    with pytest.raises(InvalidDataError, match="train"):
        sv.export_predictions(ctx, summary.id)


@pytest.mark.slow
def test_training_stores_predictions_snapshots_and_a_model(trained):
    ctx, pid, run_id = trained
    status = sv.training_status(ctx, pid)
    assert status.status == "succeeded", status.error
    assert status.run_id == run_id and status.step == status.total_steps == 12 * SEREConfig().ensemble
    assert {"ll", "total"} <= set(status.losses[-1])
    history = status.history()
    assert list(history.columns) == ["step", "term", "value"] and len(history)
    m = status.metrics
    assert m["n_labeled"] == 20 and m["n_unlabeled"] == 52 and m["reference_clips"] == 40
    assert 0.0 <= m["reference_uar"] <= 1.0
    assert sv.latest_result(ctx, pid) == run_id

    field = sv.field_data(ctx, pid)
    assert len(field.points) == 72
    assert field.points["labeled"].sum() == 20
    assert set(field.points["role"]) == {"source", "target"}
    assert list(field.prototypes["emotion"]) == sorted(sv.DEFAULT_EMOTIONS)
    assert field.snapshot_frames["step"].nunique() >= 4
    fig = fg.field_figure(field)
    assert not fig.frames and len(fig.layout.meta["frames"]) == field.snapshot_frames["step"].nunique()
    assert fig.layout.meta["key"] == f"run-{run_id}"
    # the replay's steps are each model's, the loss curve's run through the models one after another
    members = SEREConfig().ensemble
    assert field.members == status.members == members
    assert field.snapshot_frames["step"].max() == status.total_steps // members
    if members > 1:
        assert fig.layout.sliders[0].currentvalue.prefix == f"training step (each of {members} models) "
        assert len(fg.loss_figure(status).layout.shapes) == members - 1

    table = sv.predictions_table(ctx, pid)
    assert len(table) == 40 and list(table["confidence"]) == sorted(table["confidence"])
    most = sv.predictions_table(ctx, pid, sort="most confident first")
    assert most["confidence"].iloc[0] == table["confidence"].max()

    view = sv.clip_view(ctx, int(table["clip"].iloc[0]))
    assert view.prediction is not None and view.role == "target"
    assert abs(sum(view.prediction.probabilities.values()) - 1) < 1e-4
    assert all(0 <= a < b <= view.duration_s + 0.05 for a, b in view.prediction.highlights)
    assert fg.clip_waveform(view).layout.shapes
    assert "Finished" in fg.progress_html(status)


@pytest.mark.slow
def test_review_confirmations_become_labels_and_exports_round_trip(trained, tmp_path):
    ctx, pid, run_id = trained
    table = sv.predictions_table(ctx, pid)
    clip = int(table["clip"].iloc[0])
    emotion = sv.confirm_prediction(ctx, clip)
    assert emotion == table["predicted"].iloc[0]
    other = next(e for e in sv.DEFAULT_EMOTIONS if e != emotion)
    sv.confirm_prediction(ctx, int(table["clip"].iloc[1]), other)
    after = sv.predictions_table(ctx, pid)
    assert after.set_index("clip").loc[clip, "your label"] == emotion

    pred_csv = sv.export_predictions(ctx, pid)
    rows = list(csv.DictReader(pred_csv.open(encoding="utf-8")))
    assert len(rows) == 72
    assert {"predicted_emotion", "confidence", "highlights", "p_angry"} <= set(rows[0])

    labels_csv = sv.export_labels(ctx, pid)
    result = sv.import_labels_file(ctx, pid, labels_csv)
    assert result.applied == 0 and result.unchanged == 22 and not result.rejected

    model_zip = sv.export_model(ctx, pid)
    with zipfile.ZipFile(model_zip) as zf:
        zf.extractall(tmp_path / "unzipped")
    from sere_core.method import SERE

    model = SERE.load(tmp_path / "unzipped" / "model")
    assert model.classes_ == sorted(sv.DEFAULT_EMOTIONS)
    about = json.loads((tmp_path / "unzipped" / "model" / "sere-project.json").read_text())
    assert about["run_id"] == run_id


@pytest.mark.slow
def test_one_run_at_a_time_and_cancel(tmp_path):
    ctx = open_ctx(tmp_path, steps=5000)
    try:
        summary, _ = sv.load_demo(ctx, warm=False)
        sv.apply_reference_labels(ctx, summary.id, per_emotion=2)
        sv.start_training(ctx, summary.id)
        with pytest.raises(ActiveRunError):
            sv.start_training(ctx, summary.id)
        import time

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            status = sv.training_status(ctx, summary.id)
            if status.status == "running" and status.step > 0:
                break
            time.sleep(0.2)
        cancelled = sv.cancel_training(ctx, summary.id)
        assert cancelled.status == "cancelled"
        assert ctx.jobs.wait(timeout=120)
        status = sv.training_status(ctx, summary.id)
        assert status.status == "cancelled" and status.step < 5000
        assert sv.cancel_training(ctx, summary.id) is None
    finally:
        ctx.close()


def test_a_run_left_running_by_a_dead_process_is_failed_at_start(tmp_path):
    ctx = open_ctx(tmp_path)
    summary = sv.create_project(ctx, "Crashed", "a, b")
    from sere_core import storage as st

    with ctx.session() as s:
        run = st.create_run(s, summary.id, {})
        st.start_run(s, run.id, worker_pid=2**22 + 12345)
    ctx.close()
    ctx = open_ctx(tmp_path)
    try:
        status = sv.training_status(ctx, summary.id)
        assert status.status == "failed" and "restarted" in status.error
    finally:
        ctx.close()


def test_small_helpers():
    assert unweighted_recall(["a", "a", "b"], ["a", "b", "b"]) == pytest.approx(0.75)
    assert unweighted_recall([], []) is None
    html = fg.counts_html({"happy": 2, "sad": 0}, 5)
    assert "happy 2/5" in html and "data-total='2'" in html
    assert "No training" in fg.progress_html(None)
    assert fg.field_figure(None).layout.annotations
    assert sv.user_message(TrainingDataError("label more")) == "label more"
    assert "server log" in sv.user_message(RuntimeError("boom"))
