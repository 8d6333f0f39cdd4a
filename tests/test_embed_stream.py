"""``sere embed`` as a stream: flat memory over many files, and resuming after SIGKILL or Ctrl-C."""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open

from sere_core.cache import EmbeddingCache
from sere_core.cli import main
from sere_core.encoders import get_encoder
from sere_core.errors import ConfigError, ManifestError
from sere_core.features import embed_to_folder, iter_embedded, load_features
from sere_core.manifests import read_manifest

SERE = [sys.executable, "-c", "from sere_core.cli import main; main()"]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _write_clips(audio_factory, folder: str, n: int, seconds: float = 0.5) -> Path:
    for i in range(n):
        emotion = ("happy", "sad")[i % 2]
        audio_factory.write(f"{folder}/{emotion}/{i:05d}.wav", audio_factory.speech_like(seconds))
    return audio_factory.root / folder


def _shard_files(out: Path) -> int:
    """How many files the shards of ``out`` record as done (the journal)."""
    total = 0
    for shard in sorted(out.glob("frames-*.safetensors")):
        with safe_open(str(shard), framework="np") as handle:
            total += len(json.loads(handle.metadata()["sere"])["files"])
    return total


def _same_features(a: Path, b: Path) -> None:
    info_a, clips_a = load_features(a)
    info_b, clips_b = load_features(b)
    assert info_a == info_b
    assert [c.clip_id for c in clips_a] == [c.clip_id for c in clips_b]
    for x, y in zip(clips_a, clips_b):
        assert (x.path, x.start_s, x.end_s, x.emotion) == (y.path, y.start_s, y.end_s, y.emotion)
        np.testing.assert_array_equal(x.frames, y.frames)


@pytest.mark.slow
def test_memory_stays_flat_from_200_to_1000_files(audio_factory, tmp_path: Path) -> None:
    """Were frames kept, the 800 clips after the 200th (50 x 45 float32 frames each) would add 6.9 MB."""
    entries = read_manifest(_write_clips(audio_factory, "many", 1000))
    encoder, cache = get_encoder("prosody"), EmbeddingCache(tmp_path / "cache")
    assert inspect.isgenerator(iter_embedded(entries[:1], encoder, cache))
    peaks: dict[int, int] = {}

    def progress(done: int, total: int) -> None:
        if done == 200:
            peaks[done] = tracemalloc.get_traced_memory()[1]

    tracemalloc.start()
    try:
        summary = embed_to_folder(entries, partial(iter_embedded, encoder=encoder, cache=cache), encoder.info,
                                  tmp_path / "out", shard_mb=0.25, progress=progress)
        peaks[1000] = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert summary.clips == 1000
    grown = peaks[1000] - peaks[200]
    assert grown < 2 * 2**20, f"peak grew by {grown / 2**20:.1f} MB from file 200 to file 1000"
    _, clips = load_features(tmp_path / "out")
    assert len(clips) == 1000 and len(list((tmp_path / "out").glob("frames-*.safetensors"))) > 10


def _start(args: list[str], cache: Path) -> subprocess.Popen:
    """The CLI in a child process that takes Ctrl-C as a terminal would give it: a test run started in
    the background by a shell without job control ignores SIGINT, and its children would inherit that
    (the resumed run then finished instead of stopping, and the test failed)."""
    env = {**os.environ, "SERE_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([*SERE, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_shards(proc: subprocess.Popen, out: Path, at_least: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(list(out.glob("frames-*.safetensors"))) < at_least:
        assert proc.poll() is None, f"finished before it could be interrupted: {proc.communicate()}"
        assert time.monotonic() < deadline, "no progress in the journal"
        time.sleep(0.02)


@pytest.mark.slow
def test_interrupted_embed_resumes_and_equals_an_uninterrupted_run(audio_factory, tmp_path: Path) -> None:
    folder = _write_clips(audio_factory, "clips", 250)
    audio_factory.write_bytes("clips/sad/broken.wav", b"not audio")
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ["embed", str(folder), "--encoder", "prosody", "--out", str(out), "--shard-mb", "0.02"]

    killed = _start(args, cache)  # SIGKILL: no chance to clean up
    _wait_for_shards(killed, out, 3)
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    with pytest.raises(ManifestError, match="unfinished"):  # never mistaken for a complete folder
        load_features(out)
    first = _shard_files(out)

    stopped = _start(args, cache)  # Ctrl-C: writes what it holds, says how to go on
    _wait_for_shards(stopped, out, len(list(out.glob("frames-*.safetensors"))) + 3)
    stopped.send_signal(signal.SIGINT)
    _, err = stopped.communicate(timeout=60)
    assert stopped.returncode != 0 and "interrupted" in err and "continues" in err
    assert not (out / "features.json").exists()
    second = _shard_files(out)
    assert 0 < first < second < 251

    finish = CliRunner().invoke(main, args, env={"SERE_CACHE_DIR": str(cache)}, catch_exceptions=False)
    assert finish.exit_code == 0, finish.output
    assert f"{second} files were already done" in finish.output
    assert "embedded 250 clips from 250 of 251 files" in finish.output and "broken.wav" in finish.output

    whole = CliRunner().invoke(main, [*args[:-4], "--out", str(tmp_path / "whole")],
                               env={"SERE_CACHE_DIR": str(tmp_path / "cache-whole")}, catch_exceptions=False)
    assert whole.exit_code == 0, whole.output
    _same_features(out, tmp_path / "whole")
    assert Path(json.loads((out / "failures.jsonl").read_text())["path"]).name == "broken.wav"


def test_a_finished_folder_rerun_skips_everything_and_refuses_another_encoder(audio_factory, tmp_path: Path) -> None:
    folder = _write_clips(audio_factory, "few", 6)
    args = ["embed", str(folder), "--encoder", "prosody", "--out", str(tmp_path / "out")]
    env = {"SERE_CACHE_DIR": str(tmp_path / "cache")}
    assert CliRunner().invoke(main, args, env=env).exit_code == 0
    again = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
    assert again.exit_code == 0 and "6 files were already done" in again.output
    assert len(load_features(tmp_path / "out")[1]) == 6

    other = get_encoder("prosody", n_mels=20)
    with pytest.raises(ConfigError, match="choose another --out"):
        embed_to_folder(read_manifest(folder), partial(iter_embedded, encoder=other), other.info, tmp_path / "out")


def test_two_runs_cannot_write_one_folder_at_once(audio_factory, tmp_path: Path) -> None:
    from sere_core.features import FeaturesWriter

    folder = _write_clips(audio_factory, "locked", 3)
    enc = get_encoder("prosody")
    first = FeaturesWriter(tmp_path / "out", enc.info)
    args = ["embed", str(folder), "--encoder", "prosody", "--out", str(tmp_path / "out")]
    env = {"SERE_CACHE_DIR": str(tmp_path / "cache")}
    busy = CliRunner().invoke(main, args, env=env)
    assert busy.exit_code != 0 and "another `sere embed` run" in busy.output
    with pytest.raises(ConfigError, match="choose another --out"):  # the same refusal from the library
        FeaturesWriter(tmp_path / "out", enc.info)
    first.close()  # done: the folder is free again, and the lock file is no feature
    done = CliRunner().invoke(main, args, env=env)
    assert done.exit_code == 0, done.output
    assert len(load_features(tmp_path / "out")[1]) == 3
    other = get_encoder("prosody", n_mels=20)  # a refused open releases the lock it took
    with pytest.raises(ConfigError, match="holds features made with"):
        FeaturesWriter(tmp_path / "out", other.info)
    FeaturesWriter(tmp_path / "out", enc.info).close()
