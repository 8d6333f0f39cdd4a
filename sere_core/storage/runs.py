"""Training runs, their predictions and their 2-D snapshots.

A run moves ``queued -> running -> succeeded | failed | cancelled`` and never back. Each
transition locks the run row (``FOR UPDATE`` on PostgreSQL) so a cancel from the UI and a progress
update from the worker cannot interleave: once cancelled, the worker's next
:func:`update_progress` returns False (its signal to stop) and writes nothing.

A project has at most one queued or running run. :func:`create_run` checks, and a partial unique
index makes the database refuse a second one even if two requests race past the check.

A worker that dies (the app is restarted, the process is killed) cannot mark its run failed, so
:func:`mark_stale_runs_failed` does it at the next start: runs whose worker process is gone from
this host, or which gave no heartbeat for ``stale_after_s``, become ``failed`` with a message. A
run belongs to a process instance (:data:`PROCESS_INSTANCE`), not only to a pid: in a container
the restarted app is pid 1 again, like the one that was killed, and must not mistake that one's
run for its own. A pid that another program got since (it started after the run did) gives the
run away too.
Workers should call :func:`update_progress` (or :func:`heartbeat`) at least every minute.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import ActiveRunError, InvalidDataError, NotFoundError, RunStateError
from ._util import clean_text, finite_float, json_safe
from .models import ACTIVE_STATUSES, Clip, ClipRole, Label, Prediction, RunStatus, Snapshot, TrainingRun, utcnow
from .projects import get_project, parse_role

#: This process's identity in ``TrainingRun.worker_instance``, unique across restarts.
PROCESS_INSTANCE = uuid.uuid4().hex
#: Seconds without a heartbeat after which an active run counts as abandoned.
DEFAULT_STALE_AFTER_S = 600.0
#: Seconds a run's worker may seem to have started after the run: the boot time that process
#: start times count from is in whole seconds, and the clock may be corrected meanwhile.
PID_REUSE_MARGIN_S = 5.0
#: Longest error text kept on a run (tracebacks can be long).
MAX_ERROR_CHARS = 20_000
#: Most loss points kept per run; beyond it older points are thinned (the whole list is
#: rewritten on every update, so it must stay small).
MAX_LOSS_POINTS = 1000


def _now(now: datetime | None) -> datetime:
    return now if now is not None else utcnow()


def get_run(session: Session, run_id: int, *, lock: bool = False) -> TrainingRun:
    query = select(TrainingRun).where(TrainingRun.id == run_id).execution_options(populate_existing=True)
    if lock:
        query = query.with_for_update()
    run = session.scalars(query).one_or_none()
    if run is None:
        raise NotFoundError(f"Training run {run_id} does not exist (was its project deleted?).")
    return run


def active_run(session: Session, project_id: int) -> TrainingRun | None:
    """The project's queued or running run, if any."""
    return session.scalars(
        select(TrainingRun)
        .where(TrainingRun.project_id == project_id, TrainingRun.status.in_(ACTIVE_STATUSES))
        .execution_options(populate_existing=True)
    ).first()


def latest_run(session: Session, project_id: int) -> TrainingRun | None:
    """The project's most recently created run, whatever its status."""
    return session.scalars(
        select(TrainingRun)
        .where(TrainingRun.project_id == project_id)
        .order_by(TrainingRun.created_at.desc(), TrainingRun.id.desc())
        .limit(1)
    ).first()


def latest_result(session: Session, project_id: int) -> int | None:
    """The id of the project's most recently finished successful run (its current results)."""
    return session.scalar(
        select(TrainingRun.id)
        .where(TrainingRun.project_id == project_id, TrainingRun.status == RunStatus.SUCCEEDED)
        .order_by(TrainingRun.finished_at.desc(), TrainingRun.id.desc())
        .limit(1)
    )


def previous_result(session: Session, run_id: int) -> int | None:
    """The id of the successful run of the same project that finished before ``run_id``."""
    run = session.get(TrainingRun, run_id)
    if run is None or run.finished_at is None:
        return None
    return session.scalar(
        select(TrainingRun.id)
        .where(TrainingRun.project_id == run.project_id, TrainingRun.status == RunStatus.SUCCEEDED,
               TrainingRun.id != run.id, TrainingRun.finished_at <= run.finished_at)
        .order_by(TrainingRun.finished_at.desc(), TrainingRun.id.desc())
        .limit(1)
    )


