"""Workspaces: who owns which projects, and the only way to reach a project by its id.

Every id a visitor sends (project, clip, training run) is looked up *through* the caller's
workspace with :func:`owned_project`, :func:`owned_clip` or :func:`owned_run`: another
workspace's row answers exactly like a row that does not exist, so ids reveal nothing.

Audio is shared between workspaces: recordings are stored once by the hash of their bytes, so
two visitors who upload the same file, or every workspace's copy of the demo, share one file.
:func:`orphan_recordings` finds the recordings no clip refers to any more, for deletion.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from ..errors import NotFoundError
from ._util import clean_text
from .models import (
    ACTIVE_STATUSES,
    Clip,
    Project,
    Recording,
    TrainingRun,
    Workspace,
    WorkspaceKind,
    utcnow,
)
from .projects import insert_or_get
from .schema import SHARED_WORKSPACE  # noqa: F401  (the workspace of a private server)


def ensure_workspace(session: Session, key: str, kind: WorkspaceKind | str, *, now: datetime | None = None) -> Workspace:
    """The workspace called ``key``, created on first use; its ``last_seen_at`` becomes ``now``."""
    key = clean_text(key, "workspace", max_len=200)
    now = now or utcnow()

    def lookup() -> Workspace | None:
        return session.scalars(select(Workspace).where(Workspace.key == key)).one_or_none()

    workspace = lookup()
    if workspace is None:
        workspace = insert_or_get(session, Workspace(key=key, kind=WorkspaceKind(kind), created_at=now,
                                                     last_seen_at=now), lookup)
    workspace.last_seen_at = now
    session.flush()
    return workspace


def find_workspace(session: Session, key: str) -> Workspace | None:
    return session.scalars(select(Workspace).where(Workspace.key == key)).one_or_none()


def workspace_id(session: Session, key: str) -> int | None:
    """The id of workspace ``key``, None while it has never stored anything."""
    return session.scalar(select(Workspace.id).where(Workspace.key == key))


def _not_found(what: str, item_id: object) -> NotFoundError:
    # The same words whether the row is gone or belongs to someone else.
    return NotFoundError(f"{what} {item_id} was not found; it may have been deleted.")


def owned_project(session: Session, workspace: str, project_id: int, *, lock: bool = False) -> Project:
    """Project ``project_id`` if it belongs to ``workspace``; else :class:`NotFoundError`.

    ``lock`` locks the project row until the transaction ends (``FOR NO KEY UPDATE`` on
    PostgreSQL, so clips and runs can still be added meanwhile), serializing the callers that
    read and then write something of the whole project, such as the labeling leases.
    """
    query = (select(Project).join(Workspace, Workspace.id == Project.workspace_id)
             .where(Project.id == int(project_id), Workspace.key == workspace)
             .execution_options(populate_existing=True))
    if lock:
        query = query.with_for_update(key_share=True, of=Project)
    project = session.scalars(query).one_or_none()
    if project is None:
        raise _not_found("Project", project_id)
    return project


def owned_clip(session: Session, workspace: str, clip_id: int, project_id: int | None = None) -> Clip:
    """Clip ``clip_id`` if its project belongs to ``workspace`` (and is ``project_id``, when given)."""
    query = (select(Clip).join(Project, Project.id == Clip.project_id)
             .join(Workspace, Workspace.id == Project.workspace_id)
             .where(Clip.id == int(clip_id), Workspace.key == workspace))
    if project_id is not None:
        query = query.where(Clip.project_id == int(project_id))
    clip = session.scalars(query).one_or_none()
    if clip is None:
        raise _not_found("Clip", clip_id)
    return clip


def owned_run(session: Session, workspace: str, run_id: int, project_id: int | None = None) -> TrainingRun:
    """Training run ``run_id`` if its project belongs to ``workspace`` (and is ``project_id``)."""
    query = (select(TrainingRun).join(Project, Project.id == TrainingRun.project_id)
             .join(Workspace, Workspace.id == Project.workspace_id)
             .where(TrainingRun.id == int(run_id), Workspace.key == workspace)
             .execution_options(populate_existing=True))
    if project_id is not None:
        query = query.where(TrainingRun.project_id == int(project_id))
    run = session.scalars(query).one_or_none()
    if run is None:
        raise _not_found("Training run", run_id)
    return run


@dataclass(frozen=True)
class Usage:
    """What a workspace holds, for its limits. ``bytes`` counts each recording once, and not the
    demo's, which every workspace shares."""

    projects: int
    clips: int
    bytes: int
    active_runs: int


def workspace_usage(session: Session, workspace: str) -> Usage:
    ws = workspace_id(session, workspace)
    if ws is None:
        return Usage(0, 0, 0, 0)
    projects = select(Project.id).where(Project.workspace_id == ws)
    own = select(Project.id).where(Project.workspace_id == ws, Project.template.is_(None))
    n_projects = session.scalar(select(func.count()).select_from(projects.subquery())) or 0
    clips = session.scalar(select(func.count()).where(Clip.project_id.in_(own))) or 0
    recordings = select(Clip.recording_id).distinct().where(Clip.project_id.in_(own), Clip.recording_id.is_not(None))
    size = session.scalar(select(func.coalesce(func.sum(Recording.size_bytes), 0))
                          .where(Recording.id.in_(recordings))) or 0
    runs = session.scalar(select(func.count()).where(TrainingRun.project_id.in_(projects),
                                                     TrainingRun.status.in_(ACTIVE_STATUSES))) or 0
    return Usage(int(n_projects), int(clips), int(size), int(runs))


def idle_workspaces(session: Session, kind: WorkspaceKind | str, seen_before: datetime) -> list[Workspace]:
    """Workspaces of ``kind`` nobody opened since ``seen_before`` and with no active training."""
    active = (select(TrainingRun.id).join(Project, Project.id == TrainingRun.project_id)
              .where(Project.workspace_id == Workspace.id, TrainingRun.status.in_(ACTIVE_STATUSES)))
    return list(session.scalars(
        select(Workspace).where(Workspace.kind == WorkspaceKind(kind), Workspace.last_seen_at < seen_before,
                                ~exists(active)).order_by(Workspace.id)))


def delete_workspace(session: Session, key: str) -> None:
    """Delete a workspace with its projects (and their clips, labels and runs)."""
    workspace = find_workspace(session, key)
    if workspace is not None:
        session.delete(workspace)
        session.flush()


def referenced_audio_ids(session: Session, audio_ids: Iterable[str]) -> set[str]:
    """Those of ``audio_ids`` that some clip, in any workspace, still has."""
    ids = sorted(set(audio_ids))
    found: set[str] = set()
    for start in range(0, len(ids), 500):
        found.update(session.scalars(select(Clip.audio_id).distinct().where(Clip.audio_id.in_(ids[start:start + 500]))))
    return found


def orphan_recordings(session: Session) -> list[Recording]:
    """Recordings no clip refers to any more (their projects were deleted)."""
    used = select(Clip.id).where(Clip.recording_id == Recording.id)
    return list(session.scalars(select(Recording).where(~exists(used)).order_by(Recording.id)))
