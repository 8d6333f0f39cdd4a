"""SERE Studio: the web app. Wiring only: the logic lives in ``sere_core.app`` (services, jobs).

Run ``python app.py`` and open http://127.0.0.1:7860. Settings come from the environment
(``SERE_DATA_DIR``, ``SERE_DATABASE_URL``, ``SERE_CACHE_DIR``, ``SERE_ENCODER``, ``SERE_TRAIN_STEPS``).
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import functools  # noqa: E402
import html  # noqa: E402
import logging  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gradio as gr  # noqa: E402

from sere_core.app import AppContext  # noqa: E402
from sere_core.app import figures as fg  # noqa: E402
from sere_core.app import services as sv  # noqa: E402
from sere_core.app.pipeline import demo_reference  # noqa: E402
from sere_core.audio import AudioConfig  # noqa: E402
from sere_core.errors import NotFoundError, SereError  # noqa: E402
from sere_core.storage import MAX_EMOTIONS  # noqa: E402
from sere_core.viz import empty_figure, start_umap_warm_up  # noqa: E402

log = logging.getLogger("sere_studio")
ASSETS = Path(__file__).resolve().parent / "assets"
LICENCE_NOTE = (
    "Demo audio: German clips from EmoDB (CC0-1.0, audb republication; processed copy) and English "
    "clips from RAVDESS by Livingstone & Russo 2018 (Zenodo 1188976), **CC BY-NC-SA 4.0: "
    "non-commercial, share-alike**. See data/LICENSE-DEMO.md."
)
FIELD_HINT = "Click a point in the field, or choose a clip above, to listen to it."
#: Most clips listed in the field's clip menu (a 100,000-clip list would weigh megabytes).
MAX_CLIP_CHOICES = 2000
KEYS = ("<span class='sere-keys'>Keys: <kbd>1</kbd>-<kbd>9</kbd> emotion · <kbd>S</kbd> skip · "
        "<kbd>U</kbd> undo · <kbd>P</kbd> play</span>")


def launch_options(ctx: AppContext) -> dict[str, Any]:
    """What ``launch()`` needs besides the Blocks: page script and styles (Gradio 6 takes them in
    ``launch``, not in ``Blocks``) and the export folder, from which downloads are served."""
    theme = gr.themes.Default(
        primary_hue="indigo", secondary_hue="pink",
        # System fonts: the page loads nothing from the internet (Gradio's default fetches Google Fonts).
        font=["ui-sans-serif", "system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
    )
    return {
        "theme": theme,
        "head": f"<script>{(ASSETS / 'sere.js').read_text(encoding='utf-8')}</script>",
        "css": (ASSETS / "sere.css").read_text(encoding="utf-8"),
        "allowed_paths": [str(ctx.export_dir())],
        "footer_links": [],
    }


def friendly(fn):
    """Show user mistakes (``SereError``, ``gr.Error``) as a message and one log line; a bug is
    shown the same way, but logged once with its traceback. Gradio itself prints no traceback
    (``print_exception=False``): it would print a user mistake's, and a bug's a second time."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error as exc:
            log.info("%s: %s", fn.__name__, exc.message)
            exc.print_exception = False
            raise
        except SereError as exc:
            log.info("%s: %s", fn.__name__, exc)
            raise gr.Error(sv.user_message(exc), print_exception=False) from None
        except Exception as exc:
            log.exception("handler %s failed", fn.__name__)
            raise gr.Error(sv.user_message(exc), print_exception=False) from exc

    return wrapper


def upload_folder() -> str:
    """Where Gradio keeps uploads (``GRADIO_TEMP_DIR``, which ``main`` puts in the data folder)."""
    from gradio.utils import get_upload_folder

    return get_upload_folder()


def _audio(view: Any) -> tuple[int, Any]:
    """A clip for gr.Audio as 16-bit samples (Gradio would convert float audio with a warning)."""
    import numpy as np

    return view.sample_rate, (np.clip(view.samples, -1.0, 1.0) * 32767).astype(np.int16)


