"""Background work of the app: a bounded pool of worker threads for trainings and feature
computations, the start-up warm-up (``warmup.Warmup``) and a maintenance loop.

The database is the source of truth for training (status, progress, losses, results), so a page
reload, another browser tab or a second app process all see the same run. What only this process
knows (a run's phase in words, its place in the queue) lives here.

At most ``settings.workers`` jobs run at once (one per core by default), outside the web
server's request threads: a training pressed while others run waits in the queue ("queued"), and
its place is shown on the page. Trainings go before feature computations, then first come first
served, and a feature computation pauses while another project trains. Each job first makes sure
the heavy packages are imported (``warmup.import_engine``). The threads are daemons that start
with the first job; :meth:`JobManager.shutdown` asks running jobs to stop at their next progress
update.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

TRAINING, FEATURES = 0, 1  # priorities: lower goes first
#: Seconds between maintenance rounds (heartbeats of queued runs); expiry runs every hour.
MAINTENANCE_EVERY_S = 60.0


@dataclass
class EmbedStatus:
    """How far a project's background feature computation got (for the page)."""

    done: int = 0
    total: int = 0
    running: bool = False
    paused: bool = False
    error: str | None = None


class WorkerPool:
    """Runs jobs on at most ``workers`` threads, by priority then arrival.

    Jobs have keys: one job of a key waits at a time (submitting again while it waits changes
    nothing), and a job never runs beside another of its key: one submitted while its key runs
    waits for it, then runs (a feature computation asked again during an upload looks again).
    """

    def __init__(self, workers: int, name: str = "sere-worker") -> None:
        self.workers, self.name = max(1, int(workers)), name
        self._cv = threading.Condition()
        self._waiting: list[tuple[int, int, Hashable]] = []  # (priority, arrival, key), sorted
        self._jobs: dict[Hashable, Callable[[], Any]] = {}  # waiting, by key
        self._running: set[Hashable] = set()
        self._threads: list[threading.Thread] = []
        self._order = itertools.count()
        self._closed = False

    def submit(self, key: Hashable, fn: Callable[[], Any], priority: int = 0) -> bool:
        """Queue ``fn`` under ``key``; False (nothing queued) while a job of that key waits."""
        with self._cv:
            if self._closed or key in self._jobs:
                return False
            self._jobs[key] = fn
            self._waiting.append((priority, next(self._order), key))
            self._waiting.sort()
            if len(self._threads) < self.workers:
                thread = threading.Thread(target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
            self._cv.notify_all()
            return True

    def position(self, key: Hashable) -> int | None:
        """``key``'s place in the queue (1: it starts next), 0 while it runs, None when the pool
        does not have it."""
        with self._cv:
            if key in self._jobs:
                return 1 + next(i for i, entry in enumerate(self._waiting) if entry[2] == key)
            return 0 if key in self._running else None

    def running(self) -> set[Hashable]:
        with self._cv:
            return set(self._running)

    def discard(self, key: Hashable) -> bool:
        """Drop ``key`` if it is still waiting (a cancelled training); True if it was."""
        with self._cv:
            if self._jobs.pop(key, None) is None:
                return False
            self._waiting = [entry for entry in self._waiting if entry[2] != key]
            return True

    def _next(self) -> Hashable | None:
        """The first waiting key whose key does not run now."""
        return next((key for _, _, key in self._waiting if key not in self._running), None)

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._closed and self._next() is None:
                    self._cv.wait()
                if self._closed:
                    return
                key = self._next()
                self._waiting = [entry for entry in self._waiting if entry[2] != key]
                fn = self._jobs.pop(key)
                self._running.add(key)
            try:
                fn()
            except Exception:  # a job records its own failure; this is a bug in it
                log.exception("background job %s failed", key)
            finally:
                with self._cv:
                    self._running.discard(key)
                    self._cv.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until nothing waits or runs; True if so (for tests and shutdown)."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._jobs and not self._running, timeout)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._jobs.clear()
            self._waiting.clear()
            self._cv.notify_all()


class JobManager:
    """The app process's background work: trainings and feature computations in a
    :class:`WorkerPool`, and (once started) a maintenance loop."""

    def __init__(self, ctx: Any) -> None:
        from sere_core.app.warmup import Warmup

        self.ctx = ctx
        self.pool = WorkerPool(ctx.settings.workers)
        self.warmup = Warmup(ctx)
        self._stop = threading.Event()
        self._phase: dict[int, str] = {}
        self._live: dict[int, Any] = {}  # run id -> its newest LiveField, while it trains
        self._embed_status: dict[int, EmbedStatus] = {}
        self._trains: dict[int, int] = {}  # run id -> project id
        self._maintenance: threading.Thread | None = None

    def start(self) -> None:
        """What the app process starts besides the page: the warm-up (unless the settings say not
        to) and the maintenance loop."""
        if self.ctx.settings.warm_up:
            self.warmup.start()
        self.start_maintenance()

    def _submit(self, key: tuple, fn: Callable[[], Any], priority: int) -> bool:
        from sere_core.app.warmup import import_engine

        def job() -> None:
            import_engine()  # once per process; see warmup.py
            fn()

        return self.pool.submit(key, job, priority)

    # --- feature warming ---------------------------------------------------------------------
    def warm_features(self, project_id: int) -> bool:
        """Compute the features of the project's clips in the background, as soon as they come in.

        Called while the project's job runs (an upload adding clips), another pass waits and then
        looks again. It yields to trainings of other projects, waiting while one runs (a training
        of this project computes what it needs itself).
        """
        from sere_core.app.pipeline import embed_clips
        from sere_core.storage import clip_records, get_project

        def progress(done: int, total: int) -> bool:
            status.done, status.total = done, total
            while self.training_elsewhere(project_id) and not self._stop.is_set():
                status.paused = True
                self._stop.wait(0.2)
            status.paused = False
            return not self._stop.is_set()

        def work() -> None:
            status.running, status.error = True, None
            try:
                with self.ctx.session() as s:
                    encoder = get_project(s, project_id).encoder
                    records = clip_records(s, project_id)
                embed_clips(self.ctx, project_id, encoder, records, progress, keep=False)
            except Exception as exc:  # shown on the page; training will report it properly
                if not self._stop.is_set():
                    log.warning("feature warming of project %s stopped: %s", project_id, exc)
                    status.error = str(exc)
            finally:
                status.running = False

        status = self._embed_status.setdefault(project_id, EmbedStatus())
        return self._submit(("features", project_id), work, FEATURES)

    def training_elsewhere(self, project_id: int) -> bool:
        """Whether a training of another project runs in this process now."""
        return any(key[0] == "train" and self._trains.get(key[1]) != project_id for key in self.pool.running())

    def embed_status(self, project_id: int) -> EmbedStatus | None:
        return self._embed_status.get(project_id)

    # --- training ------------------------------------------------------------------------------
    def start_training(self, project_id: int, run_id: int) -> None:
        """Queue :func:`~sere_core.app.pipeline.run_training` of a queued run in the pool."""
        from sere_core.app.pipeline import run_training

        self._phase[run_id] = "Waiting for a free worker"
        self._trains[run_id] = project_id
        def train() -> None:
            try:
                run_training(self.ctx, project_id, run_id, self._stop, self._set_phase(run_id),
                             lambda live: self._live.__setitem__(run_id, live))
            finally:  # the finished run's field replaces the live one
                self._live.pop(run_id, None)

        self._submit(("train", run_id), train, TRAINING)

    def _set_phase(self, run_id: int) -> Callable[[str], None]:
        def set_phase(text: str) -> None:
            self._phase[run_id] = text
        return set_phase

    def phase(self, run_id: int) -> str | None:
        """What the run's worker in this process is doing now, in words (None if not here)."""
        return self._phase.get(run_id)

    def live(self, run_id: int) -> Any:
        """The newest snapshot of a run training in this process, in 2-D (a ``pipeline.LiveField``),
        or None."""
        return self._live.get(run_id)

    def queue_position(self, run_id: int) -> int | None:
        """The run's place in the queue (1: it starts next), 0 while it runs, None if this process
        does not have it."""
        return self.pool.position(("train", run_id))

    def forget(self, run_id: int) -> None:
        """A cancelled run that still waits never starts."""
        if self.pool.discard(("train", run_id)):
            self._phase[run_id] = "Cancelled"

    def is_running_here(self, run_id: int) -> bool:
        return self.pool.position(("train", run_id)) is not None

    # --- maintenance -------------------------------------------------------------------------
    def start_maintenance(self) -> None:
        """Keep waiting runs alive (heartbeats) and, with one workspace per visitor, delete the
        anonymous workspaces nobody opened for ``settings.idle_days``, at start and then hourly."""
        if self._maintenance is None:
            self._maintenance = threading.Thread(target=self._maintain, name="sere-maintenance", daemon=True)
            self._maintenance.start()

    def _maintain(self) -> None:
        from sere_core.app.context import PER_VISITOR
        from sere_core.app.projects import expire_idle_workspaces
        from sere_core.storage import touch_queued_runs

        rounds = itertools.count()
        while not self._stop.is_set():
            try:
                with self.ctx.session() as s:
                    touch_queued_runs(s)
                if self.ctx.settings.workspaces == PER_VISITOR and next(rounds) % 60 == 0:
                    expire_idle_workspaces(self.ctx)
            except Exception:  # the next round tries again
                log.exception("maintenance round failed")
            self._stop.wait(MAINTENANCE_EVERY_S)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for every job queued so far; True if all ended (for tests and shutdown)."""
        return self.pool.wait(timeout)

    def shutdown(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.pool.close()
        self.pool.wait(timeout)
