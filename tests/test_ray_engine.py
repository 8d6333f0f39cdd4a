"""``sere embed --engine ray`` on a real two-node Ray cluster on loopback, against the local engine."""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sere_core.cli import main
from sere_core.features import load_features

SERE = [sys.executable, "-c", "from sere_core.cli import main; main()"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(predicate, what: str, procs: dict[Path, subprocess.Popen], timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        for log, proc in procs.items():
            assert proc.poll() is None, f"`ray start` exited while waiting for {what}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def ray_cluster() -> Iterator[tuple[str, dict[str, str]]]:
    """A head and a worker node, one CPU each, on 127.0.0.1; yields (address, env for drivers).

    Both run ``ray start --block`` in this test's own temporary folder (``RAY_TMPDIR``, short
    because Ray's socket paths must be), so stopping them stops exactly this cluster, and share a
    token made here, so nothing in ``~/.ray`` is read or written.
    """
    if importlib.util.find_spec("ray") is None:  # not imported here: the drivers are subprocesses
        pytest.skip("Ray is the optional extra sere-studio[ray] (also in the dev extra) and is not installed")
    ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent))
    if ray_bin is None:
        pytest.skip("the `ray` command is not installed next to this Python")
    tmp = tempfile.mkdtemp(prefix="sray", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": tmp, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1",
           # token authentication with this cluster's own token (never ~/.ray/auth_token)
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats", "--block",
              "--object-store-memory", str(100 * 2**20)]
    logs = {name: Path(tmp) / f"{name}.log" for name in ("head", "worker")}
    procs: dict[Path, subprocess.Popen] = {}

    def start(name: str, args: list[str]) -> None:
        with logs[name].open("w") as log:
            procs[logs[name]] = subprocess.Popen([ray_bin, "start", *args, *common], env=env, stdout=log,
                                                 stderr=subprocess.STDOUT)

    def started(name: str) -> bool:
        return "Ray runtime started" in logs[name].read_text(errors="replace")

    try:
        start("head", ["--head", "--port", str(port), "--include-dashboard=false", "--temp-dir", tmp])
        _wait(lambda: _listening(port), "the head node", procs)
        start("worker", ["--address", address])
        _wait(lambda: started("head") and started("worker"), "both nodes", procs)
        yield address, env
    finally:
        for proc in reversed(procs.values()):  # SIGTERM: `ray start --block` drains and stops its processes
            proc.send_signal(signal.SIGTERM)
        for proc in reversed(procs.values()):
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
def test_ray_engine_on_two_nodes_writes_what_the_local_engine_writes(ray_cluster, audio_factory,
                                                                     tmp_path: Path) -> None:
    address, env = ray_cluster
    for i in range(20):
        emotion = ("happy", "sad", "angry")[i % 3]
        audio_factory.write(f"clips/{emotion}/{i:02d}.wav", audio_factory.speech_like(0.6 + 0.05 * i))
    audio_factory.write_bytes("clips/sad/broken.wav", b"not audio")
    folder = audio_factory.root / "clips"

    local = CliRunner().invoke(main, ["embed", str(folder), "--encoder", "prosody", "--out", str(tmp_path / "local")],
                               env={"SERE_CACHE_DIR": str(tmp_path / "cache-local")}, catch_exceptions=False)
    assert local.exit_code == 0, local.output

    shared_cache = tmp_path / "cache-ray"
    run = subprocess.run(
        [*SERE, "embed", str(folder), "--encoder", "prosody", "--out", str(tmp_path / "ray"),
         "--engine", "ray", "--address", address, "--cache-dir", str(shared_cache)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "embedded 20 clips from 20 of 21 files" in run.stdout
    assert "ray: 21 files embedded on 2 nodes" in run.stdout  # both nodes did work
    assert "broken.wav" in run.stderr

    info_local, clips_local = load_features(tmp_path / "local")
    info_ray, clips_ray = load_features(tmp_path / "ray")
    assert info_ray == info_local
    assert [c.clip_id for c in clips_ray] == [c.clip_id for c in clips_local]
    for a, b in zip(clips_local, clips_ray):
        assert (a.path, a.emotion, a.start_s, a.end_s) == (b.path, b.emotion, b.start_s, b.end_s)
        np.testing.assert_allclose(a.frames, b.frames, atol=2e-3 * max(1.0, float(np.abs(a.frames).max())))
    assert len(list(shared_cache.rglob("*.npy"))) == 20  # the workers filled the shared cache


def test_ray_engine_without_ray_says_how_to_install_it(audio_factory, tmp_path: Path, monkeypatch) -> None:
    audio_factory.write("one/a.wav", audio_factory.speech_like(0.6))
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    env = {"SERE_CACHE_DIR": str(tmp_path / "cache")}
    args = ["embed", str(audio_factory.root / "one"), "--encoder", "prosody"]
    result = CliRunner().invoke(main, [*args, "--engine", "ray"], env=env)
    assert result.exit_code != 0 and "pip install sere-studio[ray]" in result.output
    result = CliRunner().invoke(main, [*args, "--address", "127.0.0.1:6379"], env=env)
    assert result.exit_code != 0 and "--engine ray" in result.output
