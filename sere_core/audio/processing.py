"""Signal processing between decoding and segmentation: mono, resampling, loudness, hashing.

Everything here works on float32 numpy arrays; torchaudio is used only for its resampler.
Long files are streamed: the original-rate signal is never held in memory as a whole, only the
16 kHz mono result is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from math import ceil, gcd

import numpy as np

from sere_core.audio.config import AudioConfig
from sere_core.audio.io import AudioFileInfo, iter_blocks

# Samples per block read at once, over all channels: bounds memory for many-channel files.
_MAX_BLOCK_SAMPLES = 4_000_000


@dataclass(frozen=True)
class MonoSignal:
    """A file decoded to mono at the target rate, plus how it was mixed down."""

    samples: np.ndarray  # float32 [n]
    sample_rate: int
    info: AudioFileInfo
    mix: str  # "mono", "mean" or "channel <k>" (anti-phase stereo)
    time_scale: float = 1.0  # original seconds per output second (1 unless the rate was odd)


def audio_hash(samples: np.ndarray) -> str:
    """SHA-256 (hex) of the samples as little-endian float32: the identity of processed audio.

    Identical processed audio gets the same id whatever its file name, so caches and databases
    never store the same clip twice.

    >>> audio_hash(np.zeros(4, dtype=np.float32))[:12]
    '374708fff771'
    """
    data = np.ascontiguousarray(samples, dtype="<f4")
    if data.ndim != 1:
        raise ValueError(f"audio_hash expects mono samples of shape [n], got {data.shape}")
    return hashlib.sha256(data.tobytes()).hexdigest()


def block_frames_for(info: AudioFileInfo, config: AudioConfig) -> int:
    """Frames per decoding block: ``block_s`` seconds, capped so many channels stay small."""
    frames = int(config.block_s * info.sample_rate)
    return max(1024, min(frames, _MAX_BLOCK_SAMPLES // info.channels))


def choose_mix(info: AudioFileInfo, config: AudioConfig) -> str:
    """Decide how to mix down: average the channels unless some are anti-phase.

    Averaging anti-phase channels (a miswired microphone, a "wide stereo" effect) cancels the
    voice; then the channel with the highest RMS is taken instead. Needs one pass over the file.
    """
    if info.channels == 1:
        return "mono"
    c = info.channels
    n = 0
    sums = np.zeros(c)
    cross = np.zeros((c, c))
    for block in iter_blocks(info, block_frames_for(info, config), config):
        # float32 products per block, float64 sums across blocks: precise enough for a sign test.
        n += len(block)
        sums += block.sum(axis=0, dtype=np.float64)
        cross += block.T @ block
    mean = sums / max(n, 1)
    cov = cross / max(n, 1) - np.outer(mean, mean)
    power = np.clip(np.diag(cov), 0.0, None)
    # A dead or near-silent channel has no meaningful correlation (and float noise could fake one).
    live = np.flatnonzero(power > 1e-6 * power.max()) if power.max() > 0 else np.zeros(0, dtype=int)
    if len(live) < 2:
        return "mean"
    std = np.sqrt(power[live])
    corr = np.clip(cov[np.ix_(live, live)] / np.outer(std, std), -1.0, 1.0)
    if corr.min() < config.anti_phase_corr:
        return f"channel {int(np.argmax(np.diag(cross)))}"
    return "mean"


def downmix(block: np.ndarray, mix: str) -> np.ndarray:
    """One ``[n, channels]`` block to mono ``[n]`` float32 following ``choose_mix``'s decision."""
    if mix in ("mono", "mean"):
        return block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
    return block[:, int(mix.split()[1])]


# torchaudio's sinc kernel has (new / gcd) rows of about (orig / gcd) taps: small for real rates
# (44100 -> 16000 is 160 x 475) but gigabytes for odd ones such as 44101 Hz (16000 x 44135).
_MAX_KERNEL_TAPS = 4_000_000


def _kernel_taps(orig_rate: int, new_rate: int) -> int:
    g = gcd(orig_rate, new_rate)
    o, n = orig_rate // g, new_rate // g
    return n * (o + 2 * ceil(6 * o / (0.99 * min(o, n))))


def effective_input_rate(orig_rate: int, new_rate: int) -> int:
    """The rate the resampler treats the input as having.

    Real sample rates share a large factor with the target and are used as they are. An odd
    rate (say 44101 Hz) is rounded to the nearest multiple of the smallest divisor ``q`` of the
    target that keeps the kernel small; the pitch moves by at most ``q / 2 / orig_rate`` (0.6 %
    at 8 kHz for a 16 kHz target, far below what matters for emotion) and callers correct time
    stamps with ``effective_rate / orig_rate``.

    >>> effective_input_rate(44100, 16000), effective_input_rate(44101, 16000)
    (44100, 44100)
    """
    if _kernel_taps(orig_rate, new_rate) <= _MAX_KERNEL_TAPS:
        return orig_rate
    for q in range(2, new_rate + 1):
        if new_rate % q == 0:
            rate = max(q, int(round(orig_rate / q)) * q)
            if _kernel_taps(rate, new_rate) <= _MAX_KERNEL_TAPS:
                return rate
    return new_rate