def touch_queued_runs(session: Session, instance: str = PROCESS_INSTANCE, *, now: datetime | None = None) -> int:
    """Heartbeat the queued runs process ``instance`` will start: a run waiting in a busy queue
    is not abandoned. Returns how many there are."""
    result = session.execute(
        update(TrainingRun)
        .where(TrainingRun.status == RunStatus.QUEUED, TrainingRun.worker_instance == instance)
        .values(heartbeat_at=_now(now))
    )
    return int(result.rowcount or 0)


def list_runs(session: Session, project_id: int) -> list[TrainingRun]:
    """All runs of a project, newest first."""
    return list(
        session.scalars(
            select(TrainingRun)
            .where(TrainingRun.project_id == project_id)
            .order_by(TrainingRun.created_at.desc(), TrainingRun.id.desc())
        )
    )


def create_run(
    session: Session,
    project_id: int,
    config: Mapping[str, Any] | None = None,
    *,
    worker_pid: int | None = None,
    worker_host: str | None = None,
    now: datetime | None = None,
) -> TrainingRun:
    """Queue a training run; raises :class:`ActiveRunError` if the project has one queued/running.

    ``worker_pid`` names the process that will start the run (on ``worker_host``, default this
    host): if it dies before :func:`start_run`, the next :func:`mark_stale_runs_failed` fails the
    queued run at once instead of letting it block the project until it goes stale.
    """
    project = get_project(session, project_id)
    busy = ActiveRunError(
        f"Project {project.name!r} is already training; wait for that run to end or cancel it first."
    )
    if active_run(session, project_id) is not None:
        raise busy
    now = _now(now)
    run = TrainingRun(
        project_id=project_id,
        status=RunStatus.QUEUED,
        config=json_safe(dict(config or {}), "config"),
        progress=0.0,
        step=0,
        losses=[],
        metrics={},
        created_at=now,
        heartbeat_at=now,
        worker_pid=worker_pid,
        worker_host=(worker_host or socket.gethostname()) if worker_pid is not None else None,
        worker_instance=_instance_of(worker_pid, worker_host),
    )
    try:
        with session.begin_nested():
            session.add(run)
    except IntegrityError:  # another request queued one between the check and the insert
        raise busy from None
    return run


def start_run(
    session: Session,
    run_id: int,
    *,
    total_steps: int | None = None,
    worker_pid: int | None = None,
    worker_host: str | None = None,
    now: datetime | None = None,
) -> TrainingRun:
    """Mark a queued run as running in this process (or the given worker)."""
    run = get_run(session, run_id, lock=True)
    if run.status != RunStatus.QUEUED:
        raise RunStateError(f"Training run {run_id} is {run.status.value}; only a queued run can start.")
    now = _now(now)
    run.status = RunStatus.RUNNING
    run.started_at = now
    run.heartbeat_at = now
    run.worker_pid = worker_pid if worker_pid is not None else os.getpid()
    run.worker_host = worker_host if worker_host is not None else socket.gethostname()
    run.worker_instance = _instance_of(run.worker_pid, run.worker_host)
    if total_steps is not None:
        run.total_steps = int(total_steps)
    session.flush()
    return run


def update_progress(
    session: Session,
    run_id: int,
    *,
    step: int,
    total_steps: int | None = None,
    losses: Mapping[str, float] | None = None,
    now: datetime | None = None,
) -> bool:
    """Record progress and a heartbeat; False (and nothing written) once the run is no longer
    running, e.g. cancelled from the UI: the worker's cue to stop."""
    run = get_run(session, run_id, lock=True)
    if run.status != RunStatus.RUNNING:
        return False
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise InvalidDataError(f"step must be a non-negative integer, got {step!r}.")
    run.step = int(step)
    if total_steps is not None:
        run.total_steps = int(total_steps)
    if run.total_steps:
        run.progress = min(1.0, max(0.0, run.step / run.total_steps))
    if losses:
        history = [*run.losses, {"step": int(step), **json_safe(dict(losses), "losses")}]
        if len(history) > MAX_LOSS_POINTS:
            # Keep the curve's shape at bounded size: thin the older points, keep the newest.
            history = history[-2::-2][::-1] + history[-1:]
        run.losses = history
    run.heartbeat_at = _now(now)
    session.flush()
    return True


