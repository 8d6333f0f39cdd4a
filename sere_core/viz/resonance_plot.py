"""Plots of SERE's results: data in, plotly figure out. No Gradio, no database, no files.

* :func:`resonance_field_figure` - the clips in the 2-D resonance map, coloured by emotion or any other column, with the
  emotion prototypes and a replay of the training snapshots (plotly frames, slider, play/pause);
* :func:`waveform_figure` - a clip's waveform envelope with its emotional highlights shaded;
* :func:`probabilities_figure` - one bar per emotion;
* :func:`training_curve_figure` - the loss terms over training steps.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from sere_core.errors import ConfigError
from sere_core.viz.colors import UNKNOWN_COLOR, category_colors, emotion_colors
from sere_core.viz.projection import MAX_REPLAY_POINTS

#: Name shown for clips that have no emotion yet.
NO_EMOTION = "not predicted yet"
#: Above this many points the field is drawn with WebGL (``Scattergl``).
WEBGL_THRESHOLD = 1000

SYMBOLS = {"source": "diamond", "target": "circle"}
#: What the field's colour can show (``color_by``): a column of the points table and its legend title.
#: ``confidence`` is a continuous scale; the others are categories.
COLOR_BY: dict[str, str] = {
    "emotion": "predicted emotion (your label where you gave one)",
    "confidence": "confidence of the prediction",
    "language": "language",
    "role": "source or target language",
    "labeled": "labeled or not",
    "speaker": "speaker",
    "changed": "prediction changed since the previous run",
    "disagreement": "disagreement between the ensemble's models",
}
#: The continuous colourings: the column's colour scale and the colour bar's title.
CONTINUOUS = {"confidence": ("Viridis", "confidence"), "disagreement": ("OrRd", "models that disagree")}
#: Category names the figure gives the boolean columns and missing values.
UNKNOWN_VALUE = "unknown"

ROLE_TEXT = {"source": "source language", "target": "target language"}
_FONT = dict(family="Inter, Segoe UI, Helvetica, Arial, sans-serif")


def _check_columns(df: pd.DataFrame, required: Sequence[str], what: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ConfigError(f"{what} is missing the column(s) {', '.join(missing)}.")


def _normalise_points(points: pd.DataFrame) -> pd.DataFrame:
    _check_columns(points, ["clip_id", "x", "y"], "The points table")
    df = points.copy()
    df["clip_id"] = df["clip_id"].astype(str)
    if df["clip_id"].duplicated().any():
        dup = df.loc[df["clip_id"].duplicated(), "clip_id"].iloc[0]
        raise ConfigError(f"The points table lists clip {dup!r} twice.")
    if "name" not in df.columns:
        df["name"] = df["clip_id"]
    df["name"] = df["name"].fillna(df["clip_id"]).astype(str)
    if "emotion" not in df.columns:
        df["emotion"] = None
    df["emotion"] = df["emotion"].map(lambda e: NO_EMOTION if e is None or (isinstance(e, float) and math.isnan(e)) or str(e) == "" else str(e))
    if "confidence" not in df.columns:
        df["confidence"] = np.nan
    df["confidence"] = pd.to_numeric(df["confidence"], errors="coerce").astype(float)
    if "role" not in df.columns:
        df["role"] = "target"
    df["role"] = df["role"].fillna("target").astype(str)
    bad = sorted(set(df["role"]) - set(SYMBOLS))
    if bad:
        raise ConfigError(f"role must be 'source' or 'target', not {bad[0]!r}.")
    if "labeled" not in df.columns:
        df["labeled"] = False
    df["labeled"] = df["labeled"].fillna(False).astype(bool)
    df["x"] = pd.to_numeric(df["x"], errors="coerce").astype(float)
    df["y"] = pd.to_numeric(df["y"], errors="coerce").astype(float)
    return df.reset_index(drop=True)


def _hover_rows(df: pd.DataFrame, with_emotion: bool) -> list[list[str]]:
    """``[clip_id, name, confidence text, role]`` per clip, plus the emotion when the trace is not
    one emotion's (kept short because a 100,000-clip figure carries one row per clip)."""
    conf = df["confidence"].to_numpy()
    text = np.where(df["labeled"].to_numpy(), "labeled by you",
                    np.where(np.isnan(conf), "-", [f"{c:.0%}" for c in np.nan_to_num(conf)]))
    columns = [df["clip_id"], df["name"], text.tolist(), df["role"]] + ([df["emotion"]] if with_emotion else [])
    return [list(row) for row in zip(*columns)]


