"""Results: one clip to listen to, the resonance field of a run, the review table, confirmations.

Everything is read through the caller's workspace: a clip or run of another workspace is "not
found". The session-level functions (``*_in``) let a screen's view read all it shows in one
transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sere_core import storage as st
from sere_core.app.access import Caller
from sere_core.app.context import AppContext
from sere_core.app.demo import demo_reference
from sere_core.app.training import members_of
from sere_core.errors import InvalidDataError, NotFoundError


@dataclass(frozen=True)
class PredictionView:
    emotion: str
    confidence: float
    probabilities: dict[str, float]
    highlights: list[tuple[float, float]]


@dataclass(frozen=True)
class ClipView:
    """One clip, ready to listen to and look at."""

    clip_id: int
    name: str
    role: str
    language: str | None
    speaker: str | None
    duration_s: float
    label: str | None
    samples: np.ndarray
    sample_rate: int
    prediction: PredictionView | None
    reference: str | None


#: The field's points table (see ``sere_core.viz.resonance_field_figure``): ``emotion`` is the
#: label where there is one, else the prediction; ``predicted`` the prediction alone; ``changed``
#: whether the prediction differs from the previous run's (None: no previous run or prediction);
#: ``disagreement`` the share of the ensemble's models that decide otherwise (NaN: one model).
POINT_COLUMNS = ["clip_id", "x", "y", "name", "emotion", "confidence", "role", "labeled", "predicted",
                 "language", "speaker", "changed", "disagreement"]


@dataclass(frozen=True)
class FieldData:
    """Everything the resonance field plot needs (see ``sere_core.viz.resonance_field_figure``)."""

    run_id: int
    emotions: list[str]
    points: pd.DataFrame
    prototypes: pd.DataFrame
    snapshot_frames: pd.DataFrame
    prototype_frames: pd.DataFrame
    members: int = 1  # a snapshot's step is each model's step; the ensemble's models side by side
    #: ``(step, total steps)`` of a run still training (a live view: no predictions, no replay).
    live: tuple[int, int] | None = None


@dataclass(frozen=True)
class ClipFacts:
    """What the database says of a clip; :func:`with_audio` adds its sound."""

    record: st.ClipRecord
    label: str | None
    prediction: PredictionView | None
    reference: str | None


def clip_facts(ctx: AppContext, session: Any, caller: Caller, clip_id: int, project_id: int | None = None,
               run_id: int | None = None) -> ClipFacts:
    """A clip's label, the corpus hint (demo) and its prediction in ``run_id`` (default: the
    project's latest finished training)."""
    clip = st.owned_clip(session, caller.workspace, clip_id, project_id)
    project = st.get_project(session, clip.project_id)
    rec = st.clip_records(session, clip.project_id, [clip.id])[0]
    if run_id is None:
        run_id = st.latest_result(session, clip.project_id)
    row = st.get_prediction(session, run_id, clip.id) if run_id is not None else None
    pred = None if row is None else PredictionView(row.emotion, float(row.confidence), dict(row.probabilities),
                                                  [tuple(h) for h in row.highlights])
    return ClipFacts(rec, st.get_label(session, clip.id), pred, demo_reference(ctx, project.template).get(rec.audio_id))


def with_audio(ctx: AppContext, facts: ClipFacts) -> ClipView:
    rec = facts.record
    samples, rate = clip_audio(ctx, rec)
    return ClipView(rec.clip_id, rec.name, rec.role, rec.language, rec.speaker, rec.end_s - rec.start_s,
                    facts.label, samples, rate, facts.prediction, facts.reference)


def clip_view(ctx: AppContext, caller: Caller, clip_id: int, project_id: int | None = None,
              run_id: int | None = None) -> ClipView:
    with ctx.session() as s:
        facts = clip_facts(ctx, s, caller, clip_id, project_id, run_id)
    return with_audio(ctx, facts)


