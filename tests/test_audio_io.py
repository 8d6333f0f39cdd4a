"""Decoding every supported format, and refusing every kind of bad file with a clear message."""

from __future__ import annotations

import hashlib
import os
import struct

import numpy as np
import pytest
import soundfile as sf

from sere_core.audio import AudioConfig, load_audio, probe, write_audio, write_wav
from sere_core.audio.io import mp3_supported
from sere_core.errors import (
    AudioError,
    EmptyAudioError,
    FileTooLargeError,
    InvalidSamplesError,
    SampleRateError,
    SilentAudioError,
    TooShortError,
    UnreadableAudioError,
    UnsupportedFormatError,
)

PEAK_LIMIT = 10 ** (AudioConfig().peak_dbfs / 20)


def rms_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.asarray(x, dtype=np.float64) ** 2)))


needs_mp3 = pytest.mark.skipif(not mp3_supported(), reason="this libsndfile cannot read MP3 (needs >= 1.1)")


@pytest.mark.parametrize(
    ("ext", "rate", "channels"),
    [
        ("wav", 44100, 2),
        ("flac", 48000, 1),
        ("ogg", 22050, 2),
        pytest.param("mp3", 44100, 1, marks=needs_mp3),
        pytest.param("mp3", 16000, 2, marks=needs_mp3),
    ],
)
def test_each_format_decodes_to_clean_16k_mono(audio_factory, ext, rate, channels):
    speech = audio_factory.speech_like(1.5, rate)
    x = np.concatenate([audio_factory.silence(0.6, rate), speech, audio_factory.silence(0.9, rate)])
    data = np.stack([x, 0.7 * x], axis=1) if channels == 2 else x
    path = audio_factory.write(f"clip.{ext}", data, rate)

    segments = load_audio(path)

    assert len(segments) == 1
    seg = segments[0]
    assert seg.sample_rate == 16000
    assert seg.samples.dtype == np.float32 and seg.samples.ndim == 1
    assert seg.source == os.fspath(path)
    # Trimmed to the speech plus the hangover (lossy codecs add a few ms of delay).
    assert seg.start_s == pytest.approx(0.6 - 0.15, abs=0.08)
    assert seg.end_s == pytest.approx(2.1 + 0.15, abs=0.08)
    assert seg.duration_s == pytest.approx(seg.end_s - seg.start_s, abs=1e-3)
    assert rms_db(seg.samples) == pytest.approx(AudioConfig().target_dbfs, abs=2.0)
    assert np.abs(seg.samples).max() <= PEAK_LIMIT + 1e-6
    assert seg.audio_id == hashlib.sha256(seg.samples.astype("<f4").tobytes()).hexdigest()


def test_segments_are_read_only(audio_factory):
    path = audio_factory.write("clip.wav", audio_factory.speech_like(1.0))
    seg = load_audio(path)[0]
    with pytest.raises(ValueError):
        seg.samples[0] = 1.0


def test_content_not_extension_decides_among_supported_formats(audio_factory):
    flac = audio_factory.write("real.flac", audio_factory.speech_like(1.0))
    renamed = flac.with_name("renamed.wav")
    flac.rename(renamed)
    assert probe(renamed).format == "FLAC"
    assert len(load_audio(renamed)) == 1


# -- bad input: each raises its own error, names the file, and speaks plainly ----------------


def assert_refused(path, error, *words, config=AudioConfig()):
    with pytest.raises(error) as info:
        load_audio(path, config)
    message = str(info.value)
    assert message.startswith(f"{path.name}: "), message
    for word in words:
        assert word in message, message
    assert info.value.reason == error.reason
    return message


def test_text_file_named_wav_is_unsupported(audio_factory):
    path = audio_factory.write_bytes("notes.wav", b"speaker,emotion\nanna,happy\n")
    assert_refused(path, UnsupportedFormatError, "text, not audio")


@pytest.mark.parametrize("name", ["voice.aiff", "notes.txt", "clip.m4a", "noextension"])
def test_unsupported_extensions(audio_factory, name):
    path = audio_factory.write_bytes(name, b"whatever")
    assert_refused(path, UnsupportedFormatError, "not supported")


def test_aiff_renamed_to_wav_is_unsupported(audio_factory, tmp_path):
    sf.write(tmp_path / "x.aiff", audio_factory.speech_like(1.0), 16000)
    path = tmp_path / "x.wav"
    (tmp_path / "x.aiff").rename(path)
    assert_refused(path, UnsupportedFormatError, "AIFF")


def test_zero_byte_file_is_empty(audio_factory):
    assert_refused(audio_factory.write_bytes("zero.wav", b""), EmptyAudioError, "0 bytes")


def test_header_without_samples_is_empty(audio_factory):
    path = audio_factory.write("hollow.wav", np.zeros(0, dtype=np.float32))
    assert_refused(path, EmptyAudioError, "no sound")


