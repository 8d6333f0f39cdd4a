"""Large projects: the projection fitted on a sample and extended, the light WebGL field with a
sampled replay, and the review table cut into pages by the database (small data, fast)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from sere_core import storage as st
from sere_core.app import AppContext, AppSettings
from sere_core.app import projects, review
from sere_core.app.testing import local_caller
from sere_core.viz import fit_projection, project_snapshots, resonance_field_figure
from sere_core.viz.projection import extend_embedding, nearest_neighbors

ME = local_caller()  # the shared workspace of a private server

EMOTIONS = ["neutral", "happy", "sad", "angry"]


def clusters(n: int, d: int = 16, spread: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(len(EMOTIONS), d)) * 5
    y = np.arange(n) % len(EMOTIONS)
    return rng.normal(size=(n, d)) * spread + centres[y], y


# --- projection ----------------------------------------------------------------------------------

def test_neighbours_are_exact_and_extension_lands_on_known_points():
    x, _ = clusters(50)
    index, dist = nearest_neighbors(x, x, 4, "euclidean", self_first=True)
    brute = np.linalg.norm(x[:, None] - x[None], axis=2)
    np.testing.assert_array_equal(index[:, 0], np.arange(50))
    np.testing.assert_array_equal(np.sort(index[:, 1:], axis=1), np.sort(np.argsort(brute, axis=1)[:, 1:4], axis=1))
    np.testing.assert_allclose(dist[:, 1:], np.sort(brute, axis=1)[:, 1:4], rtol=1e-4)
    xy = np.random.default_rng(1).normal(size=(50, 2))
    placed = extend_embedding(x[:5], x, xy, k=5)
    np.testing.assert_allclose(placed, xy[:5], atol=1e-3)  # a known point lands on itself
    with pytest.raises(Exception, match="metric"):
        nearest_neighbors(x, x, 3, "manhattan")


@pytest.mark.slow
def test_umap_on_a_sample_extends_to_unseen_clips_deterministically():
    early, y = clusters(400, spread=6.0, seed=1)  # before training: the emotions overlap
    final, _ = clusters(400, spread=0.5, seed=2)  # after: well apart
    kwargs = dict(max_fit_points=120, n_neighbors=8, n_epochs=60)
    p = fit_projection([early, final], **kwargs)
    q = fit_projection([early, final], **kwargs)
    assert p.method == "umap" and [c.shape for c in p.coords] == [(400, 2), (400, 2)]
    np.testing.assert_array_equal(p.coords[0], q.coords[0])
    np.testing.assert_array_equal(p.coords[1], q.coords[1])
    # 60 of the 400 final clips were fitted, the other 340 were placed among them: by emotion
    xy = p.coords[1]
    centroids = np.stack([xy[y == k].mean(0) for k in range(4)])
    within = np.mean([np.linalg.norm(xy[y == k] - centroids[k], axis=1).mean() for k in range(4)])
    between = np.mean([np.linalg.norm(a - b) for i, a in enumerate(centroids) for b in centroids[i + 1:]])
    assert between > 3 * within
    nearest = np.argmin(np.linalg.norm(xy[:, None] - centroids[None], axis=2), axis=1)
    assert (nearest == y).mean() > 0.95


def test_replay_keeps_a_seeded_sample_of_clips_before_the_final_snapshot():
    snaps = [SimpleNamespace(step=step, clip_ids=[f"c{i}" for i in range(60)],
                             embeddings=clusters(60, seed=step)[0], prototypes=np.eye(4, 16) * step)
             for step in (0, 5, 10)]
    frames, protos, _ = project_snapshots(snaps, EMOTIONS, max_replay_points=25, method="pca")
    counts = frames.groupby("step").size().to_dict()
    assert counts == {0: 25, 5: 25, 10: 60}
    assert set(frames[frames.step == 0].clip_id) == set(frames[frames.step == 5].clip_id)
    again, _, _ = project_snapshots(snaps, EMOTIONS, max_replay_points=25, method="pca")
    pd.testing.assert_frame_equal(frames, again)
    everything, _, _ = project_snapshots(snaps, EMOTIONS, max_replay_points=None, method="pca")
    assert len(everything) == 180 and len(protos) == 12


# --- the field -----------------------------------------------------------------------------------

def big_field(n: int, steps=(0, 10, 20)):
    rng = np.random.default_rng(3)
    ids = [f"c{i}" for i in range(n)]
    frames = pd.concat([pd.DataFrame({"step": s, "clip_id": ids, "x": rng.normal(size=n) * (1 + s),
                                      "y": rng.normal(size=n)}) for s in steps], ignore_index=True)
    last = frames[frames.step == steps[-1]]
    points = pd.DataFrame({"clip_id": ids, "x": last.x.to_numpy(), "y": last.y.to_numpy(),
                           "name": [f"clip_{i:05d}.wav" for i in range(n)],
                           "emotion": [EMOTIONS[i % 4] for i in range(n)],
                           "confidence": rng.uniform(0.25, 1.0, size=n),
                           "role": ["source" if i < 20 else "target" for i in range(n)],
                           "labeled": [i < 20 for i in range(n)]})
    return points, frames


def test_large_field_uses_webgl_and_replays_a_sample_with_the_last_frame_complete():
    points, frames = big_field(1500)
    fig = resonance_field_figure(points, snapshot_frames=frames, emotions=EMOTIONS, max_replay_points=200)
    clips = [t for t in fig.data if (t.meta or {}).get("kind") == "clips"]
    assert all(isinstance(t, go.Scattergl) for t in clips)
    assert fig.layout.meta["moving_clips"] == 200
    first, last = fig.frames[0], fig.frames[-1]
    assert sum(len(d.x) for d in first.data) == 200
    assert [len(d.x) for d in last.data] == [len(t.x) for t in clips]
    by_step = frames.set_index(["step", "clip_id"])
    for trace, moved in zip(clips, first.data):
        # the moving clips come first in each trace, and the early frame holds their positions
        ids = [row[0] for row in trace.customdata[: len(moved.x)]]
        # (coordinates are rounded to about 1/10,000 of the extent, here 0.01)
        np.testing.assert_allclose(moved.x, by_step.loc[[(0, c) for c in ids], "x"].to_numpy(), atol=0.006)
        np.testing.assert_allclose(trace.x, by_step.loc[[(20, row[0]) for row in trace.customdata], "x"].to_numpy(),
                                   atol=0.006)
    again = resonance_field_figure(points, snapshot_frames=frames, emotions=EMOTIONS, max_replay_points=200)
    assert again.to_json() == fig.to_json()
    # compact: short hover rows, rounded coordinates, scalar marker settings where they agree
    assert len(fig.to_json()) < 130 * 1500  # about 107 bytes per clip here, with three frames
    small = resonance_field_figure(points.head(300), emotions=EMOTIONS)
    assert all(isinstance(t, go.Scatter) for t in small.data if (t.meta or {}).get("kind") == "clips")


def test_small_field_replays_every_clip():
    points, frames = big_field(120)
    fig = resonance_field_figure(points, snapshot_frames=frames, emotions=EMOTIONS)
    assert fig.layout.meta["moving_clips"] == 120
    assert sum(len(d.x) for d in fig.frames[0].data) == 120
    assert json.loads(fig.to_json())["layout"]["meta"]["steps"] == [0, 10, 20]


# --- the review table ----------------------------------------------------------------------------

@pytest.fixture
def reviewed(tmp_path):
    """A project with 23 target clips (20 predicted, 2 labeled) and 2 source clips, and its run."""
    ctx = AppContext.open(AppSettings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache"))
    project = projects.create_project(ctx, ME, "paging", EMOTIONS)
    with ctx.session() as s:
        ids = [st.add_clip(s, project.id, audio_id=f"a{i:02d}", original_name=f"clip_{24 - i:02d}.wav",
                           duration_s=1.0, role="target" if i < 23 else "source").id for i in range(25)]
        run = st.create_run(s, project.id, {})
        st.start_run(s, run.id)
        preds = {cid: {"emotion": EMOTIONS[i % 4], "confidence": 0.3 + 0.03 * ((i * 7) % 20),
                       "probabilities": {}, "highlights": [[0.1, 0.4]]}
                 for i, cid in enumerate(ids) if i not in (5, 9, 11)}
        st.save_predictions(s, run.id, preds)
        st.finish_run(s, run.id)
        st.set_label(s, ids[0], "happy")
        st.set_label(s, ids[1], "sad")
    yield ctx, project.id, ids, preds
    ctx.close()


def test_review_table_pages_come_from_the_database_in_order(reviewed):
    ctx, pid, ids, preds = reviewed
    first = review.predictions_page(ctx, ME, pid, page=1, page_size=10)
    assert (first.page, first.pages, first.total, len(first.rows)) == (1, 3, 23, 10)
    assert first.caption() == "Clips 1-10 of 23 · page 1 of 3"
    pages = [review.predictions_page(ctx, ME, pid, page=n, page_size=10) for n in (1, 2, 3)]
    assert [len(p.rows) for p in pages] == [10, 10, 3]
    assert pages[2].caption() == "Clips 21-23 of 23 · page 3 of 3"
    stacked = pd.concat([p.rows for p in pages], ignore_index=True)
    whole = review.predictions_table(ctx, ME, pid)
    pd.testing.assert_frame_equal(stacked, whole)
    # least confident first, ties by clip id, clips without a prediction last
    conf = whole["confidence"].to_numpy()
    assert np.all(np.diff(conf[:20]) >= 0) and np.isnan(conf[20:]).all()
    predicted = whole.iloc[:20]
    assert list(predicted.sort_values(["confidence", "clip"])["clip"]) == list(predicted["clip"])
    assert sorted(whole["clip"]) == sorted(ids[:23])
    assert set(whole.loc[whole["your label"] != "", "clip"]) == {ids[0], ids[1]}
    assert whole.loc[whole["clip"] == ids[2], "highlights"].item() == "0.10-0.40 s"
    # asking past the end shows the last page; other orders
    assert review.predictions_page(ctx, ME, pid, page=99, page_size=10).page == 3
    most = review.predictions_table(ctx, ME, pid, sort="most confident first")["confidence"].to_numpy()
    assert np.all(np.diff(most[:20]) <= 0) and np.isnan(most[20:]).all()
    names = review.predictions_table(ctx, ME, pid, sort="by file name")["file"].tolist()
    assert names == sorted(names)
    assert len(review.predictions_table(ctx, ME, pid, role=None)) == 25


def test_next_clip_to_review_is_the_first_unlabeled_in_the_order(reviewed):
    ctx, pid, ids, _ = reviewed
    order = review.predictions_table(ctx, ME, pid)
    todo = order.loc[order["your label"] == "", "clip"].tolist()
    assert review.next_to_review(ctx, ME, pid) == todo[0]
    assert review.next_to_review(ctx, ME, pid, current=todo[0]) == todo[1]
    most = review.predictions_table(ctx, ME, pid, sort="most confident first")
    assert review.next_to_review(ctx, ME, pid, "most confident first") == most.loc[most["your label"] == "", "clip"].iloc[0]
