"""From a file (or a batch of files) to clean, loudness-normalized speech segments.

``load_audio`` raises a typed ``AudioError`` for a bad file; ``load_batch`` turns those into
``Failure`` rows and goes on, so one bad recording never stops a batch and never goes unreported.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from math import ceil
from pathlib import Path

import numpy as np

from sere_core.audio.config import AudioConfig
from sere_core.audio.io import probe
from sere_core.audio.processing import audio_hash, decode_mono, normalize_loudness
from sere_core.audio.segment import AudioSegment, BatchResult, Failure
from sere_core.audio.vad import (
    LOUD_PERCENTILE,
    NOISE_PERCENTILE,
    SpeechActivity,
    detect_speech,
    frame_mean,
    pad_regions,
    power_to_db,
    split_at_quietest,
)
from sere_core.errors import AudioError, InvalidSamplesError, SilentAudioError, TooShortError

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], object]


def load_audio(path: str | os.PathLike[str], config: AudioConfig = AudioConfig()) -> list[AudioSegment]:
    """Decode, clean and segment one recording.

    Returns one segment (silence trimmed) or, when the speech lasts longer than
    ``config.max_segment_s``, one segment per utterance. Raises an ``AudioError`` subclass
    that names the file when it is unusable.
    """
    info = probe(path, config)
    mono = decode_mono(info, config)
    return segment_signal(
        mono.samples, mono.sample_rate, os.fspath(path), config, time_scale=mono.time_scale, copy=False
    )


def segment_signal(
    samples: np.ndarray,
    sample_rate: int,
    source: str,
    config: AudioConfig = AudioConfig(),
    *,
    time_scale: float = 1.0,
    copy: bool = True,
) -> list[AudioSegment]:
    """Trim, split, normalize and hash a mono signal already at its final rate.

    The segments are read-only views of one normalized buffer, so a long recording is held
    once; with ``copy=False`` that buffer is ``samples`` itself (normalized in place). Errors
    name ``source``. ``time_scale`` converts seconds of ``samples`` into seconds of the
    original file (it differs from 1 only for odd sample rates).
    """
    if copy:
        samples = np.array(samples, dtype=np.float32, copy=True)
        if not np.isfinite(samples).all():
            raise InvalidSamplesError(source, "the recording contains invalid sample values (NaN or infinity)")
    if samples.ndim != 1:
        raise ValueError(f"segment_signal expects mono samples of shape [n], got {samples.shape}")
    activity = detect_speech(samples, sample_rate, config)
    offset = _remove_offset(samples, activity, config)
    if offset:
        activity = detect_speech(samples, sample_rate, config)
    frame_s = activity.frame_len / sample_rate
    if activity.n_frames == 0 or float(activity.levels_db.max()) < config.silence_dbfs:
        if offset:
            raise _offset_only(source, offset)
        raise SilentAudioError(
            source, f"the file is silent (no speech above {config.silence_dbfs:g} dBFS was found)"
        )
    regions = list(activity.regions)
    if not regions:
        raise SilentAudioError(
            source,
            f"the file is silent apart from clicks shorter than {config.click_s:g} s "
            f"(no speech above {config.silence_dbfs:g} dBFS was found)",
        )
    first, last = activity.frames_to_samples(regions[0][0], regions[-1][1])
    start, end = _sound_edges(samples, first, last, activity)
    speech_s = (end - start) / sample_rate
    if speech_s < config.min_speech_s:
        raise TooShortError(
            source,
            f"only {speech_s:.2f} s of speech was found after trimming the silence; "
            f"at least {config.min_speech_s:g} s is needed",
        )
    pad = _frames_up(config.hangover_s, frame_s)
    max_frames = max(1, int(config.max_segment_s / frame_s + 1e-9))
    min_frames = _frames_up(config.min_speech_s, frame_s)
    trimmed = pad_regions([(regions[0][0], regions[-1][1])], pad, activity.n_frames)[0]
    if (trimmed[1] - trimmed[0]) <= max_frames:
        spans = [trimmed]
    else:
        utterances = [(s, e) for s, e in regions if e - s >= min_frames]
        if not utterances:
            raise TooShortError(
                source,
                f"the recording is long but no utterance in it lasts {config.min_speech_s:g} s or more",
            )
        spans = []
        for start, end in pad_regions(utterances, pad, activity.n_frames):
            spans.extend(
                split_at_quietest(start, end, activity.levels_db, max_frames, min_len=min_frames)
            )

    segments = []
    for f0, f1 in spans:
        s0, s1 = activity.frames_to_samples(f0, f1)
        view = samples[s0:s1]
        normalize_loudness(view, activity.speech_power(f0, f1), config)
        segments.append(
            AudioSegment(
                audio_id=audio_hash(view),
                samples=view,
                sample_rate=sample_rate,
                source=source,
                start_s=s0 / sample_rate * time_scale,
                end_s=s1 / sample_rate * time_scale,
            )
        )
    return segments


def _remove_offset(samples: np.ndarray, activity: SpeechActivity, config: AudioConfig) -> float:
    """Subtract the recording's mean in place when it fills the pauses and lies within
    ``config.dc_offset_db`` of the loud frames; return what was subtracted (0.0 when nothing was).

    A silent file is left as it is, so one that turns silent once the offset is gone held
    nothing but the offset. The pauses must be made of the offset: a lone click also moves the
    mean, but subtracting it would fill the silence around the click instead.
    """
    if activity.n_frames == 0 or float(activity.levels_db.max()) < config.silence_dbfs:
        return 0.0
    mean = float(np.mean(samples, dtype=np.float64))
    loud_db = float(np.percentile(activity.levels_db, LOUD_PERCENTILE))
    if mean == 0 or 20 * np.log10(abs(mean)) < loud_db - config.dc_offset_db:
        return 0.0
    without = activity.power - 2 * mean * frame_mean(samples, activity.frame_len) + mean * mean
    quiet_db = float(np.percentile(activity.levels_db, NOISE_PERCENTILE))
    if float(np.percentile(power_to_db(without), NOISE_PERCENTILE)) > quiet_db - _OFFSET_FILLS_DB:
        return 0.0
    samples -= np.float32(mean)
    return mean


# Subtracting an offset that fills the pauses lowers their level by at least this much.
_OFFSET_FILLS_DB = 3.0


def _offset_only(source: str, offset: float) -> SilentAudioError:
    return SilentAudioError(
        source, f"the file holds no sound, only a constant offset ({offset:+.3f} of full scale); "
        "check the microphone or the recording's channel"
    )


def _sound_edges(samples: np.ndarray, first: int, last: int, activity) -> tuple[int, int]:
    """Where the sound starts and ends within the first and last speech frames, to the sample.

    Frame edges alone would measure 0.29 s of sound between silences as 0.30 s but the same
    sound at a file's very start as 0.29 s; the minimum length is then kept the same way
    wherever the sound sits. (Trimming still follows whole frames.)
    """
    amplitude = 10 ** (activity.threshold_db / 20)
    n = activity.frame_len
    head = np.flatnonzero(np.abs(samples[first : first + n]) >= amplitude)
    tail_at = max(first, last - n)
    tail = np.flatnonzero(np.abs(samples[tail_at:last]) >= amplitude)
    return (first + int(head[0]) if len(head) else first), (tail_at + int(tail[-1]) + 1 if len(tail) else last)


def _frames_up(seconds: float, frame_s: float) -> int:
    """Frames needed to cover ``seconds``, robust to float noise (0.3 / 0.02 is 14.999...)."""
    return int(ceil(seconds / frame_s - 1e-9))


def load_batch(
    paths: Iterable[str | os.PathLike[str]],
    config: AudioConfig = AudioConfig(),
    progress: ProgressCallback | None = None,
) -> BatchResult:
    """Load many files; each bad one becomes a ``Failure`` and the batch goes on.

    ``progress(done, total)`` is called once before the first file and after every file.
    """
    items = list(paths)
    total = len(items)
    segments: list[AudioSegment] = []
    failures: list[Failure] = []
    if progress is not None:
        progress(0, total)
    for done, path in enumerate(items, start=1):
        try:
            segments.extend(load_audio(path, config))
        except AudioError as exc:
            failures.append(Failure(os.fspath(path), exc.reason, str(exc)))
        except MemoryError:
            failures.append(
                Failure(
                    os.fspath(path), "too-large",
                    f"{Path(path).name}: the recording is too long to process in the memory available; "
                    "please cut it into shorter files",
                )
            )
        except Exception as exc:  # a bug must not sink the other files, but it is logged in full
            log.exception("unexpected error while loading %s", path)
            failures.append(
                Failure(
                    os.fspath(path), "error",
                    f"{Path(path).name}: an unexpected error stopped processing "
                    f"({type(exc).__name__}: {exc})",
                )
            )
        if progress is not None:
            progress(done, total)
    return BatchResult(segments=tuple(segments), failures=tuple(failures))
