"""Service results -> plotly figures and small HTML snippets for the page (no Gradio here)."""

from __future__ import annotations

import html
from typing import Any

from sere_core.app.services import ClipView, FieldData, TrainingStatus
from sere_core.viz import (
    embed_frames_in_meta,
    emotion_colors,
    empty_figure,
    probabilities_figure,
    resonance_field_figure,
    training_curve_figure,
    waveform_figure,
)


def field_figure(data: FieldData | None, *, for_gradio: bool = True) -> Any:
    """The resonance field of a finished run (replay frames ride in ``layout.meta`` for Gradio)."""
    if data is None or not len(data.points):
        return empty_figure("Train the model (step 4) to watch the clips self-organize here.")
    fig = resonance_field_figure(
        data.points, data.prototypes, snapshot_frames=data.snapshot_frames,
        prototype_frames=data.prototype_frames, emotions=data.emotions,
        title=f"Resonance field · training run {data.run_id}", uirevision=f"run-{data.run_id}",
        step_label=f"training step (each of {data.members} models)" if data.members > 1 else "training step",
    )
    if not for_gradio:
        return fig
    fig = embed_frames_in_meta(fig)
    meta = dict(fig.layout.meta or {})
    meta["key"] = f"run-{data.run_id}"
    fig.update_layout(meta=meta)
    return fig


def clip_waveform(view: ClipView | None) -> Any:
    if view is None:
        return empty_figure("No clip selected.", height=200)
    highlights = view.prediction.highlights if view.prediction else []
    emotion = view.prediction.emotion if view.prediction else view.label
    return waveform_figure(view.samples, view.sample_rate, highlights, emotion=emotion)


def clip_probabilities(view: ClipView | None, emotions: list[str]) -> Any:
    if view is None or view.prediction is None:
        return empty_figure("No prediction for this clip yet.", height=180)
    return probabilities_figure(view.prediction.probabilities, emotions=emotions)


def loss_figure(status: TrainingStatus | None) -> Any:
    if status is None:
        return empty_figure("Not trained yet.", height=240)
    return training_curve_figure(status.history(), total_steps=status.total_steps, members=status.members)


def progress_html(status: TrainingStatus | None) -> str:
    """A progress bar with the step, phase and latest loss terms."""
    if status is None:
        return "<div class='sere-progress-text'>No training yet.</div>"
    pct = 100.0 * (1.0 if status.status == "succeeded" else status.progress)
    words = {"queued": "Waiting to start", "running": "Training", "succeeded": "Finished",
             "failed": "Failed", "cancelled": "Cancelled"}[status.status]
    phase = status.phase if status.active and status.phase else words
    text = f"<b>Run {status.run_id}: {html.escape(phase)}</b>"
    if status.total_steps:
        text += f" · step {status.step} of {status.total_steps}"
    if status.losses:
        last = status.losses[-1]
        text += " · " + "".join(
            f"<span class='sere-loss'>{html.escape(str(k))} {float(v):.3f}</span>"
            for k, v in last.items() if k != "step")
    if status.error:
        text += f"<br><span style='color:#c0392b'>{html.escape(status.error)}</span>"
    return (f"<div class='sere-progress sere-{status.status}' role='progressbar' aria-valuenow='{pct:.0f}' "
            "aria-valuemin='0' "
            f"aria-valuemax='100'><div style='width:{pct:.1f}%'></div></div>"
            f"<div class='sere-progress-text' id='sere-progress-text' data-status='{status.status}'>{text}</div>")


def counts_html(counts: dict[str, int], goal: int) -> str:
    """Coloured badges "happy 3/5" per emotion."""
    colors = emotion_colors(list(counts))
    badges = "".join(
        f"<span class='sere-count' style='background:{colors[e]}'>{html.escape(e)} {n}/{goal}</span>"
        for e, n in counts.items())
    total = sum(counts.values())
    return f"<div class='sere-counts' id='sere-counts' data-total='{total}'>{badges}</div>"


def metrics_markdown(status: TrainingStatus | None) -> str:
    if status is None or status.status != "succeeded":
        return ""
    m = status.metrics
    text = (f"Run {status.run_id} learned from **{m.get('n_labeled', '?')} labeled** and "
            f"**{m.get('n_unlabeled', '?')} unlabeled** clips in {m.get('fit_time_s', '?')} s.")
    if "reference_accuracy" in m:
        text += (f" Demo check: **{100 * m['reference_accuracy']:.0f}%** of the {m.get('reference_clips')} "
                 f"English clips agree with the corpus labels (UAR {100 * m.get('reference_uar', 0):.0f}%, "
                 "chance is 25%).")
    return text
