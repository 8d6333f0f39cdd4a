"""Energy-based voice activity detection: where the speech is, and where to cut long recordings.

The detector is deliberately simple and predictable. It measures the RMS level of short frames,
calls a frame speech when it is loud compared with the recording's own loud frames (and, on noisy
recordings, clearly above the noise floor), bridges short pauses, drops isolated clicks, and
pads what remains. Everything is pure numpy so it can be tested frame by frame.

Frame indices are half-open ranges ``(start, end)``; frame ``f`` covers samples
``[f * frame_len, (f + 1) * frame_len)`` (the last frame may be shorter).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil

import numpy as np

from sere_core.audio.config import AudioConfig

_FLOOR_DB = -120.0
LOUD_PERCENTILE = 98.0
NOISE_PERCENTILE = 10.0
_STEADY_DB = 3.0
_CHUNK_FRAMES = 8192


@dataclass(frozen=True)
class SpeechActivity:
    """Frame levels of a signal and the speech regions found in them."""

    frame_len: int  # samples per frame
    n_samples: int
    power: np.ndarray  # float64 [F], mean square per frame
    levels_db: np.ndarray  # float64 [F], RMS level per frame in dBFS
    threshold_db: float  # frames at or above this level are speech
    regions: tuple[tuple[int, int], ...]  # speech regions in frames, after pause bridging and click removal

    @property
    def n_frames(self) -> int:
        return len(self.levels_db)

    def frames_to_samples(self, start: int, end: int) -> tuple[int, int]:
        """Sample span of the frame range ``[start, end)``."""
        return start * self.frame_len, min(end * self.frame_len, self.n_samples)

    def speech_power(self, start: int, end: int) -> float:
        """Mean square over the speech frames of ``[start, end)`` (all frames when none is speech)."""
        power = self.power[start:end]
        speech = power[self.levels_db[start:end] >= self.threshold_db]
        chosen = speech if len(speech) else power
        return float(chosen.mean()) if len(chosen) else 0.0


def frame_power(samples: np.ndarray, frame_len: int) -> np.ndarray:
    """Mean square of each frame, ``[ceil(n / frame_len)]`` float64, computed without big temporaries."""
    n = len(samples)
    full = n // frame_len
    out = np.empty(full + (1 if n % frame_len else 0), dtype=np.float64)
    for a in range(0, full, _CHUNK_FRAMES):
        b = min(full, a + _CHUNK_FRAMES)
        view = samples[a * frame_len : b * frame_len].reshape(b - a, frame_len)
        out[a:b] = np.einsum("ij,ij->i", view, view) / frame_len
    if n % frame_len:
        tail = samples[full * frame_len :].astype(np.float64)
        out[-1] = float(tail @ tail) / len(tail)
    return out


def frame_mean(samples: np.ndarray, frame_len: int) -> np.ndarray:
    """Mean of each frame, ``[ceil(n / frame_len)]`` float64, computed without big temporaries."""
    n = len(samples)
    full = n // frame_len
    out = np.empty(full + (1 if n % frame_len else 0), dtype=np.float64)
    for a in range(0, full, _CHUNK_FRAMES):
        b = min(full, a + _CHUNK_FRAMES)
        out[a:b] = samples[a * frame_len : b * frame_len].reshape(b - a, frame_len).mean(axis=1, dtype=np.float64)
    if n % frame_len:
        out[-1] = float(samples[full * frame_len :].mean(dtype=np.float64))
    return out


def power_to_db(power: np.ndarray) -> np.ndarray:
    """Mean square to dBFS (RMS), floored at -120 dB so digital silence stays finite."""
    return 10.0 * np.log10(np.maximum(power, 10 ** (_FLOOR_DB / 10)))


def speech_threshold_db(levels_db: np.ndarray, config: AudioConfig = AudioConfig()) -> float:
    """Level above which a frame counts as speech.

    The highest of: the absolute silence level; ``vad_range_db`` below the loud frames (98th
    percentile); and ``vad_noise_fraction`` of the way from the noise floor (10th percentile) to
    the loud frames, which matters only on recordings with audible background noise. The last
    stays ``_STEADY_DB`` below the loud frames: on a sound without pauses the "noise floor" is
    the sound itself, and frames a fraction of a dB below it must not be cut off.
    """
    if len(levels_db) == 0:
        return config.silence_dbfs
    loud = float(np.percentile(levels_db, LOUD_PERCENTILE))
    noise = float(np.percentile(levels_db, NOISE_PERCENTILE))
    return max(
        config.silence_dbfs,
        loud - config.vad_range_db,
        min(noise + config.vad_noise_fraction * (loud - noise), loud - _STEADY_DB),
    )


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Half-open ranges where a boolean mask is true.

    >>> runs(np.array([0, 1, 1, 0, 1], dtype=bool))
    [(1, 3), (4, 5)]
    """
    padded = np.concatenate([[False], np.asarray(mask, dtype=bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(s), int(e)) for s, e in zip(edges[::2], edges[1::2])]


def bridge_pauses(regions: list[tuple[int, int]], min_gap: int) -> list[tuple[int, int]]:
    """Merge regions separated by fewer than ``min_gap`` frames (a pause inside an utterance)."""
    merged: list[tuple[int, int]] = []
    for start, end in regions:
        if merged and start - merged[-1][1] < min_gap:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def detect_speech(
    samples: np.ndarray, sample_rate: int, config: AudioConfig = AudioConfig()
) -> SpeechActivity:
    """Find the speech regions of a mono signal (see the module docstring for the method)."""
    frame_len = max(1, int(round(config.frame_s * sample_rate)))
    power = frame_power(samples, frame_len)
    levels = power_to_db(power)
    threshold = speech_threshold_db(levels, config)
    frame_s = frame_len / sample_rate
    regions = bridge_pauses(runs(levels >= threshold), int(ceil(config.min_pause_s / frame_s - 1e-9)))
    min_click = int(ceil(config.click_s / frame_s - 1e-9))
    regions = [(s, e) for s, e in regions if e - s >= min_click]
    return SpeechActivity(
        frame_len=frame_len, n_samples=len(samples), power=power, levels_db=levels,
        threshold_db=threshold, regions=tuple(regions),
    )


def pad_regions(
    regions: list[tuple[int, int]], pad: int, n_frames: int
) -> list[tuple[int, int]]:
    """Widen each region by ``pad`` frames (hangover) without crossing the middle of a pause."""
    out = []
    for i, (start, end) in enumerate(regions):
        before = start if i == 0 else (start - regions[i - 1][1]) // 2
        after = n_frames - end if i == len(regions) - 1 else (regions[i + 1][0] - end) // 2
        out.append((start - min(pad, before), end + min(pad, after)))
    return out


def split_at_quietest(
    start: int, end: int, levels_db: np.ndarray, max_len: int, min_len: int = 1, smooth: int = 5
) -> list[tuple[int, int]]:
    """Cut ``[start, end)`` into pieces of at most ``max_len`` frames at its quietest points.

    The level is smoothed over ``smooth`` frames so a cut falls in a quiet stretch rather than on
    one quiet frame. When the remainder fits in two pieces the cut is chosen so both fit; pieces
    are at least ``min_len`` frames where possible.
    """
    if smooth > 1:
        kernel = np.ones(smooth) / smooth
        smoothed = np.convolve(levels_db[start:end], kernel, mode="same")
    else:
        smoothed = np.asarray(levels_db[start:end], dtype=np.float64)
    pieces = []
    s = start
    while end - s > max_len:
        if end - s <= 2 * max_len:
            lo, hi = end - max_len, s + max_len
        else:
            lo, hi = s + max_len // 2, s + max_len
        lo, hi = max(lo, s + min_len), min(hi, end - min_len)
        if lo > hi:
            lo = hi = min(s + max_len, (s + end) // 2)
        cut = lo + int(np.argmin(smoothed[lo - start : hi - start + 1]))
        pieces.append((s, cut))
        s = cut
    pieces.append((s, end))
    return pieces
