"""The resonance field as a place to act: where to go after a label, and actions on many clips
chosen on the map at once (label them, accept their predictions, unlabel, listen, export).

Every action names the clips the user saw (their ids, from the page) and checks that they belong
to the caller's project; ids of other projects or workspaces are refused as "not found".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sere_core import storage as st
from sere_core.app.access import Caller
from sere_core.app.context import AppContext
from sere_core.app.exports import export_predictions
from sere_core.app.review import clip_audio
from sere_core.errors import InvalidDataError

#: Where the field's clip panel goes after a label: the nearest unlabeled clip on the map, or the
#: unlabeled clip the model is least sure of.
NEXT_MODES = ("nearest unlabeled neighbour", "least confident")
#: At most this many clips are labeled, unlabeled or accepted in one action (a lasso over a large
#: project would otherwise hold the project's lock for long).
MAX_SELECTION = 2000
#: A selection is played as one recording of at most this many clips, with a short pause between.
MAX_PLAYLIST = 20
PLAYLIST_GAP_S = 0.4


@dataclass(frozen=True)
class BatchResult:
    """What a selection action did: clips changed, clips left as they were (already so, or no
    prediction to accept)."""

    changed: int
    unchanged: int

    def message(self, verb: str) -> str:
        left = f"; {self.unchanged} already so or without a prediction" if self.unchanged else ""
        return f"{verb} {self.changed} clip{'s' if self.changed != 1 else ''}{left}."


def _checked(clip_ids: Sequence[int]) -> list[int]:
    ids = list(dict.fromkeys(int(c) for c in clip_ids))
    if not ids:
        raise InvalidDataError("Select some clips on the map first (box or lasso).")
    if len(ids) > MAX_SELECTION:
        raise InvalidDataError(f"{len(ids)} clips are selected; act on at most {MAX_SELECTION} at once.")
    return ids


def next_clip(ctx: AppContext, caller: Caller, project_id: int, after: int, mode: str) -> int | None:
    """The unlabeled clip to show after ``after`` was labeled: its nearest unlabeled neighbour on
    the map of the latest run, or the least confident unlabeled prediction (None: none left)."""
    if mode not in NEXT_MODES:
        raise InvalidDataError(f"Unknown way to go on: {mode!r}.")
    with ctx.session() as s:
        project = st.owned_project(s, caller.workspace, project_id)
        run_id = st.latest_result(s, project.id)
        snap = st.last_snapshot(s, run_id) if run_id is not None else None
        if snap is None:
            return None
        labeled = set(st.labels_for_project(s, project.id))
        preds = st.predictions_for_run(s, run_id) if mode == "least confident" else {}
    ids = np.asarray(snap.clip_ids)
    open_ = np.array([c not in labeled and c != after for c in snap.clip_ids])
    if not open_.any():
        return None
    if mode == "least confident":
        conf = np.array([preds[c].confidence if c in preds else np.inf for c in snap.clip_ids])
        return int(ids[open_][np.argmin(conf[open_])])
    coords = np.asarray(snap.coords, dtype=float)
    here = np.flatnonzero(ids == after)
    if not len(here):  # a clip added after the run: no place on the map yet
        return int(ids[open_][0])
    dist = np.linalg.norm(coords[open_] - coords[here[0]], axis=1)
    return int(ids[open_][np.argmin(dist)])


def _relabel(ctx: AppContext, caller: Caller, project_id: int, clip_ids: Sequence[int],
             wanted: Callable[[Any, int, list[int]], dict[int, str | None]]) -> BatchResult:
    """Give each selected clip the label ``wanted(session, project, ids)`` says (clips it leaves
    out, or that have that label already, are left alone: no history row), as the caller's change."""
    ids = _checked(clip_ids)
    changed = 0
    with ctx.session() as s:
        clips = [st.owned_clip(s, caller.workspace, cid, project_id) for cid in ids]
        project = clips[0].project_id
        current, target = st.labels_for_project(s, project), wanted(s, project, ids)
        for clip in clips:
            if clip.id not in target or current.get(clip.id) == target[clip.id]:
                continue
            st.set_label(s, clip.id, target[clip.id], author=caller.labeler, session_id=caller.tab or None)
            changed += 1
    return BatchResult(changed, len(ids) - changed)


def label_clips(ctx: AppContext, caller: Caller, project_id: int, clip_ids: Sequence[int],
                emotion: str | None) -> BatchResult:
    """Label every clip of ``clip_ids`` ``emotion`` (None: remove their labels)."""
    return _relabel(ctx, caller, project_id, clip_ids, lambda s, project, ids: dict.fromkeys(ids, emotion))


def accept_predictions(ctx: AppContext, caller: Caller, project_id: int, clip_ids: Sequence[int]) -> BatchResult:
    """Store each selected clip's prediction as its label (clips without one are left alone)."""

    def predicted(s: Any, project: int, ids: list[int]) -> dict[int, str | None]:
        run_id = st.latest_result(s, project)
        if run_id is None:
            raise InvalidDataError("There are no predictions yet: train the model first (step 4).")
        return {cid: p.emotion for cid, p in st.predictions_for_run(s, run_id).items()}

    return _relabel(ctx, caller, project_id, clip_ids, predicted)


def playlist(ctx: AppContext, caller: Caller, project_id: int, clip_ids: Sequence[int]) -> tuple[np.ndarray, int, int]:
    """The first :data:`MAX_PLAYLIST` selected clips as one recording with short pauses between:
    ``(samples, sample_rate, clips in it)``."""
    ids = _checked(clip_ids)[:MAX_PLAYLIST]
    with ctx.session() as s:
        clips = [st.owned_clip(s, caller.workspace, cid, project_id) for cid in ids]
        by_id = {r.clip_id: r for r in st.clip_records(s, clips[0].project_id, ids)}
    parts, rate = [], None
    for cid in ids:
        samples, sr = clip_audio(ctx, by_id[cid])
        rate = rate or sr
        if sr != rate:  # clips are stored at one rate; a different one would play at the wrong speed
            continue
        parts += [np.asarray(samples, dtype=np.float32), np.zeros(int(PLAYLIST_GAP_S * rate), np.float32)]
    return np.concatenate(parts[:-1]), int(rate), len(parts) // 2


def export_selection(ctx: AppContext, caller: Caller, project_id: int, clip_ids: Sequence[int]) -> Path:
    """The selected clips' predictions as CSV (the columns of the full predictions export)."""
    ids = _checked(clip_ids)
    with ctx.session() as s:
        for cid in ids:
            st.owned_clip(s, caller.workspace, cid, project_id)
    return export_predictions(ctx, caller, project_id, clip_ids=ids)
