"""What a recording decodes to is bounded, not only its file size (issue 14, decode bombs).

FLAC stores digital silence in almost nothing: a file of about a megabyte can announce and hold
eight hours of audio, 1.8 GB once decoded at 16 kHz. Such a file is refused from its header's
length before any decoding, and decoding itself stops at the limit whatever the header said.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sere_core.audio import AudioConfig, load_audio
from sere_core.audio.io import iter_blocks, probe
from sere_core.errors import RecordingTooLongError, SilentAudioError, TooShortError, UnreadableAudioError

REPO = Path(__file__).resolve().parents[1]


def silence_flac(path: Path, hours: float, rate: int = 8000) -> Path:
    """``hours`` of digital silence with a short tone each minute, written in one-minute blocks."""
    block = np.zeros(rate * 60, dtype=np.int16)
    block[:rate // 2] = (8000 * np.sin(2 * np.pi * 220 * np.arange(rate // 2) / rate)).astype(np.int16)
    with sf.SoundFile(path, "w", rate, 1, format="FLAC", subtype="PCM_16") as f:
        for _ in range(int(hours * 60)):
            f.write(block)
    return path


def test_a_recording_longer_than_the_limit_is_refused_from_its_header(tmp_path):
    path = silence_flac(tmp_path / "ten-minutes.flac", hours=1 / 6)
    with pytest.raises(RecordingTooLongError, match=r"lasts 10 min, longer than the 5 min allowed") as caught:
        probe(path, AudioConfig(max_duration_s=300))
    assert caught.value.reason == "too-long"
    assert len(load_audio(path, AudioConfig(max_duration_s=600))) > 1  # at the limit it loads


def test_decoding_stops_at_the_limit_whatever_the_header_announced(tmp_path):
    path = silence_flac(tmp_path / "ten-minutes.flac", hours=1 / 6)
    config = AudioConfig(max_duration_s=120)
    lying = dataclasses.replace(probe(path), frames=60 * 8000)  # a header that claims one minute
    decoded = 0
    with pytest.raises(RecordingTooLongError, match="lasts more than the 2 min allowed"):
        for block in iter_blocks(lying, 8000, config):
            decoded += len(block)
    assert decoded <= 120 * 8000


def test_a_flac_whose_header_gives_no_length_is_refused_clearly(tmp_path):
    path = silence_flac(tmp_path / "unknown.flac", hours=1 / 60)
    data = bytearray(path.read_bytes())
    # STREAMINFO's last 36 bits of bytes 13-17 (file offsets 21-25) hold the sample count; 0 = unknown.
    data[21] &= 0xF0
    data[22:26] = b"\0\0\0\0"
    path.write_bytes(bytes(data))
    with pytest.raises(UnreadableAudioError, match="does not say how long"):
        probe(path)


_IMPORT = """
import json, resource, sys
from pathlib import Path
from sere_core.app import AppContext, AppSettings
from sere_core.app import imports, projects
from sere_core.app.testing import local_caller
ME = local_caller()
ctx = AppContext.open(AppSettings(data_dir=Path(sys.argv[1]), cache_dir=Path(sys.argv[2]), encoder="prosody"))
pid = projects.create_project(ctx, ME, "bomb").id
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the app's own imports: 0.7-1.2 GB
report = imports.import_audio(ctx, ME, pid, [sys.argv[3]], "target", warm=False)
ctx.close()
print(json.dumps({"added": report.added, "failures": [[f.reason, f.message] for f in report.failures],
                  "peak_growth_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before}))
"""


@pytest.mark.slow
def test_a_decode_bomb_uploaded_to_the_app_is_refused_in_bounded_memory(tmp_path):
    """Eight hours of silence in about a megabyte of FLAC, through the app's upload path, in a
    process of its own whose peak memory is measured around the upload: decoding it would take
    1.8 GB (before the limit, the peak grew by 2.5 GB)."""
    bomb = silence_flac(tmp_path / "bomb.flac", hours=8)
    assert bomb.stat().st_size < 3_000_000
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERE_")}
    out = subprocess.run([sys.executable, "-c", _IMPORT, str(tmp_path / "data"), str(tmp_path / "cache"),
                          str(bomb)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["added"] == 0
    assert result["failures"] == [["too-long", "the recording lasts 8 h, longer than the 2 h allowed; "
                                   "please cut it into shorter recordings"]]
    assert result["peak_growth_mb"] < 300, result  # decoding it grew the peak by 1.8-2.5 GB


# --- smaller cases of the same issue -----------------------------------------------------------------


def _tone(seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_a_file_that_is_only_a_dc_offset_is_silent(tmp_path):
    path = tmp_path / "dc.wav"
    sf.write(path, np.full(32000, 0.2, dtype=np.float32), 16000)
    with pytest.raises(SilentAudioError, match="only a constant offset"):
        load_audio(path)
    sf.write(path, _tone(2.0) * 0.5 + 0.2, 16000)  # a sound on top of an offset still loads
    assert load_audio(path)


@pytest.mark.parametrize("offset", [0.01, 0.2])
def test_speech_on_an_offset_is_trimmed_and_normalized_as_without_it(tmp_path, offset):
    """Quiet speech (RMS 0.01) on an offset as loud or louder: the offset filled the pauses, so
    the silence around the speech was kept and the gain was set by the offset, not the voice."""
    rng = np.random.default_rng(1)
    t = np.arange(16000) / 16000
    speech = (0.02 * rng.standard_normal(16000) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    quiet = np.zeros(32000, dtype=np.float32)
    samples = np.concatenate([quiet, speech, quiet]) + (1e-3 * rng.standard_normal(80000)).astype(np.float32)
    clean, shifted = tmp_path / "clean.wav", tmp_path / "shifted.wav"
    sf.write(clean, samples, 16000)
    sf.write(shifted, samples + np.float32(offset), 16000)
    [want] = load_audio(clean)
    [got] = load_audio(shifted)
    assert (got.start_s, got.end_s) == (want.start_s, want.end_s)
    assert abs(float(got.samples.mean())) < 1e-3
    assert np.sqrt(np.mean(got.samples ** 2)) == pytest.approx(np.sqrt(np.mean(want.samples ** 2)), rel=0.01)


@pytest.mark.parametrize("seconds, loads", [(0.29, False), (0.31, True)])
@pytest.mark.parametrize("surrounded", [False, True], ids=["alone", "inside-silence"])
def test_the_minimum_length_holds_the_same_wherever_the_sound_sits(tmp_path, seconds, loads, surrounded):
    quiet = np.zeros(8000, dtype=np.float32)
    samples = np.concatenate([quiet, _tone(seconds), quiet]) if surrounded else _tone(seconds)
    path = tmp_path / "short.wav"
    sf.write(path, samples, 16000)
    if loads:
        assert load_audio(path)
    else:
        with pytest.raises(TooShortError, match=f"only {seconds:.2f} s of speech"):
            load_audio(path)


def test_a_wav_whose_header_understates_its_audio_is_reported_damaged(tmp_path):
    path = tmp_path / "understated.wav"
    sf.write(path, _tone(2.0), 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    at = data.find(b"data")
    data[at + 4 : at + 8] = (3200).to_bytes(4, "little")  # 0.1 s of the 2 s that follow
    path.write_bytes(bytes(data))
    with pytest.raises(UnreadableAudioError, match="announces less audio than the file holds"):
        load_audio(path)


def test_a_wav_with_a_chunk_after_its_audio_still_loads(tmp_path):
    path = tmp_path / "tagged.wav"
    sf.write(path, _tone(2.0), 16000, subtype="PCM_16")
    body = b"INFOINAM" + (10_000).to_bytes(4, "little") + b"x" * 10_000
    data = bytearray(path.read_bytes() + b"LIST" + len(body).to_bytes(4, "little") + body)
    data[4:8] = (len(data) - 8).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    assert load_audio(path)