class StreamingResampler:
    """Resample a signal block by block with the same result as resampling it whole.

    Each chunk is resampled with ``context`` extra input samples on both sides, and only the
    output belonging to the chunk is kept. Chunk starts and context lengths are multiples of
    ``orig // gcd(orig, new)`` input samples so that output samples land exactly on the grid of
    a one-shot ``torchaudio.functional.resample``.
    """

    def __init__(self, orig_rate: int, new_rate: int, chunk_frames: int = 1 << 18) -> None:
        self.orig_rate, self.new_rate = orig_rate, new_rate
        orig_rate = self.effective_rate = effective_input_rate(orig_rate, new_rate)
        g = gcd(orig_rate, new_rate)
        self._o, self._n = orig_rate // g, new_rate // g
        # torchaudio's kernel reaches ceil(6 * o / (0.99 * min(o, n))) input samples each side.
        width = ceil(6 * self._o / (0.99 * min(self._o, self._n)))
        self._context = self._o * ceil(max(width + 1, 256) / self._o)
        self._chunk = self._o * max(1, chunk_frames // self._o)
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # absolute input index of _buf[0]
        self._next = 0  # absolute input index where the next output chunk starts
        self._total = 0  # input samples pushed so far
        self._resampler = None

    def _resample(self, x: np.ndarray) -> np.ndarray:
        import torch
        import torchaudio

        if self._resampler is None:
            self._resampler = torchaudio.transforms.Resample(self.effective_rate, self.new_rate)
        with torch.inference_mode():
            y = self._resampler(torch.from_numpy(np.ascontiguousarray(x))[None])[0]
        return y.numpy()

    def _emit(self, end: int, final: bool) -> np.ndarray:
        start = self._next
        left = min(self._context, start)  # a multiple of o: start is one and so is context
        lo = start - left - self._buf_start
        hi = (end + (0 if final else self._context)) - self._buf_start
        y = self._resample(self._buf[lo:hi])
        out_left = left * self._n // self._o
        if final:
            out_len = ceil(self._total * self._n / self._o) - start * self._n // self._o
        else:
            out_len = (end - start) * self._n // self._o
        return y[out_left : out_left + out_len]

    def push(self, x: np.ndarray) -> list[np.ndarray]:
        """Add input samples; return the output chunks that are now complete."""
        if self._o == self._n:
            return [x]
        self._buf = np.concatenate([self._buf, x.astype(np.float32, copy=False)])
        self._total += len(x)
        out = []
        while self._total - self._next >= self._chunk + self._context:
            end = self._next + self._chunk
            out.append(self._emit(end, final=False))
            self._next = end
            drop = self._next - self._context - self._buf_start
            if drop > 0:
                self._buf = self._buf[drop:]
                self._buf_start += drop
        return out

    def flush(self) -> list[np.ndarray]:
        """Return the rest of the output once all input has been pushed."""
        if self._o == self._n or self._total <= self._next:
            return []
        out = self._emit(self._total, final=True)
        self._next = self._total
        self._buf = np.zeros(0, dtype=np.float32)
        return [out]


def decode_mono(info: AudioFileInfo, config: AudioConfig = AudioConfig()) -> MonoSignal:
    """Decode a probed file to mono float32 at ``config.sample_rate``, streaming block by block.

    Memory stays near the size of the result (about 230 MB for an hour at 16 kHz) whatever the
    original rate or channel count.
    """
    mix = choose_mix(info, config)
    resampler = StreamingResampler(info.sample_rate, config.sample_rate)
    expected = ceil(info.frames * config.sample_rate / resampler.effective_rate)
    out = np.empty(expected, dtype=np.float32)
    filled = 0
    extra: list[np.ndarray] = []  # only when the decoder yields more than the header announced

    def put(chunks: list[np.ndarray]) -> None:
        nonlocal filled
        for chunk in chunks:
            room = expected - filled
            take = min(room, len(chunk))
            out[filled : filled + take] = chunk[:take]
            filled += take
            if take < len(chunk):
                extra.append(np.array(chunk[take:], dtype=np.float32))

    for block in iter_blocks(info, block_frames_for(info, config), config):
        put(resampler.push(downmix(block, mix)))
    put(resampler.flush())
    samples = np.concatenate([out[:filled], *extra]) if extra else out[:filled]
    return MonoSignal(
        samples=samples, sample_rate=config.sample_rate, info=info, mix=mix,
        time_scale=resampler.effective_rate / info.sample_rate,
    )


def normalize_loudness(
    samples: np.ndarray, speech_power: float, config: AudioConfig = AudioConfig()
) -> float:
    """Scale ``samples`` in place so speech sits at ``target_dbfs`` RMS; return the gain applied.

    ``speech_power`` is the mean square over the speech frames only, so pauses do not make a
    recording look quiet. The gain is lowered when needed so the peak stays at or below
    ``peak_dbfs``: a plain gain never distorts, unlike a compressor.
    """
    if speech_power <= 0 or len(samples) == 0:
        return 1.0
    gain = 10 ** (config.target_dbfs / 20) / np.sqrt(speech_power)
    peak = float(np.max(np.abs(samples)))
    limit = 10 ** (config.peak_dbfs / 20)
    if peak * gain > limit:
        gain = limit / peak
    samples *= np.float32(gain)
    # float32 rounding can push a sample a hair past the limit; never past full scale.
    np.clip(samples, -limit, limit, out=samples)
    return float(gain)
