"""Service results -> plotly figures and small HTML snippets for the page (no Gradio here).

Every text a user supplied (file names, project names, emotions) is HTML-escaped here: on a
shared server one visitor's file names are shown to another.
"""

from __future__ import annotations

import base64
import html
import json
import io
import itertools
from typing import Any

import numpy as np

from sere_core.app.review import ClipView, FieldData
from sere_core.app.training import TrainingStatus, queue_note
from sere_core.viz import (
    emotion_colors,
    empty_figure,
    probabilities_figure,
    resonance_field_figure,
    training_curve_figure,
    waveform_figure,
)


def field_figure(data: FieldData | None, color_by: str = "emotion") -> Any:
    """The resonance field of a finished run, coloured by ``color_by`` (see ``viz.COLOR_BY``)."""
    if data is None or not len(data.points):
        return empty_figure("Train the model (step 4) to watch the clips self-organize here.")
    title = None
    if data.live is not None:
        step, total = data.live
        title = (f"Training run {data.run_id}: step {step} of {total} · a quick live view (the clips move as it "
                 "trains; the final map comes when it ends)")
    return resonance_field_figure(
        data.points, data.prototypes, snapshot_frames=data.snapshot_frames,
        prototype_frames=data.prototype_frames, emotions=data.emotions,
        title=title, uirevision=f"run-{data.run_id}", height=640,
        step_label=f"run {data.run_id} · training step (each of {data.members} models)" if data.members > 1
        else f"run {data.run_id} · training step",
        color_by=color_by,
    )


def field_value(data: FieldData | None, color_by: str = "emotion") -> dict[str, Any]:
    """The field component's value: the figure as plotly JSON (frames included) and a key that
    changes whenever the figure does, so the page redraws only then."""
    if data is None or not len(data.points):  # no figure: the page loads no plotly for it
        return {"key": "empty", "figure": None,
                "message": "Train the model (step 4) to watch the clips self-organize here."}
    kind = "live" if data.live is not None else "run"
    return {"key": f"{kind}-{data.run_id}-{color_by}-{next(_revs)}",
            "figure": json.loads(field_figure(data, color_by).to_json())}


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
    if status.status == "queued" and queue_note(status.queue_position):
        text += f" · {queue_note(status.queue_position)}"
    if status.total_steps and "step" not in phase:  # the phase may say it already
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
            f"<div class='sere-progress-text' id='sere-progress-text' data-status='{status.status}' "
            f"data-run='{status.run_id}' data-queue='{status.queue_position or 0}'>{text}</div>")


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


# ------------------------------------------------------------------------------------- clip pads
# A pad is the value of the page's clip panels (``gr.HTML``, script in ``assets/pad.js``): the
# clip on screen, its sound and the buttons; ``rev`` changes with every value, so the page knows
# an answer came even when it shows the same clip again.

_revs = itertools.count(1)


def audio_uri(samples: np.ndarray, sample_rate: int) -> str:
    """The clip as a ``data:`` URI (16-bit FLAC): it plays inside the pad, and no file route can
    hand it to anyone else."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0), int(sample_rate),
             format="FLAC", subtype="PCM_16")
    return "data:audio/flac;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _buttons(emotions: list[str], action: str = "label", keys: bool = True) -> str:
    """One button per emotion, in the project's order: key ``i + 1`` presses the ``i``-th."""
    colors = emotion_colors(emotions)
    return "".join(
        f"<button type='button' class='sere-pad-emo' data-action='{action}' data-emotion='{html.escape(e, quote=True)}'"
        f" style='--emo:{colors[e]}'>{f'<kbd>{(i + 1) % 10}</kbd> ' if keys else ''}{html.escape(e)}</button>"
        for i, e in enumerate(emotions[:10]))


def _pad(kind: str, clip_id: int | None, body: str, audio: str = "") -> dict[str, Any]:
    return {"kind": kind, "clip": clip_id, "rev": next(_revs), "audio": audio, "html": body}


def answering(pad: dict[str, Any], rev: Any) -> dict[str, Any]:
    """The pad as the answer to the action the page sent from the pad value ``rev`` (the page
    waits for that answer before it sends the next press)."""
    return {**pad, "acted": rev}


def empty_pad(kind: str, message: str) -> dict[str, Any]:
    """A pad with nothing to act on (no project, or nothing left)."""
    return _pad(kind, None, f"<div class='sere-pad-message'>{message}</div>")