def heartbeat(session: Session, run_id: int, *, now: datetime | None = None) -> bool:
    """Say "still alive" during a long step without progress; False once the run is not running."""
    run = get_run(session, run_id, lock=True)
    if run.status != RunStatus.RUNNING:
        return False
    run.heartbeat_at = _now(now)
    session.flush()
    return True


def finish_run(
    session: Session,
    run_id: int,
    *,
    metrics: Mapping[str, Any] | None = None,
    model_path: str | None = None,
    now: datetime | None = None,
) -> TrainingRun:
    """Mark a running run as succeeded. Raises :class:`RunStateError` if it was cancelled meanwhile."""
    run = get_run(session, run_id, lock=True)
    if run.status != RunStatus.RUNNING:
        raise RunStateError(f"Training run {run_id} is {run.status.value}; only a running run can succeed.")
    now = _now(now)
    run.status = RunStatus.SUCCEEDED
    run.progress = 1.0
    if run.total_steps:
        run.step = max(run.step, run.total_steps)
    run.metrics = json_safe(dict(metrics or {}), "metrics")
    run.model_path = model_path
    run.finished_at = now
    run.heartbeat_at = now
    session.flush()
    return run


def fail_run(session: Session, run_id: int, error: str, *, now: datetime | None = None) -> TrainingRun:
    """Mark a queued or running run as failed with ``error``; a run that already ended keeps its
    outcome (a worker failing after a cancel must not turn "cancelled" into "failed")."""
    run = get_run(session, run_id, lock=True)
    if run.status in ACTIVE_STATUSES:
        now = _now(now)
        message = str(error).strip() or "Training failed without an error message."
        run.status = RunStatus.FAILED
        run.error = message[:MAX_ERROR_CHARS]
        run.finished_at = now
        run.heartbeat_at = now
        session.flush()
    return run


def cancel_run(session: Session, run_id: int, *, now: datetime | None = None) -> TrainingRun:
    """Cancel a queued or running run (its worker stops at its next progress update). Cancelling
    a run that already ended changes nothing."""
    run = get_run(session, run_id, lock=True)
    if run.status in ACTIVE_STATUSES:
        run.status = RunStatus.CANCELLED
        run.finished_at = _now(now)
        session.flush()
    return run