def _hover(emotion: str | None, group: str | None = None) -> str:
    """Hover text; ``emotion`` None reads it from ``customdata[4]``; ``group`` names the colour's category."""
    shown = html.escape(emotion) if emotion is not None else "%{customdata[4]}"
    extra = f"<br>{html.escape(group)}" if group else ""
    return (f"<b>%{{customdata[1]}}</b><br>emotion: {shown}<br>confidence: %{{customdata[2]}}"
            f"<br>%{{customdata[3]}} language{extra}<extra></extra>")


def _category(df: pd.DataFrame, color_by: str) -> pd.Series:
    """Each clip's category for a categorical ``color_by`` (a text per clip)."""
    if color_by == "role":
        return df["role"].map(ROLE_TEXT)
    if color_by == "labeled":
        return df["labeled"].map({True: "labeled by you", False: "not labeled"})
    if color_by == "changed":
        return df["changed"].map(lambda v: "new: no previous run" if v is None or v != v else
                                 "changed since the previous run" if v else "same as the previous run")
    return df[color_by].map(lambda v: UNKNOWN_VALUE if v is None or (isinstance(v, float) and math.isnan(v))
                            or str(v) == "" else str(v))


def _compact(values: np.ndarray) -> Any:
    """One value when every point has it (smaller JSON), else the list."""
    return values[0].item() if len(values) and (values == values[0]).all() else values.tolist()


def _marker_arrays(df: pd.DataFrame, *, fade: bool = True) -> dict[str, Any]:
    """Markers: size and outline say "labeled by you", the symbol the role; with ``fade`` (colour
    by emotion) a less confident prediction is drawn fainter."""
    size = np.where(df["labeled"], 15, np.where(df["role"] == "source", 10, 9)).astype(float)
    line_w = np.where(df["labeled"], 2.0, 0.5)
    line_c = np.where(df["labeled"], "#111111", "#ffffff")
    conf = df["confidence"].to_numpy()
    faded = 0.45 + 0.5 * np.nan_to_num(conf) if fade else np.full(len(df), 0.9)
    opacity = np.where(np.isnan(conf) | df["labeled"].to_numpy(), 0.95, faded)
    return dict(
        size=_compact(size),
        symbol=_compact(np.array([SYMBOLS[r] for r in df["role"]])),
        opacity=_compact(np.clip(opacity, 0.3, 1.0).round(2)),
        line=dict(width=_compact(line_w), color=_compact(line_c)),
    )


def _rounder(*columns: np.ndarray) -> Any:
    """Rounds coordinates to about 1/10,000 of the data's extent (a fraction of a pixel), which
    shrinks a large figure's JSON about threefold."""
    values = np.concatenate([np.asarray(c, dtype=float) for c in columns])
    values = values[np.isfinite(values)]
    span = float(values.max() - values.min()) if values.size else 0.0
    decimals = max(0, 4 - math.floor(math.log10(span))) if span > 0 else 4

    def rounded(v: Any) -> list[float]:
        return np.round(np.asarray(v, dtype=float), decimals).tolist()

    return rounded