def label_pad(screen: Any) -> dict[str, Any]:
    """The labeling panel of a :class:`~sere_core.app.views.LabelingScreen`."""
    if screen.project is None:
        return empty_pad("label", "Open a project first (step 1).")
    clip = screen.clip
    if clip is None:
        return empty_pad("label", "<b>Every source clip is labeled.</b> Go on to step 4 to train."
                         if screen.project.n_source else
                         "<b>No source clips yet.</b> Upload some on the right, or load the demo (step 1).")
    emotions = screen.project.emotions
    hint = ""
    if clip.reference:
        key = emotions.index(clip.reference) + 1 if clip.reference in emotions else None
        hint = (f"<div class='sere-pad-hint' id='sere-clip-hint'>Demo hint: the corpus labels this clip "
                f"<b>{html.escape(clip.reference)}</b>" + (f" (press <kbd>{key % 10}</kbd>)" if key else "") + ".</div>")
    shared = ("<div class='sere-pad-note'>Every clip left is on another labeler's screen; this one is "
              "too.</div>" if screen.shared else "")
    body = (f"<div class='sere-pad-title' id='sere-clip-title'><b>{html.escape(clip.name)}</b> · "
            f"{clip.duration_s:.1f} s · {screen.left} unlabeled left</div>{hint}{shared}"
            f"<div class='sere-pad-buttons'>{_buttons(emotions)}</div>"
            "<div class='sere-pad-tools'><button type='button' data-action='skip' id='sere-skip'><kbd>S</kbd> Skip</button>"
            "<button type='button' data-action='undo' id='sere-undo'><kbd>U</kbd> Undo my last label</button>"
            "<span class='sere-keys'><kbd>P</kbd> play / pause</span></div>")
    return _pad("label", clip.clip_id, body, audio_uri(clip.samples, clip.sample_rate))


def review_pad(view: ClipView | None, emotions: list[str], kind: str = "review",
               empty: str = "Choose a row to listen and confirm or correct.") -> dict[str, Any]:
    """A clip with its prediction, to confirm (Enter) or correct (1-9): the review panel, and the
    field's clip panel (``kind="field"``)."""
    if view is None:
        return empty_pad(kind, empty)
    confirm = ""
    if view.prediction is not None:
        p = view.prediction
        confirm = (f"<button type='button' class='sere-pad-confirm' data-action='confirm' id='sere-confirm'>"
                   f"<kbd>Enter</kbd> Confirm {html.escape(p.emotion)}</button>")
    body = (f"<div class='sere-pad-title'>{describe(view)}</div>"
            f"<div class='sere-pad-buttons'>{confirm}</div><div class='sere-keys'>Or correct it:</div>"
            f"<div class='sere-pad-buttons'>{_buttons(emotions)}</div>"
            "<div class='sere-pad-tools'><button type='button' data-action='undo'><kbd>U</kbd> Undo my last label"
            "</button><span class='sere-keys'><kbd>P</kbd> play / pause</span></div>")
    return _pad(kind, view.clip_id, body, audio_uri(view.samples, view.sample_rate))


def selection_pad(clips: list[int], chosen: int | None, emotions: list[str], note: str = "",
                  audio: str = "", ask: int | None = None) -> dict[str, Any]:
    """The field's selection: how many clips are selected and what to do with them all. ``chosen``
    is the clip marked on the map (the one in the clip panel); ``ask`` numbers the clip browser's
    question this answers (the browser keeps its ticks until its latest question is answered)."""
    n = len(clips)
    if not n:
        body = ("<div class='sere-pad-message'>Draw a box or a lasso on the map to select clips, then label "
                "them all at once.</div>")
    else:
        body = (f"<div class='sere-pad-title' id='sere-selection-title'><b>{n} clip{'s' if n != 1 else ''} "
                f"selected</b></div><div class='sere-keys'>Label them all:</div>"
                f"<div class='sere-pad-buttons'>{_buttons(emotions, keys=False)}</div>"
                "<div class='sere-pad-tools'>"
                "<button type='button' data-action='confirm' id='sere-sel-accept'>Accept their predictions</button>"
                "<button type='button' data-action='unlabel' id='sere-sel-unlabel'>Unlabel</button>"
                "<button type='button' data-action='play' id='sere-sel-play'>▶ Play them</button>"
                "<button type='button' data-action='export' id='sere-sel-export'>Export as CSV</button></div>")
    if note:
        body += f"<div class='sere-pad-note'>{note}</div>"
    return {"kind": "selection", "clips": [int(c) for c in clips], "chosen": chosen, "rev": next(_revs),
            "audio": audio, "html": body, "ask": ask}


def describe(view: ClipView) -> str:
    """A clip in words (HTML): name, language, speaker, prediction, labels."""
    parts = [f"<b>{html.escape(view.name)}</b> · {view.role} language"
             + (f" ({html.escape(view.language)})" if view.language else "")
             + (f" · speaker {html.escape(view.speaker)}" if view.speaker else "")]
    if view.prediction:
        p = view.prediction
        spans = ", ".join(f"{a:.2f}-{b:.2f} s" for a, b in p.highlights)
        parts.append(f"Predicted <b>{html.escape(p.emotion)}</b> ({p.confidence:.0%} confident)"
                     + (f"; highlights at {spans}" if spans else ""))
    if view.label:
        parts.append(f"Your label: <b>{html.escape(view.label)}</b>")
    if view.reference:
        parts.append(f"Corpus label (demo): {html.escape(view.reference)}")
    return "<br>".join(parts)


