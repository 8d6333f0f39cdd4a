"""The demo: each workspace's own copy of the shipped German -> English project.

The demo's files are read once per process into a :class:`DemoTemplate` (their clips, and the
corpus labels kept aside as hints). A workspace's demo is then a new project holding rows only:
its recordings, listening copies and features are the shared, content-addressed ones, so a demo
costs a visitor a few dozen rows, not audio. "Reset demo" deletes the workspace's copy and makes a
fresh one. Demo clips arrive unlabeled; the corpus labels show as hints and score the predictions.
"""

from __future__ import annotations

import csv
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sere_core import storage as st
from sere_core.app.access import Caller
from sere_core.app.context import AppContext
from sere_core.app.labeling import SHOTS
from sere_core.app.pipeline import Progress, is_cached
from sere_core.app.projects import DEFAULT_EMOTIONS, ProjectSummary, check_room, delete_project, summarize
from sere_core.audio import AudioConfig
from sere_core.errors import InvalidDataError, NotFoundError, ProjectExistsError

log = logging.getLogger(__name__)

DEMO_PROJECT_NAME = "Demo: German → English"
#: ``Project.template`` of a workspace's demo.
DEMO = "demo"

#: Guards the one build of the template per process; waiters are shown its progress.
_building = threading.Condition()
SAMPLE_RATE = AudioConfig().sample_rate
_progress: dict[str, int] = {"done": 0, "total": 0}


@dataclass(frozen=True)
class DemoClip:
    """One clip of the demo: where its file is, where the clip sits in it, and its samples (for
    computing its speech features once, at start)."""

    path: Path
    name: str
    role: str
    language: str
    speaker: str | None
    audio_id: str
    start_s: float
    end_s: float
    samples: np.ndarray = field(repr=False, compare=False)


@dataclass(frozen=True)
class DemoTemplate:
    clips: tuple[DemoClip, ...]
    #: ``{audio_id: emotion}``: the corpus's label of every demo clip.
    reference: dict[str, str]

    def count(self, role: str) -> int:
        return sum(c.role == role for c in self.clips)


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise NotFoundError(f"The demo set is missing ({path.name}); it ships in the repository's data/demo folder.")
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def demo_template(ctx: AppContext, progress: Progress | None = None) -> DemoTemplate:
    """The demo's clips, read from ``settings.demo_dir`` once per process (at start, by the
    warm-up). A caller that finds it being read waits, and is shown how far it got."""
    with _building:
        while ctx.demo_template is None and _progress["total"] < 0:  # another thread reads it
            if progress is not None:
                progress(_progress["done"], abs(_progress["total"]), "Preparing the demo")
            _building.wait(0.25)
        if ctx.demo_template is not None:
            return ctx.demo_template
        _progress.update(done=0, total=-1)
    try:
        template = _build(ctx, progress)
    finally:
        with _building:
            _progress["total"] = 0
            _building.notify_all()
    with _building:
        ctx.demo_template = template
        return template


def _build(ctx: AppContext, progress: Progress | None) -> DemoTemplate:
    """Read the demo's files; they are 16 kHz mono (``data/build_demo.py``), so reading them needs no
    resampling and imports no engine (the warm-up does this first, while it imports the engine)."""
    from sere_core.audio import load_audio

    folder = Path(ctx.settings.demo_dir)
    truth = {r["path"]: r["emotion"] for r in _read_csv(folder / "target_truth.csv")}
    rows = ([("source", r, r.get("emotion")) for r in _read_csv(folder / "source.csv")]
            + [("target", r, truth.get(r["path"])) for r in _read_csv(folder / "target.csv")])
    clips, reference = [], {}
    for done, (role, row, emotion) in enumerate(rows):
        _progress.update(done=done, total=-len(rows))
        if progress is not None:
            progress(done, len(rows), "Preparing the demo")
        path = folder / row["path"]
        for seg in load_audio(path):  # a demo file is one clip; the listening copy is shared
            ctx.segments.put(seg.audio_id, seg.samples, seg.sample_rate)
            clips.append(DemoClip(path, path.name, role, row.get("language") or ("de" if role == "source" else "en"),
                                  row.get("speaker") or None, seg.audio_id, seg.start_s, seg.end_s, seg.samples))
            if emotion:
                reference[seg.audio_id] = emotion
    log.info("demo template: %d clips", len(clips))
    return DemoTemplate(tuple(clips), reference)