def _pid(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def build_app(ctx: AppContext | None = None) -> gr.Blocks:
    """The page. ``ctx`` holds the shared resources (database, files, workers); per-user state is
    the open project (kept in the browser) and the labeling queue (kept in the session)."""
    ctx = ctx or AppContext.open()
    start_umap_warm_up()  # numba compiles UMAP once, in the background, not on a user's click

    # ---------------------------------------------------------------- helpers (no Gradio state)
    def emotions_of(pid: int | None) -> list[str]:
        return sv.get_summary(ctx, pid).emotions if pid is not None else []

    def project_line(pid: int | None) -> str:
        if pid is None:
            return "No project open. Start with **Load demo** or create a project below."
        s = sv.get_summary(ctx, pid)
        return (f"**{html.escape(s.name)}** · emotions: {', '.join(s.emotions)} · "
                f"{s.n_source} source clips ({s.n_labeled} labeled) · {s.n_target} target clips · "
                f"encoder {s.encoder}")

    def project_choices() -> list[tuple[str, int]]:
        return [(p.name, p.id) for p in sv.list_projects(ctx)]

    def emotion_buttons(emotions: list[str], prefix: str = "") -> list[Any]:
        return [gr.update(value=f"{prefix}{i + 1 if i < 9 else 0} · {emotions[i]}", visible=True)
                if i < len(emotions) else gr.update(visible=False) for i in range(MAX_EMOTIONS)]

    # ---------------------------------------------------------------- page
    with gr.Blocks(title="SERE Studio", fill_width=False) as demo:
        project = gr.BrowserState(None, storage_key="sere-studio-project", secret=ctx.browser_state_secret())
        queue = gr.State({"clip": None, "order": [], "skipped": [], "history": []})
        seen_run = gr.State(None)
        review_clip = gr.State(None)

        gr.Markdown("# SERE Studio\nLabel a few clips in a language you know; SERE learns the emotions "
                    "and finds them in another language.", elem_id="sere-header")
        project_line_md = gr.Markdown(project_line(None), elem_id="sere-project-line")

        with gr.Tabs(selected="project", elem_id="sere-tabs") as tabs:
            # ---- 1 Project
            with gr.Tab("1 · Project", id="project"):
                with gr.Row():
                    with gr.Column(scale=1):
                        gr.Markdown("### Try it\nA ready project: 32 German clips to label, 40 English "
                                    "clips to recognise.")
                        demo_btn = gr.Button("Load demo", variant="primary", elem_id="sere-load-demo")
                        gr.Markdown(LICENCE_NOTE, elem_classes="sere-licence")
                    with gr.Column(scale=1):
                        gr.Markdown("### Open a project")
                        project_dd = gr.Dropdown(choices=project_choices(), label="Your projects",
                                                 value=None, elem_id="sere-project-dd")
                        gr.Markdown("### New project")
                        new_name = gr.Textbox(label="Name", placeholder="e.g. Yoruba interviews")
                        new_emotions = gr.Textbox(label="Emotions (comma separated, 2-10)",
                                                  value=", ".join(sv.DEFAULT_EMOTIONS))
                        create_btn = gr.Button("Create project")
                with gr.Accordion("Edit the emotions of the open project", open=False):
                    emotions_box = gr.Textbox(label="Emotions", elem_id="sere-emotions")
                    save_emotions_btn = gr.Button("Save emotions")

            # ---- 2 Source clips
            with gr.Tab("2 · Source clips", id="source"):
                with gr.Row():
                    with gr.Column(scale=2):
                        with gr.Column(elem_id="sere-label-panel"):
                            clip_title = gr.Markdown("", elem_id="sere-clip-title")
                            label_audio = gr.Audio(label="Listen", type="numpy", interactive=False,
                                                   autoplay=True, elem_id="sere-label-audio")
                            label_wave = gr.Plot(label="Waveform", show_label=False)
                            clip_hint = gr.Markdown("", elem_classes="sere-hint", elem_id="sere-clip-hint")
                            with gr.Row():
                                emo_btns = [gr.Button(visible=False, elem_id=f"sere-emo-{i + 1}",
                                                      elem_classes="sere-emo", variant="primary")
                                            for i in range(MAX_EMOTIONS)]
                            with gr.Row():
                                skip_btn = gr.Button("Skip (S)", elem_id="sere-skip", size="sm")
                                undo_btn = gr.Button("Undo (U)", elem_id="sere-undo", size="sm")
                            gr.HTML(KEYS)
                    with gr.Column(scale=1):
                        counts = gr.HTML(fg.counts_html({}, sv.SHOTS))
                        suggest_btn = gr.Button("Suggest clips to label", elem_id="sere-suggest")
                        gr.Markdown("Suggestions put typical, varied clips first, so 5 labels per "
                                    "emotion cover the recordings well.", elem_classes="sere-keys")
                        demo_labels_btn = gr.Button("Demo: label 5 per emotion for me", size="sm",
                                                    visible=False, elem_id="sere-demo-labels")
                        gr.Markdown("### Add source clips")
                        src_lang = gr.Textbox(label="Language code (optional)", placeholder="e.g. de")
                        src_files = gr.File(label="Audio files or a .zip (a CSV manifest inside may carry labels)",
                                            file_count="multiple", file_types=["audio", ".zip", ".csv"],
                                            elem_id="sere-src-upload")
                        src_folder = gr.UploadButton("Upload a folder", file_count="directory", size="sm")
                        src_report = gr.Markdown("", elem_id="sere-src-report")

            # ---- 3 Target audio
            with gr.Tab("3 · Target audio", id="target"):
                gr.Markdown("Unlabeled recordings in the language you want to analyse. Long recordings "
                            "are split at pauses into utterances of at most 30 s.")
                with gr.Row():
                    with gr.Column():
                        tgt_lang = gr.Textbox(label="Language code (optional)", placeholder="e.g. en")
                        tgt_files = gr.File(label="Audio files, long recordings or a .zip", file_count="multiple",
                                            file_types=["audio", ".zip", ".csv"], elem_id="sere-tgt-upload")
                        tgt_folder = gr.UploadButton("Upload a folder", file_count="directory", size="sm")
                    with gr.Column():
                        tgt_report = gr.Markdown("", elem_id="sere-tgt-report")

            # ---- 4 Train
            with gr.Tab("4 · Train", id="train"):
                readiness = gr.Markdown("", elem_id="sere-readiness")
                with gr.Row():
                    train_btn = gr.Button("Start training", variant="primary", elem_id="sere-train")
                    cancel_btn = gr.Button("Cancel", variant="stop", interactive=False, elem_id="sere-cancel")
                progress_box = gr.HTML(fg.progress_html(None), elem_id="sere-progress")
                metrics_md = gr.Markdown("", elem_id="sere-metrics")
                loss_plot = gr.Plot(show_label=False, elem_id="sere-loss")
                gr.Markdown("Loss terms of the Triple-Resonance Interaction Chain: **ll** labeled-labeled, "
                            "**lu** labeled-unlabeled, **uu** unlabeled-unlabeled.", elem_classes="sere-keys")
                gr.Markdown("Training runs in the background: you can keep labeling or close the page "
                            "and come back.", elem_classes="sere-keys")

            # ---- 5 Resonance field
            with gr.Tab("5 · Resonance field", id="field"):
                with gr.Row():
                    with gr.Column(scale=3):
                        field_plot = gr.Plot(show_label=False, elem_id="sere-field")
                        gr.Markdown("Colour: emotion · ◆ source language · ● target language · outlined: "
                                    "labeled by you · ★ emotion prototypes. Press **▶ replay** or drag the "
                                    "slider to watch training; click a point to listen.",
                                    elem_classes="sere-keys")
                    with gr.Column(scale=2):
                        clip_dd = gr.Dropdown(label="Clip", choices=[], elem_id="sere-clip-dd")
                        clicked = gr.Textbox(visible="hidden", elem_id="sere-clicked")
                        field_info = gr.Markdown(FIELD_HINT, elem_id="sere-field-info")
                        field_audio = gr.Audio(label="Listen", type="numpy", interactive=False,
                                               autoplay=True, elem_id="sere-field-audio")
                        field_probs = gr.Plot(show_label=False)
                        field_wave = gr.Plot(show_label=False)

            # ---- 6 Review
            with gr.Tab("6 · Review", id="review"):
                with gr.Row():
                    with gr.Column(scale=3):
                        sort_dd = gr.Dropdown(list(sv.SORTS), value="least confident first", label="Order")
                        table = gr.Dataframe(interactive=False, max_height=520, elem_id="sere-review-table",
                                             column_widths=["56px", "200px", "90px", "100px", "96px", "220px",
                                                            "150px"])
                        with gr.Row(elem_id="sere-review-pages"):
                            prev_page_btn = gr.Button("◀ previous", size="sm", elem_id="sere-prev-page")
                            page_no = gr.Number(value=1, precision=0, minimum=1, label="Page", elem_id="sere-page")
                            next_page_btn = gr.Button("next ▶", size="sm", elem_id="sere-next-page")
                        page_info = gr.Markdown("", elem_id="sere-page-info")
                        retrain_btn = gr.Button("Retrain with the confirmed labels", elem_id="sere-retrain")
                    with gr.Column(scale=2):
                        with gr.Column(elem_id="sere-review-panel"):
                            review_info = gr.Markdown("Choose a row to listen and confirm or correct.")
                            review_audio = gr.Audio(label="Listen", type="numpy", interactive=False,
                                                    autoplay=True, elem_id="sere-review-audio")
                            review_wave = gr.Plot(show_label=False)
                            gr.Markdown("Shaded: the emotional highlights, the moments that weighed most in the "
                                        "decision. One can sit at a clip's very start or end, even before the "
                                        "voice: the model uses those instants too.", elem_classes="sere-keys")
                            review_probs = gr.Plot(show_label=False)
                            confirm_btn = gr.Button("Confirm (Enter)", variant="primary", elem_id="sere-confirm",
                                                    interactive=False)
                            gr.Markdown("Or correct it:", elem_classes="sere-keys")
                            with gr.Row():
                                rev_btns = [gr.Button(visible=False, elem_id=f"sere-rev-emo-{i + 1}", size="sm")
                                            for i in range(MAX_EMOTIONS)]

            # ---- 7 Export
            with gr.Tab("7 · Export", id="export"):
                with gr.Row():
                    exp_pred_btn = gr.Button("Predictions (CSV)", elem_id="sere-exp-pred")
                    exp_labels_btn = gr.Button("Labels (CSV, can be imported again)", elem_id="sere-exp-labels")
                    exp_model_btn = gr.Button("Trained model (zip)", elem_id="sere-exp-model")
                export_file = gr.File(label="Download", interactive=False, elem_id="sere-export-file")
                gr.Markdown("### Import labels")
                labels_upload = gr.File(label="A labels CSV exported before", file_types=[".csv"])
                import_report = gr.Markdown("")

        timer = gr.Timer(1.0, active=False)

        # ---------------------------------------------------------------- handlers: project
        head_outputs = [project_line_md, emotions_box, project_dd, demo_labels_btn, *emo_btns, *rev_btns]

        def show_head(pid):
            pid = _pid(pid)
            if pid is not None:
                try:
                    sv.get_summary(ctx, pid)
                except NotFoundError:
                    pid = None
            emotions = emotions_of(pid)
            demo_project = pid is not None and bool(demo_reference(ctx, pid))
            return [project_line(pid), ", ".join(emotions),
                    gr.update(choices=project_choices(), value=pid),
                    gr.update(visible=demo_project),
                    *emotion_buttons(emotions), *emotion_buttons(emotions)]

        @friendly
        def load_demo(progress=gr.Progress()):
            summary, report = sv.load_demo(ctx, progress=lambda d, t, m: progress((d, t), desc=m))
            gr.Info(f"Demo project ready: {summary.n_source} German and {summary.n_target} English clips.")
            return summary.id, gr.Tabs(selected="source")

        @friendly
        def create(name, emotions):
            summary = sv.create_project(ctx, name, emotions)
            return summary.id, gr.Tabs(selected="source")

        @friendly
        def save_emotions(pid, text):
            if _pid(pid) is None:
                raise gr.Error("Open a project first.")
            sv.set_emotions(ctx, _pid(pid), text)
            gr.Info("Emotions saved.")
            return pid

        # ---------------------------------------------------------------- handlers: labeling
        label_outputs = [queue, label_audio, label_wave, clip_title, clip_hint, counts, project_line_md]

        @friendly
        def show_clip(pid, q):
            pid = _pid(pid)
            q = dict(q or {})
            if pid is None:
                return [q, None, empty_figure("Open a project first.", height=200), "", "",
                        fg.counts_html({}, sv.SHOTS), project_line(None)]
            emotions = emotions_of(pid)
            clip_id = sv.next_clip_to_label(ctx, pid, q.get("order"), q.get("skipped", []))
            q["clip"] = clip_id
            counts_html = fg.counts_html(sv.label_counts(ctx, pid), sv.SHOTS)
            if clip_id is None:
                n_src = sv.get_summary(ctx, pid).n_source
                msg = ("**Every source clip is labeled.** Go on to step 4 to train." if n_src else
                       "**No source clips yet.** Upload some on the right, or load the demo (step 1).")
                return [q, None, empty_figure("Nothing left to label.", height=200), msg, "", counts_html,
                        project_line(pid)]
            view = sv.clip_view(ctx, clip_id)
            left = len(sv.unlabeled_clip_ids(ctx, pid))
            title = f"**{html.escape(view.name)}** · {view.duration_s:.1f} s · {left} unlabeled left"
            hint = ""
            if view.reference:
                key = emotions.index(view.reference) + 1 if view.reference in emotions else None
                hint = (f"Demo hint: the corpus labels this clip **{view.reference}**"
                        + (f" (press <kbd>{key % 10}</kbd>)" if key else "") + ".")
            return [q, _audio(view), fg.clip_waveform(view), title, hint, counts_html,
                    project_line(pid)]

        def label_with(index):
            @friendly
            def handler(pid, q, request: gr.Request):
                pid, q = _pid(pid), dict(q or {})
                if pid is None or q.get("clip") is None:
                    return show_clip(pid, q)
                emotions = emotions_of(pid)
                if index >= len(emotions):
                    return show_clip(pid, q)
                sv.label_clip(ctx, q["clip"], emotions[index], session_id=request.session_hash if request else None)
                q["history"] = [*q.get("history", []), q["clip"]][-200:]
                return show_clip(pid, q)

            return handler

        @friendly
        def skip(pid, q):
            q = dict(q or {})
            if q.get("clip") is not None:
                q["skipped"] = [c for c in q.get("skipped", []) if c != q["clip"]] + [q["clip"]]
            return show_clip(pid, q)

        @friendly
        def undo(pid, q, request: gr.Request):
            q = dict(q or {})
            history = list(q.get("history", []))
            if not history:
                gr.Info("Nothing to undo.")
                return show_clip(pid, q)
            clip_id = history.pop()
            sv.undo_label(ctx, clip_id, session_id=request.session_hash if request else None)
            q["history"] = history
            q["skipped"] = [c for c in q.get("skipped", []) if c != clip_id]
            q["order"] = [clip_id] + [c for c in q.get("order", []) if c != clip_id]
            return show_clip(pid, q)

        @friendly
        def suggest(pid, q, progress=gr.Progress()):
            pid, q = _pid(pid), dict(q or {})
            if pid is None:
                raise gr.Error("Open a project first.")
            q["order"] = sv.suggest_clips(ctx, pid, progress=lambda d, t, m: progress((d, t), desc=m))
            q["skipped"] = []
            gr.Info("The clips are now in the suggested order.")
            return show_clip(pid, q)

        @friendly
        def demo_labels(pid, q):
            n = sv.apply_reference_labels(ctx, _pid(pid))
            gr.Info(f"{n} clips labeled from the corpus.")
            return show_clip(pid, q)

        def importer(role):
            @friendly
            def handler(pid, files, language, progress=gr.Progress()):
                files = files if isinstance(files, list) else [files] if files else []
                paths = [getattr(f, "name", f) for f in files]
                try:
                    if _pid(pid) is None:
                        raise gr.Error("Open or create a project first (step 1).")
                    report = sv.import_audio(ctx, _pid(pid), paths, role, language=language,
                                             progress=lambda d, t, m: progress((d, t), desc=m))
                finally:  # imported or refused, an upload's temporary copy is not kept
                    sv.discard_uploads(paths, upload_folder())
                return report.markdown()

            return handler

        # ---------------------------------------------------------------- handlers: training
        train_outputs = [readiness, progress_box, loss_plot, metrics_md, train_btn, cancel_btn, timer, seen_run]

        @friendly
        def show_training(pid, seen=None):
            pid = _pid(pid)
            if pid is None:
                return ["Open a project first.", fg.progress_html(None), fg.loss_figure(None), "",
                        gr.update(interactive=False), gr.update(interactive=False), gr.Timer(active=False), seen]
            ok, notes = sv.training_readiness(ctx, pid)
            counts = sv.label_counts(ctx, pid, role=None)
            text = (f"Labeled clips: {', '.join(f'{e} {n}' for e, n in counts.items())}."
                    + "".join(f"\n- {n}" for n in notes))
            status = sv.training_status(ctx, pid)
            active = status is not None and status.active
            key = (status.run_id, status.status, status.step) if status else None
            return [text, fg.progress_html(status), fg.loss_figure(status), fg.metrics_markdown(status),
                    gr.update(interactive=ok and not active), gr.update(interactive=active),
                    gr.Timer(active=active), key]

        @friendly
        def train(pid):
            pid = _pid(pid)
            if pid is None:
                raise gr.Error("Open a project first.")
            sv.start_training(ctx, pid)
            return [*show_training(pid), gr.Tabs(selected="train")]

        @friendly
        def cancel(pid):
            sv.cancel_training(ctx, _pid(pid))
            gr.Info("Training cancelled.")
            return show_training(pid)

        table_outputs = [table, page_no, page_info]
        result_outputs = [field_plot, clip_dd, *table_outputs]

        def show_table(pid, sort, page=1):
            """One page of the review table (a large project is never sent whole)."""
            pid = _pid(pid)
            if pid is None:
                return [None, 1, ""]
            tp = sv.predictions_page(ctx, pid, sort=sort, page=int(page or 1))
            return [tp.rows, tp.page, tp.caption()]

        @friendly
        def show_results(pid, sort="least confident first"):
            pid = _pid(pid)
            if pid is None:
                return [fg.field_figure(None), gr.update(choices=[], value=None), *show_table(None, sort)]
            data = sv.field_data(ctx, pid)
            choices = []
            if data is not None:
                pts = data.points.sort_values(["role", "name"], ascending=[False, True])
                choices = [(f"{r.name} ({r.role})", int(r.clip_id)) for r in pts.head(MAX_CLIP_CHOICES).itertuples()]
            label = ("Clip" if data is None or len(data.points) <= MAX_CLIP_CHOICES else
                     f"Clip (the first {MAX_CLIP_CHOICES} by name; click the field for the others)")
            return [fg.field_figure(data), gr.update(choices=choices, value=None, label=label),
                    *show_table(pid, sort)]

        def poll(pid, seen, sort):
            """Timer tick: progress while a run is active; the results once when it ends."""
            out = show_training(pid, seen)
            now = out[-1]
            finished = seen is not None and now is not None and now != seen and now[1] == "succeeded"
            results = show_results(pid, sort) if finished else [gr.skip()] * len(result_outputs)
            if finished:
                gr.Info("Training finished: the resonance field and the predictions are ready.")
            return [*out, *results]

        # ---------------------------------------------------------------- handlers: field & review
        detail_outputs = [field_info, field_audio, field_probs, field_wave]

        def describe(view) -> str:
            parts = [f"**{html.escape(view.name)}** · {view.role} language"
                     + (f" ({html.escape(view.language)})" if view.language else "")
                     + (f" · speaker {html.escape(view.speaker)}" if view.speaker else "")]
            if view.prediction:
                p = view.prediction
                parts.append(f"Predicted **{p.emotion}** ({p.confidence:.0%} confident)"
                             + (f"; highlights at {', '.join(f'{a:.2f}-{b:.2f} s' for a, b in p.highlights)}"
                                if p.highlights else ""))
            if view.label:
                parts.append(f"Your label: **{view.label}**")
            if view.reference:
                parts.append(f"Corpus label (demo): {view.reference}")
            return "\n\n".join(parts)

        @friendly
        def show_detail(pid, clip_id):
            pid = _pid(pid)
            if pid is None or clip_id in (None, ""):
                return [FIELD_HINT, None, empty_figure("", height=180), empty_figure("", height=200)]
            view = sv.clip_view(ctx, int(clip_id))
            return [describe(view), _audio(view),
                    fg.clip_probabilities(view, emotions_of(pid)), fg.clip_waveform(view)]

        def on_click(pid, text):
            clip_id = str(text or "").split("|")[0]
            return show_detail(pid, clip_id if clip_id.isdigit() else None)

        review_outputs = [review_clip, review_info, review_audio, review_wave, review_probs, confirm_btn]

        @friendly
        def show_review(pid, clip_id):
            pid = _pid(pid)
            if pid is None or clip_id is None:
                return [None, "Choose a row to listen and confirm or correct.", None,
                        empty_figure("", height=200), empty_figure("", height=180),
                        gr.update(interactive=False, value="Confirm (Enter)")]
            view = sv.clip_view(ctx, int(clip_id))
            confirm = (gr.update(interactive=True, value=f"Confirm {view.prediction.emotion} (Enter)")
                       if view.prediction else gr.update(interactive=False, value="Confirm (Enter)"))
            return [int(clip_id), describe(view), _audio(view), fg.clip_waveform(view),
                    fg.clip_probabilities(view, emotions_of(pid)), confirm]

        def pick_row(pid, evt: gr.SelectData):
            row = evt.row_value if evt is not None else None
            return show_review(pid, int(row[0]) if row else None)

        def review_with(index):
            @friendly
            def handler(pid, clip_id, sort, page, request: gr.Request):
                pid = _pid(pid)
                if pid is None or clip_id is None:
                    raise gr.Error("Choose a row first.")
                emotion = None if index is None else emotions_of(pid)[index]
                stored = sv.confirm_prediction(ctx, int(clip_id), emotion,
                                               session_id=request.session_hash if request else None)
                gr.Info(f"Labeled {stored}.")
                nxt = sv.next_to_review(ctx, pid, sort, int(clip_id))
                return [*show_table(pid, sort, page), *show_review(pid, nxt)]

            return handler

        # ---------------------------------------------------------------- handlers: export
        @friendly
        def export(kind, pid):
            pid = _pid(pid)
            if pid is None:
                raise gr.Error("Open a project first.")
            path = {"predictions": sv.export_predictions, "labels": sv.export_labels,
                    "model": sv.export_model}[kind](ctx, pid)
            return str(path)

        @friendly
        def import_labels(pid, file):
            if file is None:
                raise gr.Error("Open a project and choose a labels CSV.")
            path = getattr(file, "name", file)
            try:
                if _pid(pid) is None:
                    raise gr.Error("Open a project and choose a labels CSV.")
                result = sv.import_labels_file(ctx, _pid(pid), path)
            finally:  # applied or refused, the upload's temporary copy is not kept
                sv.discard_uploads([path], upload_folder())
            text = f"{result.applied} labels applied, {result.unchanged} unchanged, {result.skipped} empty."
            if result.rejected:
                shown = result.rejected[:sv.MAX_REPORT_ROWS]
                text += "\n\n" + "\n".join(f"- line {n}: {sv.without_paths(why)}" for n, why in shown)
                if len(result.rejected) > len(shown):
                    text += f"\n\n… and {len(result.rejected) - len(shown):,} more lines rejected."
            return text

        # ---------------------------------------------------------------- wiring
        def refresh_all(trigger):
            """After the open project changes: header, labeling card, training, results."""
            return (trigger.then(show_head, project, head_outputs)
                    .then(lambda: {"clip": None, "order": [], "skipped": [], "history": []}, None, queue)
                    .then(show_clip, [project, queue], label_outputs)
                    .then(show_training, [project, seen_run], train_outputs)
                    .then(show_results, [project, sort_dd], result_outputs))

        refresh_all(demo.load(lambda p: p, project, project))
        refresh_all(demo_btn.click(load_demo, None, [project, tabs]))
        refresh_all(create_btn.click(create, [new_name, new_emotions], [project, tabs]))
        refresh_all(project_dd.input(lambda v: v, project_dd, project))
        refresh_all(save_emotions_btn.click(save_emotions, [project, emotions_box], project))

        for i, b in enumerate(emo_btns):
            b.click(label_with(i), [project, queue], label_outputs, show_progress="hidden")
        skip_btn.click(skip, [project, queue], label_outputs, show_progress="hidden")
        undo_btn.click(undo, [project, queue], label_outputs, show_progress="hidden")
        suggest_btn.click(suggest, [project, queue], label_outputs)
        demo_labels_btn.click(demo_labels, [project, queue], label_outputs).then(
            show_head, project, head_outputs)

        for files, folder, lang, role, report in ((src_files, src_folder, src_lang, "source", src_report),
                                                  (tgt_files, tgt_folder, tgt_lang, "target", tgt_report)):
            for trigger, clear in ((files.upload(importer(role), [project, files, lang], report), files),
                                   (folder.upload(importer(role), [project, folder, lang], report), None)):
                if clear is not None:
                    trigger = trigger.then(lambda: None, None, clear)
                trigger.then(show_head, project, head_outputs).then(show_clip, [project, queue], label_outputs)

        tabs_train = [*train_outputs, tabs]
        train_btn.click(train, project, tabs_train)
        retrain_btn.click(train, project, tabs_train)
        cancel_btn.click(cancel, project, train_outputs)
        timer.tick(poll, [project, seen_run, sort_dd], [*train_outputs, *result_outputs], show_progress="hidden")
        # Switching tabs refreshes the training panel (labels may have changed meanwhile).
        tabs.select(lambda p, s: show_training(p, s), [project, seen_run], train_outputs, show_progress="hidden")

        clicked.change(on_click, [project, clicked], detail_outputs)
        clip_dd.input(show_detail, [project, clip_dd], detail_outputs)
        sort_dd.input(show_table, [project, sort_dd], table_outputs)
        page_no.submit(show_table, [project, sort_dd, page_no], table_outputs)
        prev_page_btn.click(lambda p, s, n: show_table(p, s, max(1, int(n or 1) - 1)), [project, sort_dd, page_no],
                            table_outputs)
        next_page_btn.click(lambda p, s, n: show_table(p, s, int(n or 1) + 1), [project, sort_dd, page_no],
                            table_outputs)
        table.select(pick_row, project, review_outputs)
        confirm_btn.click(review_with(None), [project, review_clip, sort_dd, page_no],
                          [*table_outputs, *review_outputs])
        for i, b in enumerate(rev_btns):
            b.click(review_with(i), [project, review_clip, sort_dd, page_no], [*table_outputs, *review_outputs])

        exp_pred_btn.click(functools.partial(export, "predictions"), project, export_file)
        exp_labels_btn.click(functools.partial(export, "labels"), project, export_file)
        exp_model_btn.click(functools.partial(export, "model"), project, export_file)
        labels_upload.upload(import_labels, [project, labels_upload], import_report)

    demo.sere_context = ctx  # for tests and launch_options
    return demo


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    ctx = AppContext.open()
    # Uploads and the audio the page plays go to the data folder, not to a /tmp/gradio shared with
    # every Gradio app on the machine: the app then serves no file from outside its data folder.
    os.environ.setdefault("GRADIO_TEMP_DIR", str(ctx.settings.data_dir / "gradio"))
    demo = build_app(ctx)
    demo.queue(default_concurrency_limit=4).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        max_file_size=AudioConfig().max_file_bytes, **launch_options(ctx))  # bytes: SERE's MB, not MiB


if __name__ == "__main__":
    main()
