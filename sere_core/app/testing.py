"""A fast stand-in encoder for tests and quick trials: no weights, 50 frames/s, 64 features.

Log energies of 32 linear frequency bands plus their frame-to-frame deltas. Far weaker than a
speech encoder, but it runs in milliseconds, so app tests and browser tests can embed the demo in
seconds. Register it on a context: ``ctx.encoders.register("test-bands", BandEnergyEncoder())``.
"""

from __future__ import annotations

import numpy as np

from sere_core.app.access import Caller
from sere_core.encoders import Encoder, EncoderInfo
from sere_core.storage import SHARED_WORKSPACE, WorkspaceKind

NAME = "test-bands"


class BandEnergyEncoder(Encoder):
    name = NAME

    @property
    def info(self) -> EncoderInfo:
        return EncoderInfo(name=NAME, version="test-v1", frame_rate=50.0, dim=64, layers=())

    def encode(self, samples: np.ndarray) -> np.ndarray:
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        hop, win = 320, 512
        n = max(1, len(x) // hop)
        x = np.pad(x, (0, max(0, (n - 1) * hop + win - len(x))))
        idx = np.arange(win)[None, :] + hop * np.arange(n)[:, None]
        spec = np.abs(np.fft.rfft(x[idx] * np.hanning(win), axis=1)) ** 2
        bands = np.stack([b.sum(1) for b in np.array_split(spec, 32, axis=1)], axis=1)
        logb = np.log(bands + 1e-8).astype(np.float32)
        delta = np.diff(logb, axis=0, prepend=logb[:1])
        return np.concatenate([logb, delta], axis=1).astype(np.float32)


def local_caller(labeler: str = "tester", tab: str = "") -> Caller:
    """A caller of a private server's shared workspace (as ``SERE_WORKSPACES=single`` gives every
    visitor), for tests and scripts that call the services directly."""
    return Caller(SHARED_WORKSPACE, WorkspaceKind.SHARED, f"user:{labeler}", tab, labeler)
