"""Labeling: labels on the clip the labeler saw, per-labeler undo, the next clip and suggestions.

Every change names the clip it acts on (the id on the labeler's screen, never "the current
clip" as the server assumes it) and its author (``caller.labeler``), so one labeler's undo never
touches another's work. :func:`next_clip` leases the clip it picks to the caller's tab, so two
tabs or two labelers of one project are shown different clips.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sere_core import storage as st
from sere_core.app.access import Caller
from sere_core.app.context import AppContext
from sere_core.app.label_queue import LabelQueue
from sere_core.app.pipeline import Progress, embed_clips
from sere_core.app.warmup import import_engine
from sere_core.errors import InvalidDataError

#: Labels per emotion the method is designed for (few-shot).
SHOTS = 5


def label_counts(ctx: AppContext, caller: Caller, project_id: int, role: str | None = "source") -> dict[str, int]:
    with ctx.session() as s:
        project = st.owned_project(s, caller.workspace, project_id)
        return st.label_counts(s, project.id, role)


def label_clip(ctx: AppContext, caller: Caller, project_id: int, clip_id: int, emotion: str) -> str:
    """Label clip ``clip_id`` of the project ``emotion``; returns the emotion stored."""
    with ctx.session() as s:
        clip = st.owned_clip(s, caller.workspace, clip_id, project_id)
        return st.set_label(s, clip.id, emotion, author=caller.labeler, session_id=caller.tab or None).emotion


def undo(ctx: AppContext, caller: Caller, project_id: int) -> st.Undone | None:
    """Revert the caller's newest label change in the project (None: nothing left to undo)."""
    with ctx.session() as s:
        project = st.owned_project(s, caller.workspace, project_id)
        return st.undo_last(s, project.id, caller.labeler, session_id=caller.tab or None)


def next_clip(session: Any, project_id: int, queue: LabelQueue, holder: str) -> tuple[int | None, bool]:
    """The unlabeled source clip ``holder`` sees next, leased to it; and whether every other
    clip was on someone else's screen (so this one may be too). Call with the project locked."""
    unlabeled = st.unlabeled_clip_ids(session, project_id)
    busy = st.leased_by_others(session, project_id, holder) if holder else set()
    clip_id = queue.next(unlabeled, busy)
    if clip_id is None:
        if holder:
            st.release_leases(session, holder, project_id)
        return None, False
    if holder:
        st.take_lease(session, project_id, clip_id, holder)
    return clip_id, clip_id in busy


def suggest_clips(ctx: AppContext, caller: Caller, project_id: int, progress: Progress | None = None) -> list[int]:
    """Unlabeled source clips in the order worth labeling: typical and varied first.

    Uses the clips' speech features (computed now if the background job has not finished).
    """
    from sere_core.app.suggest import diverse_order, pooled_embedding

    with ctx.session() as s:
        project = st.owned_project(s, caller.workspace, project_id)
        encoder, n_emotions = project.encoder, len(project.emotions)
        records = [r for r in st.clip_records(s, project.id) if r.role == "source"]
        labels = st.labels_for_project(s, project.id)
    if not records:
        raise InvalidDataError("Upload some source-language clips first.")
    import_engine()
    report = (lambda d, t: progress(d, t, "Listening to the clips")) if progress else None
    frames = embed_clips(ctx, project_id, encoder, records, report)
    x = np.stack([pooled_embedding(frames[r.clip_id]) for r in records])
    labeled = [i for i, r in enumerate(records) if r.clip_id in labels]
    order = diverse_order(x, n_clusters=SHOTS * n_emotions, labeled=labeled)
    return [records[i].clip_id for i in order]
