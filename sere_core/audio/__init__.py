"""Audio pipeline: decode, validate, mono, resample, normalize, trim, split at pauses, hash.

>>> from sere_core.audio import AudioConfig
>>> AudioConfig().sample_rate
16000
"""

from sere_core.audio.config import AudioConfig
from sere_core.audio.io import (
    AUDIO_EXTENSIONS,
    SUPPORTED_EXTENSIONS,
    AudioFileInfo,
    probe,
    write_audio,
    write_wav,
)
from sere_core.audio.loader import load_audio, load_batch, segment_signal
from sere_core.audio.processing import audio_hash, decode_mono
from sere_core.audio.segment import AudioSegment, BatchResult, Failure

__all__ = [
    "AUDIO_EXTENSIONS",
    "SUPPORTED_EXTENSIONS",
    "AudioConfig",
    "AudioFileInfo",
    "AudioSegment",
    "BatchResult",
    "Failure",
    "audio_hash",
    "decode_mono",
    "load_audio",
    "load_batch",
    "probe",
    "segment_signal",
    "write_audio",
    "write_wav",
]