def test_random_bytes_are_unreadable(audio_factory):
    data = np.random.default_rng(0).bytes(4000)
    assert_refused(audio_factory.write_bytes("noise.wav", data), UnreadableAudioError, "damaged")


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", pytest.param("mp3", marks=needs_mp3)])
@pytest.mark.parametrize("keep", [0.5, 0.002])
def test_truncated_files_are_unreadable(audio_factory, ext, keep):
    path = audio_factory.write(f"whole.{ext}", audio_factory.speech_like(4.0))
    data = path.read_bytes()
    cut = audio_factory.write_bytes(f"cut.{ext}", data[: max(12, int(len(data) * keep))])
    message = assert_refused(cut, UnreadableAudioError)
    assert any(w in message for w in ("incomplete", "damaged")), message


def test_missing_file_and_folder(audio_factory, tmp_path):
    assert_refused(tmp_path / "nowhere.wav", UnreadableAudioError, "does not exist")
    folder = tmp_path / "folder.wav"
    folder.mkdir()
    assert_refused(folder, UnreadableAudioError, "folder")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_samples(audio_factory, bad):
    x = audio_factory.speech_like(1.0)
    x[12000] = bad
    path = audio_factory.write("broken.wav", x, subtype="FLOAT")
    assert_refused(path, InvalidSamplesError, "NaN or infinity", "0.75 s")


def _with_rate(path, rate):
    data = bytearray(path.read_bytes())
    struct.pack_into("<II", data, 24, rate, rate * 2)  # canonical 16-bit mono WAV header
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("rate", [1000, 3999, 384001, 1_000_000])
def test_absurd_sample_rates(audio_factory, rate):
    path = _with_rate(audio_factory.write("odd.wav", audio_factory.speech_like(1.0), subtype="PCM_16"), rate)
    assert_refused(path, SampleRateError, f"{rate} Hz")


def test_silent_file(audio_factory):
    path = audio_factory.write("quiet.wav", audio_factory.silence(2.0))
    assert_refused(path, SilentAudioError, "the file is silent (no speech above -60 dBFS was found)")


def test_faint_hiss_is_silent(audio_factory):
    path = audio_factory.write("hiss.wav", audio_factory.noise(2.0, amp=10 ** (-75 / 20)))
    assert_refused(path, SilentAudioError, "silent")


def test_only_clicks_is_silent(audio_factory):
    x = audio_factory.silence(2.0)
    x[8000:8100] = 0.5  # a 6 ms click
    assert_refused(audio_factory.write("click.wav", x), SilentAudioError, "clicks")


def test_too_short(audio_factory):
    x = np.concatenate([audio_factory.silence(0.5), audio_factory.tone(0.2), audio_factory.silence(0.5)])
    message = assert_refused(audio_factory.write("blip.wav", x), TooShortError, "0.3 s")
    assert "0.20 s" in message


def test_size_is_checked_before_decoding(audio_factory):
    # A text file would be refused as unsupported, but the size limit comes first.
    path = audio_factory.write_bytes("huge.wav", b"x" * 5000)
    config = AudioConfig(max_file_mb=0.001)
    assert_refused(path, FileTooLargeError, "0.001 MB", config=config)


def test_file_just_under_the_limit_loads(audio_factory):
    path = audio_factory.write("ok.wav", audio_factory.speech_like(1.0), subtype="PCM_16")
    config = AudioConfig(max_file_mb=(path.stat().st_size + 1) / 1e6)
    assert len(load_audio(path, config)) == 1


def test_pipes_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "stream.wav"
    os.mkfifo(fifo)
    assert_refused(fifo, UnreadableAudioError, "not a regular file")


def test_every_error_is_an_audio_error():
    for cls in (EmptyAudioError, FileTooLargeError, InvalidSamplesError, SampleRateError,
                SilentAudioError, TooShortError, UnreadableAudioError, UnsupportedFormatError):
        assert issubclass(cls, AudioError)


# -- writing ----------------------------------------------------------------------------------


def test_write_wav_round_trips_float_exactly(tmp_path):
    x = np.random.default_rng(1).uniform(-1, 1, 1000).astype(np.float32)
    path = write_wav(tmp_path / "sub" / "out.wav", x, 16000)
    y, rate = sf.read(path, dtype="float32")
    assert rate == 16000
    np.testing.assert_array_equal(x, y)
    assert [p.name for p in path.parent.iterdir()] == ["out.wav"]  # no temporary left behind


def test_write_is_atomic_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "keep.wav"
    write_wav(target, np.zeros(10, dtype=np.float32), 16000)
    before = target.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(sf, "write", boom)
    with pytest.raises(OSError):
        write_wav(target, np.ones(10, dtype=np.float32), 16000)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.wav"]


def test_write_audio_refuses_unknown_extension(tmp_path):
    with pytest.raises(ValueError):
        write_audio(tmp_path / "x.aiff", np.zeros(10, dtype=np.float32), 16000)


def test_config_is_validated():
    from sere_core.errors import ConfigError

    for bad in (
        {"max_file_mb": 0},
        {"min_speech_s": 40.0},
        {"sample_rate": 16000.5},
        {"peak_dbfs": 3.0},
        {"target_dbfs": -0.5},
        {"vad_noise_fraction": 1.0},
        {"max_segment_s": float("nan")},
        {"min_sample_rate": 500000},
    ):
        with pytest.raises(ConfigError):
            AudioConfig(**bad)


def test_docstring_examples_run():
    import doctest

    import sere_core.audio
    from sere_core.audio import processing, vad

    for module in (sere_core.audio, processing, vad):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__
