"""What every encoder shares: its identity card, the base class and input checks.

An encoder turns 16 kHz mono float32 samples into frame features ``[T, D]`` (float32). Building
one is cheap (no weights are read); :meth:`Encoder.load` reads and verifies the weights, and
:meth:`Encoder.encode` loads on first use. ``info`` is known without loading so that the cache
can be consulted before any model is read.
"""

from __future__ import annotations

import contextlib
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from sere_core.errors import ConfigError, InvalidSamplesError, TooShortError

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class EncoderInfo:
    """Identity of an encoder's output.

    ``version`` changes whenever the weights or the feature computation change, so cached frames
    from an older version are never mixed with new ones. ``dim`` is the total width of the
    concatenated ``layers`` (empty for encoders without layers).
    """

    name: str
    version: str
    frame_rate: float
    dim: int
    layers: tuple[int, ...] = ()


@dataclass(frozen=True)
class EncoderStatus:
    """Whether an encoder can be used here, and why (not)."""

    name: str
    available: bool
    detail: str


def cache_key(info: EncoderInfo) -> str:
    """Name of the cache entry for frames made by ``info`` (24 hex digits).

    Two infos that differ in name, version or layers never share a key; frame rate and dim follow
    from those and are included only as a guard.

    >>> a = EncoderInfo("prosody", "prosody-v1", 100.0, 45)
    >>> cache_key(a) == cache_key(EncoderInfo("prosody", "prosody-v1", 100.0, 45))
    True
    >>> cache_key(a) == cache_key(EncoderInfo("prosody", "prosody-v2", 100.0, 45))
    False
    """
    layers = ",".join(str(int(i)) for i in info.layers)
    text = f"{info.name}\n{info.version}\n{layers}\n{float(info.frame_rate)!r}\n{int(info.dim)}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def check_samples(samples: np.ndarray, min_samples: int, name: str) -> np.ndarray:
    """Return ``samples`` as a contiguous float32 vector or raise a typed error."""
    array = np.asarray(samples)
    if array.ndim != 1:
        raise InvalidSamplesError(
            None,
            f"{name} needs one mono channel of 16 kHz samples (a 1-D array), got shape {array.shape}; "
            "load audio with sere_core.audio, which mixes down to mono.",
        )
    if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(array.dtype, np.integer):
        raise InvalidSamplesError(None, f"{name} needs numeric samples, got dtype {array.dtype}.")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise InvalidSamplesError(None, f"{name}: the samples contain NaN or infinite values.")
    if array.shape[0] < min_samples:
        raise TooShortError(
            None,
            f"{name} needs at least {min_samples} samples ({min_samples / SAMPLE_RATE * 1000:.0f} ms "
            f"at 16 kHz), got {array.shape[0]}.",
        )
    return array


def check_layers(layers: Sequence[int] | int, n_layers: int, name: str) -> tuple[int, ...]:
    """Validate layer indices: 0 = embeddings, i = after block i, ``n_layers`` = the last."""
    if isinstance(layers, (int, np.integer)):
        layers = (int(layers),)
    try:
        result = tuple(int(i) for i in layers)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: layers must be a list of integers, got {layers!r}.") from None
    if not result:
        raise ConfigError(f"{name}: choose at least one layer (0..{n_layers}).")
    bad = [i for i in result if not 0 <= i <= n_layers]
    if bad:
        raise ConfigError(
            f"{name}: layer(s) {bad} do not exist; this model has layers 0 (embeddings) to {n_layers}."
        )
    if len(set(result)) != len(result):
        raise ConfigError(f"{name}: layers {list(result)} repeat an index.")
    return result


def split_windows(n: int, window: int) -> list[tuple[int, int]]:
    """``[start, end)`` windows of at most ``window`` samples covering ``n`` samples."""
    return [(start, min(start + window, n)) for start in range(0, n, window)]


@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run with ``num_threads`` intra-op threads (None: leave torch's setting alone)."""
    import torch

    if num_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(int(num_threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class Encoder(ABC):
    """Audio -> frame features. Subclasses set ``name`` and implement the abstract parts."""

    name: str = ""

    @property
    @abstractmethod
    def info(self) -> EncoderInfo:
        """Identity of the output; available before :meth:`load`."""

    @property
    def loaded(self) -> bool:
        return True

    def load(self) -> None:
        """Read and verify the weights (no-op for encoders without weights)."""

    @abstractmethod
    def encode(self, samples: np.ndarray) -> np.ndarray:
        """float32 ``[T, D]`` for 16 kHz mono samples; loads the weights on first use."""

    def encode_batch(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Encode several clips; subclasses may batch equal-length work. Same results as ``encode``."""
        return [self.encode(clip) for clip in clips]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
