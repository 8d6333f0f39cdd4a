"""``hf:<model id or local folder>``: any transformers speech encoder.

Whisper checkpoints (``model_type == "whisper"``) run through the same unpadded code path as
``whisper-base`` (only the encoder weights are read). Other speech encoders (WavLM, HuBERT,
Wav2Vec2 / XLS-R, Data2Vec-Audio, ...) run through ``AutoModel`` with their own feature
extractor, and ``layers`` index their ``output_hidden_states`` (0 = embeddings, i = after
block i).

Hub ids are resolved from the local Hugging Face cache first. Otherwise the hub must answer a
TCP connection within ``HUB_TIMEOUT_S`` (and ``HF_HUB_OFFLINE`` must be unset), or loading fails
at once with EncoderUnavailableError; nothing retries or waits for minutes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from sere_core.encoders.base import (
    SAMPLE_RATE,
    Encoder,
    EncoderInfo,
    EncoderStatus,
    check_layers,
    check_samples,
    split_windows,
    torch_threads,
)
from sere_core.encoders.whisper import FEATURE_VERSION as WHISPER_FEATURE_VERSION
from sere_core.encoders.whisper import HOP, MIN_SAMPLES, WhisperFrames, build_whisper_encoder
from sere_core.errors import ConfigError, EncoderError, EncoderUnavailableError, WeightsIntegrityError

log = logging.getLogger(__name__)

HUB_TIMEOUT_S = 2.0
#: Bump when the read-out of non-Whisper models changes.
FEATURE_VERSION = "v1"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_WEIGHT_FILES = re.compile(
    r"^(config\.json|preprocessor_config\.json|.*\.safetensors|.*\.safetensors\.index\.json"
    r"|pytorch_model.*\.bin|pytorch_model\.bin\.index\.json)$"
)
_TRUE = {"1", "true", "yes", "on"}


def _offline_by_env() -> bool:
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    """Whether the Hugging Face endpoint accepts a TCP connection within ``timeout`` seconds.

    Name resolution runs inside the same bounded wait (a thread), so a dead DNS cannot hang us.
    """
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, name="sere-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def _unavailable(spec: str, why: str) -> EncoderUnavailableError:
    return EncoderUnavailableError(
        f"hf:{spec}: {why}. No model hub is reachable from here, so the model cannot be downloaded. "
        f"On a machine with internet access, save it with `AutoModel.from_pretrained('{spec}')"
        ".save_pretrained(FOLDER)` and `AutoFeatureExtractor.from_pretrained(...).save_pretrained(FOLDER)`, "
        "copy FOLDER here and use the encoder `hf:/path/to/FOLDER`."
    )


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~", ".\\")) or "\\" in spec or os.path.isabs(spec)


def _hash_folder(folder: Path) -> str:
    """sha256 over the names and contents of the files that define the model's output."""
    digest = hashlib.sha256()
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and _WEIGHT_FILES.match(p.name))
    for name in names:
        digest.update(name.encode() + b"\0")
        with open(folder / name, "rb") as handle:
            while chunk := handle.read(4 << 20):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


