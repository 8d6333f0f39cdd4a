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

from sere_core.errors import ConfigError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The demo set shipped with the repository (see ``data/README.md``).
DEFAULT_DEMO_DIR = REPO_ROOT / "data" / "demo"
DEFAULT_ENCODER = "whisper-base"


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


@dataclass(frozen=True)
class AppSettings:
    """Settings of one app process; :meth:`from_env` reads them from the environment.

    ``train_steps`` (``$SERE_TRAIN_STEPS``) overrides SERE's number of training steps, for quick
    demos and tests. ``encoder`` (``$SERE_ENCODER``) is the encoder new projects use.
    """

    data_dir: Path
    database_url: str | None = None
    encoder: str = DEFAULT_ENCODER
    train_steps: int | None = None
    demo_dir: Path = DEFAULT_DEMO_DIR
    cache_dir: Path | None = None
    torch_threads: int | None = None
    snapshots: int = 12

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
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
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


class EncoderPool:
    """Encoders built and loaded once per process and shared by all jobs.

    Building (cheap, gives ``info``) and running (loading weights, encoding) take separate locks,
    so a page asking for an encoder's identity never waits for a 15-second weight load.
    One encode runs at a time: they are CPU-bound and would only compete for the same cores.
    """

    def __init__(self, torch_threads: int | None = None) -> None:
        self._encoders: dict[str, Any] = {}
        self._build_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self.torch_threads = torch_threads

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
                options = {}
                if self.torch_threads and name == "whisper-base":
                    options["num_threads"] = self.torch_threads
                enc = self._encoders[name] = get_encoder(name, **options)
            return enc

    def info(self, name: str):
        """The encoder's ``EncoderInfo`` without loading weights."""
        return self.get(name).info

    def encode(self, name: str, samples: np.ndarray) -> np.ndarray:
        enc = self.get(name)
        with self._run_lock:
            if not enc.loaded:
                enc.load()
            return enc.encode(samples)


@dataclass
class AppContext:
    """Shared resources of one app process. Build with :meth:`open`."""

    settings: AppSettings
    engine: Any
    sessions: Any
    blobs: Any
    cache: Any
    segments: SegmentStore
    encoders: EncoderPool
    jobs: Any = None
    _closed: bool = field(default=False, repr=False)
    _locks: dict[int, threading.Lock] = field(default_factory=dict, repr=False)
    _locks_guard: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def open(cls, settings: AppSettings | None = None, **overrides: Any) -> AppContext:
        """Open (create or migrate) the database under the data folder and start the job manager.

        Runs left "running" by a previous process are marked failed (their worker is gone).
        """
        from sere_core.app.jobs import JobManager
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
            encoders=EncoderPool(settings.torch_threads),
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

    def project_lock(self, project_id: int) -> threading.Lock:
        """A lock per project, so two jobs of one project never compute the same features twice."""
        with self._locks_guard:
            return self._locks.setdefault(int(project_id), threading.Lock())

    def project_dir(self, project_id: int) -> Path:
        folder = self.settings.data_dir / "projects" / f"project-{int(project_id)}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def browser_state_secret(self) -> str:
        """The key ``gr.BrowserState`` encrypts with. Gradio hands it to the page, so it is a key
        derived from the server's secret, fixed across restarts (a random one would make every
        browser forget its open project at each restart)."""
        from sere_core.app.secret_key import derived_key, server_secret

        return derived_key(server_secret(self.settings.data_dir), "gr.BrowserState")[:32]

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