def _replay_sample_first(df: pd.DataFrame, snap: pd.DataFrame, limit: int) -> pd.DataFrame:
    """Marks (``moves``) a seeded sample of at most ``limit`` clips of the first snapshot and puts
    them first, keeping the order otherwise."""
    first = snap.loc[snap["step"] == snap["step"].min(), "clip_id"]
    candidates = np.flatnonzero(df["clip_id"].isin(first).to_numpy())
    if len(candidates) > limit:
        candidates = np.sort(np.random.default_rng(0).choice(candidates, size=limit, replace=False))
    moves = np.zeros(len(df), dtype=bool)
    moves[candidates] = True
    out = df.assign(moves=moves)
    return out.iloc[np.argsort(~moves, kind="stable")].reset_index(drop=True)


def _axis_range(values: np.ndarray) -> list[float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return [-1.0, 1.0]
    lo, hi = float(v.min()), float(v.max())
    pad = max((hi - lo) * 0.08, 0.5)
    return [lo - pad, hi + pad]


def empty_figure(message: str, height: int = 420) -> go.Figure:
    """A blank figure that shows ``message`` in the middle (for "nothing to show yet" states)."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=15, color="#666", **_FONT))
    fig.update_layout(height=height, xaxis=dict(visible=False), yaxis=dict(visible=False),
                      plot_bgcolor="white", paper_bgcolor="white", margin=dict(l=10, r=10, t=30, b=10))
    return fig


def resonance_field_figure(
    points: pd.DataFrame,
    prototypes: pd.DataFrame | None = None,
    *,
    snapshot_frames: pd.DataFrame | None = None,
    prototype_frames: pd.DataFrame | None = None,
    emotions: Sequence[str] | None = None,
    selected_clip_id: str | None = None,
    webgl: bool | None = None,
    max_replay_points: int = MAX_REPLAY_POINTS,
    title: str | None = "Resonance field",
    height: int = 560,
    uirevision: str | None = None,
    step_label: str = "training step",
    color_by: str = "emotion",
) -> go.Figure:
    """The clips in the resonance map, with a replay of training.

    ``points``: one row per clip, columns ``clip_id, x, y`` (final position) and optionally ``name``
    (shown on hover), ``emotion`` (predicted, or the label), ``confidence`` (0-1), ``role``
    (``"source"``/``"target"``) and ``labeled`` (bool). ``prototypes``: columns ``emotion, x, y``.
    ``snapshot_frames``: long table ``step, clip_id, x, y``; ``prototype_frames``: ``step, emotion, x, y``.
    With snapshots the figure gets one plotly frame per step, a slider (starting at the last step)
    and play/pause buttons (``step_label`` names the slider's steps). Colour is the final emotion so
    the replay shows each colour gathering.
    ``customdata[0]`` of every clip point is its ``clip_id`` (for click-to-select); clip traces
    carry ``meta.kind == "clips"``, and unselected clips of a selection grey out.

    ``color_by`` (a key of :data:`COLOR_BY`) chooses what colour shows: the emotion (then fainter
    means less confident), the confidence on a continuous scale, or a category from the columns
    ``language``, ``role``, ``labeled``, ``speaker`` or ``changed`` (True, False, or None for
    "no previous run"). Size, outline and symbol keep their meaning whatever the colour.

    Large fields stay light: WebGL markers from ``WEBGL_THRESHOLD`` points (``webgl`` overrides),
    coordinates rounded to a fraction of a pixel, short hover rows. With more than
    ``max_replay_points`` clips the replay moves a seeded sample of the clips of the first snapshot:
    they come first in each trace and the earlier frames carry only their positions (plotly then
    draws only those), while the last frame puts every clip back.
    """
    if color_by not in COLOR_BY:
        raise ConfigError(f"color_by must be one of {', '.join(COLOR_BY)}, not {color_by!r}.")
    df = _normalise_points(points)
    if color_by in ("language", "speaker", "changed", "disagreement") and color_by not in df.columns:
        raise ConfigError(f"The points table has no {color_by!r} column to colour by.")
    if prototypes is not None and len(prototypes):
        _check_columns(prototypes, ["emotion", "x", "y"], "The prototypes table")
    order = list(emotions) if emotions is not None else []
    for source in ((prototypes["emotion"] if prototypes is not None and len(prototypes) else []),
                   df["emotion"]):
        for e in source:
            if str(e) != NO_EMOTION and str(e) not in order:
                order.append(str(e))
    colors = emotion_colors(order)
    colors[NO_EMOTION] = UNKNOWN_COLOR
    if color_by == "emotion":
        df["group"] = df["emotion"]
        groups = order + ([NO_EMOTION] if (df["emotion"] == NO_EMOTION).any() else [])
        group_colors: dict[str, Any] = colors
    elif color_by in CONTINUOUS:
        df[color_by] = pd.to_numeric(df[color_by], errors="coerce").astype(float)
        valued = df[color_by].notna() & (~df["labeled"] if color_by == "confidence" else True)
        df["group"] = np.where(valued, "predicted", np.where(df["labeled"], "labeled by you", NO_EMOTION))
        groups = [g for g in ("predicted", "labeled by you", NO_EMOTION) if (df["group"] == g).any()]
        group_colors = {"labeled by you": "#444444", NO_EMOTION: UNKNOWN_COLOR}
    else:
        df["group"] = _category(df, color_by)
        groups = sorted(set(df["group"]), key=lambda g: (g == UNKNOWN_VALUE, g))
        group_colors = {**category_colors(g for g in groups if g != UNKNOWN_VALUE), UNKNOWN_VALUE: UNKNOWN_COLOR}
    if webgl is None:
        webgl = len(df) >= WEBGL_THRESHOLD
    Scatter = go.Scattergl if webgl else go.Scatter
    snap = None
    df["moves"] = True
    if snapshot_frames is not None and len(snapshot_frames):
        _check_columns(snapshot_frames, ["step", "clip_id", "x", "y"], "The snapshot table")
        snap = snapshot_frames.copy()
        snap["clip_id"] = snap["clip_id"].astype(str)
        if len(df) > max_replay_points:
            df = _replay_sample_first(df, snap, max_replay_points)
    if prototype_frames is not None and len(prototype_frames):
        _check_columns(prototype_frames, ["step", "emotion", "x", "y"], "The prototype snapshot table")
    coords = [df["x"], df["y"]]
    for table in (prototypes, snap, prototype_frames):
        if table is not None and len(table):
            coords += [table["x"], table["y"]]
    rounded = _rounder(*coords)

    fig = go.Figure()
    point_traces: list[tuple[str, pd.DataFrame]] = []
    by_emotion = color_by == "emotion"
    for group in groups:
        sub = df[df["group"] == group]
        point_traces.append((group, sub))
        if color_by in CONTINUOUS and group == "predicted":
            scale, bar = CONTINUOUS[color_by]
            color: Any = dict(color=sub[color_by].round(3).tolist(), colorscale=scale, cmin=0.0,
                              cmax=1.0 if color_by == "confidence" else max(0.5, float(sub[color_by].max())),
                              colorbar=dict(title=dict(text=bar), tickformat=".0%", len=0.6, x=1.0, y=0.35))
        else:
            color = dict(color=group_colors[group])
        marker = {**_marker_arrays(sub, fade=by_emotion), **color}
        fig.add_trace(Scatter(
            x=rounded(sub["x"]), y=rounded(sub["y"]), mode="markers", name=group,
            legendgroup=group, marker=marker,
            customdata=_hover_rows(sub, with_emotion=not by_emotion),
            hovertemplate=_hover(group if by_emotion else None, None if by_emotion else f"{COLOR_BY[color_by]}: {group}"),
            selected=dict(marker=dict(opacity=1.0)), unselected=dict(marker=dict(opacity=0.12, color="#b0b0b0")),
            meta={"kind": "clips", "group": group, "color_by": color_by},
        ))
    proto_index = None
    if prototypes is not None and len(prototypes):
        proto = prototypes.copy()
        proto["emotion"] = proto["emotion"].astype(str)
        proto_index = len(fig.data)
        fig.add_trace(go.Scatter(
            x=rounded(proto["x"]), y=rounded(proto["y"]),
            mode="markers+text", name="emotion prototypes", text=proto["emotion"].tolist(),
            textposition="top center", showlegend=False,
            textfont=dict(size=14, color="#111", weight="bold", shadow="1px 1px 2px white", **_FONT),
            marker=dict(symbol="star", size=22, color=[colors.get(e, UNKNOWN_COLOR) for e in proto["emotion"]],
                        line=dict(width=1.5, color="#111")),
            customdata=[[f"prototype:{e}", e] for e in proto["emotion"]],
            hovertemplate="prototype of <b>%{customdata[1]}</b><extra></extra>",
            meta={"kind": "prototypes"},
        ))
    # Legend entries that explain the symbols (no data).
    if proto_index is not None:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="emotion prototype",
                                 marker=dict(symbol="star", size=14, color="#999", line=dict(width=1, color="#111")),
                                 hoverinfo="skip", meta={"kind": "legend"}))
    for role, symbol in SYMBOLS.items():
        if (df["role"] == role).any():
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=ROLE_TEXT[role],
                                     marker=dict(symbol=symbol, size=10, color="#999"),
                                     hoverinfo="skip", meta={"kind": "legend"}))
    if df["labeled"].any():
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="labeled by you",
                                 marker=dict(symbol="diamond", size=13, color="#999",
                                             line=dict(width=2, color="#111")),
                                 hoverinfo="skip", meta={"kind": "legend"}))
    if selected_clip_id is not None:
        sel = df[df["clip_id"] == str(selected_clip_id)]
        if len(sel):
            fig.add_trace(go.Scatter(
                x=sel["x"].tolist(), y=sel["y"].tolist(), mode="markers", name="selected",
                marker=dict(symbol="circle-open", size=26, color="#111", line=dict(width=3)),
                hoverinfo="skip", showlegend=False, meta={"kind": "selected"},
            ))

    all_x = [df["x"].to_numpy()]
    all_y = [df["y"].to_numpy()]
    if prototypes is not None and len(prototypes):
        all_x.append(prototypes["x"].to_numpy(dtype=float))
        all_y.append(prototypes["y"].to_numpy(dtype=float))

    steps: list[int] = []
    if snap is not None:
        all_x.append(snap["x"].to_numpy(dtype=float))
        all_y.append(snap["y"].to_numpy(dtype=float))
        pframes = None
        if prototype_frames is not None and len(prototype_frames) and proto_index is not None:
            pframes = prototype_frames.copy()
            pframes["emotion"] = pframes["emotion"].astype(str)
            all_x.append(pframes["x"].to_numpy(dtype=float))
            all_y.append(pframes["y"].to_numpy(dtype=float))
        steps = sorted(int(s) for s in snap["step"].unique())
        frames = []
        by_step = {int(k): g.set_index("clip_id") for k, g in snap.groupby("step")}
        pby_step = ({int(k): g.set_index("emotion") for k, g in pframes.groupby("step")}
                    if pframes is not None else {})
        for step in steps:
            g = by_step[step]
            data, idx = [], []
            for i, (_emo, sub) in enumerate(point_traces):
                xy = g.reindex(sub["clip_id"] if step == steps[-1] else sub.loc[sub["moves"], "clip_id"])
                data.append(Scatter(x=rounded(xy["x"]), y=rounded(xy["y"])))
                idx.append(i)
            if proto_index is not None:
                pg = pby_step.get(step)
                if pg is not None:
                    pxy = pg.reindex(prototypes["emotion"].astype(str))
                    data.append(go.Scatter(x=rounded(pxy["x"]), y=rounded(pxy["y"])))
                    idx.append(proto_index)
            frames.append(go.Frame(name=str(step), data=data, traces=idx))
        fig.frames = frames
        anim = {"mode": "immediate", "frame": {"duration": 450, "redraw": True},
                "transition": {"duration": 350, "easing": "cubic-in-out"}}
        fig.update_layout(
            sliders=[dict(
                active=len(steps) - 1, pad=dict(t=30, l=0), len=0.8, x=0.2, xanchor="left",
                y=0, yanchor="top",
                currentvalue=dict(prefix=f"{step_label} ", font=dict(size=13, **_FONT), xanchor="left"),
                steps=[dict(label=str(s), method="animate",
                            args=[[str(s)], {**anim, "frame": {"duration": 0, "redraw": True}}])
                       for s in steps],
            )],
            updatemenus=[dict(
                type="buttons", direction="left", x=0.0, y=0.0, xanchor="left", yanchor="top",
                pad=dict(t=62, r=10), showactive=False,
                buttons=[
                    dict(label="▶ replay", method="animate",
                         args=[[str(s) for s in steps], {**anim, "fromcurrent": False}]),
                    dict(label="❚❚", method="animate",
                         args=[[None], {"mode": "immediate", "frame": {"duration": 0, "redraw": False},
                                        "transition": {"duration": 0}}]),
                ],
            )],
        )

    fig.update_layout(
        title=dict(text=title, font=dict(size=17, **_FONT)) if title else None,
        height=height,
        plot_bgcolor="#fbfbfd",
        paper_bgcolor="white",
        font=_FONT,
        hovermode="closest",
        legend=dict(orientation="v", x=1.01, y=1, itemclick="toggle", itemdoubleclick="toggleothers",
                    title=dict(text=_legend_title(color_by), font=dict(size=12))),
        dragmode="lasso",
        xaxis=dict(range=_axis_range(np.concatenate(all_x)), visible=False, fixedrange=False),
        yaxis=dict(range=_axis_range(np.concatenate(all_y)), visible=False, scaleanchor=None),
        margin=dict(l=10, r=10, t=50 if title else 20, b=100 if steps else 20),
        uirevision=uirevision,
        meta={"sere": "resonance-field", "steps": steps, "moving_clips": int(df["moves"].sum()) if steps else 0},
    )
    return fig


def _legend_title(color_by: str) -> str:
    """What colour, size and opacity mean, on top of the legend."""
    fade = "<br>fainter: less confident" if color_by == "emotion" else ""
    short = {"emotion": "emotion", "role": "source / target", "changed": "changed since<br>the previous run"}
    return f"<b>colour: {short.get(color_by, color_by)}</b>{fade}<br>outlined: labeled by you"


def waveform_figure(
    samples: np.ndarray,
    sample_rate: int,
    highlights: Sequence[tuple[float, float]] = (),
    *,
    emotion: str | None = None,
    color: str | None = None,
    max_points: int = 1200,
    title: str | None = None,
    height: int = 200,
) -> go.Figure:
    """Waveform envelope (min/max per time bucket) with the emotional highlight spans shaded.

    ``highlights`` are ``(start_s, end_s)`` pairs in seconds from the clip start. The shade takes the
    emotion's colour (``color`` overrides).
    """
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    if sample_rate <= 0:
        raise ConfigError(f"sample_rate must be positive, got {sample_rate}.")
    if max_points < 2:
        raise ConfigError(f"max_points must be at least 2, got {max_points}.")
    x = np.nan_to_num(x)
    duration = len(x) / sample_rate
    if len(x) == 0:
        return empty_figure("This clip has no audio.", height=height)
    n = min(max_points, len(x))
    edges = np.linspace(0, len(x), n + 1).astype(int)
    upper = np.array([x[a:b].max() if b > a else 0.0 for a, b in zip(edges[:-1], edges[1:])])
    lower = np.array([x[a:b].min() if b > a else 0.0 for a, b in zip(edges[:-1], edges[1:])])
    t = (edges[:-1] + edges[1:]) / 2 / sample_rate
    shade = color or (emotion_colors([emotion])[emotion] if emotion else "#f0a30a")
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=t.tolist(), y=upper.round(4).tolist(), mode="lines",
                             line=dict(width=0.6, color="#34495e"), hoverinfo="skip", showlegend=False))
    fig.add_trace(go.Scatter(x=t.tolist(), y=lower.round(4).tolist(), mode="lines", fill="tonexty",
                             fillcolor="rgba(52,73,94,0.55)", line=dict(width=0.6, color="#34495e"),
                             hovertemplate="%{x:.2f} s<extra></extra>", showlegend=False))
    shapes = []
    for i, span in enumerate(highlights):
        start, end = float(span[0]), float(span[1])
        if not (math.isfinite(start) and math.isfinite(end)):
            continue
        start, end = max(0.0, min(start, end)), min(duration, max(start, end))
        if end <= start:
            continue
        shapes.append(dict(type="rect", xref="x", yref="paper", x0=start, x1=end, y0=0, y1=1,
                           fillcolor=shade, opacity=0.28, line=dict(width=0), layer="below",
                           name=f"highlight {i + 1}"))
    peak = float(max(np.abs(x).max(), 1e-3))
    fig.update_layout(
        shapes=shapes, height=height, showlegend=False, font=_FONT,
        title=dict(text=title, font=dict(size=14, **_FONT)) if title else None,
        margin=dict(l=40, r=10, t=34 if title else 10, b=36),
        plot_bgcolor="white", paper_bgcolor="white",
        xaxis=dict(title="time (s)", range=[0, duration], showgrid=False),
        yaxis=dict(range=[-peak * 1.05, peak * 1.05], visible=False, fixedrange=True),
        meta={"sere": "waveform", "highlights": [[s["x0"], s["x1"]] for s in shapes]},
    )
    return fig


def probabilities_figure(
    probabilities: Mapping[str, float],
    *,
    emotions: Sequence[str] | None = None,
    title: str | None = None,
    height: int | None = None,
) -> go.Figure:
    """One horizontal bar per emotion (in ``emotions`` order, top to bottom), coloured per emotion."""
    if not probabilities:
        return empty_figure("No prediction for this clip yet.", height=height or 180)
    order = list(emotions) if emotions is not None else list(probabilities)
    order += [e for e in probabilities if e not in order]
    values = []
    for e in order:
        v = float(probabilities.get(e, 0.0))
        if not math.isfinite(v) or v < -1e-6 or v > 1 + 1e-6:
            raise ConfigError(f"The probability of {e!r} must be between 0 and 1, got {v}.")
        values.append(min(max(v, 0.0), 1.0))
    colors = emotion_colors(order)
    fig = go.Figure(go.Bar(
        x=values, y=order, orientation="h", marker=dict(color=[colors[e] for e in order]),
        text=[f"{v:.0%}" for v in values], textposition="outside", cliponaxis=False,
        hovertemplate="%{y}: %{x:.1%}<extra></extra>",
    ))
    fig.update_layout(
        height=height or 70 + 34 * len(order), font=_FONT, showlegend=False,
        title=dict(text=title, font=dict(size=14, **_FONT)) if title else None,
        margin=dict(l=10, r=40, t=34 if title else 10, b=10),
        plot_bgcolor="white", paper_bgcolor="white",
        xaxis=dict(range=[0, 1.1], visible=False, fixedrange=True),
        yaxis=dict(autorange="reversed", fixedrange=True),
    )
    return fig


def training_curve_figure(history: pd.DataFrame, *, total_steps: int | None = None, members: int = 1,
                          height: int = 240) -> go.Figure:
    """Loss terms over training steps; ``history`` has columns ``step, term, value``. With
    ``members`` > 1 the steps are those of an ensemble's models trained one after another, each
    ``total_steps / members`` long: dotted lines mark where the next model starts (its loss starts
    high again, which is not a failure)."""
    if history is None or not len(history):
        return empty_figure("Training has not reported any loss yet.", height=height)
    _check_columns(history, ["step", "term", "value"], "The training history")
    fig = go.Figure()
    for term, g in history.groupby("term", sort=False):
        g = g.sort_values("step")
        fig.add_trace(go.Scatter(x=g["step"].tolist(), y=g["value"].astype(float).tolist(),
                                 mode="lines", name=str(term)))
    fig.update_layout(
        height=height, font=_FONT, margin=dict(l=40, r=10, t=10, b=36),
        plot_bgcolor="white", paper_bgcolor="white",
        xaxis=dict(title="training step" + (f" ({members} models, one after another)" if members > 1 else ""),
                   range=[0, total_steps] if total_steps else None),
        yaxis=dict(title="loss"), legend=dict(orientation="v", x=1.01, y=1),
    )
    if members > 1 and total_steps:  # one band per model, every other one shaded, named on top
        width = total_steps / members
        for k in range(members):
            fig.add_vrect(x0=k * width, x1=(k + 1) * width, line_width=0, layer="below",
                          fillcolor="#eef0f8" if k % 2 else "rgba(0,0,0,0)",
                          annotation=dict(text=f"model {k + 1} of {members}", font=dict(size=11, color="#555")),
                          annotation_position="top")
    return fig


def results_figure(counts: Mapping[str, int], confidences: Sequence[float], *, emotions: Sequence[str] | None = None,
                   height: int = 260) -> go.Figure:
    """A finished run at a glance: target clips per predicted emotion (bars, in the emotions'
    colours) and the histogram of their confidences (ten bins of 10 %)."""
    from plotly.subplots import make_subplots

    order = list(emotions) if emotions is not None else list(counts)
    order += [e for e in counts if e not in order]
    colors = emotion_colors(order)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("clips per predicted emotion", "confidence"),
                        horizontal_spacing=0.12)
    fig.add_trace(go.Bar(x=order, y=[int(counts.get(e, 0)) for e in order], marker=dict(color=[colors[e] for e in order]),
                         text=[int(counts.get(e, 0)) for e in order], textposition="outside", cliponaxis=False,
                         hovertemplate="%{x}: %{y} clips<extra></extra>", showlegend=False), row=1, col=1)
    hist, edges = np.histogram(np.clip(np.asarray(confidences, dtype=float), 0, 1), bins=10, range=(0, 1))
    fig.add_trace(go.Bar(x=[f"{a:.0%}-{b:.0%}" for a, b in zip(edges[:-1], edges[1:])], y=hist.tolist(),
                         marker=dict(color="#6366f1"), hovertemplate="%{x}: %{y} clips<extra></extra>",
                         showlegend=False), row=1, col=2)
    fig.update_layout(height=height, font=_FONT, margin=dict(l=40, r=10, t=40, b=60), plot_bgcolor="white",
                      paper_bgcolor="white", meta={"sere": "results"})
    return fig


def confusion_figure(truth: Sequence[str], predicted: Sequence[str], *, emotions: Sequence[str] | None = None,
                     height: int = 300) -> go.Figure:
    """Rows: the labels; columns: the predictions; each cell the number of clips (and its share of
    the row, which is that emotion's recall on the diagonal)."""
    order = list(emotions) if emotions is not None else sorted(set(truth) | set(predicted))
    order += [e for e in sorted(set(truth) | set(predicted)) if e not in order]
    index = {e: i for i, e in enumerate(order)}
    matrix = np.zeros((len(order), len(order)), dtype=int)
    for t, p in zip(truth, predicted):
        matrix[index[t], index[p]] += 1
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    text = [[f"{matrix[i, j]}<br>{share[i, j]:.0%}" if rows[i, 0] else "" for j in range(len(order))]
            for i in range(len(order))]
    fig = go.Figure(go.Heatmap(z=share.round(3).tolist(), x=order, y=order, text=text, texttemplate="%{text}",
                               colorscale="Blues", zmin=0, zmax=1, showscale=False,
                               hovertemplate="label %{y}, predicted %{x}<extra></extra>"))
    fig.update_layout(height=height, font=_FONT, margin=dict(l=70, r=10, t=30, b=50), plot_bgcolor="white",
                      xaxis=dict(title="predicted", side="bottom"), yaxis=dict(title="label", autorange="reversed"),
                      meta={"sere": "confusion", "matrix": matrix.tolist()})
    return fig
