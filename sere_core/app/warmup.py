"""The app's heavy start-up work, done in the background so the page is served within seconds.

:func:`import_engine` imports the heavy packages (torch, torchaudio, SERE's method, UMAP with
scikit-learn and numba) once per process, one thread at a time: two threads importing
overlapping packages at the same moment can deadlock on Python's per-module import locks
(importlib's ``_DeadlockError``), so every code path that needs them calls it first (the worker
pool before each job, the services that decode audio or build a model); whoever comes second
waits for the first. An encoder's own packages (transformers, for Whisper) are imported when it
is built, under ``EncoderPool``'s build lock.

:class:`Warmup` (started by ``JobManager.start``) readies, in order of need: the demo's clips,
the engine, the default encoder's weights, the demo's speech features (so a first
visitor's "Load demo" finds them cached) and UMAP's compiled kernels. The page shows what is
still warming up (:meth:`Warmup.status`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_engine_lock = threading.Lock()
_engine_ready = threading.Event()


def import_engine() -> None:
    """Import what training and decoding need, once per process (see the module docstring)."""
    if _engine_ready.is_set():
        return
    with _engine_lock:
        if _engine_ready.is_set():
            return
        import safetensors.torch  # noqa: F401
        import torchaudio  # noqa: F401
        import umap  # noqa: F401  (scikit-learn, scipy, numba, pynndescent)

        import sere_core.app.pipeline  # noqa: F401
        import sere_core.app.suggest  # noqa: F401
        import sere_core.method  # noqa: F401
        _engine_ready.set()


def engine_imported() -> bool:
    return _engine_ready.is_set()


class Warmup:
    """The start-up stages, run once in a background thread; :meth:`status` says what is left."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.stage: str | None = None
        self.done = threading.Event()
        self.seconds: dict[str, float] = {}
        self._thread: threading.Thread | None = None

    def stages(self) -> list[tuple[str, Callable[[], Any]]]:
        from sere_core.app.demo import demo_template, warm_demo_features
        from sere_core.viz import warm_up_umap

        ctx = self.ctx
        return [  # the demo's clips first: "Load demo" needs them, and they need no engine (16 kHz files)
            ("preparing the demo", lambda: demo_template(ctx)),
            ("loading the speech engine", import_engine),
            ("loading the speech encoder", lambda: ctx.encoders.load(ctx.settings.encoder)),
            ("listening to the demo", lambda: warm_demo_features(ctx)),
            ("preparing the resonance field", warm_up_umap),
        ]

    def start(self) -> None:
        if self._thread is None:
            stages = self.stages()
            self.stage = stages[0][0]
            self._thread = threading.Thread(target=self._run, args=(stages,), name="sere-warm-up", daemon=True)
            self._thread.start()

    def _run(self, stages: list[tuple[str, Callable[[], Any]]]) -> None:
        started = time.perf_counter()
        for name, step in stages:
            self.stage = name
            t0 = time.perf_counter()
            try:
                step()
            except Exception:  # warming is an optimisation: a failure shows up again where it matters
                log.exception("warm-up: %s failed", name)
            self.seconds[name] = round(time.perf_counter() - t0, 2)
        self.stage = None
        self.done.set()
        log.info("warmed up in %.1f s: %s", time.perf_counter() - started,
                 ", ".join(f"{k} {v} s" for k, v in self.seconds.items()))

    @property
    def started(self) -> bool:
        return self._thread is not None

    def status(self) -> str:
        """What is still warming up, in words ("" once everything is ready, or if it never started)."""
        if self._thread is None or self.done.is_set() or self.stage is None:
            return ""
        return f"Getting ready: {self.stage}…"
