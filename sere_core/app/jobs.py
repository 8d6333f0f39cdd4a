"""Background work of the app: a bounded pool of worker threads for trainings and feature
computations, and a maintenance loop.

The database is the source of truth for training (status, progress, losses, results), so a page
reload, another browser tab or a second app process all see the same run. What only this process
knows (a run's phase in words, its place in the queue) lives here.

At most ``settings.workers`` jobs run at once (one per core by default), outside the web
server's request threads: a training pressed while others run waits in the queue ("queued"), and
its place is shown on the page. Trainings go before feature computations, then first come first
served. The threads are daemons that start with the first job; :meth:`JobManager.shutdown` asks
running jobs to stop at their next progress update.
"""

from __future__ import annotations

import heapq
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
    done: int = 0
    total: int = 0
    running: bool = False
    error: str | None = None


def import_worker_modules() -> None:
    """Import, in the calling thread, the heavy packages the worker threads would import lazily.

    Two threads importing overlapping packages at the same moment can deadlock on Python's per-module
    import locks (importlib's ``_DeadlockError``): a worker's first ``import torch`` or transformers
    while a request thread imports plotly is such a case. Called once, before any worker starts.
    """
    import safetensors.torch  # noqa: F401
    import torchaudio  # noqa: F401
    from transformers.models.whisper import modeling_whisper  # noqa: F401

    import sere_core.app.pipeline  # noqa: F401
    import sere_core.encoders.hf  # noqa: F401
    import sere_core.encoders.prosody  # noqa: F401
    import sere_core.encoders.whisper  # noqa: F401
    import sere_core.method  # noqa: F401


class WorkerPool:
    """Runs jobs on at most ``workers`` threads, by priority then arrival; one job per key."""

    def __init__(self, workers: int, name: str = "sere-worker") -> None:
        self.workers, self.name = max(1, int(workers)), name
        self._cv = threading.Condition()
        self._heap: list[tuple[int, int, Hashable]] = []
        self._jobs: dict[Hashable, Callable[[], Any]] = {}  # waiting
        self._running: set[Hashable] = set()
        self._threads: list[threading.Thread] = []
        self._order = itertools.count()
        self._closed = False

    def submit(self, key: Hashable, fn: Callable[[], Any], priority: int = 0) -> bool:
        """Queue ``fn`` under ``key``; False (nothing queued) while a job of that key waits or runs."""
        with self._cv:
            if self._closed or key in self._jobs or key in self._running:
                return False
            self._jobs[key] = fn
            heapq.heappush(self._heap, (priority, next(self._order), key))
            if len(self._threads) < self.workers:
                thread = threading.Thread(target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
            self._cv.notify()
            return True

    def position(self, key: Hashable) -> int | None:
        """``key``'s place in the queue (1: it starts next), 0 while it runs, None when the pool
        does not have it."""
        with self._cv:
            if key in self._running:
                return 0
            if key not in self._jobs:
                return None
            mine = next(entry for entry in self._heap if entry[2] == key)
            return 1 + sum(1 for entry in self._heap if entry < mine and entry[2] in self._jobs)

    def discard(self, key: Hashable) -> bool:
        """Drop ``key`` if it is still waiting (a cancelled training); True if it was."""
        with self._cv:
            return self._jobs.pop(key, None) is not None

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._closed and not self._ready():
                    self._cv.wait()
                if self._closed:
                    return
                _, _, key = heapq.heappop(self._heap)
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

    def _ready(self) -> bool:
        while self._heap and self._heap[0][2] not in self._jobs:  # discarded
            heapq.heappop(self._heap)
        return bool(self._heap)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until nothing waits or runs; True if so (for tests and shutdown)."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._jobs and not self._running, timeout)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._jobs.clear()
            self._cv.notify_all()


class JobManager:
    """The app process's background work: trainings and feature computations in a
    :class:`WorkerPool`, and (once started) a maintenance loop."""

    def __init__(self, ctx: Any) -> None:
        import_worker_modules()
        self.ctx = ctx
        self.pool = WorkerPool(ctx.settings.workers)
        self._stop = threading.Event()
        self._phase: dict[int, str] = {}
        self._embed_status: dict[int, EmbedStatus] = {}
        self._maintenance: threading.Thread | None = None

    # --- feature warming ---------------------------------------------------------------------
    def warm_features(self, project_id: int) -> bool:
        """Compute the features of the project's clips in the background (once per project at a
        time), after any waiting training: the user's labeling time then saves waiting later."""
        from sere_core.app.pipeline import embed_clips
        from sere_core.storage import clip_records, get_project

        status = EmbedStatus(running=True)

        def work() -> None:
            self._embed_status[project_id] = status
            try:
                with self.ctx.session() as s:
                    encoder = get_project(s, project_id).encoder
                    records = clip_records(s, project_id)

                def progress(done: int, total: int) -> bool:
                    status.done, status.total = done, total
                    return not self._stop.is_set()

                embed_clips(self.ctx, project_id, encoder, records, progress, keep=False)
            except Exception as exc:  # shown on the page; training will report it properly
                if not self._stop.is_set():
                    log.warning("feature warming of project %s stopped: %s", project_id, exc)
                    status.error = str(exc)
            finally:
                status.running = False

        return self.pool.submit(("features", project_id), work, FEATURES)

    def embed_status(self, project_id: int) -> EmbedStatus | None:
        return self._embed_status.get(project_id)

    # --- training ------------------------------------------------------------------------------
    def start_training(self, project_id: int, run_id: int) -> None:
        """Queue :func:`~sere_core.app.pipeline.run_training` of a queued run in the pool."""
        from sere_core.app.pipeline import run_training

        self._phase[run_id] = "Waiting for a free worker"
        self.pool.submit(("train", run_id),
                         lambda: run_training(self.ctx, project_id, run_id, self._stop, self._set_phase(run_id)),
                         TRAINING)

    def _set_phase(self, run_id: int) -> Callable[[str], None]:
        def set_phase(text: str) -> None:
            self._phase[run_id] = text
        return set_phase

    def phase(self, run_id: int) -> str | None:
        """What the run's worker in this process is doing now, in words (None if not here)."""
        return self._phase.get(run_id)

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
