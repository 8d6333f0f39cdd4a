"""Training: whether a project can train, queueing a run in the worker pool, following and
cancelling it. The run itself (features, fit, predictions, field) is ``pipeline.run_training``.

A project has at most one queued or running run, whoever started it: every tab follows that run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from sere_core import storage as st
from sere_core.app.access import Caller
from sere_core.app.context import AppContext
from sere_core.app.labeling import SHOTS
from sere_core.app.messages import plural
from sere_core.app.projects import check_room
from sere_core.app.warmup import import_engine
from sere_core.errors import TrainingDataError


@dataclass(frozen=True)
class TrainingStatus:
    run_id: int
    status: str
    step: int
    total_steps: int | None
    progress: float
    losses: list[dict[str, float]]
    error: str | None
    phase: str | None
    metrics: dict[str, Any]
    members: int = 1  # models of the ensemble, trained one after another within the steps
    #: Its place in the worker pool's queue (1: it starts next), 0 while it runs here, None when
    #: this process does not have it.
    queue_position: int | None = None

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")

    @property
    def key(self) -> tuple[Any, ...]:
        """What changes whenever the page should redraw the run."""
        return (self.run_id, self.status, self.step, self.phase, self.queue_position)

    def history(self) -> pd.DataFrame:
        """Loss history as a long table ``step, term, value`` (for the training curve)."""
        rows = [(int(entry["step"]), str(k), float(v)) for entry in self.losses
                for k, v in entry.items() if k != "step"]
        return pd.DataFrame(rows, columns=["step", "term", "value"])


@dataclass(frozen=True)
class Readiness:
    """Whether a project can train now, and what to tell the user (problems or advice)."""

    ok: bool
    notes: list[str]
    counts: dict[str, int]


def training_config(ctx: AppContext, session: Any, project: Any) -> dict[str, Any]:
    """The SERE settings a new run of ``project`` uses: ``recommended_config`` for its encoder,
    with per-speaker normalization when its clips name their speakers (it added about 3 UAR points
    on the benchmark), ``$SERE_TRAIN_STEPS`` applied, snapshots spread so the replay has about
    ``settings.snapshots`` frames, and the process's thread settings left alone."""
    import_engine()
    from sere_core.method import recommended_config

    base = recommended_config(ctx.encoders.info(project.encoder),
                              per_speaker_norm=st.names_speakers(session, project.id))
    steps = ctx.settings.train_steps or base.steps
    every = max(1, round(steps / max(1, ctx.settings.snapshots)))
    return replace(base, steps=steps, snapshot_every=every, num_threads=0).to_dict()


def readiness(session: Any, project: Any) -> Readiness:
    counts = st.label_counts(session, project.id)
    notes: list[str] = []
    labeled = [e for e, n in counts.items() if n > 0]
    ok = len(labeled) >= 2
    if not ok:
        notes.append("Label clips of at least two emotions (5 per emotion is best).")
    missing = [e for e, n in counts.items() if n == 0]
    if ok and missing:
        notes.append(f"No clip is labeled {', '.join(missing)}: the model will not predict "
                     f"{'it' if len(missing) == 1 else 'them'}.")
    few = [e for e, n in counts.items() if 0 < n < SHOTS]
    if ok and few:
        notes.append(f"Fewer than {SHOTS} labels for {', '.join(few)}; more labels give steadier results.")
    if st.project_counts(session, project.id).n_target == 0:
        notes.append("No target-language clips yet: SERE learns best with unlabeled target clips (step 3).")
    return Readiness(ok, notes, counts)


def start_training(ctx: AppContext, caller: Caller, project_id: int) -> int:
    """Queue a training run in the worker pool; returns the run id.

    Raises :class:`TrainingDataError` when there are too few labels and :class:`ActiveRunError`
    when the project is already training.
    """
    with ctx.session() as s:  # this process runs it: a restart fails it even if it never started
        project = st.owned_project(s, caller.workspace, project_id)
        ready = readiness(s, project)
        if not ready.ok:
            raise TrainingDataError(" ".join(ready.notes))
        if st.active_run(s, project.id) is None:  # else create_run says the project is training
            check_room(ctx, s, caller, runs=1)
        run = st.create_run(s, project.id, {"sere": training_config(ctx, s, project)}, worker_pid=os.getpid())
        run_id = run.id
    ctx.jobs.start_training(int(project_id), run_id)
    return run_id


def members_of(run: Any) -> int:
    """How many models the run's SERE ensemble trains (1 for runs stored without it)."""
    return max(1, int(((run.config or {}).get("sere") or {}).get("ensemble") or 1))


def status_of(ctx: AppContext, run: Any) -> TrainingStatus:
    return TrainingStatus(run.id, run.status.value, int(run.step or 0), run.total_steps,
                          float(run.progress or 0.0), list(run.losses or []), run.error,
                          ctx.jobs.phase(run.id) if ctx.jobs else None, dict(run.metrics or {}),
                          members_of(run), ctx.jobs.queue_position(run.id) if ctx.jobs else None)


def current_status(ctx: AppContext, session: Any, project_id: int) -> TrainingStatus | None:
    """The project's active run, else its latest run; None if it never trained."""
    run = st.active_run(session, project_id) or st.latest_run(session, project_id)
    return status_of(ctx, run) if run is not None else None


def training_status(ctx: AppContext, caller: Caller, project_id: int) -> TrainingStatus | None:
    with ctx.session() as s:
        return current_status(ctx, s, st.owned_project(s, caller.workspace, project_id).id)


def cancel_training(ctx: AppContext, caller: Caller, project_id: int) -> TrainingStatus | None:
    """Cancel the project's queued or running run (None: there is none)."""
    with ctx.session() as s:
        run = st.active_run(s, st.owned_project(s, caller.workspace, project_id).id)
        if run is None:
            return None
        status = status_of(ctx, st.cancel_run(s, run.id))
    ctx.jobs.forget(run.id)
    return status


def queue_note(position: int | None) -> str:
    """The Train tab's words for a run's place in the worker pool's queue.

    >>> queue_note(1), queue_note(3), queue_note(0)
    ('next in the queue', 'number 3 in the queue: 2 trainings start before it', '')
    """
    if not position:
        return ""
    if position == 1:
        return "next in the queue"
    ahead = position - 1
    return f"number {position} in the queue: {plural(ahead, 'training')} {'starts' if ahead == 1 else 'start'} before it"
