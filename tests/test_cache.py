"""EmbeddingCache: round trip, misses, key separation, atomic concurrent writes, corruption."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from sere_core.cache import EmbeddingCache, default_cache_dir
from sere_core.encoders import EncoderInfo, cache_key
from sere_core.errors import ConfigError

INFO = EncoderInfo("whisper-base", "ct2-905e5bf8336b-v1", 50.0, 8, (3, 6))


def frames(t: int = 20, d: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((t, d)).astype(np.float32)


def test_round_trip_is_float16_on_disk_and_float32_back(tmp_path):
    cache = EmbeddingCache(tmp_path)
    x = frames()
    cache.put("clip-1", INFO, x)
    got = cache.get("clip-1", INFO)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, x, atol=2e-3, rtol=1e-3)
    path = cache.path("clip-1", INFO)
    assert path.parent.parent == tmp_path / cache_key(INFO) and len(path.parent.name) == 2
    assert np.load(path, allow_pickle=False).dtype == np.float16
    assert (tmp_path / cache_key(INFO) / "info.json").is_file()
    assert not list(tmp_path.rglob("*.tmp"))


def test_miss_returns_none(tmp_path):
    cache = EmbeddingCache(tmp_path)
    assert cache.get("never-stored", INFO) is None


def test_keys_separate_layers_versions_and_encoders(tmp_path):
    cache = EmbeddingCache(tmp_path)
    other_layers = dataclasses.replace(INFO, layers=(6,))
    other_version = dataclasses.replace(INFO, version="ct2-905e5bf8336b-v2")
    other_encoder = dataclasses.replace(INFO, name="hf:/models/x")
    cache.put("a", INFO, frames(seed=1))
    for info in (other_layers, other_version, other_encoder):
        assert cache.get("a", info) is None
    cache.put("a", other_layers, frames(seed=2))
    np.testing.assert_allclose(cache.get("a", INFO), frames(seed=1), atol=2e-3)
    np.testing.assert_allclose(cache.get("a", other_layers), frames(seed=2), atol=2e-3)


def test_put_replaces_and_rejects_bad_frames(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.put("a", INFO, frames(seed=1))
    cache.put("a", INFO, frames(t=5, seed=2))
    assert cache.get("a", INFO).shape == (5, 8)
    with pytest.raises(ConfigError):
        cache.put("a", INFO, frames(d=7))
    with pytest.raises(ConfigError):
        cache.put("a", INFO, np.full((3, 8), np.nan, dtype=np.float32))
    with pytest.raises(ConfigError):
        cache.put("a", INFO, np.full((3, 8), 1e6, dtype=np.float32))


@pytest.mark.parametrize("bad_id", ["../escape", "a/b", "", ".hidden", "x" * 201, "-rf"])
def test_unsafe_audio_ids_are_refused(tmp_path, bad_id):
    with pytest.raises(ConfigError):
        EmbeddingCache(tmp_path).put(bad_id, INFO, frames())


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[: len(raw) // 2],  # truncated
        lambda raw: b"garbage" * 10,  # not a .npy
        lambda raw: b"",  # empty
        lambda raw: b"PK\x03\x04" + raw,  # looks like a zip
    ],
)
def test_corrupt_file_is_a_miss_and_gets_overwritten(tmp_path, caplog, damage):
    cache = EmbeddingCache(tmp_path)
    cache.put("a", INFO, frames(seed=3))
    path = cache.path("a", INFO)
    path.write_bytes(damage(path.read_bytes()))
    with caplog.at_level(logging.WARNING, logger="sere_core.cache"):
        assert cache.get("a", INFO) is None
    assert "treated as a miss" in caplog.text
    cache.put("a", INFO, frames(seed=4))
    np.testing.assert_allclose(cache.get("a", INFO), frames(seed=4), atol=2e-3)


def test_wrong_shape_on_disk_is_a_miss(tmp_path):
    cache = EmbeddingCache(tmp_path)
    path = cache.path("a", INFO)
    path.parent.mkdir(parents=True)
    np.save(path, np.zeros((4, 3), dtype=np.float16))
    assert cache.get("a", INFO) is None
    np.save(path, np.zeros((4, 8), dtype=np.float64))
    assert cache.get("a", INFO) is None


def _writer(root: str, worker: int, rounds: int) -> None:
    cache = EmbeddingCache(root)
    for i in range(rounds):
        # every row of one write carries the same value, so a torn file would be visible
        cache.put("shared", INFO, np.full((200, 8), worker * 100 + i, dtype=np.float32))


def test_concurrent_writers_leave_a_readable_file(tmp_path):
    ctx = multiprocessing.get_context("fork")
    rounds = 25
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, rounds)) for w in range(4)]
    for p in procs:
        p.start()
    cache = EmbeddingCache(tmp_path)
    seen = 0
    while any(p.is_alive() for p in procs):
        got = cache.get("shared", INFO)
        if got is not None:
            assert got.shape == (200, 8) and (got == got[0, 0]).all()
            seen += 1
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    final = cache.get("shared", INFO)
    assert final is not None and final.shape == (200, 8) and (final == final[0, 0]).all()
    assert int(final[0, 0]) % 100 == rounds - 1  # the last rename is some writer's last round
    assert not list(Path(tmp_path).rglob("*.tmp"))


def test_default_location(monkeypatch, tmp_path):
    monkeypatch.setenv("SERE_CACHE_DIR", str(tmp_path / "c"))
    assert EmbeddingCache().root == tmp_path / "c"
    monkeypatch.delenv("SERE_CACHE_DIR")
    default = default_cache_dir()
    assert default.name == "embeddings" and "sere-studio" in default.parts
