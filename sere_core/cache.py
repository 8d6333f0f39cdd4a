"""On-disk embedding cache: frames keyed by (audio id, encoder name, version, layers).

Layout under the root (``$SERE_CACHE_DIR``, else the user cache dir's ``embeddings`` folder)::

    <cache_key(info)>/info.json              # the EncoderInfo, for people reading the folder
    <cache_key(info)>/<ab>/<audio_id>.npy    # float16 frames [T, D]; ab = sha256(audio_id)[:2]

Frames are stored as float16 ``.npy`` (no pickle) and come back as float32. Every write goes to
a unique temporary file in the target folder, is fsynced and then renamed over the target, so
readers never see half a file and concurrent writers of one key leave one complete file. A file
that cannot be read (truncated, corrupt, wrong shape) counts as a miss, is logged and is
overwritten by the next ``put``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
from pathlib import Path

import numpy as np

from sere_core.atomic import atomic_write
from sere_core.encoders.base import EncoderInfo, cache_key
from sere_core.errors import ConfigError

log = logging.getLogger(__name__)

ENV_VAR = "SERE_CACHE_DIR"
_AUDIO_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}$")
_F16_MAX = float(np.finfo(np.float16).max)


def default_cache_dir() -> Path:
    """``$SERE_CACHE_DIR`` if set, else ``<user cache dir>/sere-studio/embeddings``."""
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("sere-studio")) / "embeddings"


class EmbeddingCache:
    """A plain store of frame features; see the module docstring for layout and guarantees."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.root)!r})"

    # ------------------------------------------------------------------ paths

    @staticmethod
    def _check_id(audio_id: str) -> str:
        if not isinstance(audio_id, str) or not _AUDIO_ID.match(audio_id) or audio_id.endswith(".tmp"):
            raise ConfigError(
                f"cache: audio id {audio_id!r} must be 1-200 letters, digits, '_', '-' or '.', "
                "not starting with '.' or '-' (use sere_core.audio.audio_hash)."
            )
        return audio_id

    def folder(self, info: EncoderInfo) -> Path:
        """The folder holding every entry made by ``info``."""
        return self.root / cache_key(info)

    def path(self, audio_id: str, info: EncoderInfo) -> Path:
        """Where the frames of ``audio_id`` under ``info`` live (whether or not they exist)."""
        audio_id = self._check_id(audio_id)
        shard = hashlib.sha256(audio_id.encode("utf-8")).hexdigest()[:2]
        return self.folder(info) / shard / f"{audio_id}.npy"

    # ------------------------------------------------------------------ store

    def get(self, audio_id: str, info: EncoderInfo) -> np.ndarray | None:
        """float32 ``[T, D]`` frames, or None on a miss (absent or unreadable file)."""
        path = self.path(audio_id, info)
        try:
            with open(path, "rb") as handle:  # .npy only: no .npz sniffing, no pickle
                frames = np.lib.format.read_array(handle, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError) as exc:
            log.warning("cache: unreadable entry %s treated as a miss (%s)", path, exc)
            return None
        if frames.dtype != np.float16 or frames.ndim != 2 or (info.dim and frames.shape[1] != info.dim):
            log.warning(
                "cache: entry %s has dtype %s shape %s, expected float16 [T, %d]; treated as a miss",
                path, frames.dtype, frames.shape, info.dim,
            )
            return None
        return frames.astype(np.float32)

    def put(self, audio_id: str, info: EncoderInfo, frames: np.ndarray) -> None:
        """Store float32 ``[T, D]`` frames (as float16) atomically, replacing any earlier entry."""
        path = self.path(audio_id, info)
        array = np.asarray(frames)
        if array.ndim != 2 or (info.dim and array.shape[1] != info.dim):
            raise ConfigError(
                f"cache: frames for {audio_id} have shape {array.shape}; {info.name} makes [T, {info.dim}]."
            )
        if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
            raise ConfigError(f"cache: frames for {audio_id} must be finite floating-point numbers.")
        if np.abs(array).max(initial=0.0) > _F16_MAX:
            raise ConfigError(f"cache: frames for {audio_id} exceed the float16 range (|x| > {_F16_MAX:g}).")
        half = np.ascontiguousarray(array, dtype=np.float16)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write_info(info)
        atomic_write(path, lambda handle: np.save(handle, half, allow_pickle=False))

    def discard(self, audio_id: str) -> int:
        """Delete the entries of ``audio_id`` made by every encoder; returns how many there were."""
        audio_id = self._check_id(audio_id)
        shard = hashlib.sha256(audio_id.encode("utf-8")).hexdigest()[:2]
        found = 0
        for path in self.root.glob(f"*/{shard}/{audio_id}.npy"):
            path.unlink(missing_ok=True)
            found += 1
        return found

    def _write_info(self, info: EncoderInfo) -> None:
        target = self.folder(info) / "info.json"
        if target.is_file():
            return
        text = json.dumps(dataclasses.asdict(info), indent=2, sort_keys=True) + "\n"
        atomic_write(target, lambda handle: handle.write(text.encode("utf-8")))
