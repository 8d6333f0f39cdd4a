"""SERE Studio: the web app. Wiring only: the logic lives in ``sere_core.app``.

Run ``python app.py`` and open http://127.0.0.1:7860. Settings come from the environment (see the
README). The page is one builder per tab; each screen has one view (``sere_core.app.views``) and
one function here that turns it into the screen's components, which nothing else writes.

Per visitor, the page keeps three things: a visitor token and the open project in the browser
(``gr.BrowserState``, so both survive a reload and a server restart), and the caller the server
derived from them (``gr.State``, on the server, so a request cannot claim another identity).
Every handler acts for that caller, on the ids the page shows; only the endpoints in the README
are public API.
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import functools  # noqa: E402
import html  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gradio as gr  # noqa: E402
import plotly  # noqa: E402

from sere_core.app import (  # noqa: E402
    AppContext,
    clip_browser,
    exports,
    field,
    imports,
    labeling,
    projects,
    review,
    training,
    views,
)
from sere_core.app import demo as dm  # noqa: E402
from sere_core.app import figures as fg  # noqa: E402
from sere_core.app.access import Caller, caller_for, new_token, token_id  # noqa: E402
from sere_core.app.context import PER_VISITOR, set_thread_limits  # noqa: E402
from sere_core.app.label_queue import LabelQueue  # noqa: E402
from sere_core.app.messages import user_message  # noqa: E402
from sere_core.audio import AudioConfig  # noqa: E402
from sere_core.errors import ActiveRunError, SereError  # noqa: E402
from sere_core.viz import COLOR_BY, confusion_figure, empty_figure, results_figure  # noqa: E402

log = logging.getLogger("sere_studio")
ASSETS = Path(__file__).resolve().parent / "assets"
LICENCE_NOTE = (
    "Demo audio: German clips from EmoDB (CC0-1.0, audb republication; processed copy) and English "
    "clips from RAVDESS by Livingstone & Russo 2018 (Zenodo 1188976), **CC BY-NC-SA 4.0: "
    "non-commercial, share-alike**. See data/LICENSE-DEMO.md."
)
FIELD_HINT = "Click a point in the field, or choose a clip above, to listen to it and label it."
#: The field: plotly draws into the inner div (assets/field.js); the markup never changes, so a
#: new figure does not replace the plot's element.
FIELD_TEMPLATE = "<div class='sere-field-plot'></div>"
#: plotly.js for the field, from the plotly package (no CDN: the app works offline).
PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
#: Most clips listed in the field's clip menu (a 100,000-clip list would weigh megabytes).
MAX_CLIP_CHOICES = 2000
#: The clip browser's filters as a project opens: role, language, predicted, labeled, speaker,
#: confidence from and to (%), file name, order.
BROWSER_DEFAULTS: tuple[Any, ...] = ("any", "any", "any", "any", "any", None, None, "", "file name")
#: The clip pads' markup around the value the server renders (``figures.label_pad``).
PAD_TEMPLATE = ("<div class='sere-pad' data-kind='${value.kind}' data-clip='${value.clip ?? \"\"}' "
                "data-rev='${value.rev}'>${value.audio ? `<audio controls autoplay src='${value.audio}'></audio>` : ''}"
                "${value.html}</div>")
#: Every handler of the page is private: only ``api_endpoints`` are public API.
PRIVATE: dict[str, Any] = {"api_visibility": "private"}
#: Short database work (labels, views, polls) shares its own pool of request threads.
QUICK: dict[str, Any] = {"api_visibility": "private", "concurrency_id": "quick", "concurrency_limit": 16}


def launch_options(ctx: AppContext) -> dict[str, Any]:
    """What ``launch()`` needs besides the Blocks: the page's styles (Gradio 6 takes them in
    ``launch``, not in ``Blocks``), the export folder, from which downloads are served, and the
    field's plotly.js."""
    theme = gr.themes.Default(
        primary_hue="indigo", secondary_hue="pink",
        # System fonts: the page loads nothing from the internet (Gradio's default fetches Google Fonts).
        font=["ui-sans-serif", "system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
    )
    return {
        "theme": theme,
        "css": (ASSETS / "sere.css").read_text(encoding="utf-8"),
        "allowed_paths": [str(ctx.export_dir()), str(PLOTLY_JS)],
        "footer_links": [],
    }


def oauth_enabled() -> bool:
    """Whether the Space enables "Sign in with Hugging Face" (``hf_oauth: true`` in the README)."""
    return bool(os.environ.get("OAUTH_CLIENT_ID")) and os.environ.get("SYSTEM") == "spaces"


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
            raise gr.Error(user_message(exc), print_exception=False) from None
        except Exception as exc:
            log.exception("handler %s failed", fn.__name__)
            raise gr.Error(user_message(exc), print_exception=False) from exc

    return wrapper


def upload_folder() -> str:
    """Where Gradio keeps uploads (``GRADIO_TEMP_DIR``, which ``main`` puts in the data folder)."""
    from gradio.utils import get_upload_folder

    return get_upload_folder()


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def who(me: Any) -> Caller:
    """The caller of a page event (set when the page loaded)."""
    if not isinstance(me, Caller):
        raise gr.Error("This page has lost its connection to the server; reload it.")
    return me


@dataclass
class Page:
    """What every tab shares: the visitor token and open project (kept in the browser) and the
    caller (kept on the server)."""

    blocks: Any
    visitor: Any
    project: Any
    me: Any
    tabs: Any = None
    download: Any = None  # the page's downloader: an export's file is saved at once (assets/download.js)


def build_app(ctx: AppContext | None = None) -> gr.Blocks:
    """The page. ``ctx`` holds the shared resources (database, files, workers)."""
    ctx = ctx or AppContext.open()
    secret = ctx.browser_state_secret()

    with gr.Blocks(title="SERE Studio", fill_width=False, delete_cache=(3600, 7200)) as demo:
        page = Page(blocks=demo, visitor=gr.BrowserState(None, storage_key="sere-studio-visitor", secret=secret),
                    project=gr.BrowserState(None, storage_key="sere-studio-project", secret=secret),
                    me=gr.State(None))
        header = Header.build(ctx)
        page.download = gr.HTML({"rev": 0, "html": ""}, html_template="${value.html}", elem_id="sere-download",
                                js_on_load=(ASSETS / "download.js").read_text(encoding="utf-8"))
        with gr.Tabs(selected="project", elem_id="sere-tabs") as tabs:
            page.tabs = tabs
            project_tab = ProjectTab.build(ctx, page, header)
            source_tab = SourceTab.build(ctx, page)
            target_tab = TargetTab.build(ctx, page)
            train_tab = TrainTab.build(ctx, page)
            field_tab = FieldTab.build(ctx, page)
            review_tab = ReviewTab.build(ctx, page)
            export_tab = ExportTab.build(ctx, page)
        screens = Screens(project_tab, source_tab, train_tab, field_tab, review_tab)
        screens.wire(ctx, page, target_tab, export_tab)
        api_endpoints(ctx)

    demo.sere_context = ctx  # for tests and launch_options
    return demo


# ============================================================================== header and screens


@dataclass
class Header:
    line: Any
    identity: Any
    warming: Any

    @classmethod
    def build(cls, ctx: AppContext) -> "Header":
        gr.Markdown("# SERE Studio\nLabel a few clips in a language you know; SERE learns the emotions "
                    "and finds them in another language.", elem_id="sere-header")
        with gr.Row(equal_height=True):
            line = gr.HTML(fg.project_line(None), elem_id="sere-project-line-box")
            with gr.Column(scale=0, min_width=220):
                identity = gr.Markdown("", elem_id="sere-identity", elem_classes="sere-keys")
                if oauth_enabled():
                    gr.LoginButton(size="sm")
        warming = gr.HTML(fg.warmup_html(""), elem_id="sere-warming-box")
        return cls(line, identity, warming)


@dataclass
class ProjectTab:
    header: Header
    demo_btn: Any
    reset_btn: Any
    reset_row: Any
    reset_yes: Any
    reset_no: Any
    project_dd: Any
    new_name: Any
    new_emotions: Any
    create_btn: Any
    emotions_box: Any
    save_emotions_btn: Any
    rename_box: Any
    rename_btn: Any
    delete_btn: Any
    delete_row: Any
    delete_text: Any
    delete_yes: Any
    delete_no: Any

    @classmethod
    def build(cls, ctx: AppContext, page: Page, header: Header) -> "ProjectTab":
        with gr.Tab("1 · Project", id="project"):
            with gr.Row():
                with gr.Column(scale=1):
                    gr.Markdown("### Try it\nYour own copy of a ready project: 32 German clips to label, "
                                "40 English clips to recognise.")
                    with gr.Row():
                        demo_btn = gr.Button("Load demo", variant="primary", elem_id="sere-load-demo")
                        reset_btn = gr.Button("Reset demo", size="sm", elem_id="sere-reset-demo")
                    with gr.Row(visible=False, elem_id="sere-reset-confirm") as reset_row:
                        gr.Markdown("Reset the demo? Its labels and trainings are deleted and a fresh copy "
                                    "is made.")
                        reset_yes = gr.Button("Reset", variant="stop", size="sm", elem_id="sere-reset-yes")
                        reset_no = gr.Button("Keep it", size="sm")
                    gr.Markdown(LICENCE_NOTE, elem_classes="sere-licence")
                with gr.Column(scale=1):
                    gr.Markdown("### Open a project")
                    project_dd = gr.Dropdown(choices=[], label="Your projects", value=None,
                                             elem_id="sere-project-dd")
                    gr.Markdown("### New project")
                    new_name = gr.Textbox(label="Name", placeholder="e.g. Yoruba interviews")
                    new_emotions = gr.Textbox(label="Emotions (comma separated, 2-10)",
                                              value=", ".join(projects.DEFAULT_EMOTIONS))
                    create_btn = gr.Button("Create project")
            with gr.Accordion("Edit the open project", open=False):
                emotions_box = gr.Textbox(label="Emotions", elem_id="sere-emotions")
                save_emotions_btn = gr.Button("Save emotions", size="sm")
                with gr.Row():
                    rename_box = gr.Textbox(label="Name", elem_id="sere-rename", scale=3)
                    rename_btn = gr.Button("Rename", size="sm", scale=1, elem_id="sere-rename-btn")
                delete_btn = gr.Button("Delete this project…", variant="stop", size="sm", elem_id="sere-delete")
                with gr.Row(visible=False, elem_id="sere-delete-confirm") as delete_row:
                    delete_text = gr.Markdown("")
                    delete_yes = gr.Button("Delete it", variant="stop", size="sm", elem_id="sere-delete-yes")
                    delete_no = gr.Button("Keep it", size="sm")
        return cls(header, demo_btn, reset_btn, reset_row, reset_yes, reset_no, project_dd, new_name,
                   new_emotions, create_btn, emotions_box, save_emotions_btn, rename_box, rename_btn,
                   delete_btn, delete_row, delete_text, delete_yes, delete_no)

    @property
    def outputs(self) -> list[Any]:
        return [self.header.line, self.header.identity, self.project_dd, self.emotions_box, self.rename_box,
                self.delete_text, self.delete_row, self.reset_row]

    @staticmethod
    def show(ctx: AppContext, caller: Caller, pid: int | None) -> list[Any]:
        screen = views.project_screen(ctx, caller, pid)
        p = screen.project
        return [fg.project_line(p, ready=True), fg.identity_markdown(caller, ctx.settings),
                gr.update(choices=screen.projects, value=p.id if p else None),
                ", ".join(p.emotions) if p else "", p.name if p else "",
                f"Delete **{html.escape(p.name)}** with its clips, labels and trainings? This cannot be undone."
                if p else "", gr.Row(visible=False), gr.Row(visible=False)]


@dataclass
class SourceTab:
    pad: Any
    wave: Any
    counts: Any
    queue: Any
    suggest_btn: Any
    demo_labels_btn: Any
    files: Any
    folder: Any
    language: Any
    report: Any
    features: Any

    @classmethod
    def build(cls, ctx: AppContext, page: Page) -> "SourceTab":
        with gr.Tab("2 · Source clips", id="source"):
            queue = gr.State(LabelQueue())
            with gr.Row():
                with gr.Column(scale=2):
                    pad = gr.HTML(fg.empty_pad("label", "Open a project first (step 1)."), html_template=PAD_TEMPLATE,
                                  js_on_load=(ASSETS / "pad.js").read_text(encoding="utf-8"),
                                  elem_id="sere-label-panel")
                    wave = gr.Plot(label="Waveform", show_label=False)
                with gr.Column(scale=1):
                    counts = gr.HTML(fg.counts_html({}, labeling.SHOTS))
                    suggest_btn = gr.Button("Suggest clips to label", elem_id="sere-suggest")
                    gr.Markdown("Suggestions put typical, varied clips first, so 5 labels per "
                                "emotion cover the recordings well.", elem_classes="sere-keys")
                    demo_labels_btn = gr.Button("Demo: label 5 per emotion for me", size="sm",
                                                visible=False, elem_id="sere-demo-labels")
                    gr.Markdown("### Add source clips")
                    language = gr.Textbox(label="Language code (optional)", placeholder="e.g. de")
                    files = gr.File(label="Audio files or a .zip (a CSV manifest inside may carry labels)",
                                    file_count="multiple",
                                    elem_id="sere-src-upload")
                    folder = gr.UploadButton("Upload a folder", file_count="directory", size="sm")
                    report = gr.Markdown("", elem_id="sere-src-report")
                    features = gr.HTML(fg.features_html(None), elem_id="sere-src-features")
        return cls(pad, wave, counts, queue, suggest_btn, demo_labels_btn, files, folder, language, report, features)

    @property
    def outputs(self) -> list[Any]:
        return [self.queue, self.pad, self.wave, self.counts, self.demo_labels_btn]

    @staticmethod
    def show(ctx: AppContext, caller: Caller, pid: int | None, queue: Any, acted: Any = None) -> list[Any]:
        """``acted``: the pad value the answered action was sent from (see ``figures.answering``)."""
        screen = views.labeling_screen(ctx, caller, pid, queue if isinstance(queue, LabelQueue) else LabelQueue())
        wave = (fg.clip_waveform(screen.clip) if screen.clip is not None else
                empty_figure("Nothing to label here.", height=200))
        return [screen.queue, fg.answering(fg.label_pad(screen), acted), wave, fg.counts_html(screen.counts, labeling.SHOTS),
                gr.update(visible=bool(screen.project and screen.project.is_demo))]


@dataclass
class TargetTab:
    files: Any
    folder: Any
    language: Any
    report: Any
    features: Any

    @classmethod
    def build(cls, ctx: AppContext, page: Page) -> "TargetTab":
        with gr.Tab("3 · Target audio", id="target"):
            gr.Markdown("Unlabeled recordings in the language you want to analyse. Long recordings "
                        "are split at pauses into utterances of at most 30 s.")
            with gr.Row():
                with gr.Column():
                    language = gr.Textbox(label="Language code (optional)", placeholder="e.g. en")
                    files = gr.File(label="Audio files, long recordings or a .zip", file_count="multiple",
                                    elem_id="sere-tgt-upload")
                    folder = gr.UploadButton("Upload a folder", file_count="directory", size="sm")
                with gr.Column():
                    report = gr.Markdown("", elem_id="sere-tgt-report")
                    features = gr.HTML(fg.features_html(None), elem_id="sere-tgt-features")
        return cls(files, folder, language, report, features)


@dataclass
class TrainTab:
    readiness: Any
    train_btn: Any
    cancel_btn: Any
    progress: Any
    metrics: Any
    loss: Any
    seen: Any
    seen_status: Any
    seen_live: Any
    timer: Any
    summary: Any = None
    summary_plot: Any = None
    confusion_plot: Any = None
    to_field_btn: Any = None

    @classmethod
    def build(cls, ctx: AppContext, page: Page) -> "TrainTab":
        with gr.Tab("4 · Train", id="train"):
            readiness = gr.Markdown("", elem_id="sere-readiness")
            with gr.Row():
                train_btn = gr.Button("Start training", variant="primary", elem_id="sere-train", interactive=False)
                cancel_btn = gr.Button("Cancel", variant="stop", interactive=False, elem_id="sere-cancel")
            progress = gr.HTML(fg.progress_html(None), elem_id="sere-progress")
            metrics = gr.Markdown("", elem_id="sere-metrics")
            loss = gr.Plot(show_label=False, elem_id="sere-loss")
            gr.Markdown("Loss terms of the Triple-Resonance Interaction Chain: **ll** labeled-labeled, "
                        "**lu** labeled-unlabeled, **uu** unlabeled-unlabeled.", elem_classes="sere-keys")
            gr.Markdown("Training runs in the background, whoever started it: you can keep labeling or "
                        "close the page and come back. While it runs, the resonance field (step 5) shows the "
                        "clips moving.", elem_classes="sere-keys")
            gr.Markdown("### Results of the latest run")
            summary = gr.Markdown("No finished run yet.", elem_id="sere-summary")
            with gr.Row():
                summary_plot = gr.Plot(show_label=False, elem_id="sere-summary-plot")
                confusion_plot = gr.Plot(show_label=False, visible=False, elem_id="sere-confusion")
            to_field_btn = gr.Button("See the resonance field →", elem_id="sere-to-field")
        # The page follows the project's run, whoever started it: a cheap poll that redraws
        # only when something changed.
        return cls(readiness, train_btn, cancel_btn, progress, metrics, loss, gr.State(None), gr.State(None),
                   gr.State(None), gr.Timer(2.0, active=True), summary, summary_plot, confusion_plot, to_field_btn)

    @property
    def results(self) -> list[Any]:
        return [self.summary, self.summary_plot, self.confusion_plot]

    @staticmethod
    def show_results(ctx: AppContext, caller: Caller, pid: int | None) -> list[Any]:
        """The latest finished run's summary: counts, confidences, changes, and the confusion
        matrix where target clips have labels."""
        summary = review.results_summary(ctx, caller, pid) if pid is not None else None
        if summary is None:
            return ["No finished run yet.", empty_figure("Train the model to see its results.", height=260),
                    gr.update(visible=False)]
        confusion = (gr.update(value=confusion_figure(summary.truth, summary.predicted, emotions=summary.emotions),
                               visible=True) if summary.truth else gr.update(visible=False))
        return [summary.markdown(), results_figure(summary.counts, summary.confidences, emotions=summary.emotions),
                confusion]

    @property
    def outputs(self) -> list[Any]:
        return [self.readiness, self.progress, self.loss, self.metrics, self.train_btn, self.cancel_btn, self.seen]

    @staticmethod
    def show(ctx: AppContext, caller: Caller, pid: int | None) -> list[Any]:
        screen = views.training_screen(ctx, caller, pid)
        if screen.project is None:
            return ["Open a project first.", fg.progress_html(None), fg.loss_figure(None), "",
                    gr.update(interactive=False), gr.update(interactive=False), None]
        ready, status = screen.readiness, screen.status
        text = (f"Labeled clips: {', '.join(f'{e} {n}' for e, n in ready.counts.items())}."
                + "".join(f"\n- {n}" for n in ready.notes))
        active = status is not None and status.active
        key = (screen.project.id, status.key if status else None, tuple(ready.counts.items()), tuple(ready.notes))
        return [text, fg.progress_html(status), fg.loss_figure(status), fg.metrics_markdown(status),
                gr.update(interactive=ready.ok and not active), gr.update(interactive=active), key]


@dataclass
class FieldTab:
    plot: Any
    color_by: Any
    next_mode: Any
    clip_dd: Any
    pad: Any
    wave: Any
    probs: Any
    selection: Any
    html_btn: Any
    browser: Any
    filters: list[Any]
    browse_page: Any
    prev_btn: Any
    next_btn: Any

    @classmethod
    def build(cls, ctx: AppContext, page: Page) -> "FieldTab":
        with gr.Tab("5 · Resonance field", id="field"):
            with gr.Row():
                with gr.Column(scale=3):
                    with gr.Row():
                        color_by = gr.Dropdown([(text, key) for key, text in COLOR_BY.items()], value="emotion",
                                               label="Colour by", elem_id="sere-color-by")
                        next_mode = gr.Radio(list(field.NEXT_MODES), value=field.NEXT_MODES[0],
                                             label="After a label, go to the", elem_id="sere-next-mode")
                    plot = gr.HTML(fg.field_value(None), html_template=FIELD_TEMPLATE, elem_id="sere-field",
                                   js_on_load=(ASSETS / "field.js").read_text(encoding="utf-8").replace(
                                       '"__PLOTLY_URL__"', json.dumps(f"gradio_api/file={PLOTLY_JS.as_posix()}")))
                    gr.Markdown("Click a point to listen and label it (the same keys as labeling: <kbd>1</kbd>-"
                                "<kbd>9</kbd>, <kbd>U</kbd> undo, <kbd>Enter</kbd> confirm the prediction). Draw a "
                                "lasso (or choose the box in the toolbar) to select many; double-click clears the "
                                "selection. Press **▶ replay** or drag the slider to watch training; the camera above the map "
                                "saves it as a PNG.",
                                elem_classes="sere-keys")
                with gr.Column(scale=2):
                    clip_dd = gr.Dropdown(label="Clip", choices=[], elem_id="sere-clip-dd")
                    pad = gr.HTML(fg.review_pad(None, [], "field", FIELD_HINT), html_template=PAD_TEMPLATE,
                                  js_on_load=(ASSETS / "pad.js").read_text(encoding="utf-8"),
                                  elem_id="sere-field-panel")
                    wave = gr.Plot(show_label=False)
                    probs = gr.Plot(show_label=False)
                    selection = gr.HTML(fg.selection_pad([], None, []), html_template=PAD_TEMPLATE,
                                        js_on_load=(ASSETS / "selection.js").read_text(encoding="utf-8"),
                                        elem_id="sere-selection")
                    html_btn = gr.Button("Export the field (interactive HTML)", size="sm", elem_id="sere-field-html")
            gr.Markdown("### Every clip\nFilter, search and tick clips: the ticked clips are the selection "
                        "on the map (and a selection on the map is ticked here). Click a file name to listen "
                        "and label it.", elem_classes="sere-keys")
            with gr.Row(elem_id="sere-browser-filters"):
                filters = [
                    gr.Dropdown(["any", "source", "target"], value="any", label="Role", min_width=110),
                    gr.Dropdown(["any"], value="any", label="Language", min_width=110),
                    gr.Dropdown(["any"], value="any", label="Predicted", min_width=120),
                    gr.Dropdown(list(clip_browser.LABELED), value="any", label="Labeled", min_width=120),
                    gr.Dropdown(["any"], value="any", label="Speaker", min_width=120),
                    gr.Number(None, label="Confidence from %", minimum=0, maximum=100, min_width=110),
                    gr.Number(None, label="to %", minimum=0, maximum=100, min_width=90),
                    gr.Textbox(label="File name contains", elem_id="sere-browser-search", min_width=160),
                    gr.Dropdown(list(clip_browser.ORDERS), value="file name", label="Order", min_width=150),
                ]
            browser = gr.HTML(fg.browser_value(None, []), html_template="<div class='sere-browser-pad'>${value.html}</div>",
                              js_on_load=(ASSETS / "browser.js").read_text(encoding="utf-8"), elem_id="sere-browser")
            with gr.Row():
                prev_btn = gr.Button("◀ previous", size="sm", elem_id="sere-browser-prev")
                browse_page = gr.Number(value=1, precision=0, minimum=1, label="Page", elem_id="sere-browser-page")
                next_btn = gr.Button("next ▶", size="sm", elem_id="sere-browser-next")
        return cls(plot, color_by, next_mode, clip_dd, pad, wave, probs, selection, html_btn, browser, filters,
                   browse_page, prev_btn, next_btn)

    @property
    def browser_outputs(self) -> list[Any]:
        """What a new browser page changes: the table, the choices of the language, predicted and
        speaker filters, and the page number."""
        return [self.browser, self.filters[1], self.filters[2], self.filters[4], self.browse_page]

    @property
    def browser_all(self) -> list[Any]:
        return [self.browser, *self.filters, self.browse_page]

    @staticmethod
    def show_browser_afresh(ctx: AppContext, caller: Caller, pid: int | None) -> list[Any]:
        """The browser of a project just opened: every filter back to its default, page 1."""
        table, languages, predicted, speakers, page = FieldTab.show_browser(ctx, caller, pid, BROWSER_DEFAULTS)
        role, _, _, labeled, _, low, high, name, order = BROWSER_DEFAULTS
        return [table, role, {**languages, "value": "any"}, {**predicted, "value": "any"}, labeled,
                {**speakers, "value": "any"}, low, high, name, order, page]

    @staticmethod
    def show_browser(ctx: AppContext, caller: Caller, pid: int | None, values: list[Any], page_no: Any = 1
                     ) -> list[Any]:
        """The clip browser's page for the filter ``values`` (in ``filters`` order), with its
        filters' choices and the page number; the filters keep their values."""
        if pid is None:
            return [fg.browser_value(None, []), *[gr.update(choices=["any"])] * 3, 1]
        *where, order = values
        page = clip_browser.browse(ctx, caller, pid, clip_browser.clip_filter(*where), str(order or "file name"),
                                   int(_int(page_no) or 1))
        emotions = projects.get_summary(ctx, caller, pid).emotions
        return [fg.browser_value(page, emotions), gr.update(choices=["any", *page.facets["language"]]),
                gr.update(choices=["any", *emotions]), gr.update(choices=["any", *page.facets["speaker"]]),
                page.page]

    @property
    def details(self) -> list[Any]:
        return [self.pad, self.wave, self.probs]

    @staticmethod
    def show_detail(ctx: AppContext, caller: Caller, pid: int | None, clip_id: int | None,
                    acted: Any = None) -> list[Any]:
        """The clip panel: a clip chosen on the map, in the menu or in another screen."""
        if pid is None or clip_id is None:
            return [fg.answering(fg.review_pad(None, [], "field", FIELD_HINT), acted),
                    empty_figure("", height=200), empty_figure("", height=180)]
        view = review.clip_view(ctx, caller, clip_id, pid)
        emotions = projects.get_summary(ctx, caller, pid).emotions
        return [fg.answering(fg.review_pad(view, emotions, "field"), acted), fg.clip_waveform(view),
                fg.clip_probabilities(view, emotions)]

    @staticmethod
    def show_selection(ctx: AppContext, caller: Caller, pid: int | None, clips: list[int], chosen: int | None,
                       note: str = "", audio: str = "", ask: int | None = None) -> dict[str, Any]:
        emotions = projects.get_summary(ctx, caller, pid).emotions if pid is not None else []
        return fg.selection_pad(clips if pid is not None else [], chosen, emotions, note, audio, ask)


@dataclass
class ReviewTab:
    sort: Any
    table: Any
    page_no: Any
    prev_btn: Any
    next_btn: Any
    page_info: Any
    retrain_btn: Any
    pad: Any
    wave: Any
    probs: Any

    @classmethod
    def build(cls, ctx: AppContext, page: Page) -> "ReviewTab":
        with gr.Tab("6 · Review", id="review"):
            with gr.Row():
                with gr.Column(scale=3):
                    sort = gr.Dropdown(list(review.SORTS), value="least confident first", label="Order")
                    table = gr.Dataframe(interactive=False, max_height=520, elem_id="sere-review-table",
                                         column_widths=["56px", "180px", "108px", "116px", "112px", "200px", "150px"])
                    with gr.Row(elem_id="sere-review-pages"):
                        prev_btn = gr.Button("◀ previous", size="sm", elem_id="sere-prev-page")
                        page_no = gr.Number(value=1, precision=0, minimum=1, label="Page", elem_id="sere-page")
                        next_btn = gr.Button("next ▶", size="sm", elem_id="sere-next-page")
                    page_info = gr.Markdown("", elem_id="sere-page-info")
                    retrain_btn = gr.Button("Retrain with the confirmed labels", elem_id="sere-retrain")
                with gr.Column(scale=2, elem_id="sere-review-side"):  # sticky: the buttons stay in view
                    pad = gr.HTML(fg.review_pad(None, []), html_template=PAD_TEMPLATE,
                                  js_on_load=(ASSETS / "pad.js").read_text(encoding="utf-8"),
                                  elem_id="sere-review-panel")
                    wave = gr.Plot(show_label=False)
                    gr.Markdown("Shaded: the emotional highlights, the moments that weighed most in the "
                                "decision. One can sit at a clip's very start or end, even before the "
                                "voice: the model uses those instants too.", elem_classes="sere-keys")
                    probs = gr.Plot(show_label=False)
        return cls(sort, table, page_no, prev_btn, next_btn, page_info, retrain_btn, pad, wave, probs)

    @property
    def table_outputs(self) -> list[Any]:
        return [self.table, self.page_no, self.page_info]

    @property
    def panel(self) -> list[Any]:
        return [self.pad, self.wave, self.probs]

    @staticmethod
    def show_table(page: Any, current: int | None = None) -> list[Any]:
        """A page of the table; the row of ``current`` (the clip in the panel) stands out."""
        if page is None:
            return [None, 1, ""]
        return [fg.review_rows(page.rows, current), page.page, page.caption()]

    @staticmethod
    def show_panel(ctx: AppContext, caller: Caller, pid: int | None, clip_id: int | None,
                   acted: Any = None) -> list[Any]:
        if pid is None or clip_id is None:
            return [fg.answering(fg.review_pad(None, []), acted), empty_figure("", height=200),
                    empty_figure("", height=180)]
        view = review.clip_view(ctx, caller, clip_id, pid)
        emotions = projects.get_summary(ctx, caller, pid).emotions
        return [fg.answering(fg.review_pad(view, emotions), acted), fg.clip_waveform(view),
                fg.clip_probabilities(view, emotions)]


@dataclass
class ExportTab:
    pred_btn: Any
    labels_btn: Any
    model_btn: Any
    file: Any
    labels_upload: Any
    import_report: Any

    @classmethod
    def build(cls, ctx: AppContext, page: Page) -> "ExportTab":
        with gr.Tab("7 · Export", id="export"):
            with gr.Row():
                pred_btn = gr.Button("Predictions (CSV)", elem_id="sere-exp-pred")
                labels_btn = gr.Button("Labels (CSV, can be imported again)", elem_id="sere-exp-labels")
                model_btn = gr.Button("Trained model (zip)", elem_id="sere-exp-model")
            file = gr.File(label="Download", interactive=False, elem_id="sere-export-file")
            gr.Markdown("### Import labels")
            labels_upload = gr.File(label="A labels CSV exported before", file_types=[".csv"])
            import_report = gr.Markdown("", elem_id="sere-import-report")
        return cls(pred_btn, labels_btn, model_btn, file, labels_upload, import_report)


# ============================================================================== events


@dataclass
class Screens:
    project: ProjectTab
    source: SourceTab
    train: TrainTab
    field: FieldTab
    review: ReviewTab

    def results_outputs(self) -> list[Any]:
        return [self.field.plot, self.field.clip_dd, *self.review.table_outputs, *self.train.results]

    @staticmethod
    def show_results(ctx: AppContext, caller: Caller, pid: int | None, look: tuple[str, str]) -> list[Any]:
        """The field and the review table; ``look`` is the table's order and the field's colour."""
        sort, color_by = look
        screen = views.results_screen(ctx, caller, pid, sort or "least confident first")
        data = screen.field
        choices = []
        if data is not None:
            pts = data.points.sort_values(["role", "name"], ascending=[False, True])
            choices = [(f"{r.name} ({r.role})", int(r.clip_id)) for r in pts.head(MAX_CLIP_CHOICES).itertuples()]
        label = ("Clip" if data is None or len(data.points) <= MAX_CLIP_CHOICES else
                 f"Clip (the first {MAX_CLIP_CHOICES} by name; click the field for the others)")
        return [fg.field_value(data, _color_by(color_by)), gr.update(choices=choices, value=None, label=label),
                *ReviewTab.show_table(screen.table), *TrainTab.show_results(ctx, caller, pid)]

    def everything(self) -> list[Any]:
        return [*self.project.outputs, *self.source.outputs, *self.train.outputs, *self.results_outputs(),
                *self.review.panel, *self.field.details, self.field.selection, *self.field.browser_all]

    def wire(self, ctx: AppContext, page: Page, target: TargetTab, export: ExportTab) -> None:  # noqa: C901
        p, src, tr, fld, rv = self.project, self.source, self.train, self.field, self.review
        me, project = page.me, page.project

        def show_everything(caller: Caller, pid: int | None, queue: Any, look: tuple[str, str]) -> list[Any]:
            return [*ProjectTab.show(ctx, caller, pid), *SourceTab.show(ctx, caller, pid, queue),
                    *TrainTab.show(ctx, caller, pid), *self.show_results(ctx, caller, pid, look),
                    *ReviewTab.show_panel(ctx, caller, pid, None), *FieldTab.show_detail(ctx, caller, pid, None),
                    FieldTab.show_selection(ctx, caller, pid, [], None), *FieldTab.show_browser_afresh(ctx, caller, pid)]

        # ---- the page opens: who is this, then every screen at once
        def identify(token, pid, queue, sort, color_by, profile: gr.OAuthProfile | None, request: gr.Request):
            token = token if token_id(token, ctx.secret) else new_token(ctx.secret)
            caller = caller_for(ctx.settings.workspaces, ctx.secret, token,
                                username=profile.username if profile else None,
                                tab=request.session_hash if request else "")
            projects.visit(ctx, caller)
            return [token, caller, *show_everything(caller, _int(pid), queue, (sort, color_by))]

        page.blocks.load(friendly(identify), [page.visitor, project, src.queue, rv.sort, fld.color_by],
                       [page.visitor, me, *self.everything()], **PRIVATE)

        # ---- project: open, create, demo, edit, delete; each shows every screen for the result
        def opened(caller: Caller, pid: int | None, look: tuple[str, str], tab: str | None = None) -> list[Any]:
            """The project state and every screen, after the open project changed (or was edited)."""
            return [pid, *show_everything(caller, pid, LabelQueue(), look)] + ([gr.Tabs(selected=tab)] if tab else [])

        switch = [project, *self.everything(), page.tabs]
        stay = [project, *self.everything()]

        @friendly
        def open_project(me, pid, sort, color_by):
            return opened(who(me), _int(pid), (sort, color_by))

        @friendly
        def load_demo(me, sort, color_by, progress=gr.Progress()):
            caller = who(me)
            progress(0.0, desc="Preparing your demo")  # at once: the first start may still be warming up
            summary = dm.load_demo(ctx, caller, progress=lambda d, t, m: progress((d, t), desc=m))
            gr.Info(f"Your demo project: {summary.n_source} German and {summary.n_target} English clips.")
            return opened(caller, summary.id, (sort, color_by), "source")

        @friendly
        def reset_demo(me, sort, color_by, progress=gr.Progress()):
            caller = who(me)
            summary = dm.reset_demo(ctx, caller, progress=lambda d, t, m: progress((d, t), desc=m))
            gr.Info("The demo starts afresh: no labels, no trainings.")
            return opened(caller, summary.id, (sort, color_by), "source")

        @friendly
        def create(me, name, emotions, sort, color_by):
            caller = who(me)
            summary = projects.create_project(ctx, caller, name, emotions)
            return opened(caller, summary.id, (sort, color_by), "source")

        @friendly
        def save_emotions(me, pid, text, sort, color_by):
            caller, pid = who(me), _need(pid)
            projects.set_emotions(ctx, caller, pid, text)
            gr.Info("Emotions saved.")
            return opened(caller, pid, (sort, color_by))

        @friendly
        def rename(me, pid, name, sort, color_by):
            caller, pid = who(me), _need(pid)
            summary = projects.rename_project(ctx, caller, pid, name)
            gr.Info(f"The project is now called {summary.name}.")
            return opened(caller, pid, (sort, color_by))

        @friendly
        def delete(me, pid, sort, color_by):
            caller = who(me)
            name = projects.delete_project(ctx, caller, _need(pid))
            gr.Info(f"{name} was deleted.")
            return opened(caller, None, (sort, color_by), "project")

        p.project_dd.input(open_project, [me, p.project_dd, rv.sort, fld.color_by], stay, **QUICK)
        p.demo_btn.click(load_demo, [me, rv.sort, fld.color_by], switch, **PRIVATE)
        p.reset_btn.click(lambda: gr.Row(visible=True), None, p.reset_row, **PRIVATE)
        p.reset_no.click(lambda: gr.Row(visible=False), None, p.reset_row, **PRIVATE)
        p.reset_yes.click(reset_demo, [me, rv.sort, fld.color_by], switch, **PRIVATE)
        p.create_btn.click(create, [me, p.new_name, p.new_emotions, rv.sort, fld.color_by], switch, **QUICK)
        p.save_emotions_btn.click(save_emotions, [me, project, p.emotions_box, rv.sort, fld.color_by], stay, **QUICK)
        p.rename_btn.click(rename, [me, project, p.rename_box, rv.sort, fld.color_by], stay, **QUICK)
        p.delete_btn.click(lambda pid: gr.Row(visible=_int(pid) is not None), project, p.delete_row, **PRIVATE)
        p.delete_no.click(lambda: gr.Row(visible=False), None, p.delete_row, **PRIVATE)
        p.delete_yes.click(delete, [me, project, rv.sort, fld.color_by], switch, **QUICK)

        # ---- labeling: every action names the clip on screen
        @friendly
        def label_act(me, pid, queue, evt: gr.EventData):
            caller, pid = who(me), _need(pid)
            queue = queue if isinstance(queue, LabelQueue) else LabelQueue()
            action, clip = getattr(evt, "action", None), _int(getattr(evt, "clip", None))
            try:
                if action == "label" and clip is not None:
                    labeling.label_clip(ctx, caller, pid, clip, str(getattr(evt, "emotion", "")))
                elif action == "skip" and clip is not None:
                    queue = queue.skip(clip)
                elif action == "undo":
                    queue = _undo(caller, pid, queue)
            except SereError as exc:  # say so, and still show the screen: the pad waits for an answer
                log.info("label_act: %s", exc)
                gr.Warning(user_message(exc))
            return SourceTab.show(ctx, caller, pid, queue, acted=getattr(evt, "rev", None))

        def _undo(caller: Caller, pid: int, queue: LabelQueue) -> LabelQueue:
            back = undo_mine(caller, pid)
            return queue if back is None else queue.bring_back(back)

        def undo_mine(caller: Caller, pid: int) -> int | None:
            """Undo the caller's newest label change; the clip it went back to (None: nothing to undo)."""
            undone = labeling.undo(ctx, caller, pid)
            if undone is None:
                gr.Info("Nothing of yours to undo in this project.")
                return None
            if undone.kept:
                gr.Info("Someone else labeled that clip after you: their label stays.")
            return undone.clip_id

        def judge(caller: Caller, pid: int, evt: Any, go_on: Callable[[int], int | None]) -> int | None:
            """A clip pad's action on the clip it showed (confirm, correct, undo); the clip to show next."""
            action, clip = getattr(evt, "action", None), _int(getattr(evt, "clip", None))
            try:
                if action in ("confirm", "label") and clip is not None:
                    emotion = str(getattr(evt, "emotion", "")) if action == "label" else None
                    gr.Info(f"Labeled {review.confirm_prediction(ctx, caller, pid, clip, emotion)}.")
                    return go_on(clip)
                if action == "undo":
                    back = undo_mine(caller, pid)
                    return clip if back is None else back
            except SereError as exc:  # say so, and still answer: the pad waits for an answer
                log.info("%s on clip %s: %s", action, clip, exc)
                gr.Warning(user_message(exc))
            return clip

        @friendly
        def suggest(me, pid, queue, progress=gr.Progress()):
            caller, pid = who(me), _need(pid)
            order = labeling.suggest_clips(ctx, caller, pid, progress=lambda d, t, m: progress((d, t), desc=m))
            gr.Info("The clips are now in the suggested order.")
            return SourceTab.show(ctx, caller, pid, (queue or LabelQueue()).suggest(order))

        @friendly
        def demo_labels(me, pid, queue):
            caller, pid = who(me), _need(pid)
            n = dm.apply_reference_labels(ctx, caller, pid)
            gr.Info(f"{n} clips labeled from the corpus.")
            return SourceTab.show(ctx, caller, pid, queue)

        src.pad.act(label_act, [me, project, src.queue], src.outputs, show_progress="hidden",
                    trigger_mode="multiple", **QUICK)  # pad.js sends one action at a time
        src.suggest_btn.click(suggest, [me, project, src.queue], src.outputs, **PRIVATE)
        src.demo_labels_btn.click(demo_labels, [me, project, src.queue], src.outputs, **QUICK)

        # ---- uploads: then the project line, the labeling and the training screens
        after_upload = [*p.outputs, *src.outputs, *tr.outputs]

        def importer(role: str):
            def handler(me, pid, files, language, queue, progress=gr.Progress()):
                files = files if isinstance(files, list) else [files] if files else []
                paths = [getattr(f, "name", f) for f in files]
                try:
                    caller = who(me)
                    if _int(pid) is None:
                        raise gr.Error("Open or create a project first (step 1).")
                    report = imports.import_audio(ctx, caller, _int(pid), paths, role, language=language,
                                                  progress=lambda d, t, m: progress((d, t), desc=m))
                finally:  # imported or refused, an upload's temporary copy is not kept
                    imports.discard_uploads(paths, upload_folder())
                return [report.markdown(), *ProjectTab.show(ctx, caller, _int(pid)),
                        *SourceTab.show(ctx, caller, _int(pid), queue), *TrainTab.show(ctx, caller, _int(pid))]

            handler.__name__ = f"upload_{role}"
            return friendly(handler)

        for tab, role in ((src, "source"), (target, "target")):
            for trigger, clear in ((tab.files.upload, tab.files), (tab.folder.upload, None)):
                event = trigger(importer(role), [me, project, tab.files if clear else tab.folder, tab.language,
                                                 src.queue], [tab.report, *after_upload], **PRIVATE)
                if clear is not None:
                    event.then(lambda: None, None, clear, **PRIVATE)

        # ---- training: follow the project's run, whoever started it
        results = self.results_outputs()

        @friendly
        def press_train(me, pid):
            caller, pid = who(me), _need(pid)
            try:
                training.start_training(ctx, caller, pid)
            except ActiveRunError as exc:  # another tab started it: say so once, and show that run
                log.info("train: %s", exc)
                gr.Info(user_message(exc) + " Its progress is shown below.")
            return [*TrainTab.show(ctx, caller, pid), gr.Tabs(selected="train")]

        @friendly
        def cancel(me, pid):
            caller, pid = who(me), _need(pid)
            if training.cancel_training(ctx, caller, pid) is not None:
                gr.Info("Training cancelled.")
            return TrainTab.show(ctx, caller, pid)

        statuses = [p.header.warming, src.features, target.features, tr.seen_status]

        def show_statuses(pid: int | None, seen: Any) -> list[Any]:
            """What is still warming up, and the project's background feature computation."""
            now = (ctx.jobs.warmup.status(), fg.features_html(ctx.jobs.embed_status(pid) if pid else None))
            if now == seen:
                return [gr.skip()] * len(statuses)
            return [fg.warmup_html(now[0]), now[1], now[1], now]

        def live_field(caller: Caller, pid: int | None, now: Any, seen_live: Any, color_by: str) -> list[Any]:
            """The field of the run training now, when it has a newer snapshot: [field, what it shows]."""
            run = now[1] if now else None
            live = ctx.jobs.live(run[0]) if run and run[1] == "running" else None
            if live is None or (run[0], live.step) == seen_live:
                return [gr.skip(), gr.skip()]
            data = review.live_field_data(ctx, caller, pid, run[0], live)
            return [fg.field_value(data, _color_by(color_by)), (run[0], live.step)]

        def poll(me, pid, seen, seen_status, seen_live, sort, color_by):
            """Timer tick: the Train tab when its run changed, the field while it trains, the results
            once it finished, and the warm-up and feature lines."""
            if not isinstance(me, Caller):
                return [gr.skip()] * (len(tr.outputs) + len(results) + len(statuses) + 1)
            pid = _int(pid)
            out = TrainTab.show(ctx, me, pid)
            now = out[-1]
            plot, shown = live_field(me, pid, now, seen_live, color_by)
            if now == seen:
                return [*[gr.skip()] * len(tr.outputs), plot, *[gr.skip()] * (len(results) - 1),
                        *show_statuses(pid, seen_status), shown]
            finished = _finished(seen, now)
            if finished:
                gr.Info("Training finished: the resonance field and the predictions are ready.")
                return [*out, *self.show_results(ctx, me, pid, (sort, color_by)), *show_statuses(pid, seen_status),
                        None]
            return [*out, plot, *[gr.skip()] * (len(results) - 1), *show_statuses(pid, seen_status), shown]

        tr.to_field_btn.click(lambda: gr.Tabs(selected="field"), None, page.tabs, **PRIVATE)
        tabs_train = [*tr.outputs, page.tabs]
        tr.train_btn.click(press_train, [me, project], tabs_train, **QUICK)
        rv.retrain_btn.click(press_train, [me, project], tabs_train, **QUICK)
        tr.cancel_btn.click(cancel, [me, project], tr.outputs, **QUICK)
        tr.timer.tick(poll, [me, project, tr.seen, tr.seen_status, tr.seen_live, rv.sort, fld.color_by],
                      [*tr.outputs, *results, *statuses, tr.seen_live], show_progress="hidden", **QUICK)

        # ---- the field: a clip chosen on the map or in the menu, labeled there; many clips selected
        def _clips(value: Any) -> list[int]:
            """Clip ids sent by the page (a selection, or the selection pad's value)."""
            raw = value.get("clips") if isinstance(value, dict) else value
            return [c for c in (_int(v) for v in (raw if isinstance(raw, list) else [])[:field.MAX_SELECTION + 1])
                    if c is not None]

        def _chosen(sel: Any) -> int | None:
            return _int(sel.get("chosen")) if isinstance(sel, dict) else None

        @friendly
        def choose(me, pid, clip, sel):
            """A clip chosen (menu, map, browser): in the clip panel, and marked on the map."""
            caller, pid, clip = who(me), _int(pid), _int(clip)
            return [*FieldTab.show_detail(ctx, caller, pid, clip),
                    FieldTab.show_selection(ctx, caller, pid, _clips(sel), clip)]

        def pick(me, pid, sel, evt: gr.EventData):
            return choose(me, pid, getattr(evt, "clip", None), sel)

        @friendly
        def lasso(me, pid, sel, evt: gr.EventData):
            caller, pid = who(me), _int(pid)
            return FieldTab.show_selection(ctx, caller, pid, _clips(getattr(evt, "clips", None)), _chosen(sel),
                                           ask=_int(getattr(evt, "ask", None)))

        @friendly
        def field_act(me, pid, mode, sel, evt: gr.EventData):
            """The clip panel: label, confirm or undo the clip on screen, then go on as the user chose."""
            caller, pid = who(me), _need(pid)
            mode = str(mode or field.NEXT_MODES[0])
            show = judge(caller, pid, evt, lambda clip: field.next_clip(ctx, caller, pid, clip, mode) or clip)
            return [*FieldTab.show_detail(ctx, caller, pid, show, acted=getattr(evt, "rev", None)),
                    FieldTab.show_selection(ctx, caller, pid, _clips(sel), show)]

        @friendly
        def selection_act(me, pid, color_by, sel, evt: gr.EventData):
            """A selection's button: label, accept, unlabel, play or export the clips the pad showed."""
            caller, pid = who(me), _need(pid)
            action, clips = getattr(evt, "action", None), _clips(getattr(evt, "clips", None))
            note, audio, file, redraw = "", "", gr.skip(), False
            if action == "label":
                emotion = str(getattr(evt, "emotion", ""))
                note = field.label_clips(ctx, caller, pid, clips, emotion).message(f"Labeled {html.escape(emotion)}:")
                redraw = True
            elif action == "unlabel":
                note = field.label_clips(ctx, caller, pid, clips, None).message("Unlabeled")
                redraw = True
            elif action == "confirm":
                note = field.accept_predictions(ctx, caller, pid, clips).message("Accepted the predictions of")
                redraw = True
            elif action == "play":
                samples, rate, n = field.playlist(ctx, caller, pid, clips)
                audio = fg.audio_uri(samples, rate)
                note = f"Playing {n} of the {len(clips)} selected clips, one after another."
            elif action == "export":
                file = fg.download_value(field.export_selection(ctx, caller, pid, clips))
                note = "The selection's predictions are downloaded as CSV."
            pad = FieldTab.show_selection(ctx, caller, pid, clips, _chosen(sel), note, audio)
            return [pad, field_now(caller, pid, color_by) if redraw else gr.skip(), file]

        def field_now(caller: Caller, pid: int | None, color_by: str) -> dict[str, Any]:
            """The field of the latest run as it is now (its labels included), coloured as asked."""
            data = review.field_data(ctx, caller, pid) if pid is not None else None
            return fg.field_value(data, _color_by(color_by))

        @friendly
        def recolor(me, pid, color_by):
            return field_now(who(me), _int(pid), color_by)

        fld.plot.pick(pick, [me, project, fld.selection], [*fld.details, fld.selection], **QUICK)
        fld.plot.lasso(lasso, [me, project, fld.selection], fld.selection, **QUICK)
        fld.clip_dd.input(choose, [me, project, fld.clip_dd, fld.selection], [*fld.details, fld.selection], **QUICK)
        labeled_on_field = [
            fld.pad.act(field_act, [me, project, fld.next_mode, fld.selection], [*fld.details, fld.selection],
                        show_progress="hidden", trigger_mode="multiple", **QUICK),
            fld.selection.act(selection_act, [me, project, fld.color_by, fld.selection],
                              [fld.selection, fld.plot, page.download], **QUICK)]
        fld.color_by.input(recolor, [me, project, fld.color_by], fld.plot, **QUICK)

        @friendly
        def export_field(me, pid, color_by):
            return fg.download_value(exports.export_field(ctx, who(me), _need(pid), _color_by(color_by)))

        fld.html_btn.click(export_field, [me, project, fld.color_by], page.download, **PRIVATE)

        # ---- the clip browser: filters, pages; its ticks are the selection, its names open a clip
        def browse_at(offset: int | None):
            """A handler showing the browser page ``offset`` away from the one shown (None: page 1)."""
            def browse(me, pid, *values):
                *filters, page_no = values
                page = 1 if offset is None else max(1, int(_int(page_no) or 1) + offset)
                return FieldTab.show_browser(ctx, who(me), _int(pid), filters, page)

            names = {None: "browse", -1: "browse_previous", 0: "browse_page", 1: "browse_next"}
            browse.__name__ = names[offset]
            return friendly(browse)

        browsing = [me, project, *fld.filters, fld.browse_page]
        for control in fld.filters:
            trigger = control.submit if isinstance(control, (gr.Textbox, gr.Number)) else control.input
            trigger(browse_at(None), browsing, fld.browser_outputs, **QUICK)
        fld.prev_btn.click(browse_at(-1), browsing, fld.browser_outputs, **QUICK)
        fld.next_btn.click(browse_at(+1), browsing, fld.browser_outputs, **QUICK)
        fld.browse_page.submit(browse_at(0), browsing, fld.browser_outputs, **QUICK)
        for event in labeled_on_field:  # the labels column shows what was just done
            event.then(browse_at(0), browsing, fld.browser_outputs, **QUICK)
        # every question runs (not Gradio's always_last, which reruns the first one's data): browser.js asks one at a time
        fld.browser.choose(lasso, [me, project, fld.selection], fld.selection, trigger_mode="multiple", **QUICK)
        fld.browser.open(pick, [me, project, fld.selection], [*fld.details, fld.selection], **QUICK)

        # ---- review: a row chosen, then confirm or correct the clip on screen
        @friendly
        def show_page(me, pid, sort, page_no):
            return ReviewTab.show_table(views.table_screen(ctx, who(me), _int(pid), sort, int(page_no or 1)))

        @friendly
        def pick_row(me, pid, sel, evt: gr.SelectData):
            """A row chosen: its clip in the review panel, and marked on the field."""
            caller, pid = who(me), _int(pid)
            clip = _int(evt.row_value[0]) if evt is not None and evt.row_value else None
            return [*ReviewTab.show_panel(ctx, caller, pid, clip), FieldTab.show_selection(ctx, caller, pid, _clips(sel), clip)]

        @friendly
        def review_act(me, pid, sort, page_no, evt: gr.EventData):
            caller, pid = who(me), _need(pid)
            show = judge(caller, pid, evt, lambda clip: review.next_to_review(ctx, caller, pid, sort, clip))
            table = views.table_screen(ctx, caller, pid, sort, int(page_no or 1))
            return [*ReviewTab.show_table(table, show),
                    *ReviewTab.show_panel(ctx, caller, pid, show, acted=getattr(evt, "rev", None))]

        rv.sort.input(lambda m, pid, s: show_page(m, pid, s, 1), [me, project, rv.sort], rv.table_outputs, **QUICK)
        rv.page_no.submit(show_page, [me, project, rv.sort, rv.page_no], rv.table_outputs, **QUICK)
        rv.prev_btn.click(lambda m, pid, s, n: show_page(m, pid, s, max(1, int(n or 1) - 1)),
                          [me, project, rv.sort, rv.page_no], rv.table_outputs, **QUICK)
        rv.next_btn.click(lambda m, pid, s, n: show_page(m, pid, s, int(n or 1) + 1),
                          [me, project, rv.sort, rv.page_no], rv.table_outputs, **QUICK)
        # once: Gradio 6.31's table dispatches select on mousedown and mouseup (gradio#12054); the
        # second, answered late, would put back a row the user has already confirmed
        rv.table.select(pick_row, [me, project, fld.selection], [*rv.panel, fld.selection], trigger_mode="once",
                        **QUICK)
        rv.pad.act(review_act, [me, project, rv.sort, rv.page_no], [*rv.table_outputs, *rv.panel],
                   show_progress="hidden", trigger_mode="multiple", **QUICK)

        # ---- export and labels import
        def exporter(kind: str):
            make = {"predictions": exports.export_predictions, "labels": exports.export_labels,
                    "model": exports.export_model}[kind]

            def export(me, pid):
                path = make(ctx, who(me), _need(pid))
                return [str(path), fg.download_value(path)]

            export.__name__ = f"export_{kind}"
            return friendly(export)

        @friendly
        def import_labels(me, pid, file):
            path = getattr(file, "name", file)
            try:
                if file is None or _int(pid) is None:
                    raise gr.Error("Open a project and choose a labels CSV.")
                result = imports.import_labels_file(ctx, who(me), _int(pid), path)
            finally:  # applied or refused, the upload's temporary copy is not kept
                if path:
                    imports.discard_uploads([path], upload_folder())
            return imports.labels_report(result)

        for button, kind in ((export.pred_btn, "predictions"), (export.labels_btn, "labels"),
                             (export.model_btn, "model")):
            button.click(exporter(kind), [me, project], [export.file, page.download], **PRIVATE)
        export.labels_upload.upload(import_labels, [me, project, export.labels_upload], export.import_report,
                                    **PRIVATE)


def _color_by(value: Any) -> str:
    """The field's colour choice as sent by the page (an unknown one falls back to the emotion)."""
    return value if value in COLOR_BY else "emotion"


def _finished(seen: Any, now: Any) -> bool:
    """Whether the run the Train tab showed active (``seen``, a ``TrainTab.show`` key) has now succeeded."""
    if not seen or not now or seen[0] != now[0] or not seen[1] or not now[1]:
        return False
    return seen[1][0] == now[1][0] and seen[1][1] in ("queued", "running") and now[1][1] == "succeeded"


def _need(pid: Any) -> int:
    """The open project's id, or a message saying to open one."""
    pid = _int(pid)
    if pid is None:
        raise gr.Error("Open a project first (step 1).")
    return pid


# ============================================================================== public API


def api_endpoints(ctx: AppContext) -> None:
    """The endpoints meant for programs (listed in the README). Each takes the visitor token that
    ``/visitor`` gives (keep it: it is your workspace on a per-visitor server) and reaches only
    that workspace: another visitor's ids answer "not found"."""

    def caller_of(token: str) -> Caller:
        caller = caller_for(ctx.settings.workspaces, ctx.secret, token)
        if caller is None:
            raise gr.Error("Unknown visitor token; get one from /visitor first.", print_exception=False)
        return caller

    def api(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except SereError as exc:
                log.info("api %s: %s", fn.__name__, exc)
                raise gr.Error(user_message(exc), print_exception=False) from None

        gr.api(wrapper, api_name=fn.__name__, concurrency_id="quick", concurrency_limit=16)
        return wrapper

    @api
    def visitor(token: str = "") -> str:
        """A visitor token: ``token`` itself when this server made it, else a new one."""
        return token if token_id(token, ctx.secret) else new_token(ctx.secret)

    @api
    def list_projects(token: str) -> list[dict]:
        """The workspace's projects: id, name, emotions and clip counts."""
        return [{"id": s.id, "name": s.name, "emotions": s.emotions, "source_clips": s.n_source,
                 "target_clips": s.n_target, "labeled": s.n_labeled, "demo": s.is_demo}
                for s in projects.list_projects(ctx, caller_of(token))]

    @api
    def label(token: str, project_id: int, clip_id: int, emotion: str) -> str:
        """Label clip ``clip_id`` of project ``project_id``; returns the emotion stored."""
        return labeling.label_clip(ctx, caller_of(token), int(project_id), int(clip_id), emotion)

    @api
    def train(token: str, project_id: int) -> int:
        """Queue a training run of the project; returns its id."""
        return training.start_training(ctx, caller_of(token), int(project_id))

    @api
    def training_status(token: str, project_id: int) -> dict:
        """The project's active (else latest) training run: status, step, place in the queue."""
        status = training.training_status(ctx, caller_of(token), int(project_id))
        if status is None:
            return {}
        return {"run_id": status.run_id, "status": status.status, "step": status.step,
                "total_steps": status.total_steps, "queue_position": status.queue_position,
                "error": status.error, "metrics": status.metrics}

    @api
    def predictions(token: str, project_id: int, page: int = 1) -> dict:
        """One page (100 rows) of the latest run's predictions of the target clips."""
        table = review.predictions_page(ctx, caller_of(token), int(project_id), page=int(page))
        return {"page": table.page, "pages": table.pages, "total": table.total,
                "rows": table.rows.astype(object).where(table.rows.notna(), None).to_dict("records")}


# ============================================================================== main


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    ctx = AppContext.open()
    # Once, for the whole process: each worker of the pool gets its share of the cores.
    set_thread_limits(ctx.settings.torch_threads or max(1, (os.cpu_count() or 1) // ctx.settings.workers))
    ctx.jobs.start()  # the warm-up (encoder, demo, UMAP) and the maintenance loop, in the background
    # Uploads and the audio the page plays go to the data folder, not to a /tmp/gradio shared with
    # every Gradio app on the machine: the app then serves no file from outside its data folder.
    os.environ.setdefault("GRADIO_TEMP_DIR", str(ctx.settings.data_dir / "gradio"))
    demo = build_app(ctx)
    log.info("workspaces: %s%s", ctx.settings.workspaces,
             " (one per visitor)" if ctx.settings.workspaces == PER_VISITOR else " (shared by everyone)")
    demo.queue(default_concurrency_limit=4).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        max_file_size=AudioConfig().max_file_bytes, **launch_options(ctx))  # bytes: SERE's MB, not MiB


if __name__ == "__main__":
    main()
