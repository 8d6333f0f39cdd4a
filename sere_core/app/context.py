"""What the app holds for its whole life: settings, the database, files, encoders, workers.

One :class:`AppContext` per process (built by ``build_app``), passed to every service function.
It holds *shared resources* only (a database engine, the blob store, loaded encoders, the worker
threads); everything that belongs to one user lives in the database or in Gradio's per-session
state, never here.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sere_core.encoders import DEFAULT_ENCODER
from sere_core.errors import ConfigError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The demo set shipped with the repository (see ``data/README.md``).
DEFAULT_DEMO_DIR = REPO_ROOT / "data" / "demo"


def _env_int(name: str, minimum: int = 1) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"${name} must be a whole number, got {raw!r}.") from None
    if value < minimum:
        raise ConfigError(f"${name} must be at least {minimum}, got {value}.")
    return value


#: ``$SERE_WORKSPACES``: one workspace for everyone (a private server), or one per visitor.
SINGLE, PER_VISITOR = "single", "per-visitor"


def default_workspaces() -> str:
    """``per-visitor`` on a Hugging Face Space (it sets ``$SPACE_ID``), else ``single``."""
    return PER_VISITOR if os.environ.get("SPACE_ID") else SINGLE


@dataclass(frozen=True)
class WorkspaceLimits:
    """What one workspace may hold when every visitor has their own (None: no limit).

    ``megabytes`` counts the uploaded recordings its projects use, each once (the demo's audio,
    shared by every workspace, is not counted). ``active_runs``: trainings queued or running.
    """

    projects: int | None = 20
    clips: int | None = 5000
    megabytes: int | None = 2000
    active_runs: int | None = 1

    @classmethod
    def from_env(cls) -> WorkspaceLimits:
        found = {name: _env_int(env) for name, env in (("projects", "SERE_MAX_PROJECTS"), ("clips", "SERE_MAX_CLIPS"),
                                                       ("megabytes", "SERE_MAX_MB"))}
        return cls(**{k: v for k, v in found.items() if v is not None})


#: A private server's single workspace has no limits.
UNLIMITED = WorkspaceLimits(None, None, None, None)


@dataclass(frozen=True)
class AppSettings:
    """Settings of one app process; :meth:`from_env` reads them from the environment.

    ``train_steps`` (``$SERE_TRAIN_STEPS``) overrides SERE's number of training steps, for quick
    demos and tests. ``encoder`` (``$SERE_ENCODER``) is the encoder new projects use.
    ``workspaces`` (``$SERE_WORKSPACES``) is :data:`SINGLE` or :data:`PER_VISITOR`; with one
    workspace per visitor, ``visitor_limits`` apply and anonymous workspaces nobody opened for
    ``idle_days`` (``$SERE_IDLE_DAYS``) are deleted. ``workers`` (``$SERE_WORKERS``) trainings
    and feature computations run at once, each on ``torch_threads`` (``$SERE_TORCH_THREADS``)
    threads; both are set once, when the app starts. ``warm_up`` (``$SERE_WARM_UP``, 0 to skip)
    readies the engine, the demo and UMAP in the background when the app starts.
    """

    data_dir: Path
    database_url: str | None = None
    encoder: str = DEFAULT_ENCODER
    train_steps: int | None = None
    demo_dir: Path = DEFAULT_DEMO_DIR
    cache_dir: Path | None = None
    torch_threads: int | None = None
    snapshots: int = 12
    workspaces: str = SINGLE
    visitor_limits: WorkspaceLimits = WorkspaceLimits()
    idle_days: float = 7.0
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    warm_up: bool = True

    def __post_init__(self) -> None:
        if self.workspaces not in (SINGLE, PER_VISITOR):
            raise ConfigError(f"$SERE_WORKSPACES must be {SINGLE!r} or {PER_VISITOR!r}, not {self.workspaces!r}.")
        if self.workers < 1 or self.idle_days <= 0:
            raise ConfigError("$SERE_WORKERS must be at least 1 and $SERE_IDLE_DAYS positive.")

    @property
    def limits(self) -> WorkspaceLimits:
        """The limits every workspace of this server has."""
        return self.visitor_limits if self.workspaces == PER_VISITOR else UNLIMITED

    @classmethod
    def from_env(cls, **overrides: Any) -> AppSettings:
        from sere_core.storage import default_data_dir

        values: dict[str, Any] = dict(
            data_dir=default_data_dir(),
            database_url=os.environ.get("SERE_DATABASE_URL") or None,
            encoder=os.environ.get("SERE_ENCODER", "").strip() or DEFAULT_ENCODER,
            train_steps=_env_int("SERE_TRAIN_STEPS"),
            demo_dir=Path(os.environ.get("SERE_DEMO_DIR", "") or DEFAULT_DEMO_DIR),
            cache_dir=Path(os.environ["SERE_CACHE_DIR"]) if os.environ.get("SERE_CACHE_DIR") else None,
            torch_threads=_env_int("SERE_TORCH_THREADS"),
            workspaces=os.environ.get("SERE_WORKSPACES", "").strip() or default_workspaces(),
            visitor_limits=WorkspaceLimits.from_env(),
            idle_days=_env_int("SERE_IDLE_DAYS"),
            workers=_env_int("SERE_WORKERS"),
            warm_up=os.environ.get("SERE_WARM_UP", "").strip().lower() not in ("0", "false", "no", "off"),
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        values = {k: v for k, v in values.items() if v is not None}
        values["data_dir"] = Path(values["data_dir"]).expanduser()
        return cls(**values)


_AUDIO_ID = re.compile(r"^[0-9a-f]{16,128}$")


class SegmentStore:
    """The processed (trimmed, loudness-normalized, 16 kHz) audio of each clip, for listening.

    ``<data dir>/segments/<ab>/<audio_id>.flac``. The encoders never read these 16-bit copies: they
    re-decode the uploaded recording, so features match ``sere embed`` exactly.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, audio_id: str) -> Path:
        if not _AUDIO_ID.match(audio_id):
            raise ConfigError(f"{audio_id!r} is not an audio id.")
        return self.root / audio_id[:2] / f"{audio_id}.flac"

    def put(self, audio_id: str, samples: np.ndarray, sample_rate: int) -> Path:
        from sere_core.audio import write_audio

        path = self.path(audio_id)
        if not path.is_file():
            clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
            write_audio(path, clipped, sample_rate, subtype="PCM_16")
        return path

    def get(self, audio_id: str) -> tuple[np.ndarray, int] | None:
        import soundfile as sf

        path = self.path(audio_id)
        if not path.is_file():
            return None
        samples, sr = sf.read(str(path), dtype="float32", always_2d=False)
        return samples, int(sr)

    def discard(self, audio_id: str) -> None:
        """Delete the listening copy (no clip uses this audio any more)."""
        self.path(audio_id).unlink(missing_ok=True)


