"""Mono mixing, resampling, loudness normalization, hashing and streamed decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio

from sere_core.audio import AudioConfig, audio_hash, decode_mono, load_audio, probe, segment_signal
from sere_core.audio.processing import StreamingResampler, effective_input_rate, normalize_loudness

TARGET = AudioConfig().target_dbfs
PEAK_LIMIT = 10 ** (AudioConfig().peak_dbfs / 20)


def rms_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.asarray(x, dtype=np.float64) ** 2)))


def dominant_hz(x: np.ndarray, sr: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spectrum)])


# -- mono ------------------------------------------------------------------------------------


def test_anti_phase_stereo_takes_the_louder_channel(audio_factory):
    voice = audio_factory.speech_like(2.0, 16000)
    stereo = np.stack([0.8 * voice, -voice], axis=1)  # averaging would leave 10 % of the voice
    path = audio_factory.write("antiphase.wav", stereo, 16000, subtype="FLOAT")

    mono = decode_mono(probe(path))
    assert mono.mix == "channel 1"
    np.testing.assert_allclose(mono.samples, -voice, atol=1e-6)

    seg = load_audio(path)[0]
    assert rms_db(seg.samples) == pytest.approx(TARGET, abs=1.5)


def test_ordinary_stereo_is_averaged(audio_factory):
    left = audio_factory.speech_like(2.0)
    right = 0.5 * left + audio_factory.noise(2.0, amp=0.02)
    path = audio_factory.write("stereo.wav", np.stack([left, right], axis=1), subtype="FLOAT")
    mono = decode_mono(probe(path))
    assert mono.mix == "mean"
    np.testing.assert_allclose(mono.samples, (left + right) / 2, atol=1e-6)


def test_uncorrelated_channels_are_averaged(audio_factory):
    stereo = np.stack([audio_factory.speech_like(2.0), audio_factory.speech_like(2.0)], axis=1)
    path = audio_factory.write("two_voices.wav", stereo, subtype="FLOAT")
    assert decode_mono(probe(path)).mix == "mean"


# -- resampling ------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 11025, 44100, 96000])
def test_streaming_resampler_equals_one_shot(rate):
    x = np.random.default_rng(rate).standard_normal(int(rate * 1.5) + 77).astype(np.float32) * 0.1
    whole = torchaudio.functional.resample(torch.from_numpy(x)[None], rate, 16000)[0].numpy()
    resampler = StreamingResampler(rate, 16000, chunk_frames=rate // 4 + 5)
    pieces = []
    for i in range(0, len(x), 9001):
        pieces += resampler.push(x[i : i + 9001])
    pieces += resampler.flush()
    streamed = np.concatenate(pieces)
    assert len(streamed) == len(whole)
    np.testing.assert_allclose(streamed, whole, atol=2e-5)


def test_block_size_does_not_change_the_result(audio_factory):
    x, _ = audio_factory.utterances([2.0, 3.0], pause_s=0.3, sr=48000)
    path = audio_factory.write("blocks.flac", np.stack([x, x * 0.5], axis=1), 48000)
    small = load_audio(path, AudioConfig(block_s=0.25))
    large = load_audio(path)
    assert [s.audio_id for s in small] == [s.audio_id for s in large]


def test_8khz_is_upsampled_keeping_pitch_and_length(audio_factory):
    x = np.concatenate([audio_factory.tone(2.0, 8000, freq=1000.0), audio_factory.silence(0.5, 8000)])
    seg = load_audio(audio_factory.write("phone.wav", x, 8000))[0]
    assert seg.sample_rate == 16000
    assert seg.start_s == 0.0
    assert seg.end_s == pytest.approx(2.15, abs=0.03)
    assert dominant_hz(seg.samples) == pytest.approx(1000.0, abs=5.0)


def test_96khz_is_downsampled_without_aliasing(audio_factory):
    sr = 96000
    wanted = audio_factory.tone(2.0, sr, freq=1000.0, amp=0.3)
    ultrasonic = audio_factory.tone(2.0, sr, freq=30000.0, amp=0.3)  # would alias to 2 kHz
    x = np.stack([wanted + ultrasonic, wanted + ultrasonic], axis=1)
    seg = load_audio(audio_factory.write("studio.wav", x, sr, subtype="FLOAT"))[0]
    assert seg.duration_s == pytest.approx(2.0, abs=0.03)
    spectrum = np.abs(np.fft.rfft(seg.samples * np.hanning(len(seg.samples))))
    freqs = np.fft.rfftfreq(len(seg.samples), 1 / 16000)
    at = lambda f: spectrum[np.argmin(np.abs(freqs - f))]  # noqa: E731
    assert 20 * np.log10(at(2000.0) / at(1000.0)) < -60


def test_odd_sample_rate_keeps_the_original_timeline(audio_factory):
    sr = 44101  # coprime with 16 kHz: resampled as 44100 Hz, times corrected
    assert effective_input_rate(sr, 16000) == 44100
    x = np.concatenate([audio_factory.silence(1.0, sr), audio_factory.speech_like(2.0, sr), audio_factory.silence(1.0, sr)])
    seg = load_audio(audio_factory.write("odd.wav", x, sr))[0]
    assert seg.start_s == pytest.approx(0.85, abs=0.03)
    assert seg.end_s == pytest.approx(3.15, abs=0.03)


# -- loudness --------------------------------------------------------------------------------


@pytest.mark.parametrize("level_db", [-50.0, -35.0, -12.0])
def test_quiet_and_loud_speech_end_at_the_target_level(audio_factory, level_db):
    voice = audio_factory.speech_like(2.0)
    voice *= 10 ** ((level_db - rms_db(voice)) / 20)
    x = np.concatenate([audio_factory.silence(1.0), voice, audio_factory.silence(1.0)])
    seg = load_audio(audio_factory.write(f"level{level_db}.wav", x, subtype="FLOAT"))[0]
    # The level is measured over speech frames; the 0.15 s hangovers of silence barely count.
    speech = seg.samples[int(0.15 * 16000) : -int(0.15 * 16000)]
    assert rms_db(speech) == pytest.approx(TARGET, abs=1.0)


def test_long_pauses_do_not_make_speech_louder(audio_factory):
    voice = audio_factory.speech_like(1.0)
    x = np.concatenate([voice, audio_factory.silence(0.4), voice])
    seg = load_audio(audio_factory.write("paused.wav", x, subtype="FLOAT"))[0]
    assert rms_db(seg.samples[:16000]) == pytest.approx(TARGET, abs=1.0)


def test_peak_limiting_prevents_clipping(audio_factory):
    x = audio_factory.tone(2.0, amp=0.01)
    x[16000] = 0.9  # a spike 39 dB above the tone: full gain would clip it far past 0 dBFS
    seg = load_audio(audio_factory.write("spike.wav", x, subtype="FLOAT"))[0]
    assert np.abs(seg.samples).max() == pytest.approx(PEAK_LIMIT, rel=1e-4)
    assert np.abs(seg.samples).max() <= PEAK_LIMIT
    assert rms_db(seg.samples) < TARGET - 10  # the gain was held back, not the waveform distorted
    original = x[: len(seg.samples)]
    loud = np.abs(original) > 1e-3
    assert np.allclose(seg.samples[loud] / original[loud], seg.samples[16000] / 0.9, rtol=1e-4)


def test_normalize_loudness_is_a_plain_gain():
    x = np.array([0.1, -0.2, 0.05], dtype=np.float32)
    original = x.copy()
    gain = normalize_loudness(x, float(np.mean(original**2)), AudioConfig())
    np.testing.assert_allclose(x, original * gain, rtol=1e-6)
    assert rms_db(x) == pytest.approx(TARGET, abs=0.01)


# -- identity --------------------------------------------------------------------------------


def test_hash_identifies_content_not_name(audio_factory):
    x = (audio_factory.speech_like(1.0) * 32767).astype(np.int16)  # stored exactly by both formats
    a = load_audio(audio_factory.write("a.wav", x))[0]
    b = load_audio(audio_factory.write("copy_of_a.flac", x))[0]
    c = load_audio(audio_factory.write("c.wav", x[::-1].copy()))[0]
    assert a.audio_id == b.audio_id
    assert a.audio_id != c.audio_id
    assert a != b and a == load_audio(audio_factory.root / "a.wav")[0]


def test_audio_hash_is_sha256_of_float32():
    x = np.linspace(-1, 1, 100)
    assert audio_hash(x) == audio_hash(x.astype(np.float32))
    assert audio_hash(x) != audio_hash(x[::-1])
    assert len(audio_hash(x)) == 64
    with pytest.raises(ValueError):
        audio_hash(np.zeros((2, 3)))


def test_segment_signal_works_on_arrays(audio_factory):
    x = np.concatenate([audio_factory.silence(0.5), audio_factory.speech_like(1.0), audio_factory.silence(0.5)])
    original = x.copy()
    segments = segment_signal(x, 16000, "microphone")
    np.testing.assert_array_equal(x, original)  # the caller's array is left alone
    assert len(segments) == 1 and segments[0].source == "microphone"
    assert segments[0].start_s == pytest.approx(0.35, abs=0.03)


def test_a_dead_channel_does_not_count_as_anti_phase(audio_factory):
    voice = audio_factory.speech_like(2.0)
    dead = np.full_like(voice, 1e-6) - 1e-9 * voice  # DC and a trace of inverted voice
    path = audio_factory.write("dead.wav", np.stack([voice, dead], axis=1), subtype="FLOAT")
    assert decode_mono(probe(path)).mix == "mean"
    assert len(load_audio(path)) == 1