def clip_audio(ctx: AppContext, rec: st.ClipRecord) -> tuple[np.ndarray, int]:
    """The clip's processed audio (its listening copy, made again from the recording if gone)."""
    stored = ctx.segments.get(rec.audio_id)
    if stored is not None:
        return stored
    if rec.stored_path:  # the listening copy is gone: decode the recording again
        from sere_core.app.warmup import import_engine
        from sere_core.audio import load_audio

        import_engine()
        for seg in load_audio(ctx.blobs.path_for(rec.stored_path)):
            if seg.audio_id == rec.audio_id:
                ctx.segments.put(seg.audio_id, seg.samples, seg.sample_rate)
                return np.array(seg.samples), seg.sample_rate
    raise NotFoundError(f"The audio of {rec.name} is missing from the data folder.")


def latest_result(ctx: AppContext, caller: Caller, project_id: int) -> int | None:
    """Id of the project's most recent successful training run."""
    with ctx.session() as s:
        return st.latest_result(s, st.owned_project(s, caller.workspace, project_id).id)


def _point(clip_id: int, x: float, y: float, rec: st.ClipRecord, label: str | None, pred: Any = None,
           earlier: Any = None) -> dict[str, Any]:
    """One row of the points table (:data:`POINT_COLUMNS`): a clip where it is on the map, with its
    label, and its prediction and the previous run's where there are."""
    return {
        "clip_id": str(clip_id), "x": float(x), "y": float(y), "name": rec.name,
        "emotion": label or (pred.emotion if pred else None),
        "confidence": float(pred.confidence) if pred else np.nan,
        "role": rec.role, "labeled": label is not None,
        "predicted": pred.emotion if pred else None, "language": rec.language, "speaker": rec.speaker,
        "changed": None if pred is None or earlier is None else pred.emotion != earlier.emotion,
        "disagreement": np.nan if pred is None or pred.agreement is None else 1.0 - float(pred.agreement),
    }


def field_data_in(session: Any, caller: Caller, project_id: int, run_id: int | None = None) -> FieldData | None:
    """Points, prototypes and replay frames of a finished run (None before the first training)."""
    project = st.owned_project(session, caller.workspace, project_id)
    run_id = run_id if run_id is not None else st.latest_result(session, project.id)
    if run_id is None:
        return None
    run = st.owned_run(session, caller.workspace, run_id, project.id)
    snaps = st.snapshots_for_run(session, run_id)
    preds = st.predictions_for_run(session, run_id)
    before_id = st.previous_result(session, run_id)
    before = st.predictions_for_run(session, before_id) if before_id is not None else {}
    labels = st.labels_for_project(session, project.id)
    records = {r.clip_id: r for r in st.clip_records(session, project.id)}
    classes = list(run.metrics.get("classes") or project.emotions)
    members = members_of(run)
    if not snaps:
        return None
    final = snaps[-1]
    rows = []
    for cid, (x, y) in zip(final.clip_ids, final.coords):
        rec = records.get(cid)
        if rec is None:  # deleted since
            continue
        rows.append(_point(cid, x, y, rec, labels.get(cid), preds.get(cid), before.get(cid)))
    points = pd.DataFrame(rows, columns=POINT_COLUMNS)
    frames = pd.DataFrame(
        [(sn.step, str(c), float(x), float(y)) for sn in snaps for c, (x, y) in zip(sn.clip_ids, sn.coords)],
        columns=["step", "clip_id", "x", "y"])
    pframes = pd.DataFrame(
        [(sn.step, classes[i], float(x), float(y)) for sn in snaps if sn.prototypes is not None
         for i, (x, y) in enumerate(sn.prototypes) if i < len(classes)],
        columns=["step", "emotion", "x", "y"])
    protos = pframes[pframes["step"] == final.step][["emotion", "x", "y"]].reset_index(drop=True)
    emotions = list(project.emotions) + [c for c in classes if c not in project.emotions]
    return FieldData(run_id, emotions, points, protos, frames, pframes, members)