class EncoderPool:
    """Encoders built and loaded once per process and shared by all jobs.

    Building (cheap, gives ``info``) and loading weights take separate locks, so a page asking for
    an encoder's identity never waits for a weight load. Encodes may run in several jobs at once
    (each on the process's thread settings, :func:`set_thread_limits`, one core per worker by
    default), so two jobs that need a project's features share the work; a clip being encoded is
    claimed, so no clip is encoded twice.
    """

    def __init__(self) -> None:
        self._encoders: dict[str, Any] = {}
        self._build_lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._claims: dict[tuple[str, str], threading.Event] = {}
        self._claims_lock = threading.Lock()

    def register(self, name: str, encoder: Any) -> None:
        """Use ``encoder`` (already built) for ``name``; for tests and embedding hosts."""
        with self._build_lock:
            self._encoders[name] = encoder

    def get(self, name: str) -> Any:
        """The encoder called ``name``, built but maybe not loaded."""
        from sere_core.encoders import get_encoder

        with self._build_lock:
            enc = self._encoders.get(name)
            if enc is None:
                enc = self._encoders[name] = get_encoder(name)
            return enc

    def info(self, name: str):
        """The encoder's ``EncoderInfo`` without loading weights."""
        return self.get(name).info

    def load(self, name: str) -> Any:
        """The encoder called ``name`` with its weights loaded (once)."""
        enc = self.get(name)
        with self._load_lock:
            if not enc.loaded:
                enc.load()
        return enc

    def features(self, name: str, audio_id: str, samples: np.ndarray, cache: Any, *,
                 wait: bool = True) -> np.ndarray | None:
        """The frames of clip ``audio_id``: from ``cache``, else encoded (once) and cached.

        While another job encodes the same clip this waits for its result, or, with
        ``wait=False``, returns None at once (the caller does other clips first)."""
        key = (name, audio_id)
        info = self.info(name)
        with self._claims_lock:
            busy = self._claims.get(key)
            if busy is None:
                frames = cache.get(audio_id, info)
                if frames is not None:
                    return frames
                self._claims[key] = claim = threading.Event()
        if busy is not None:
            if not wait:
                return None
            busy.wait()
            frames = cache.get(audio_id, info)
            return frames if frames is not None else self.features(name, audio_id, samples, cache)
        try:
            frames = self.load(name).encode(np.ascontiguousarray(samples, dtype=np.float32))
            cache.put(audio_id, info, frames)
            return np.asarray(frames, dtype=np.float32)
        finally:
            with self._claims_lock:
                del self._claims[key]
            claim.set()


