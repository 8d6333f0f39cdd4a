"""Background work of the app: worker threads for training and for warming the feature cache.

The database is the source of truth for training (status, progress, losses, results), so a page
reload, another browser tab or a second app process all see the same run. What only this process
knows (a human-readable phase line, the feature-warming progress) lives here, per run or project.
Threads are daemons; :meth:`JobManager.shutdown` asks them to stop at their next progress update.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


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


class JobManager:
    """Starts and tracks the worker threads of one app process."""

    def __init__(self, ctx: Any) -> None:
        import_worker_modules()
        self.ctx = ctx
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._training: dict[int, threading.Thread] = {}
        self._embedding: dict[int, threading.Thread] = {}
        self._phase: dict[int, str] = {}
        self._embed_status: dict[int, EmbedStatus] = {}

    # --- feature warming ---------------------------------------------------------------------
    def warm_features(self, project_id: int) -> threading.Thread | None:
        """Compute the features of the project's clips in the background (no-op if running).

        Training would compute them anyway; doing it right after an upload means the user's
        labeling time is not wasted waiting later.
        """
        from sere_core.app.pipeline import clip_records, embed_clips

        with self._lock:
            if self._stop.is_set():
                return None
            thread = self._embedding.get(project_id)
            if thread is not None and thread.is_alive():
                return thread
            status = self._embed_status[project_id] = EmbedStatus(running=True)

            def work() -> None:
                try:
                    with self.ctx.session() as s:
                        from sere_core.storage import get_project

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

            thread = threading.Thread(target=work, name=f"sere-features-{project_id}", daemon=True)
            self._embedding[project_id] = thread
            thread.start()
            return thread

    def embed_status(self, project_id: int) -> EmbedStatus | None:
        return self._embed_status.get(project_id)

    # --- training ------------------------------------------------------------------------------
    def start_training(self, project_id: int, run_id: int) -> threading.Thread:
        """Run :func:`~sere_core.app.pipeline.run_training` for a queued run in a worker thread."""
        from sere_core.app.pipeline import run_training

        def set_phase(text: str) -> None:
            self._phase[run_id] = text

        with self._lock:
            self._phase[run_id] = "Waiting to start"
            thread = threading.Thread(
                target=run_training, args=(self.ctx, project_id, run_id, self._stop, set_phase),
                name=f"sere-train-{run_id}", daemon=True,
            )
            self._training[run_id] = thread
            thread.start()
            return thread

    def phase(self, run_id: int) -> str | None:
        """What the run's worker in this process is doing now, in words (None if not here)."""
        return self._phase.get(run_id)

    def is_running_here(self, run_id: int) -> bool:
        thread = self._training.get(run_id)
        return thread is not None and thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for every thread started so far; True if all ended (for tests and shutdown)."""
        with self._lock:
            threads = list(self._training.values()) + list(self._embedding.values())
        for t in threads:
            t.join(timeout)
        return not any(t.is_alive() for t in threads)

    def shutdown(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.wait(timeout)
