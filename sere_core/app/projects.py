"""Projects and workspaces: what a visitor owns, its limits, and freeing what nobody uses any more.

Every function takes the :class:`~sere_core.app.access.Caller` and reaches projects only through
the caller's workspace (``storage.owned_project``): another visitor's project is "not found".
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sere_core import storage as st
from sere_core.app.access import Caller
from sere_core.app.context import UNLIMITED, AppContext
from sere_core.errors import ActiveRunError, InvalidDataError, LimitError, UnsafePathError
from sere_core.storage.models import utcnow

log = logging.getLogger(__name__)

DEFAULT_EMOTIONS = ("neutral", "happy", "sad", "angry")


@dataclass(frozen=True)
class ProjectSummary:
    id: int
    name: str
    emotions: list[str]
    encoder: str
    n_source: int
    n_target: int
    n_labeled: int
    template: str | None = None

    @property
    def is_demo(self) -> bool:
        return self.template == "demo"


def parse_emotions(text: str | Sequence[str]) -> list[str]:
    """Emotion names from text separated by commas, semicolons or new lines (order kept).

    >>> parse_emotions("neutral, happy;sad\\nangry ")
    ['neutral', 'happy', 'sad', 'angry']
    """
    if not isinstance(text, str):
        return [str(t).strip() for t in text if str(t).strip()]
    return [p.strip() for p in re.split(r"[,;\n]", text) if p.strip()]


def summarize(session: Any, project: Any) -> ProjectSummary:
    counts = st.project_counts(session, project.id)
    return ProjectSummary(project.id, project.name, list(project.emotions), project.encoder, counts.n_source,
                          counts.n_target, counts.n_labeled, project.template)


def visit(ctx: AppContext, caller: Caller) -> None:
    """Note that the caller opened the app: an anonymous workspace expires only when idle."""
    with ctx.session() as s:
        if st.find_workspace(s, caller.workspace) is not None:
            st.ensure_workspace(s, caller.workspace, caller.kind)


def list_projects(ctx: AppContext, caller: Caller) -> list[ProjectSummary]:
    with ctx.session() as s:
        return [summarize(s, p) for p in st.list_projects(s, workspace=caller.workspace)]


def get_summary(ctx: AppContext, caller: Caller, project_id: int) -> ProjectSummary:
    with ctx.session() as s:
        return summarize(s, st.owned_project(s, caller.workspace, project_id))


def check_room(ctx: AppContext, session: Any, caller: Caller, *, projects: int = 0, clips: int = 0,
               megabytes: float = 0.0, runs: int = 0) -> None:
    """Raise :class:`LimitError` if the caller's workspace cannot take this much more."""
    limits = ctx.settings.limits
    if limits == UNLIMITED:
        return
    used = st.workspace_usage(session, caller.workspace)
    checks = (
        (projects, used.projects, limits.projects, "projects", "delete a project you no longer need"),
        (clips, used.clips, limits.clips, "clips", "delete a project, or upload fewer clips"),
        (megabytes, used.bytes / 1e6, limits.megabytes, "MB of audio", "delete a project, or upload less"),
        (runs, used.active_runs, limits.active_runs, "trainings at a time", "wait for your other training to end"),
    )
    for more, now, limit, what, advice in checks:
        if more and limit is not None and now + more > limit:
            raise LimitError(f"A workspace on this server holds at most {limit:,} {what} "
                             f"(yours has {now:,.0f}); {advice}.")


def create_project(ctx: AppContext, caller: Caller, name: str, emotions: str | Sequence[str] = DEFAULT_EMOTIONS,
                   *, encoder: str | None = None, source_language: str | None = None,
                   template: str | None = None) -> ProjectSummary:
    """A new, empty project of the caller's workspace. Emotions can still change until training."""
    if not str(name or "").strip():
        raise InvalidDataError("Give the project a name, for example 'Yoruba interviews'.")
    with ctx.session() as s:
        workspace = st.ensure_workspace(s, caller.workspace, caller.kind)
        check_room(ctx, s, caller, projects=1)
        project = st.create_project(s, str(name), parse_emotions(emotions), encoder or ctx.settings.encoder,
                                    source_language=source_language or None, workspace=workspace.id,
                                    template=template)
        return summarize(s, project)