def live_field_data(ctx: AppContext, caller: Caller, project_id: int, run_id: int, live: Any) -> FieldData:
    """The field of a run still training, from its newest snapshot (a ``pipeline.LiveField``):
    the clips where they are now, coloured by the labels given."""
    with ctx.session() as s:
        project = st.owned_project(s, caller.workspace, project_id)
        st.owned_run(s, caller.workspace, run_id, project.id)
        records = {r.clip_id: r for r in st.clip_records(s, project.id)}
        labels = st.labels_for_project(s, project.id)
        emotions = list(project.emotions)
    rows = [_point(cid, x, y, records[cid], labels.get(cid)) for cid, (x, y) in zip(live.clip_ids, live.coords)
            if cid in records]
    protos = pd.DataFrame([(e, float(x), float(y)) for e, (x, y) in zip(live.classes, live.prototypes)],
                          columns=["emotion", "x", "y"])
    empty = pd.DataFrame(columns=["step", "clip_id", "x", "y"])
    return FieldData(run_id, emotions, pd.DataFrame(rows, columns=POINT_COLUMNS), protos, empty,
                     pd.DataFrame(columns=["step", "emotion", "x", "y"]), live=(live.step, live.total_steps))


def field_data(ctx: AppContext, caller: Caller, project_id: int, run_id: int | None = None) -> FieldData | None:
    with ctx.session() as s:
        return field_data_in(s, caller, project_id, run_id)


def _fmt_spans(spans: Iterable[Sequence[float]]) -> str:
    return ", ".join(f"{a:.2f}-{b:.2f} s" for a, b in spans)


#: The review order that puts first the target clips worth labeling next (see :func:`suggest_targets`).
SUGGESTED = "label these next (uncertain, varied)"
#: Orders of the review table: (what to sort by, descending); see ``storage.prediction_page``.
SORTS = {
    "least confident first": ("confidence", False),
    "most confident first": ("confidence", True),
    "by emotion": ("emotion", False),
    "by file name": ("name", False),
    SUGGESTED: ("confidence", False),  # the order comes from suggest_targets; this is its fallback
}
#: Rows per page of the review table: the page never receives a whole large project.
PAGE_SIZE = 100
TABLE_COLUMNS = ["clip", "file", "predicted", "confidence", "your label", "highlights", "speaker"]


@dataclass(frozen=True)
class TablePage:
    """One page of the review table; ``page`` counts from 1, ``offset`` is the rows before it."""

    rows: pd.DataFrame
    page: int
    pages: int
    total: int
    offset: int = 0

    def caption(self) -> str:
        if not self.total:
            return "No clips to review yet."
        return (f"Clips {self.offset + 1}-{self.offset + len(self.rows)} of {self.total} · "
                f"page {self.page} of {self.pages}")


