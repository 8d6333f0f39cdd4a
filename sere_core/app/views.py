"""One view per screen: everything a screen shows, read for the caller in one transaction.

``app.py`` calls a screen's view after every event that changes what it shows and turns the
result into the screen's components; nothing else writes them. Audio is read from disk after the
transaction ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from sere_core import storage as st
from sere_core.app import labeling, training
from sere_core.app.access import Caller
from sere_core.app.context import AppContext
from sere_core.app.label_queue import LabelQueue
from sere_core.app.projects import ProjectSummary, summarize
from sere_core.app.review import (
    ClipView,
    FieldData,
    TablePage,
    clip_facts,
    field_data_in,
    predictions_page_in,
    with_audio,
)
from sere_core.errors import NotFoundError


def _open(session, caller: Caller, project_id: int | None, *, lock: bool = False):
    """The caller's project ``project_id``, or None (none chosen, deleted, or not theirs)."""
    if project_id is None:
        return None
    try:
        return st.owned_project(session, caller.workspace, project_id, lock=lock)
    except NotFoundError:
        return None


@dataclass(frozen=True)
class ProjectScreen:
    """The header and the Project tab: the open project and the workspace's projects."""

    caller: Caller
    project: ProjectSummary | None
    projects: list[tuple[str, int]]


def project_screen(ctx: AppContext, caller: Caller, project_id: int | None) -> ProjectScreen:
    with ctx.session() as s:
        project = _open(s, caller, project_id)
        return ProjectScreen(caller, summarize(s, project) if project is not None else None,
                             [(p.name, p.id) for p in st.list_projects(s, workspace=caller.workspace)])


@dataclass(frozen=True)
class LabelingScreen:
    """The Source tab: the clip to label next (leased to the caller's tab) and the counts."""

    project: ProjectSummary | None
    counts: dict[str, int]
    clip: ClipView | None
    left: int
    #: The clip is on another labeler's screen too (every unlabeled clip is).
    shared: bool
    queue: LabelQueue


def labeling_screen(ctx: AppContext, caller: Caller, project_id: int | None, queue: LabelQueue) -> LabelingScreen:
    with ctx.session() as s:
        project = _open(s, caller, project_id, lock=True)  # one tab picks its next clip at a time
        if project is None:
            return LabelingScreen(None, {}, None, 0, False, queue)
        clip_id, shared = labeling.next_clip(s, project.id, queue, caller.tab)
        left = len(st.unlabeled_clip_ids(s, project.id))
        facts = clip_facts(ctx, s, caller, clip_id, project.id) if clip_id is not None else None
        summary, counts = summarize(s, project), st.label_counts(s, project.id, "source")
    clip = with_audio(ctx, facts) if facts is not None else None
    return LabelingScreen(summary, counts, clip, left, shared, queue.showing(clip_id))


@dataclass(frozen=True)
class TrainingScreen:
    """The Train tab: whether the project can train, and its active (else latest) run."""

    project: ProjectSummary | None
    readiness: training.Readiness | None
    status: training.TrainingStatus | None


def training_screen(ctx: AppContext, caller: Caller, project_id: int | None) -> TrainingScreen:
    with ctx.session() as s:
        project = _open(s, caller, project_id)
        if project is None:
            return TrainingScreen(None, None, None)
        return TrainingScreen(summarize(s, project), training.readiness(s, project),
                              training.current_status(ctx, s, project.id))


@dataclass(frozen=True)
class ResultsScreen:
    """The field and the review table of the project's latest finished run."""

    project: ProjectSummary | None
    field: FieldData | None
    table: TablePage | None


def results_screen(ctx: AppContext, caller: Caller, project_id: int | None, sort: str = "least confident first",
                   page: int = 1) -> ResultsScreen:
    with ctx.session() as s:
        project = _open(s, caller, project_id)
        if project is None:
            return ResultsScreen(None, None, None)
        return ResultsScreen(summarize(s, project), field_data_in(s, caller, project.id),
                             predictions_page_in(s, caller, project.id, sort=sort, page=page))


def table_screen(ctx: AppContext, caller: Caller, project_id: int | None, sort: str, page: int) -> TablePage | None:
    """The review table alone (paging and sorting)."""
    with ctx.session() as s:
        project = _open(s, caller, project_id)
        return predictions_page_in(s, caller, project.id, sort=sort, page=page) if project is not None else None