def warm_demo_features(ctx: AppContext) -> int:
    """Compute the demo clips' speech features with the default encoder into the shared cache
    (those not there yet); returns how many were computed. Every workspace's demo then trains
    without computing any."""
    template, encoder = demo_template(ctx), ctx.settings.encoder
    info = ctx.encoders.info(encoder)
    computed = 0
    for clip in template.clips:
        if not is_cached(ctx, clip.audio_id, info):
            ctx.encoders.features(encoder, clip.audio_id, clip.samples, ctx.cache)
            computed += 1
    return computed


def demo_reference(ctx: AppContext, template: str | None) -> dict[str, str]:
    """``{audio_id: emotion}`` the corpus gives for a demo project's clips (empty for others)."""
    return demo_template(ctx).reference if template == DEMO else {}


def load_demo(ctx: AppContext, caller: Caller, progress: Progress | None = None, *,
              warm: bool = True) -> ProjectSummary:
    """The caller's demo project: the one they have, or a fresh copy (whose features are then
    computed in the background, unless ``warm`` is False)."""
    template = demo_template(ctx, progress)
    with ctx.session() as s:
        workspace = st.ensure_workspace(s, caller.workspace, caller.kind)
        existing = st.find_template(s, DEMO, workspace=workspace.id)
        if existing is not None:
            return summarize(s, existing)
    try:
        summary = _copy(ctx, caller, template)
    except ProjectExistsError:  # a second click made it meanwhile, or a project has the demo's name
        with ctx.session() as s:
            existing = st.find_template(s, DEMO, workspace=caller.workspace)
            if existing is None:
                raise
            return summarize(s, existing)
    if warm and not ctx.jobs.warmup.started:  # a started warm-up computes the demo's features itself
        ctx.jobs.warm_features(summary.id)
    return summary


def reset_demo(ctx: AppContext, caller: Caller, progress: Progress | None = None, *,
               warm: bool = True) -> ProjectSummary:
    """Delete the caller's demo project (labels, trainings and all) and make a fresh copy."""
    with ctx.session() as s:
        existing = st.find_template(s, DEMO, workspace=caller.workspace)
        existing_id = existing.id if existing is not None else None
    if existing_id is not None:
        delete_project(ctx, caller, existing_id)
    return load_demo(ctx, caller, progress, warm=warm)


def _copy(ctx: AppContext, caller: Caller, template: DemoTemplate) -> ProjectSummary:
    """A new demo project of the caller's workspace, in one transaction."""
    with ctx.audio_lock, ctx.session() as s:  # the shared audio stays while rows point at it
        workspace = st.ensure_workspace(s, caller.workspace, caller.kind)
        check_room(ctx, s, caller, projects=1)
        project = st.create_project(s, DEMO_PROJECT_NAME, list(DEFAULT_EMOTIONS), ctx.settings.encoder,
                                    source_language="de", workspace=workspace.id, template=DEMO)
        recordings: dict[Path, int] = {}
        for clip in template.clips:
            if clip.path not in recordings:  # stored once for every workspace (by content)
                recordings[clip.path] = st.add_recording(s, ctx.blobs, clip.path, original_name=clip.name).id
            if not ctx.segments.path(clip.audio_id).is_file():  # freed since: put it back
                ctx.segments.put(clip.audio_id, clip.samples, SAMPLE_RATE)
            st.add_clip(s, project.id, audio_id=clip.audio_id, original_name=clip.name,
                        duration_s=clip.end_s - clip.start_s, role=clip.role, language=clip.language,
                        speaker=clip.speaker, recording_id=recordings[clip.path], start_s=clip.start_s,
                        end_s=clip.end_s)
        return summarize(s, project)


def apply_reference_labels(ctx: AppContext, caller: Caller, project_id: int, per_emotion: int = SHOTS) -> int:
    """Demo shortcut: label up to ``per_emotion`` source clips per emotion with the corpus's labels
    (as the caller's labels: they can be undone)."""
    with ctx.session() as s:
        project = st.owned_project(s, caller.workspace, project_id)
        reference = demo_reference(ctx, project.template)
        if not reference:
            raise InvalidDataError("This project has no corpus labels; only the demo project has them.")
        counts = st.label_counts(s, project.id, "source")
        labels = st.labels_for_project(s, project.id)
        applied = 0
        for rec in st.clip_records(s, project.id):
            emotion = reference.get(rec.audio_id)
            if rec.role != "source" or emotion not in counts or counts[emotion] >= per_emotion or rec.clip_id in labels:
                continue
            st.set_label(s, rec.clip_id, emotion, author=caller.labeler, session_id=caller.tab or None)
            counts[emotion] += 1
            applied += 1
    return applied