def page_of(session: Any, project_id: int, run_id: int | None, *, order: str = "confidence",
            descending: bool = False, page: int = 1, size: int | None = PAGE_SIZE,
            where: st.ClipFilter | None = None) -> tuple[list[st.PredictionRow], int, int, int]:
    """``(rows, page, pages, total)``: page ``page`` (from 1, clamped to the pages there are; a
    table may shrink between two clicks) of the clips ``where`` selects; ``size`` None: all."""
    page = max(1, int(page)) if size else 1

    def fetch(n: int) -> tuple[list[st.PredictionRow], int]:
        return st.prediction_page(session, run_id, project_id=project_id, order=order, descending=descending,
                                  offset=(n - 1) * (size or 0), limit=size, where=where)

    rows, total = fetch(page)
    pages = max(1, -(-total // size)) if size else 1
    if page > pages:
        page = pages
        rows, total = fetch(page)
    return rows, page, pages, total


def suggest_targets(session: Any, project_id: int, run_id: int) -> list[int]:
    """Unlabeled target clips in the order worth labeling next, for users who know a little of
    the target language: the least confident half first (at least 20), spread over the map of
    the run (``suggest.diverse_order`` on the clips' positions, the labeled ones counting as
    covered), then the rest, least confident first."""
    from sere_core.app.suggest import diverse_order

    preds = st.predictions_for_run(session, run_id)
    labels = st.labels_for_project(session, project_id)
    targets = {r.clip_id for r in st.clip_records(session, project_id) if r.role == "target"}
    open_ = sorted((c for c in targets if c not in labels and c in preds), key=lambda c: (preds[c].confidence, c))
    if len(open_) < 2:
        return open_
    snap = st.last_snapshot(session, run_id)
    where = {c: i for i, c in enumerate(snap.clip_ids)} if snap is not None else {}
    unsure = [c for c in open_[:max(20, len(open_) // 2)] if c in where]
    covered = [c for c in targets if c in labels and c in where]
    if len(unsure) < 2:
        return open_
    coords = np.asarray(snap.coords)[[where[c] for c in unsure + covered]]
    n_emotions = len(st.get_project(session, project_id).emotions)
    order = diverse_order(coords, n_clusters=min(len(unsure), 5 * n_emotions),
                          labeled=range(len(unsure), len(unsure) + len(covered)))
    first = [unsure[i] for i in order]
    taken = set(first)
    return first + [c for c in open_ if c not in taken]


def predictions_page_in(session: Any, caller: Caller, project_id: int, run_id: int | None = None, *,
                        role: str | None = "target", sort: str = "least confident first", page: int = 1,
                        page_size: int | None = PAGE_SIZE) -> TablePage:
    """One page of the clips of ``role``: prediction, confidence, highlights and the user's label.

    Sorted and cut by the database; ``page`` is clamped to the pages there are, ``page_size=None``
    gives every row on one page.
    """
    empty = TablePage(pd.DataFrame(columns=TABLE_COLUMNS), 1, 1, 0)
    order, descending = SORTS.get(sort, SORTS["least confident first"])
    size = None if page_size is None else max(1, int(page_size))
    project = st.owned_project(session, caller.workspace, project_id)
    run_id = run_id if run_id is not None else st.latest_result(session, project.id)
    if run_id is None:
        return empty
    st.owned_run(session, caller.workspace, run_id, project.id)
    if sort == SUGGESTED and size:  # an order of its own: page the suggested ids, read that page
        ids = suggest_targets(session, project.id, run_id)
        pages = max(1, -(-len(ids) // size))
        page = min(max(1, int(page)), pages)
        chosen = ids[(page - 1) * size:page * size]
        rows, _ = st.prediction_page(session, run_id, where=st.ClipFilter(ids=tuple(chosen)), limit=None)
        rank = {c: i for i, c in enumerate(chosen)}
        rows, total = sorted(rows, key=lambda r: rank[r.clip_id]), len(ids)
    else:
        rows, page, pages, total = page_of(session, project.id, run_id, order=order, descending=descending,
                                           page=page, size=size, where=st.ClipFilter(role=role))
    df = pd.DataFrame(
        [[r.clip_id, r.name, r.emotion or "", np.nan if r.confidence is None else float(r.confidence),
          r.label or "", _fmt_spans(r.highlights), r.speaker or ""] for r in rows],
        columns=TABLE_COLUMNS)
    return TablePage(df, page, pages, total, (page - 1) * (size or 0))


def predictions_page(ctx: AppContext, caller: Caller, project_id: int, run_id: int | None = None,
                     **options: Any) -> TablePage:
    with ctx.session() as s:
        return predictions_page_in(s, caller, project_id, run_id, **options)


def predictions_table(ctx: AppContext, caller: Caller, project_id: int, run_id: int | None = None, *,
                      role: str | None = "target", sort: str = "least confident first") -> pd.DataFrame:
    """Every row of :func:`predictions_page` (for exports and small projects)."""
    return predictions_page(ctx, caller, project_id, run_id, role=role, sort=sort, page_size=None).rows


def next_to_review(ctx: AppContext, caller: Caller, project_id: int, sort: str = "least confident first",
                   current: int | None = None) -> int | None:
    """The first target clip without a label in the table's order, other than ``current``."""
    order, descending = SORTS.get(sort, SORTS["least confident first"])
    with ctx.session() as s:
        project = st.owned_project(s, caller.workspace, project_id)
        run_id = st.latest_result(s, project.id)
        if run_id is None:
            return None
        if sort == SUGGESTED:
            return next((c for c in suggest_targets(s, project.id, run_id) if c != current), None)
        rows, _ = st.prediction_page(s, run_id, role="target", order=order, descending=descending,
                                     limit=2, unlabeled_only=True)
    return next((r.clip_id for r in rows if r.clip_id != current), None)


def confirm_prediction(ctx: AppContext, caller: Caller, project_id: int, clip_id: int,
                       emotion: str | None = None) -> str:
    """Store the prediction (or the user's correction ``emotion``) as the clip's label, as the
    caller's change (undoable); returns the emotion stored."""
    with ctx.session() as s:
        clip = st.owned_clip(s, caller.workspace, clip_id, project_id)
        if emotion is None:
            run_id = st.latest_result(s, clip.project_id)
            row = st.get_prediction(s, run_id, clip.id) if run_id is not None else None
            if row is None:
                raise InvalidDataError(f"{clip.original_name} has no prediction yet; train first or choose an emotion.")
            emotion = row.emotion
        return st.set_label(s, clip.id, emotion, author=caller.labeler, session_id=caller.tab or None).emotion


@dataclass(frozen=True)
class ResultsSummary:
    """A finished run at a glance: its target clips per predicted emotion and their confidences,
    how many predictions changed since the previous run, and, where the target clips have labels
    (yours, or the corpus's in the demo), the predictions against them."""

    run_id: int
    emotions: list[str]
    counts: dict[str, int]
    confidences: list[float]
    changed: int | None  # None: no previous run to compare with
    compared: int
    truth: list[str]
    predicted: list[str]
    truth_source: str

    @property
    def uar(self) -> float | None:
        from sere_core.app.pipeline import unweighted_recall

        return unweighted_recall(self.truth, self.predicted) if self.truth else None

    def markdown(self) -> str:
        n = len(self.confidences)
        text = f"**Run {self.run_id}**: {n} target clip{'s' if n != 1 else ''} predicted"
        if n:
            text += f", {sum(c >= 0.5 for c in self.confidences)} of them with a confidence of 50 % or more"
        text += "."
        if self.changed is not None:
            text += f" {self.changed} of {self.compared} predictions changed since the previous run."
        if self.truth:
            text += (f" Against {self.truth_source}, on {len(self.truth)} target clips: UAR **{self.uar:.0%}** "
                     f"(chance {1 / max(1, len(self.emotions)):.0%}).")
        return text


def results_summary(ctx: AppContext, caller: Caller, project_id: int) -> ResultsSummary | None:
    """The summary of the project's latest finished run (None before the first)."""
    with ctx.session() as s:
        project = st.owned_project(s, caller.workspace, project_id)
        run_id = st.latest_result(s, project.id)
        if run_id is None:
            return None
        preds = st.predictions_for_run(s, run_id)
        before_id = st.previous_result(s, run_id)
        before = st.predictions_for_run(s, before_id) if before_id is not None else None
        targets = [r for r in st.clip_records(s, project.id) if r.role == "target"]
        labels = st.labels_for_project(s, project.id)
        emotions, template = list(project.emotions), project.template
    counts = {e: 0 for e in emotions}
    confidences = []
    for rec in targets:
        if rec.clip_id in preds:
            counts[preds[rec.clip_id].emotion] = counts.get(preds[rec.clip_id].emotion, 0) + 1
            confidences.append(float(preds[rec.clip_id].confidence))
    both = [c for c in preds if before is not None and c in before]
    changed = sum(preds[c].emotion != before[c].emotion for c in both) if before is not None else None
    reference = demo_reference(ctx, template) if template else {}
    if reference:  # the demo: every target clip has the corpus's label
        truth_of = {r.clip_id: reference[r.audio_id] for r in targets if r.audio_id in reference}
        source = "the corpus labels of the demo"
    else:  # the labels given to target clips (note: they were part of the training too)
        truth_of = {r.clip_id: labels[r.clip_id] for r in targets if r.clip_id in labels}
        source = "your labels of target clips (also used in training)"
    pairs = [(t, preds[c].emotion) for c, t in truth_of.items() if c in preds]
    return ResultsSummary(run_id, emotions, counts, confidences, changed, len(both),
                          [t for t, _ in pairs], [p for _, p in pairs], source)
