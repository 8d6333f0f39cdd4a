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
from dataclasses import dataclass
from pathlib import Path

from sere_core import storage as st
from sere_core.app.access import Caller
from sere_core.app.context import AppContext
from sere_core.app.labeling import SHOTS
from sere_core.app.pipeline import Progress
from sere_core.app.projects import DEFAULT_EMOTIONS, ProjectSummary, check_room, delete_project, summarize
from sere_core.errors import InvalidDataError, NotFoundError, ProjectExistsError

log = logging.getLogger(__name__)

DEMO_PROJECT_NAME = "Demo: German → English"
#: ``Project.template`` of a workspace's demo.
DEMO = "demo"

_build_lock = threading.Lock()


@dataclass(frozen=True)
class DemoClip:
    """One clip of the demo: where its file is, and where the clip sits in it."""

    path: Path
    name: str
    role: str
    language: str
    speaker: str | None
    audio_id: str
    start_s: float
    end_s: float


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
    """The demo's clips, read from ``settings.demo_dir`` once per process."""
    with _build_lock:
        if ctx.demo_template is None:
            ctx.demo_template = _build(ctx, progress)
        return ctx.demo_template


def _build(ctx: AppContext, progress: Progress | None) -> DemoTemplate:
    from sere_core.audio import load_audio

    folder = Path(ctx.settings.demo_dir)
    truth = {r["path"]: r["emotion"] for r in _read_csv(folder / "target_truth.csv")}
    rows = ([("source", r, r.get("emotion")) for r in _read_csv(folder / "source.csv")]
            + [("target", r, truth.get(r["path"])) for r in _read_csv(folder / "target.csv")])
    clips, reference = [], {}
    for done, (role, row, emotion) in enumerate(rows):
        if progress is not None:
            progress(done, len(rows), "Preparing the demo")
        path = folder / row["path"]
        for seg in load_audio(path):  # a demo file is one clip; the listening copy is shared
            ctx.segments.put(seg.audio_id, seg.samples, seg.sample_rate)
            clips.append(DemoClip(path, path.name, role, row.get("language") or ("de" if role == "source" else "en"),
                                  row.get("speaker") or None, seg.audio_id, seg.start_s, seg.end_s))
            if emotion:
                reference[seg.audio_id] = emotion
    log.info("demo template: %d clips", len(clips))
    return DemoTemplate(tuple(clips), reference)


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
    if warm:
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
                _restore_listening_copy(ctx, clip)
            st.add_clip(s, project.id, audio_id=clip.audio_id, original_name=clip.name,
                        duration_s=clip.end_s - clip.start_s, role=clip.role, language=clip.language,
                        speaker=clip.speaker, recording_id=recordings[clip.path], start_s=clip.start_s,
                        end_s=clip.end_s)
        return summarize(s, project)


def _restore_listening_copy(ctx: AppContext, clip: DemoClip) -> None:
    from sere_core.audio import load_audio

    for seg in load_audio(clip.path):
        ctx.segments.put(seg.audio_id, seg.samples, seg.sample_rate)


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
