"""``prosody``: small, language-neutral frame features computed with torch/torchaudio alone.

Frames are 100 per second (hop 160 samples at 16 kHz); frame ``t`` is centred on sample
``160 t`` and a clip of ``n`` samples gives ``n // 160`` frames (the same grid as Whisper's mel
frames). Layout of D (``n_mels + 5`` columns, 45 by default):

====================  ===========================================================================
columns               feature
====================  ===========================================================================
``0 .. n_mels-1``     log-mel energies: 25 ms Hann window, HTK mel scale 0-8 kHz, ``ln(x + 1e-6)``
``n_mels``            log F0: ``ln(Hz)``; unvoiced frames are linearly interpolated between the
                      neighbouring voiced frames (held flat at the ends; 0 when nothing is voiced)
``n_mels + 1``        voicing: peak of the normalised autocorrelation in the F0 range (0..1)
``n_mels + 2``        log energy: ``ln(RMS + 1e-5)`` over a 25 ms window
``n_mels + 3``        delta log F0 (torchaudio ``compute_deltas``, window 5)
``n_mels + 4``        delta log energy
====================  ===========================================================================

F0 comes from a normalised autocorrelation over 40 ms windows (lags for ``f0_min..f0_max`` Hz)
with parabolic refinement, rather than ``torchaudio.functional.detect_pitch_frequency``: that
one has no voicing output, loops over every lag in Python, and median-smooths over 30 frames.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from sere_core.encoders.base import SAMPLE_RATE, Encoder, EncoderInfo, EncoderStatus, check_samples
from sere_core.errors import ConfigError

HOP = 160
WIN = 400
F0_WIN = 640
#: Bump when any column's computation changes.
FEATURE_VERSION = "v1"
VOICING_THRESHOLD = 0.5


@functools.lru_cache(maxsize=4)
def _mel_fb(n_mels: int):
    import torchaudio

    return torchaudio.functional.melscale_fbanks(
        n_freqs=WIN // 2 + 1,
        f_min=0.0,
        f_max=SAMPLE_RATE / 2,
        n_mels=n_mels,
        sample_rate=SAMPLE_RATE,
        norm=None,
        mel_scale="htk",
    )


def _frames(audio, width: int):
    """``[n // HOP, width]`` windows of ``audio`` ``[n]`` centred on multiples of HOP (zero padded)."""
    import torch

    n_frames = audio.shape[0] // HOP
    padded = torch.nn.functional.pad(audio, (width // 2, width // 2))
    return padded.unfold(0, width, HOP)[:n_frames]


def pitch_track(audio, f0_min: float = 60.0, f0_max: float = 500.0):
    """F0 in Hz and voicing (NACF peak, 0..1) per 10 ms frame; both ``[n // 160]``.

    audio: float tensor ``[n]`` at 16 kHz. A frame is voiced when its voicing exceeds
    ``VOICING_THRESHOLD``; unvoiced frames get F0 0.
    """
    import torch

    frames = _frames(audio, F0_WIN)
    frames = frames - frames.mean(dim=1, keepdim=True)
    n_frames, width = frames.shape
    lag_min = int(SAMPLE_RATE // f0_max)
    lag_max = min(int(np.ceil(SAMPLE_RATE / f0_min)), width // 2)
    spectrum = torch.fft.rfft(frames, n=2 * width)
    acf = torch.fft.irfft(spectrum.abs() ** 2, n=2 * width)[:, : lag_max + 2]
    # energies of the overlapping parts x[0 : W - lag] and x[lag : W]
    sq = torch.nn.functional.pad(frames**2, (1, 0)).cumsum(dim=1)  # sq[:, k] = sum x[:k]^2
    lags = torch.arange(lag_max + 2)
    head = sq[:, width - lags]
    tail = sq[:, width : width + 1] - sq[:, lags]
    nacf = acf / torch.sqrt(head * tail).clamp_min(1e-12)
    search = nacf[:, lag_min : lag_max + 1]
    peak, _ = search.max(dim=1)
    # the shortest lag whose value is near the peak: avoids picking a sub-harmonic (2 x period)
    near = search >= 0.9 * peak[:, None]
    is_local_max = torch.ones_like(near)
    is_local_max[:, 1:-1] = (search[:, 1:-1] >= search[:, :-2]) & (search[:, 1:-1] >= search[:, 2:])
    candidates = near & is_local_max
    first = torch.where(candidates.any(dim=1), candidates.float().argmax(dim=1), search.argmax(dim=1))
    lag = first + lag_min
    # parabolic refinement around the chosen lag
    rows = torch.arange(n_frames)
    left = nacf[rows, (lag - 1).clamp_min(0)]
    centre = nacf[rows, lag]
    right = nacf[rows, lag + 1]
    denom = left - 2 * centre + right
    shift = torch.where(denom.abs() > 1e-9, 0.5 * (left - right) / denom, torch.zeros_like(denom))
    period = lag.float() + shift.clamp(-0.5, 0.5)
    voicing = centre.clamp(0.0, 1.0)
    energy = frames.pow(2).mean(dim=1)
    silent = energy < 1e-10
    voiced = (voicing > VOICING_THRESHOLD) & ~silent
    f0 = torch.where(voiced, SAMPLE_RATE / period, torch.zeros_like(period))
    voicing = torch.where(silent, torch.zeros_like(voicing), voicing)
    return f0, voicing


def _interpolate_log_f0(f0: np.ndarray) -> np.ndarray:
    voiced = f0 > 0
    if not voiced.any():
        return np.zeros_like(f0)
    idx = np.arange(f0.shape[0])
    return np.interp(idx, idx[voiced], np.log(f0[voiced])).astype(np.float32)


def prosody_features(samples: np.ndarray, n_mels: int = 40, f0_min: float = 60.0, f0_max: float = 500.0):
    """``[n // 160, n_mels + 5]`` float32 features for 16 kHz mono ``samples`` (see module doc)."""
    import torch
    import torchaudio

    audio = torch.tensor(np.asarray(samples, dtype=np.float32))  # a copy: segments are read-only views
    with torch.inference_mode():
        windows = _frames(audio, WIN)  # [T, 400]
        spec = torch.fft.rfft(windows * torch.hann_window(WIN, periodic=True), dim=1).abs() ** 2
        mel = torch.log(spec @ _mel_fb(n_mels) + 1e-6)
        log_rms = torch.log(windows.pow(2).mean(dim=1).sqrt() + 1e-5)
        f0, voicing = pitch_track(audio, f0_min, f0_max)
        log_f0 = torch.from_numpy(_interpolate_log_f0(f0.numpy()))
        track = torch.stack([log_f0, log_rms])  # [2, T]
        deltas = torchaudio.functional.compute_deltas(track[None], win_length=5)[0]
        out = torch.cat(
            [mel, log_f0[:, None], voicing[:, None], log_rms[:, None], deltas.T],
            dim=1,
        )
    return np.ascontiguousarray(out.numpy(), dtype=np.float32)


class ProsodyEncoder(Encoder):
    """Log-mel, pitch, voicing and energy at 100 frames/s; no weights, always available."""

    name = "prosody"

    def __init__(self, n_mels: int = 40, f0_min: float = 60.0, f0_max: float = 500.0) -> None:
        if not 8 <= int(n_mels) <= 128:
            raise ConfigError(f"prosody: n_mels must be between 8 and 128, got {n_mels}.")
        if not 30.0 <= float(f0_min) < float(f0_max) <= 1000.0:
            raise ConfigError(
                f"prosody: need 30 <= f0_min < f0_max <= 1000 Hz, got f0_min={f0_min}, f0_max={f0_max}."
            )
        self.n_mels = int(n_mels)
        self.f0_min = float(f0_min)
        self.f0_max = float(f0_max)

    @property
    def info(self) -> EncoderInfo:
        defaults = (self.n_mels, self.f0_min, self.f0_max) == (40, 60.0, 500.0)
        suffix = "" if defaults else f"-m{self.n_mels}-f{self.f0_min:g}-{self.f0_max:g}"
        return EncoderInfo(
            name=self.name,
            version=f"prosody-{FEATURE_VERSION}{suffix}",
            frame_rate=SAMPLE_RATE / HOP,
            dim=self.n_mels + 5,
            layers=(),
        )

    @staticmethod
    def status() -> EncoderStatus:
        return EncoderStatus("prosody", True, "log-mel, pitch, voicing and energy (torchaudio; no weights)")

    def encode(self, samples: np.ndarray) -> np.ndarray:
        checked = check_samples(samples, WIN, self.name)
        return prosody_features(checked, self.n_mels, self.f0_min, self.f0_max)

    def encode_batch(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [self.encode(clip) for clip in clips]