def project_line(project: Any, *, ready: bool = False) -> str:
    """The header's line about the open project. ``data-ready`` is set once the page has loaded
    the visitor's screens (tests and scripts wait for it), ``data-project`` names the project."""
    attrs = f"id='sere-project-line' data-project='{project.id if project else ''}'" + (" data-ready='1'" if ready else "")
    if project is None:
        return f"<div {attrs}>No project open. Start with <b>Load demo</b> or create a project (step 1).</div>"
    return (f"<div {attrs}><b>{html.escape(project.name)}</b> · emotions: "
            f"{html.escape(', '.join(project.emotions))} · {project.n_source} source clips · "
            f"{project.n_target} target clips · encoder {html.escape(project.encoder)}</div>")


def identity_markdown(caller: Any, settings: Any) -> str:
    """Whose projects the visitor sees, and for how long an anonymous workspace is kept."""
    if caller.kind.value == "shared":
        who = f"Labeling as **{caller.username}**. " if caller.username else ""
        return who + "Everyone who can open this server shares its projects."
    if caller.username:
        return f"Signed in as **{caller.username}**: your projects are yours alone."
    return (f"Your projects are yours alone and kept in this browser; they are deleted after "
            f"{settings.idle_days:g} days without a visit.")


def warmup_html(status: str) -> str:
    """The header's line about what is still warming up (empty once everything is ready)."""
    if not status:
        return "<div id='sere-warming' data-ready='1'></div>"
    return f"<div id='sere-warming' class='sere-warming'>{html.escape(status)}</div>"


def features_html(status: Any) -> str:
    """How far the background computation of a project's speech features got."""
    if status is None or not status.total:
        return "<div id='sere-features' class='sere-keys'></div>"
    if status.error:
        text = f"Speech features stopped: {html.escape(status.error)} (training will try again)."
    elif status.done >= status.total and not status.running:
        text = f"Speech features ready for all {status.total:,} clips."
    else:
        text = f"Computing speech features in the background: {status.done:,} of {status.total:,} clips"
        text += " (waiting while another project trains)." if status.paused else "."
    return (f"<div id='sere-features' class='sere-keys' data-done='{status.done}' data-total='{status.total}'>"
            f"{text}</div>")


#: The background of the review table's row whose clip is in the review panel.
CURRENT_ROW = "background-color: #e0e7ff; font-weight: 600"


def review_rows(rows: Any, current: int | None = None) -> Any:
    """The review table as shown: confidences in percent (the data keeps the 0-1 fraction), and
    the row of the clip in the review panel (``current``) highlighted (a pandas Styler)."""
    shown = rows.copy()
    shown["confidence"] = [f"{c:.0%}" if c == c else "" for c in rows["confidence"]]
    if current is None or current not in set(shown["clip"]):
        return shown
    return shown.style.apply(lambda row: [CURRENT_ROW if row["clip"] == current else ""] * len(row), axis=1)


def browser_value(page: Any, emotions: list[str]) -> dict[str, Any]:
    """The clip browser's table (a ``clip_browser.BrowserPage``, or None before a project is
    open): a checkbox per row (checked rows are the selection, shared with the map) and the file
    name, which opens the clip in the clip panel."""
    if page is None:
        return {"rev": next(_revs), "clips": [], "html": "<div class='sere-pad-message'>Open a project first.</div>"}
    colors = emotion_colors(emotions)

    def emotion(e: str | None) -> str:
        return "" if not e else f"<span class='sere-dot' style='--emo:{colors.get(e, '#999')}'></span>{html.escape(e)}"

    rows = "".join(
        f"<tr data-clip='{r.clip_id}'><td><input type='checkbox' aria-label='select {html.escape(r.name, quote=True)}'>"
        f"</td><td><button type='button' class='sere-open' data-clip='{r.clip_id}'>{html.escape(r.name)}</button></td>"
        f"<td>{'source' if r.role == 'source' else 'target'}</td><td>{html.escape(r.language or '')}</td>"
        f"<td>{emotion(r.emotion)}</td><td>{'' if r.confidence is None else f'{r.confidence:.0%}'}</td>"
        f"<td>{emotion(r.label)}</td><td>{html.escape(r.speaker or '')}</td></tr>"
        for r in page.rows)
    head = ("<tr><th><input type='checkbox' class='sere-all' aria-label='select this page'></th><th>file</th>"
            "<th>role</th><th>language</th><th>predicted</th><th>confidence</th><th>your label</th>"
            "<th>speaker</th></tr>")
    body = (f"<div class='sere-browser-caption' id='sere-browser-caption'>{html.escape(page.caption())}</div>"
            f"<div class='sere-browser-scroll'><table class='sere-browser'><thead>{head}</thead>"
            f"<tbody>{rows}</tbody></table></div>")
    return {"rev": next(_revs), "clips": [r.clip_id for r in page.rows], "html": body}


def download_value(path: Any) -> dict[str, Any]:
    """The page's downloader value for an export file: the browser saves it at once. The file
    lives in its own unguessable folder under the data folder's exports (``exports._export_path``),
    which the server serves (``launch_options``)."""
    from pathlib import Path
    from urllib.parse import quote

    path = Path(path)
    return {"url": "gradio_api/file=" + quote(path.as_posix()), "name": path.name, "rev": next(_revs),
            "html": f"<span class='sere-keys'>Downloaded {html.escape(path.name)}.</span>"}