def set_thread_limits(threads: int) -> None:
    """Give torch and the BLAS libraries ``threads`` threads for the whole process.

    Called once, when the app starts: these settings are process-wide, so changing them around
    each training or encode, from several worker threads, would let one job undo another's.
    """
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(max(1, int(threads)))
    threadpool_limits(limits=max(1, int(threads)))


@dataclass
class AppContext:
    """Shared resources of one app process. Build with :meth:`open`.

    ``audio_lock`` is held while audio files are stored or freed, so that freeing the audio of a
    deleted project never removes a file another import is adding a row for at that moment.
    """

    settings: AppSettings
    engine: Any
    sessions: Any
    blobs: Any
    cache: Any
    segments: SegmentStore
    encoders: EncoderPool
    secret: bytes
    jobs: Any = None
    demo_template: Any = field(default=None, repr=False)
    audio_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _closed: bool = field(default=False, repr=False)

    @classmethod
    def open(cls, settings: AppSettings | None = None, **overrides: Any) -> AppContext:
        """Open (create or migrate) the database under the data folder and start the job manager.

        Runs left "running" by a previous process are marked failed (their worker is gone).
        """
        from sere_core.app.jobs import JobManager
        from sere_core.app.secret_key import server_secret
        from sere_core.cache import EmbeddingCache
        from sere_core.storage import BlobStore, mark_stale_runs_failed, open_database, session_factory, session_scope

        settings = settings or AppSettings.from_env(**overrides)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = open_database(settings.database_url, data_dir=settings.data_dir)
        sessions = session_factory(engine)
        ctx = cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            blobs=BlobStore(settings.data_dir),
            cache=EmbeddingCache(settings.cache_dir),
            segments=SegmentStore(settings.data_dir / "segments"),
            encoders=EncoderPool(),
            secret=server_secret(settings.data_dir),
        )
        with session_scope(sessions) as session:
            stale = mark_stale_runs_failed(session)
            if stale:
                log.warning("marked %d abandoned training run(s) as failed", len(stale))
        ctx.jobs = JobManager(ctx)
        return ctx

    @contextmanager
    def session(self) -> Iterator[Any]:
        """One unit of work (commit on success, roll back on error)."""
        from sere_core.storage import session_scope

        with session_scope(self.sessions) as session:
            yield session

    def browser_state_secret(self) -> str:
        """The key ``gr.BrowserState`` encrypts with. Gradio hands it to the page, so it is a key
        derived from the server's secret, fixed across restarts (a random one would make every
        browser forget its open project at each restart)."""
        from sere_core.app.secret_key import derived_key

        return derived_key(self.secret, "gr.BrowserState")[:32]

    def export_dir(self) -> Path:
        folder = self.settings.data_dir / "exports"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def close(self, timeout: float = 10.0) -> None:
        """Ask running jobs to stop, wait a little for them, and release the database."""
        if self._closed:
            return
        self._closed = True
        if self.jobs is not None:
            self.jobs.shutdown(timeout=timeout)
        self.engine.dispose()
