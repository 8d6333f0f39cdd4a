"""Shared fixtures: synthetic test recordings, the real corpora (when present), espeak-ng speech.

Keep this file generic; other test modules may add fixtures below.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from sere_core.audio import write_audio

REPO_ROOT = Path(__file__).resolve().parents[1]
CORPORA_DIR = Path(os.environ.get("SERE_CORPORA", REPO_ROOT.parent / "shared" / "corpora"))


class AudioFactory:
    """Makes test signals (numpy, float32) and writes them as audio files under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.rng = np.random.default_rng(1234)

    # -- signals -----------------------------------------------------------------------------
    @staticmethod
    def tone(seconds: float, sr: int = 16000, freq: float = 220.0, amp: float = 0.3) -> np.ndarray:
        t = np.arange(int(round(seconds * sr))) / sr
        return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)

    def noise(self, seconds: float, sr: int = 16000, amp: float = 0.1) -> np.ndarray:
        return (amp * self.rng.standard_normal(int(round(seconds * sr)))).astype(np.float32)

    @staticmethod
    def chirp(seconds: float, sr: int = 16000, f0: float = 100.0, f1: float = 3000.0, amp: float = 0.3) -> np.ndarray:
        t = np.arange(int(round(seconds * sr))) / sr
        phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
        return (amp * np.sin(phase)).astype(np.float32)

    def speech_like(self, seconds: float, sr: int = 16000, amp: float = 0.2, rate_hz: float = 4.0) -> np.ndarray:
        """Noise amplitude-modulated at a syllable rate: loud and soft stretches, no pauses."""
        n = int(round(seconds * sr))
        t = np.arange(n) / sr
        envelope = 0.25 + 0.75 * np.abs(np.sin(np.pi * rate_hz * t + self.rng.uniform(0, np.pi)))
        carrier = self.rng.standard_normal(n) + 0.5 * np.sin(2 * np.pi * 150 * t)
        return (amp * envelope * carrier / 1.1).astype(np.float32)

    @staticmethod
    def silence(seconds: float, sr: int = 16000) -> np.ndarray:
        return np.zeros(int(round(seconds * sr)), dtype=np.float32)

    def utterances(
        self,
        durations: list[float],
        pause_s: float | list[float] = 1.0,
        lead_s: float = 0.5,
        sr: int = 16000,
        floor_amp: float = 0.0,
    ) -> tuple[np.ndarray, list[tuple[float, float]]]:
        """Speech-like utterances separated by pauses; returns samples and the true spans (s)."""
        pauses = pause_s if isinstance(pause_s, list) else [pause_s] * max(0, len(durations) - 1)
        parts = [self.silence(lead_s, sr)]
        spans = []
        t = lead_s
        for i, d in enumerate(durations):
            parts.append(self.speech_like(d, sr))
            spans.append((t, t + d))
            t += d
            if i < len(durations) - 1:
                parts.append(self.silence(pauses[i], sr))
                t += pauses[i]
        parts.append(self.silence(lead_s, sr))
        x = np.concatenate(parts)
        if floor_amp:
            x = x + self.noise(len(x) / sr, sr, floor_amp)
        return x.astype(np.float32), spans

    # -- files -------------------------------------------------------------------------------
    def write(self, name: str, samples: np.ndarray, sr: int = 16000, subtype: str | None = None) -> Path:
        return write_audio(self.root / name, samples, sr, subtype=subtype)

    def write_bytes(self, name: str, data: bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path


@pytest.fixture
def audio_factory(tmp_path: Path) -> AudioFactory:
    """Test signals and a folder to write them in."""
    return AudioFactory(tmp_path)


@pytest.fixture
def corpora_dir() -> Path:
    """``../shared/corpora`` (real emotional speech), or skip when this machine has no copy."""
    if not CORPORA_DIR.is_dir():
        pytest.skip(f"real speech corpora not found at {CORPORA_DIR} (only development machines and CI have them)")
    return CORPORA_DIR


@pytest.fixture
def espeak(tmp_path: Path):
    """``espeak(text, name, voice="en") -> Path`` of a 22.05 kHz WAV; skips without espeak-ng."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is not installed (Debian package espeak-ng)")

    def synthesize(text: str, name: str = "speech.wav", voice: str = "en") -> Path:
        out = tmp_path / name
        subprocess.run([exe, "-v", voice, "-w", str(out), text], check=True, capture_output=True, timeout=60)
        return out

    return synthesize