def rename_project(ctx: AppContext, caller: Caller, project_id: int, name: str) -> ProjectSummary:
    if not str(name or "").strip():
        raise InvalidDataError("Type the project's new name first.")
    with ctx.session() as s:
        project = st.rename_project(s, st.owned_project(s, caller.workspace, project_id), str(name))
        return summarize(s, project)


def set_emotions(ctx: AppContext, caller: Caller, project_id: int, emotions: str | Sequence[str]) -> ProjectSummary:
    """Change the emotion list (not while training; removing an emotion in use is refused)."""
    with ctx.session() as s:
        project = st.owned_project(s, caller.workspace, project_id)
        if st.active_run(s, project.id) is not None:
            raise ActiveRunError("The project is training; change the emotions after the training ends.")
        return summarize(s, st.update_emotions(s, project.id, parse_emotions(emotions)))


def delete_project(ctx: AppContext, caller: Caller, project_id: int) -> str:
    """Delete a project with its clips, labels, runs and models; returns its name. The audio goes
    too unless another project (of anyone) uses it. Refused while the project trains."""
    with ctx.session() as s:
        project = st.owned_project(s, caller.workspace, project_id)
        name, runs, audio = project.name, _run_ids(s, [project.id]), _audio_ids(s, [project.id])
        st.delete_project(s, project.id)
    _forget(ctx, runs, audio)
    return name


def _run_ids(session: Any, project_ids: Iterable[int]) -> list[int]:
    return [r.id for pid in project_ids for r in st.list_runs(session, pid)]


def _audio_ids(session: Any, project_ids: Iterable[int]) -> set[str]:
    return {c.audio_id for pid in project_ids for c in st.clips_for_project(session, pid)}


def _forget(ctx: AppContext, run_ids: Iterable[int], audio_ids: set[str]) -> None:
    """Delete the files of deleted runs, and the audio no project uses any more."""
    for run_id in run_ids:
        shutil.rmtree(ctx.settings.data_dir / "models" / f"run-{int(run_id)}", ignore_errors=True)
    free_audio(ctx, audio_ids)


def free_audio(ctx: AppContext, audio_ids: set[str]) -> int:
    """Delete the recordings no clip refers to any more, and the listening copies and cached
    features of ``audio_ids`` that no clip has now. Returns how many recordings went.

    Audio is shared between workspaces (one file per content), so only what nobody uses goes.
    ``ctx.audio_lock`` keeps an import that is adding the same file from losing it meanwhile.
    """
    with ctx.audio_lock:
        with ctx.session() as s:
            unused = set(audio_ids) - st.referenced_audio_ids(s, audio_ids)
            orphans = st.orphan_recordings(s)
            paths = [r.stored_path for r in orphans]
            for recording in orphans:
                s.delete(recording)
        for rel in paths:
            try:
                ctx.blobs.path_for(rel).unlink(missing_ok=True)
            except UnsafePathError:
                log.warning("not deleting %s: outside the data folder", rel)
        for audio_id in unused:
            ctx.segments.discard(audio_id)
            ctx.cache.discard(audio_id)
    return len(paths)


def expire_idle_workspaces(ctx: AppContext, now: datetime | None = None) -> list[str]:
    """Delete the anonymous workspaces nobody opened for ``settings.idle_days``, with everything
    in them; returns their keys. Signed-in users' workspaces never expire."""
    now = now or utcnow()
    cutoff = now - timedelta(days=ctx.settings.idle_days)
    with ctx.session() as s:
        idle = [w.key for w in st.idle_workspaces(s, st.WorkspaceKind.ANONYMOUS, cutoff)]
    expired = []
    for key in idle:
        with ctx.session() as s:
            workspace = st.find_workspace(s, key)
            if workspace is None or workspace.last_seen_at >= cutoff:  # came back meanwhile
                continue
            ids = [p.id for p in st.list_projects(s, workspace=workspace.id)]
            runs, audio = _run_ids(s, ids), _audio_ids(s, ids)
            st.delete_workspace(s, key)
        _forget(ctx, runs, audio)
        expired.append(key)
    if expired:
        log.info("deleted %d anonymous workspace(s) idle for %g days", len(expired), ctx.settings.idle_days)
    return expired