def pid_alive(pid: int) -> bool | None:
    """Whether process ``pid`` runs on this host; None where that cannot be checked (Windows)."""
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there
        return None
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return None
    try:  # a killed child nobody has reaped yet is a zombie: it no longer trains
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def process_started_at(pid: int) -> datetime | None:
    """When process ``pid`` of this host started (UTC), from ``/proc``; None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            ticks = int(handle.read().rsplit(b")", 1)[1].split()[19])  # field 22: start, in ticks since boot
        with open("/proc/stat", "rb") as handle:
            boot = next(int(line.split()[1]) for line in handle if line.startswith(b"btime "))
        return datetime.fromtimestamp(boot + ticks / os.sysconf("SC_CLK_TCK"), timezone.utc)
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _instance_of(pid: int | None, host: str | None) -> str | None:
    """:data:`PROCESS_INSTANCE` when ``pid`` on ``host`` is this process; None when unknown."""
    if pid == os.getpid() and host in (None, socket.gethostname()):
        return PROCESS_INSTANCE
    return None


def _started_after(pid: int, moment: datetime | None) -> bool:
    """Whether process ``pid`` started after ``moment``, so it cannot have started that run."""
    started = process_started_at(pid)
    return started is not None and moment is not None and started - moment > timedelta(seconds=PID_REUSE_MARGIN_S)


def mark_stale_runs_failed(
    session: Session,
    now: datetime | None = None,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
    *,
    host: str | None = None,
) -> list[TrainingRun]:
    """Fail every queued/running run whose worker is gone; return them.

    A run is abandoned when its worker process (recorded on this ``host``) no longer exists, has
    this process's pid but not its instance (a restart that got the same pid) or started after
    the run (another program got the pid), or when its last heartbeat (its creation, for a queued
    run) is older than ``stale_after_s``.
    Call this when the app starts, before offering to train.
    """
    now = _now(now)
    host = host if host is not None else socket.gethostname()
    limit = timedelta(seconds=finite_float(stale_after_s, "stale_after_s", minimum=0.0))
    runs = session.scalars(
        select(TrainingRun)
        .where(TrainingRun.status.in_(ACTIVE_STATUSES))
        .order_by(TrainingRun.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    failed = []
    for run in runs:
        last = run.heartbeat_at or run.started_at or run.created_at
        reason = None
        ours = run.worker_host == host and run.worker_pid is not None
        if ours and run.worker_pid == os.getpid() and run.worker_instance != PROCESS_INSTANCE:
            reason = f"its worker process {run.worker_pid} on {host} was an earlier instance of this app"
        elif ours and pid_alive(run.worker_pid) is False:
            reason = f"its worker process {run.worker_pid} on {host} is gone"
        elif ours and _started_after(run.worker_pid, run.started_at or run.created_at):
            reason = f"its worker process {run.worker_pid} on {host} is gone (another program has its pid now)"
        elif last is None or now - last > limit:
            seconds = "an unknown time" if last is None else f"{int((now - last).total_seconds())} s"
            reason = f"no sign of life from its worker for {seconds}"
        if reason is None:
            continue
        run.status = RunStatus.FAILED
        run.error = (
            f"The app was restarted during training ({reason}); the run was stopped. "
            "Start the training again."
        )
        run.finished_at = now
        failed.append(run)
    session.flush()
    return failed


# --------------------------------------------------------------------------------------------
# Predictions


_REQUIRED = object()


def _field(item: Any, name: str, default: Any = _REQUIRED) -> Any:
    """A prediction's field (a dict's key or an attribute); ``default`` for an optional one."""
    if isinstance(item, Mapping):
        if name in item:
            return item[name]
    elif hasattr(item, name):
        return getattr(item, name)
    if default is _REQUIRED:
        raise InvalidDataError(f"prediction is missing {name!r}.")
    return default


def _share(value: Any, what: str, clip_id: int) -> float:
    """A share from 0 to 1 (a little rounding above 1 is taken as 1)."""
    share = finite_float(value, what, minimum=0.0)
    if share > 1.0 + 1e-6:
        raise InvalidDataError(f"{what} of clip {clip_id} must be at most 1, got {share}.")
    return min(share, 1.0)


def _project_clip_ids(session: Session, project_id: int, clip_ids: Sequence[int]) -> set[int]:
    found: set[int] = set()
    for start in range(0, len(clip_ids), 500):
        chunk = list(clip_ids[start : start + 500])
        found.update(
            session.scalars(select(Clip.id).where(Clip.project_id == project_id, Clip.id.in_(chunk)))
        )
    return found


def save_predictions(session: Session, run_id: int, predictions: Mapping[int, Any]) -> int:
    """Store ``{clip_id: prediction}`` for a run, replacing earlier ones for the same clips.

    A prediction is anything with ``emotion``, ``confidence``, ``probabilities`` and
    ``highlights``, and optionally ``agreement`` (the method's ``Prediction`` or a dict). Returns
    how many were stored.
    """
    run = get_run(session, run_id)
    clip_ids = [int(c) for c in predictions]
    known = _project_clip_ids(session, run.project_id, clip_ids)
    unknown = sorted(set(clip_ids) - known)
    if unknown:
        raise InvalidDataError(f"Clips {unknown[:10]} are not in the project of training run {run_id}.")
    rows = []
    for clip_id, item in predictions.items():
        probabilities = {
            str(k): finite_float(v, "probability", minimum=0.0) for k, v in dict(_field(item, "probabilities")).items()
        }
        highlights = []
        for pair in _field(item, "highlights") or []:
            start, end = (finite_float(v, "highlight", minimum=0.0) for v in pair)
            if end < start:
                raise InvalidDataError(f"highlight ({start}, {end}) of clip {clip_id} ends before it starts.")
            highlights.append([start, end])
        agreement = _field(item, "agreement", None)
        rows.append(
            Prediction(
                run_id=run_id,
                clip_id=int(clip_id),
                emotion=clean_text(str(_field(item, "emotion")), "predicted emotion", max_len=64),
                confidence=_share(_field(item, "confidence"), "confidence", clip_id),
                probabilities=probabilities,
                highlights=highlights,
                agreement=None if agreement is None else _share(agreement, "agreement", clip_id),
            )
        )
    for start in range(0, len(clip_ids), 500):
        session.execute(
            delete(Prediction).where(Prediction.run_id == run_id, Prediction.clip_id.in_(clip_ids[start : start + 500]))
        )
    session.add_all(rows)
    session.flush()
    return len(rows)


def get_prediction(session: Session, run_id: int, clip_id: int) -> Prediction | None:
    return session.scalars(select(Prediction).where(Prediction.run_id == run_id,
                                                    Prediction.clip_id == clip_id)).one_or_none()


def predictions_for_run(session: Session, run_id: int) -> dict[int, Prediction]:
    """``{clip_id: Prediction}`` of a run, in clip order."""
    rows = session.scalars(select(Prediction).where(Prediction.run_id == run_id).order_by(Prediction.clip_id))
    return {row.clip_id: row for row in rows}


@dataclass(frozen=True)
class PredictionRow:
    """A clip of a project with a run's prediction (None when it has none, or no run) and its label."""

    clip_id: int
    name: str
    speaker: str | None
    emotion: str | None
    confidence: float | None
    highlights: list[list[float]]
    label: str | None
    role: str = "target"
    language: str | None = None


@dataclass(frozen=True)
class ClipFilter:
    """Which clips a page lists; None (or an empty text) means any. ``name`` is a part of the file
    name, in any case; ``labeled`` True or False keeps the labeled or the unlabeled clips;
    ``predicted`` and the confidence range need a run."""

    role: ClipRole | str | None = None
    language: str | None = None
    speaker: str | None = None
    predicted: str | None = None
    labeled: bool | None = None
    min_confidence: float | None = None
    max_confidence: float | None = None
    name: str | None = None
    ids: tuple[int, ...] | None = None  # only these clips


#: What :func:`prediction_page` can sort by.
PREDICTION_ORDERS = {"confidence": Prediction.confidence, "emotion": Prediction.emotion, "name": Clip.original_name}


def _like(text: str) -> str:
    """``text`` as a LIKE pattern that matches it anywhere, its wildcards taken literally."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def prediction_page(
    session: Session,
    run_id: int | None,
    *,
    project_id: int | None = None,
    role: ClipRole | str | None = None,
    order: str = "confidence",
    descending: bool = False,
    offset: int = 0,
    limit: int | None = None,
    unlabeled_only: bool = False,
    where: ClipFilter | None = None,
) -> tuple[list[PredictionRow], int]:
    """One page of the project's clips (of ``role``, or as ``where`` filters them) with the run's
    prediction and the label, and how many there are in all. ``run_id`` None (before the first
    training) lists the clips of ``project_id`` without predictions.

    Filtered, sorted and cut in the database, so a 100,000-clip project sends the page only; clips
    without a prediction come last, ties go by clip id.
    """
    if order not in PREDICTION_ORDERS:
        raise InvalidDataError(f"order must be one of {', '.join(PREDICTION_ORDERS)}, not {order!r}.")
    if run_id is not None:
        project_id = get_run(session, run_id).project_id
    if project_id is None:
        raise InvalidDataError("prediction_page needs a run or a project.")
    f = where or ClipFilter()
    query = (
        select(Clip.id, Clip.original_name, Clip.speaker, Prediction.emotion, Prediction.confidence,
               Prediction.highlights, Label.emotion, Clip.role, Clip.language)
        .outerjoin(Prediction, (Prediction.clip_id == Clip.id) & (Prediction.run_id == (run_id or -1)))
        .outerjoin(Label, Label.clip_id == Clip.id)
        .where(Clip.project_id == project_id)
    )
    for wanted in {role, f.role} - {None, ""}:
        query = query.where(Clip.role == parse_role(wanted))
    if unlabeled_only or f.labeled is False:
        query = query.where(Label.id.is_(None))
    if f.labeled is True:
        query = query.where(Label.id.is_not(None))
    if f.language:
        query = query.where(Clip.language == f.language)
    if f.speaker:
        query = query.where(Clip.speaker == f.speaker)
    if f.predicted:
        query = query.where(Prediction.emotion == f.predicted)
    if f.min_confidence is not None:
        query = query.where(Prediction.confidence >= float(f.min_confidence))
    if f.max_confidence is not None:
        query = query.where(Prediction.confidence <= float(f.max_confidence))
    if f.name:
        query = query.where(Clip.original_name.ilike(_like(f.name.strip()), escape="\\"))
    if f.ids is not None:
        query = query.where(Clip.id.in_([int(i) for i in f.ids]))
    total = int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)
    key = PREDICTION_ORDERS[order]
    query = query.order_by((key.desc() if descending else key.asc()).nulls_last(), Clip.id)
    query = query.offset(max(0, int(offset))).limit(limit)
    rows = [PredictionRow(c, n, sp, e, None if conf is None else float(conf), list(h or []), lab,
                          r.value if isinstance(r, ClipRole) else str(r), lang)
            for c, n, sp, e, conf, h, lab, r, lang in session.execute(query)]
    return rows, total


def clip_facets(session: Session, project_id: int) -> dict[str, list[str]]:
    """The languages and speakers a project's clips have (for the clip browser's filters)."""
    def distinct(column: Any) -> list[str]:
        rows = session.scalars(select(column).where(Clip.project_id == project_id, column.is_not(None))
                               .distinct().order_by(column).limit(500))
        return [str(v) for v in rows]

    return {"language": distinct(Clip.language), "speaker": distinct(Clip.speaker)}


# --------------------------------------------------------------------------------------------
# Snapshots


@dataclass(frozen=True)
class SnapshotData:
    """One training snapshot in 2-D: ``coords[i]`` is the point of ``clip_ids[i]``."""

    index: int
    step: int
    clip_ids: tuple[int, ...]
    coords: np.ndarray  # float32 [N, 2], read-only
    prototypes: np.ndarray | None  # float32 [C, 2], read-only


def _pack(points: Any, field: str, rows: int | None = None) -> bytes:
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2 or (rows is not None and array.shape[0] != rows):
        want = f"[{rows}, 2]" if rows is not None else "[n, 2]"
        raise InvalidDataError(f"{field} must have shape {want}, got {list(array.shape)}.")
    if not np.isfinite(array).all():
        raise InvalidDataError(f"{field} contains NaN or infinite values.")
    return np.ascontiguousarray(array, dtype="<f4").tobytes()


def _unpack(data: bytes | None) -> np.ndarray | None:
    if data is None:
        return None
    return np.frombuffer(data, dtype="<f4").reshape(-1, 2)


def save_snapshot(
    session: Session,
    run_id: int,
    index: int,
    step: int,
    clip_ids: Sequence[int],
    coords: Any,
    prototypes: Any | None = None,
) -> Snapshot:
    """Store the 2-D points of snapshot ``index`` of a run (replacing an earlier one)."""
    get_run(session, run_id)
    if int(index) < 0 or int(step) < 0:
        raise InvalidDataError(f"snapshot index and step must be non-negative, got {index}, {step}.")
    ids = [int(c) for c in clip_ids]
    if len(set(ids)) != len(ids):
        raise InvalidDataError(f"snapshot {index}: clip_ids contains duplicates.")
    packed = _pack(coords, "coords", len(ids))
    packed_protos = _pack(prototypes, "prototypes") if prototypes is not None else None
    existing = session.scalars(
        select(Snapshot).where(Snapshot.run_id == run_id, Snapshot.index == int(index))
    ).one_or_none()
    if existing is not None:
        session.delete(existing)
        session.flush()
    snapshot = Snapshot(
        run_id=run_id, index=int(index), step=int(step), clip_ids=ids, coords=packed, prototypes=packed_protos
    )
    session.add(snapshot)
    session.flush()
    return snapshot


def snapshots_for_run(session: Session, run_id: int) -> list[SnapshotData]:
    """Every snapshot of a run, in order, in one query."""
    rows = session.execute(
        select(Snapshot.index, Snapshot.step, Snapshot.clip_ids, Snapshot.coords, Snapshot.prototypes)
        .where(Snapshot.run_id == run_id)
        .order_by(Snapshot.index)
    ).all()
    return [
        SnapshotData(index, step, tuple(clip_ids), _unpack(coords), _unpack(prototypes))
        for index, step, clip_ids, coords, prototypes in rows
    ]


def last_snapshot(session: Session, run_id: int) -> SnapshotData | None:
    """The run's final snapshot (where its clips ended up), without reading the others."""
    row = session.execute(
        select(Snapshot.index, Snapshot.step, Snapshot.clip_ids, Snapshot.coords, Snapshot.prototypes)
        .where(Snapshot.run_id == run_id)
        .order_by(Snapshot.index.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    index, step, clip_ids, coords, prototypes = row
    return SnapshotData(index, step, tuple(clip_ids), _unpack(coords), _unpack(prototypes))


def snapshot_count(session: Session, run_id: int) -> int:
    return int(session.scalar(select(func.count()).where(Snapshot.run_id == run_id)) or 0)
