"""Stored audio, embeddings and models are written atomically: a write that dies halfway (here the
disk "fills up" after a few hundred bytes) leaves the earlier file or nothing, never part of one,
and no temporary file behind."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sere_core.app.context import SegmentStore
from sere_core.atomic import atomic_write_bytes
from sere_core.benchmark.synthetic import make_task, unlabel
from sere_core.cache import EmbeddingCache
from sere_core.encoders import EncoderInfo
from sere_core.method import SERE, SEREConfig
from sere_core.storage import BlobStore

INFO = EncoderInfo("prosody", "prosody-v1", 100.0, 8, ())
AUDIO_ID = "ab" * 32


class _DiskFull:
    """A file handle that accepts ``budget`` bytes and then fails like a full disk."""

    def __init__(self, handle: io.BufferedWriter, budget: int) -> None:
        self._handle, self._budget = handle, budget

    def write(self, data) -> int:
        data = bytes(memoryview(data).cast("B"))
        if len(data) > self._budget:
            self._handle.write(data[: self._budget])
            self._handle.flush()
            raise OSError(errno.ENOSPC, "No space left on device")
        self._budget -= len(data)
        return self._handle.write(data)

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._handle.close()


@pytest.fixture
def disk_fills(monkeypatch):
    """``disk_fills(nth=0, budget=300)``: the ``nth`` file opened for writing from now on dies
    after ``budget`` bytes (the crash point); the others are written normally."""
    real_fdopen = os.fdopen

    def arm(nth: int = 0, budget: int = 300) -> None:
        opened = [0]

        def fdopen(fd, mode="r", *args, **kwargs):
            handle = real_fdopen(fd, mode, *args, **kwargs)
            if "w" not in mode:
                return handle
            opened[0] += 1
            return _DiskFull(handle, budget) if opened[0] == nth + 1 else handle

        monkeypatch.setattr(os, "fdopen", fdopen)

    return arm


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name not in keep)


def test_the_helper_keeps_the_old_file(tmp_path, disk_fills):
    target = atomic_write_bytes(tmp_path / "reference.json", b'{"old": 1}')
    disk_fills()
    with pytest.raises(OSError, match="No space"):
        atomic_write_bytes(target, b"x" * 10_000)
    assert target.read_bytes() == b'{"old": 1}'
    assert _leftovers(tmp_path, {"reference.json"}) == []


def test_embedding_cache_entry(tmp_path, disk_fills):
    cache = EmbeddingCache(tmp_path)
    old = np.ones((50, 8), np.float32)
    cache.put("clip-a", INFO, old)
    disk_fills()
    with pytest.raises(OSError, match="No space"):
        cache.put("clip-a", INFO, np.zeros((400, 8), np.float32))  # replacing: the old entry stays
    disk_fills()
    with pytest.raises(OSError, match="No space"):
        cache.put("clip-b", INFO, np.zeros((400, 8), np.float32))  # new: nothing appears
    np.testing.assert_array_equal(cache.get("clip-a", INFO), old)
    assert cache.get("clip-b", INFO) is None and not cache.path("clip-b", INFO).exists()
    assert _leftovers(tmp_path, {"info.json", cache.path("clip-a", INFO).name}) == []


def test_uploaded_recording(tmp_path, disk_fills):
    blobs = BlobStore(tmp_path)
    data = np.random.default_rng(0).integers(0, 255, 20_000, dtype=np.uint8).tobytes()
    disk_fills()
    with pytest.raises(OSError, match="No space"):
        blobs.put_bytes(data, "wav")
    assert _leftovers(tmp_path, set()) == []
    sha, rel = blobs.put_bytes(data, "wav")  # the retry stores it whole
    assert blobs.path_for(rel).read_bytes() == data and blobs.has(sha)


def test_listening_copy_of_a_clip(tmp_path, monkeypatch):
    segments = SegmentStore(tmp_path)
    samples = np.sin(np.linspace(0, 600, 16000)).astype(np.float32) * 0.3

    def dies_halfway(file, data, samplerate, **kwargs):  # the encoder wrote a little, then failed
        file.write(b"fLaC" + bytes(100))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sf, "write", dies_halfway)
    with pytest.raises(OSError, match="No space"):
        segments.put(AUDIO_ID, samples, 16000)
    assert segments.get(AUDIO_ID) is None and _leftovers(tmp_path, set()) == []
    monkeypatch.undo()
    segments.put(AUDIO_ID, samples, 16000)
    back, sr = segments.get(AUDIO_ID)
    assert sr == 16000 and np.allclose(back, samples, atol=1e-3)


@pytest.fixture(scope="module")
def model():
    src, tgt = make_task(2, 3, seed=3)
    return SERE(SEREConfig(steps=3, pca_dim=8, hidden_dim=16, embed_dim=8, snapshot_every=3)).fit(src, unlabel(tgt))


@pytest.mark.parametrize("nth", [0, 1], ids=["weights", "settings"])
def test_saved_model(tmp_path, disk_fills, model, nth):
    """Whichever of the two files dies, the folder keeps the earlier model, whole and loadable,
    and no partial file or temporary folder is left beside it."""
    folder = model.save(tmp_path / "model")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    disk_fills(nth=nth)
    with pytest.raises(OSError, match="No space"):
        model.save(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert SERE.load(folder).classes_ == model.classes_
    SERE.load(model.save(folder))  # saving again works
