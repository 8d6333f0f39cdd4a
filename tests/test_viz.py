"""The plot functions and the projection, tested as plain functions (no Gradio)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from sere_core.errors import ConfigError, SereError
from sere_core.viz import (
    KNOWN_EMOTION_COLORS,
    NO_EMOTION,
    UNKNOWN_COLOR,
    emotion_colors,
    fit_projection,
    probabilities_figure,
    project_snapshots,
    resonance_field_figure,
    training_curve_figure,
    results_figure,
    confusion_figure,
    umap_is_warm,
    warm_up_umap,
    waveform_figure,
)

EMOTIONS = ["neutral", "happy", "sad", "angry"]


def clustered(n: int, d: int = 12, alpha: float = 1.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(EMOTIONS), d)) * 4
    y = np.arange(n) % len(EMOTIONS)
    x = rng.normal(size=(n, d)) + alpha * centres[y]
    return x, y, centres


def make_snapshots(n: int = 24, steps=(0, 10, 20), d: int = 12):
    snaps = []
    for k, step in enumerate(steps):
        alpha = k / max(1, len(steps) - 1)
        x, _, centres = clustered(n, d, alpha, seed=k)
        snaps.append(SimpleNamespace(step=step, clip_ids=[f"c{i}" for i in range(n)], embeddings=x,
                                     prototypes=centres * max(alpha, 0.1)))
    return snaps


# --- colours -------------------------------------------------------------------------------------

def test_known_emotions_have_fixed_colours_and_others_are_distinct_and_stable():
    colors = emotion_colors(["angry", "Wut", "Freude", "happy"])
    assert colors["angry"] == KNOWN_EMOTION_COLORS["angry"]
    assert colors["happy"] == KNOWN_EMOTION_COLORS["happy"]
    assert len(set(colors.values())) == 4
    assert emotion_colors(["angry", "Wut", "Freude", "happy"]) == colors
    assert emotion_colors(["HAPPY"])["HAPPY"] == KNOWN_EMOTION_COLORS["happy"]


# --- projection ----------------------------------------------------------------------------------

def test_small_sets_fall_back_to_pca_with_consistent_shapes():
    x1, _, _ = clustered(8)
    x0 = x1 + 0.5
    protos = np.eye(4, 12)
    p = fit_projection([x0, x1], [protos, protos])
    assert p.method == "pca"
    assert [c.shape for c in p.coords] == [(8, 2), (8, 2)]
    assert [c.shape for c in p.prototype_coords] == [(4, 2), (4, 2)]
    # one map for all snapshots: a shifted snapshot moves, it is not re-laid out
    again = fit_projection([x0, x1], [protos, protos])
    np.testing.assert_allclose(again.coords[0], p.coords[0])


def test_snapshots_may_hold_different_clips_and_prototypes_are_optional():
    x, _, _ = clustered(10)
    p = fit_projection([x[:4], x])
    assert p.coords[0].shape == (4, 2) and p.coords[1].shape == (10, 2)
    assert p.prototype_coords == (None, None)


def test_two_dimensional_data_is_kept_as_is():
    x = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    p = fit_projection([x])
    assert p.method == "identity"
    np.testing.assert_allclose(p.coords[0], x)


@pytest.mark.parametrize(
    "args, message",
    [
        (([],), "at least one snapshot"),
        (([np.zeros((3, 4)), np.zeros((3, 5))],), "dimensions"),
        (([np.zeros(4)],), "2-D array"),
        (([np.full((3, 4), np.nan)],), "NaN"),
        (([np.zeros((3, 4))], [np.zeros((2, 4)), np.zeros((2, 4))]), "one per snapshot"),
    ],
)
def test_bad_input_raises_a_project_error(args, message):
    with pytest.raises(ConfigError, match=message):
        fit_projection(*args)


def test_unknown_options_are_refused():
    with pytest.raises(ConfigError, match="method"):
        fit_projection([np.zeros((3, 4))], method="tsne")
    with pytest.raises(ConfigError, match="reference"):
        fit_projection([np.zeros((3, 4))], reference="first")


@pytest.mark.slow
def test_umap_is_used_for_larger_sets_fits_on_a_sample_and_is_deterministic():
    snaps = make_snapshots(n=40)
    kwargs = dict(n_neighbors=8, n_epochs=30, max_fit_points=25)
    p = fit_projection([s.embeddings for s in snaps], [s.prototypes for s in snaps], **kwargs)
    assert p.method == "umap"
    assert [c.shape for c in p.coords] == [(40, 2)] * 3
    assert all(np.isfinite(c).all() for c in p.coords)
    q = fit_projection([s.embeddings for s in snaps], [s.prototypes for s in snaps], **kwargs)
    np.testing.assert_allclose(p.coords[-1], q.coords[-1])
    np.testing.assert_allclose(p.coords[0], q.coords[0])
    # the final, clustered snapshot separates its emotions in 2-D
    y = np.arange(40) % 4
    final = p.coords[-1]
    centroids = np.stack([final[y == k].mean(0) for k in range(4)])
    within = np.mean([np.linalg.norm(final[y == k] - centroids[k], axis=1).mean() for k in range(4)])
    between = np.mean([np.linalg.norm(a - b) for i, a in enumerate(centroids) for b in centroids[i + 1:]])
    assert between > 2 * within
    stacked = fit_projection([s.embeddings for s in snaps], reference="stacked", n_neighbors=8, n_epochs=30)
    assert stacked.method == "umap" and stacked.coords[0].shape == (40, 2)
    # warming up afterwards is quick: the kernels are compiled
    assert warm_up_umap() < 60 and umap_is_warm()


@pytest.mark.slow
def test_project_snapshots_returns_long_tables():
    snaps = make_snapshots(n=12)
    frames, protos, projection = project_snapshots(snaps, EMOTIONS)
    assert list(frames.columns) == ["step", "clip_id", "x", "y"]
    assert len(frames) == 36 and sorted(frames["step"].unique()) == [0, 10, 20]
    assert list(protos.columns) == ["step", "emotion", "x", "y"]
    assert list(protos[protos.step == 20]["emotion"]) == EMOTIONS
    with pytest.raises(ConfigError, match="prototypes"):
        project_snapshots(snaps, EMOTIONS[:3])
    with pytest.raises(SereError):
        project_snapshots([], EMOTIONS)


# --- the resonance field -------------------------------------------------------------------------

def field_inputs(n: int = 12, steps=(0, 10, 20)):
    snaps = make_snapshots(n=n, steps=steps)
    frames, protos, _ = project_snapshots(snaps, EMOTIONS)
    last = frames[frames.step == max(steps)].reset_index(drop=True)
    points = last.assign(
        name=[f"clip_{i}.wav" for i in range(n)],
        emotion=[EMOTIONS[i % 4] for i in range(n)],
        confidence=np.linspace(0.3, 0.95, n),
        role=["source" if i < 4 else "target" for i in range(n)],
        labeled=[i < 4 for i in range(n)],
    ).drop(columns="step")
    final_protos = protos[protos.step == max(steps)][["emotion", "x", "y"]]
    return points, final_protos, frames, protos


def clip_traces(fig):
    return [t for t in fig.data if (t.meta or {}).get("kind") == "clips"]


def test_field_has_one_coloured_trace_per_emotion_with_clip_ids_and_hover():
    points, protos, frames, pframes = field_inputs()
    fig = resonance_field_figure(points, protos, snapshot_frames=frames, prototype_frames=pframes,
                                 emotions=EMOTIONS)
    traces = clip_traces(fig)
    colors = emotion_colors(EMOTIONS)
    assert [t.name for t in traces] == EMOTIONS
    assert [t.marker.color for t in traces] == [colors[e] for e in EMOTIONS]
    ids = sorted(row[0] for t in traces for row in t.customdata)
    assert ids == sorted(points["clip_id"])
    t0 = traces[0]
    assert "customdata[1]" in t0.hovertemplate and "confidence" in t0.hovertemplate
    first = next(row for row in t0.customdata if row[0] == "c0")
    assert first == ["c0", "clip_0.wav", "labeled by you", "source"]
    assert "emotion: neutral" in t0.hovertemplate and "%{customdata[3]} language" in t0.hovertemplate
    target = next(row for t in traces for row in t.customdata if row[0] == "c11")
    assert target[2] == "95%"
    assert isinstance(t0, go.Scatter)  # SVG for small sets


def test_labeled_clips_stand_out_and_roles_have_symbols():
    points, protos, _, _ = field_inputs()
    fig = resonance_field_figure(points, protos, emotions=EMOTIONS)
    t = clip_traces(fig)[0]  # neutral: c0 (labeled source), c4, c8 (targets)
    ids = [row[0] for row in t.customdata]
    i_lab, i_tgt = ids.index("c0"), ids.index("c4")
    assert t.marker.size[i_lab] > t.marker.size[i_tgt]
    assert t.marker.line.width[i_lab] > t.marker.line.width[i_tgt]
    assert t.marker.symbol[i_lab] == "diamond" and t.marker.symbol[i_tgt] == "circle"
    legend_names = [tr.name for tr in fig.data if (tr.meta or {}).get("kind") == "legend"]
    assert {"source language", "target language", "labeled by you"} <= set(legend_names)


def test_prototypes_are_named_stars():
    points, protos, _, _ = field_inputs()
    fig = resonance_field_figure(points, protos, emotions=EMOTIONS)
    proto = next(t for t in fig.data if (t.meta or {}).get("kind") == "prototypes")
    assert proto.marker.symbol == "star"
    assert list(proto.text) == EMOTIONS
    assert list(proto.marker.color) == [emotion_colors(EMOTIONS)[e] for e in EMOTIONS]


def test_snapshots_become_frames_with_a_slider_starting_at_the_end():
    points, protos, frames, pframes = field_inputs(steps=(0, 5, 10, 15))
    fig = resonance_field_figure(points, protos, snapshot_frames=frames, prototype_frames=pframes,
                                 emotions=EMOTIONS)
    assert [f.name for f in fig.frames] == ["0", "5", "10", "15"]
    slider = fig.layout.sliders[0]
    assert [s.label for s in slider.steps] == ["0", "5", "10", "15"]
    assert slider.active == 3 and slider.currentvalue.prefix == "training step "
    assert slider.steps[0].method == "animate" and list(slider.steps[0].args[0]) == ["0"]
    buttons = fig.layout.updatemenus[0].buttons
    assert list(buttons[0].args[0]) == ["0", "5", "10", "15"]
    # each frame moves the clip traces (same order of points) and the prototypes
    traces = clip_traces(fig)
    f0 = fig.frames[0]
    assert list(f0.traces) == list(range(len(traces))) + [len(traces)]
    neutral_ids = [row[0] for row in traces[0].customdata]
    step0 = frames[frames.step == 0].set_index("clip_id")
    np.testing.assert_allclose(f0.data[0].x, step0.loc[neutral_ids, "x"].to_numpy(), atol=1e-3)
    # the last frame is the final picture
    np.testing.assert_allclose(fig.frames[-1].data[0].x, traces[0].x)
    # axes are fixed so the replay does not zoom around
    xr = fig.layout.xaxis.range
    assert xr[0] <= frames["x"].min() and xr[1] >= frames["x"].max()


def test_clips_missing_from_a_snapshot_are_hidden_in_that_frame():
    points, protos, frames, pframes = field_inputs()
    frames = frames[~((frames.step == 0) & (frames.clip_id == "c4"))]
    fig = resonance_field_figure(points, protos, snapshot_frames=frames, prototype_frames=pframes,
                                 emotions=EMOTIONS)
    ids = [row[0] for row in clip_traces(fig)[0].customdata]
    assert fig.frames[0].data[0].x[ids.index("c4")] is None or np.isnan(fig.frames[0].data[0].x[ids.index("c4")])


def test_large_sets_use_webgl_and_clips_without_emotion_are_grey():
    n = 1200
    rng = np.random.default_rng(1)
    points = pd.DataFrame({"clip_id": [f"c{i}" for i in range(n)], "x": rng.normal(size=n),
                           "y": rng.normal(size=n)})
    fig = resonance_field_figure(points)
    traces = clip_traces(fig)
    assert len(traces) == 1 and traces[0].name == NO_EMOTION
    assert isinstance(traces[0], go.Scattergl)
    assert traces[0].marker.color == UNKNOWN_COLOR


def test_selected_clip_gets_a_ring_and_bad_tables_are_refused():
    points, protos, _, _ = field_inputs()
    fig = resonance_field_figure(points, protos, emotions=EMOTIONS, selected_clip_id="c5")
    ring = next(t for t in fig.data if (t.meta or {}).get("kind") == "selected")
    row = points.set_index("clip_id").loc["c5"]
    assert ring.x == (row.x,) and ring.y == (row.y,)
    with pytest.raises(ConfigError, match="clip_id"):
        resonance_field_figure(points.drop(columns="clip_id"))
    with pytest.raises(ConfigError, match="twice"):
        resonance_field_figure(pd.concat([points, points.iloc[:1]]))
    with pytest.raises(ConfigError, match="role"):
        resonance_field_figure(points.assign(role="other"))


def test_colour_by_switches_the_encoding_and_keeps_every_clip():
    points, protos, frames, pframes = field_inputs()
    points = points.assign(language=["de", "it", None] * 4, speaker=None, changed=[True, False, None, None] * 3,
                           disagreement=[0.0, 1 / 3, 2 / 3, np.nan] * 3)
    by_emotion = resonance_field_figure(points, protos, emotions=EMOTIONS)
    assert {t.meta["group"] for t in clip_traces(by_emotion)} <= set(EMOTIONS) | {"not predicted yet"}
    assert "fainter: less confident" in by_emotion.layout.legend.title.text

    by_language = resonance_field_figure(points, protos, emotions=EMOTIONS, color_by="language")
    traces = clip_traces(by_language)
    assert {t.name for t in traces} == {"de", "it", "unknown"}
    assert len({t.marker.color for t in traces}) == 3  # one colour per language, grey for unknown
    assert "customdata[4]" in traces[0].hovertemplate  # the emotion is still on hover
    assert "colour: language" in by_language.layout.legend.title.text

    by_conf = resonance_field_figure(points, protos, emotions=EMOTIONS, color_by="confidence")
    predicted = [t for t in clip_traces(by_conf) if t.name == "predicted"][0]
    assert predicted.marker.colorscale and predicted.marker.cmin == 0 and predicted.marker.cmax == 1
    assert list(predicted.marker.color) == list(points.loc[points.confidence.notna() & ~points.labeled,
                                                           "confidence"].round(3))
    split = resonance_field_figure(points, protos, emotions=EMOTIONS, color_by="disagreement")
    voted = [t for t in clip_traces(split) if t.name == "predicted"][0]
    assert voted.marker.colorscale and len(voted.x) == 9  # the clips with a vote, labeled ones too
    assert "disagree" in voted.marker.colorbar.title.text
    changed = resonance_field_figure(points, protos, emotions=EMOTIONS, color_by="changed")
    assert {t.name for t in clip_traces(changed)} == {
        "changed since the previous run", "same as the previous run", "new: no previous run"}
    for fig in (by_emotion, by_language, by_conf, split, changed):  # every clip drawn once, selectable
        traces = clip_traces(fig)
        assert sum(len(t.x) for t in traces) == len(points)
        assert all(t.unselected.marker.opacity < 0.5 for t in traces)
        assert fig.layout.dragmode == "lasso"
    with pytest.raises(ConfigError, match="color_by"):
        resonance_field_figure(points, color_by="mood")
    with pytest.raises(ConfigError, match="speaker"):
        resonance_field_figure(points.drop(columns="speaker"), color_by="speaker")


# --- waveform, probabilities, training curve -----------------------------------------------------

def test_waveform_has_an_envelope_and_shaded_highlights_clamped_to_the_clip():
    sr = 16000
    samples = np.sin(np.linspace(0, 300, 2 * sr)).astype(np.float32) * np.linspace(0, 1, 2 * sr)
    fig = waveform_figure(samples, sr, [(0.2, 0.5), (1.8, 3.0), (1.0, 1.0)], emotion="angry",
                          max_points=500)
    assert len(fig.data[0].x) == 500
    assert fig.data[1].fill == "tonexty"
    spans = [(s.x0, s.x1) for s in fig.layout.shapes]
    assert spans == [(0.2, 0.5), (1.8, 2.0)]
    assert fig.layout.shapes[0].fillcolor == KNOWN_EMOTION_COLORS["angry"]
    assert fig.layout.xaxis.range == (0, 2.0)
    assert waveform_figure(np.zeros(0), sr).layout.annotations
    with pytest.raises(ConfigError):
        waveform_figure(samples, 0)


def test_probabilities_are_one_bar_per_emotion_in_order():
    probs = {"angry": 0.6, "neutral": 0.1, "happy": 0.2, "sad": 0.1}
    fig = probabilities_figure(probs, emotions=EMOTIONS)
    bar = fig.data[0]
    assert list(bar.y) == EMOTIONS and list(bar.x) == [0.1, 0.2, 0.1, 0.6]
    assert list(bar.marker.color) == [emotion_colors(EMOTIONS)[e] for e in EMOTIONS]
    assert list(bar.text) == ["10%", "20%", "10%", "60%"]
    assert probabilities_figure({}).layout.annotations
    with pytest.raises(ConfigError, match="between 0 and 1"):
        probabilities_figure({"angry": 1.5})


def test_training_curve_has_one_line_per_loss_term():
    history = pd.DataFrame({"step": [1, 2, 1, 2], "term": ["ll", "ll", "lu", "lu"],
                            "value": [1.0, 0.8, 0.5, 0.4]})
    fig = training_curve_figure(history, total_steps=10)
    assert [t.name for t in fig.data] == ["ll", "lu"]
    assert fig.layout.xaxis.title.text == "training step" and not fig.layout.shapes
    assert training_curve_figure(pd.DataFrame()).layout.annotations


def test_an_ensembles_training_curve_marks_where_each_model_starts():
    history = pd.DataFrame({"step": [1, 30, 31, 60, 61, 90], "term": ["ll"] * 6,
                            "value": [1.0, 0.2, 1.1, 0.2, 1.0, 0.3]})
    fig = training_curve_figure(history, total_steps=90, members=3)
    assert [(shape.x0, shape.x1) for shape in fig.layout.shapes] == [(0, 30), (30, 60), (60, 90)]
    assert [a.text for a in fig.layout.annotations] == ["model 1 of 3", "model 2 of 3", "model 3 of 3"]
    assert "3 models" in fig.layout.xaxis.title.text


def test_a_runs_results_at_a_glance_and_its_confusion_matrix():
    fig = results_figure({"happy": 3, "sad": 1}, [0.05, 0.55, 0.58, 0.95], emotions=["sad", "happy", "angry"])
    bars, hist = fig.data
    assert list(bars.x) == ["sad", "happy", "angry"] and list(bars.y) == [1, 3, 0]
    assert sum(hist.y) == 4 and list(hist.y)[5] == 2  # 50-60 %: two clips
    fig = confusion_figure(["sad", "sad", "happy"], ["sad", "happy", "happy"], emotions=["happy", "sad"])
    assert fig.layout.meta["matrix"] == [[1, 0], [1, 1]]  # rows: labels, columns: predictions
    assert fig.data[0].z[1][1] == 0.5  # sad recalled once in two