class HFEncoder(Encoder):
    """A transformers speech encoder from the hub or a local folder."""

    def __init__(
        self,
        model: str,
        layers: Sequence[int] | int | None = None,
        num_threads: int | None = None,
        window_s: float = 30.0,
    ) -> None:
        spec = str(model).strip()
        if not spec:
            raise ConfigError("hf: name a model, e.g. hf:openai/whisper-small or hf:/path/to/folder.")
        if not _looks_like_path(spec) and not Path(spec).exists() and not _HUB_ID.match(spec):
            raise ConfigError(
                f"hf:{spec}: not a hub id (owner/name) and no such folder; use hf:owner/name or hf:/path/to/folder."
            )
        if not 1.0 <= float(window_s) <= 30.0:
            raise ConfigError(f"hf:{spec}: window_s must be between 1 and 30 seconds, got {window_s}.")
        if num_threads is not None and int(num_threads) < 1:
            raise ConfigError(f"hf:{spec}: num_threads must be at least 1, got {num_threads}.")
        self.spec = spec
        self.name = f"hf:{spec}"
        self._layers_option = layers
        self._num_threads = num_threads
        self._window_s = float(window_s)
        self._folder: Path | None = None
        self._config: dict | None = None
        self._info: EncoderInfo | None = None
        self._whisper: WhisperFrames | None = None
        self._model = None
        self._extractor = None

    # ---------------------------------------------------------------- resolution (cheap)

    @staticmethod
    def status() -> EncoderStatus:
        return EncoderStatus(
            "hf:<model id or folder>",
            True,
            "any transformers speech encoder; needs a reachable hub, the local Hugging Face cache, or a local folder",
        )

    def _resolve(self) -> Path:
        if self._folder is not None:
            return self._folder
        spec = self.spec
        local = Path(spec).expanduser()
        if local.exists() or _looks_like_path(spec):
            if not local.is_dir():
                raise EncoderUnavailableError(f"hf:{spec}: no such folder; give the folder a saved model is in.")
            if not (local / "config.json").is_file():
                raise EncoderUnavailableError(
                    f"hf:{spec}: the folder has no config.json; save the model there with `save_pretrained`."
                )
            self._folder = local.resolve()
            return self._folder
        try:
            from huggingface_hub import snapshot_download
        except ImportError:  # pragma: no cover - transformers depends on it
            raise EncoderUnavailableError(f"hf:{spec}: huggingface_hub is not installed.") from None
        try:
            folder = Path(snapshot_download(spec, local_files_only=True, allow_patterns=["config.json"]))
            if (folder / "config.json").is_file():
                self._folder = folder
                return folder
        except Exception:  # noqa: BLE001 - any failure means "not cached here"
            pass
        if _offline_by_env():
            raise _unavailable(spec, "it is not in the local Hugging Face cache and HF_HUB_OFFLINE is set")
        if not hub_reachable():
            raise _unavailable(
                spec, f"it is not in the local Hugging Face cache and the hub did not answer within {HUB_TIMEOUT_S:g} s"
            )
        try:
            # configs + the main safetensors weights; .bin only for repos that have no safetensors
            folder = Path(
                snapshot_download(
                    spec,
                    allow_patterns=["*.json", "model.safetensors", "model-*-of-*.safetensors"],
                    etag_timeout=HUB_TIMEOUT_S,
                )
            )
            if not list(folder.glob("*.safetensors")):
                folder = Path(
                    snapshot_download(spec, allow_patterns=["pytorch_model*.bin"], etag_timeout=HUB_TIMEOUT_S)
                )
        except Exception as exc:  # noqa: BLE001 - report any hub failure as unavailable
            raise EncoderUnavailableError(f"hf:{spec}: could not download the model: {exc}") from None
        self._folder = folder
        return folder

    def _read_config(self) -> dict:
        if self._config is None:
            folder = self._resolve()
            try:
                config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise EncoderError(f"{self.name}: config.json is unreadable: {exc}") from None
            if not isinstance(config, dict):
                raise EncoderError(f"{self.name}: config.json is not a model configuration.")
            self._config = config
        return self._config

    @property
    def is_whisper(self) -> bool:
        return self._read_config().get("model_type") == "whisper"

    @property
    def info(self) -> EncoderInfo:
        if self._info is not None:
            return self._info
        config = self._read_config()
        folder = self._resolve()
        model_type = config.get("model_type", "?")
        if model_type == "whisper":
            n_layers = int(config.get("encoder_layers", 0))
            width = int(config.get("d_model", 0))
            frame_rate = SAMPLE_RATE / (2 * HOP)
            feature_version = f"whisper{WHISPER_FEATURE_VERSION}"
        else:
            n_layers = int(config.get("num_hidden_layers", 0))
            width = int(config.get("hidden_size", 0))
            strides = config.get("conv_stride")
            if not strides:
                raise EncoderError(
                    f"{self.name}: model type {model_type!r} is not a supported speech encoder "
                    "(Whisper, WavLM, HuBERT, Wav2Vec2/XLS-R, Data2Vec-Audio)."
                )
            frame_rate = SAMPLE_RATE / math.prod(int(s) for s in strides)
            feature_version = FEATURE_VERSION
        if n_layers < 1 or width < 1:
            raise EncoderError(f"{self.name}: config.json lacks the layer count or width.")
        layers = self._layers_option
        if layers is None:
            layers = (n_layers // 2, n_layers)
        layers = check_layers(layers, n_layers, self.name)
        revision = folder.name if re.fullmatch(r"[0-9a-f]{40}", folder.name) else _hash_folder(folder)
        self._info = EncoderInfo(
            name=self.name,
            version=f"hf-{revision[:12]}-{feature_version}",
            frame_rate=frame_rate,
            dim=width * len(layers),
            layers=layers,
        )
        return self._info

    # ---------------------------------------------------------------- loading

    @property
    def loaded(self) -> bool:
        return self._whisper is not None or self._model is not None

    def load(self) -> None:
        if self.loaded:
            return
        info = self.info
        folder = self._resolve()
        if self.is_whisper:
            self._whisper = WhisperFrames(self._load_whisper(folder), info.layers, self._num_threads)
        else:
            self._load_auto(folder)
        log.info("loaded %s (%s)", self.name, info.version)

    def _load_whisper(self, folder: Path):
        from transformers import WhisperConfig

        try:
            config = WhisperConfig.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise EncoderError(f"{self.name}: config.json is not a Whisper configuration: {exc}") from None
        self._check_whisper_extractor(folder, config)
        state = self._encoder_state(folder)
        if state is None:
            from transformers import WhisperModel

            try:
                return WhisperModel.from_pretrained(folder, local_files_only=True).encoder
            except (OSError, ValueError) as exc:
                raise EncoderUnavailableError(f"{self.name}: no loadable weights in {folder}: {exc}") from None
        try:
            return build_whisper_encoder(config, state)
        except RuntimeError as exc:
            raise WeightsIntegrityError(f"{self.name}: the encoder weights do not fit its config: {exc}") from None

    def _check_whisper_extractor(self, folder: Path, config) -> None:
        path = folder / "preprocessor_config.json"
        if not path.is_file():
            return
        try:
            fe = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise EncoderError(f"{self.name}: preprocessor_config.json is unreadable: {exc}") from None
        expected = {"feature_size": config.num_mel_bins, "hop_length": HOP, "n_fft": 400, "sampling_rate": SAMPLE_RATE}
        wrong = {k: fe[k] for k, v in expected.items() if k in fe and fe[k] != v}
        if wrong:
            raise EncoderError(
                f"{self.name}: its feature extractor differs from Whisper's log-mel ({wrong}); not supported."
            )

    def _encoder_state(self, folder: Path) -> dict | None:
        """Encoder tensors from safetensors files, keys stripped of ``model.encoder.``/``encoder.``."""
        from safetensors import safe_open

        index = folder / "model.safetensors.index.json"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise WeightsIntegrityError(f"{self.name}: {index.name} is unreadable: {exc}") from None
            files = [folder / name for name in sorted(set(weight_map.values()))]
        elif (folder / "model.safetensors").is_file():
            files = [folder / "model.safetensors"]
        else:
            files = sorted(folder.glob("*.safetensors"))
        if not files:
            return None
        state = {}
        prefix = re.compile(r"^(?:model\.)?encoder\.")
        for file in files:
            try:
                with safe_open(str(file), framework="pt") as handle:
                    for key in handle.keys():
                        if prefix.match(key):
                            state[prefix.sub("", key, count=1)] = handle.get_tensor(key)
            except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
                raise WeightsIntegrityError(f"{self.name}: {file.name} is unreadable: {exc}") from None
        if not state:
            raise WeightsIntegrityError(f"{self.name}: no encoder weights found in {', '.join(f.name for f in files)}.")
        return state

    def _load_auto(self, folder: Path) -> None:
        from transformers import AutoFeatureExtractor, AutoModel

        try:
            extractor = AutoFeatureExtractor.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise EncoderUnavailableError(
                f"{self.name}: no feature extractor (preprocessor_config.json) in {folder}: {exc}"
            ) from None
        rate = getattr(extractor, "sampling_rate", SAMPLE_RATE)
        if rate != SAMPLE_RATE:
            raise EncoderError(f"{self.name}: the model expects {rate} Hz audio; SERE works at 16 kHz.")
        try:
            model = AutoModel.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise EncoderUnavailableError(f"{self.name}: the model could not be loaded from {folder}: {exc}") from None
        self._extractor = extractor
        self._model = model.eval().float().requires_grad_(False)

    # ---------------------------------------------------------------- encoding

    def encode(self, samples: np.ndarray) -> np.ndarray:
        return self.encode_batch([samples])[0]

    def encode_batch(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        checked = [check_samples(clip, MIN_SAMPLES, self.name) for clip in clips]
        self.load()
        if self._whisper is not None:
            return self._whisper.encode_many(checked)
        return [self._encode_auto(clip) for clip in checked]

    def _encode_auto(self, samples: np.ndarray) -> np.ndarray:
        import torch

        layers = self.info.layers
        hop = round(SAMPLE_RATE / self.info.frame_rate)
        window = max(hop, int(self._window_s * SAMPLE_RATE) // hop * hop)
        outputs = []
        with torch_threads(self._num_threads), torch.inference_mode():
            for start, end in split_windows(samples.shape[0], window):
                piece = samples[start:end]
                if piece.shape[0] < MIN_SAMPLES:
                    piece = np.pad(piece, (0, MIN_SAMPLES - piece.shape[0]))
                inputs = self._extractor(piece, sampling_rate=SAMPLE_RATE, return_tensors="pt")
                try:
                    out = self._model(**inputs, output_hidden_states=True)
                except (TypeError, ValueError, RuntimeError) as exc:
                    raise EncoderError(
                        f"{self.name}: the model failed on a {piece.shape[0]}-sample clip: {exc}"
                    ) from None
                hidden = out.hidden_states
                if hidden is None or len(hidden) <= max(layers):
                    raise EncoderError(f"{self.name}: the model did not return hidden states for layers {layers}.")
                outputs.append(torch.cat([hidden[i][0] for i in layers], dim=-1).float().numpy())
        return np.ascontiguousarray(np.concatenate(outputs, axis=0), dtype=np.float32)
