"""Voice activity detection: trimming, splitting long recordings at pauses, capping segment length."""

from __future__ import annotations

import numpy as np
import pytest

from sere_core.audio import AudioConfig, load_audio
from sere_core.audio.vad import (
    bridge_pauses,
    detect_speech,
    frame_power,
    pad_regions,
    runs,
    speech_threshold_db,
    split_at_quietest,
)

HANG = AudioConfig().hangover_s


# -- pure building blocks ----------------------------------------------------------------------


def test_frame_power_matches_direct_computation():
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    power = frame_power(x, 320)
    assert len(power) == 4  # three full frames and a 40-sample tail
    assert power[1] == pytest.approx(np.mean(x[320:640].astype(np.float64) ** 2), rel=1e-5)
    assert power[3] == pytest.approx(np.mean(x[960:].astype(np.float64) ** 2), rel=1e-5)


def test_runs_bridge_and_pad():
    mask = np.array([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 1, 1, 0], dtype=bool)
    assert runs(mask) == [(1, 3), (5, 6), (10, 12)]
    assert bridge_pauses(runs(mask), min_gap=3) == [(1, 6), (10, 12)]
    assert bridge_pauses(runs(mask), min_gap=5) == [(1, 12)]
    # Padding never crosses the middle of a pause nor the ends of the signal.
    assert pad_regions([(1, 6), (10, 12)], pad=3, n_frames=13) == [(0, 8), (8, 13)]


def test_threshold_follows_the_noise_floor_on_noisy_recordings():
    clean = np.r_[np.full(50, -120.0), np.full(50, -20.0)]
    noisy = np.r_[np.full(50, -45.0), np.full(50, -20.0)]
    config = AudioConfig()
    assert speech_threshold_db(clean, config) == config.silence_dbfs
    assert -45.0 < speech_threshold_db(noisy, config) < -20.0


def test_split_at_quietest_cuts_in_the_dips_and_respects_the_cap():
    levels = np.full(1200, -20.0)
    levels[395:405] = -60.0  # dips at frames 400 and 850
    levels[845:855] = -60.0
    pieces = split_at_quietest(0, 1200, levels, max_len=500, min_len=15)
    assert len(pieces) == 3
    assert all(e - s <= 500 for s, e in pieces)
    assert pieces[0][0] == 0 and pieces[-1][1] == 1200
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))
    assert abs(pieces[0][1] - 400) <= 5 and abs(pieces[1][1] - 850) <= 5


def test_split_without_dips_still_caps_length():
    pieces = split_at_quietest(100, 1151, np.full(2000, -20.0), max_len=300, min_len=15)
    assert pieces[0][0] == 100 and pieces[-1][1] == 1151
    assert all(15 <= e - s <= 300 for s, e in pieces)


def test_detect_speech_finds_regions_and_drops_clicks(audio_factory):
    x = audio_factory.silence(3.0)
    x[1600:1680] = 0.5  # 5 ms click at 0.1 s
    x[16000:32000] = audio_factory.speech_like(1.0)
    activity = detect_speech(x, 16000)
    assert len(activity.regions) == 1
    start, end = activity.frames_to_samples(*activity.regions[0])
    assert start / 16000 == pytest.approx(1.0, abs=0.03)
    assert end / 16000 == pytest.approx(2.0, abs=0.03)


# -- trimming short recordings -------------------------------------------------------------------


def test_leading_and_trailing_silence_is_trimmed_clicks_ignored(audio_factory):
    x = np.concatenate([audio_factory.silence(1.0), audio_factory.chirp(2.0), audio_factory.silence(2.0)])
    x[800:880] = 0.6  # a click before the speech must not stop the trimming
    (seg,) = load_audio(audio_factory.write("trim.wav", x))
    assert seg.start_s == pytest.approx(1.0 - HANG, abs=0.03)
    assert seg.end_s == pytest.approx(3.0 + HANG, abs=0.03)


def test_short_recordings_with_pauses_stay_whole(audio_factory):
    x, spans = audio_factory.utterances([3.0, 4.0, 3.0], pause_s=1.5)
    segments = load_audio(audio_factory.write("whole.wav", x))
    assert len(segments) == 1  # 12.5 s < max_segment_s: one clip, pauses kept
    assert segments[0].start_s == pytest.approx(spans[0][0] - HANG, abs=0.03)
    assert segments[0].end_s == pytest.approx(spans[-1][1] + HANG, abs=0.03)


# -- splitting long recordings ----------------------------------------------------------------


@pytest.mark.parametrize(("rate", "channels"), [(16000, 1), (48000, 2)])
def test_long_recording_is_split_into_its_utterances(audio_factory, rate, channels):
    durations = [4.0, 6.0, 3.0, 5.0, 8.0, 2.5, 7.0]
    x, spans = audio_factory.utterances(durations, pause_s=1.0, lead_s=2.0, sr=rate, floor_amp=3e-4)
    data = np.stack([x, x], axis=1) if channels == 2 else x
    path = audio_factory.write(f"interview_{rate}.flac", data, rate)

    segments = load_audio(path)

    assert len(segments) == len(durations)
    for seg, (start, end) in zip(segments, spans):
        assert seg.source == str(path)
        assert seg.start_s == pytest.approx(start - HANG, abs=0.05)
        assert seg.end_s == pytest.approx(end + HANG, abs=0.05)
        assert seg.duration_s == pytest.approx(seg.end_s - seg.start_s, abs=1e-3)
    assert len({s.audio_id for s in segments}) == len(segments)


def test_short_pauses_inside_an_utterance_are_bridged(audio_factory):
    x, spans = audio_factory.utterances([3.0, 3.0, 10.0, 9.0, 12.0], pause_s=[0.25, 1.0, 1.0, 1.0])
    segments = load_audio(audio_factory.write("bridged.wav", x))
    assert len(segments) == 4
    assert segments[0].start_s == pytest.approx(spans[0][0] - HANG, abs=0.05)
    assert segments[0].end_s == pytest.approx(spans[1][1] + HANG, abs=0.05)


def test_stray_sounds_between_utterances_are_not_segments(audio_factory):
    x, spans = audio_factory.utterances([12.0, 12.0, 12.0], pause_s=3.0)
    gap = int((spans[0][1] + 1.5) * 16000)
    x[gap : gap + 1600] = audio_factory.speech_like(0.1)  # a 0.1 s cough in the pause
    segments = load_audio(audio_factory.write("cough.wav", x))
    assert len(segments) == 3


def test_utterances_longer_than_the_cap_are_cut_at_the_quietest_point(audio_factory):
    voice = audio_factory.speech_like(12.0)
    for dip in (4.0, 8.5):  # 0.3 s of much quieter speech: too short to be a pause
        i = int(dip * 16000)
        voice[i - 2400 : i + 2400] *= 0.03
    x = np.concatenate([audio_factory.silence(1.0), voice, audio_factory.silence(1.0)])
    config = AudioConfig(max_segment_s=5.0)

    segments = load_audio(audio_factory.write("monologue.wav", x), config)

    assert len(segments) == 3
    assert all(s.duration_s <= 5.0 + 1e-9 for s in segments)
    assert segments[0].end_s == pytest.approx(1.0 + 4.0, abs=0.1)
    assert segments[1].end_s == pytest.approx(1.0 + 8.5, abs=0.1)
    assert segments[0].end_s == segments[1].start_s and segments[1].end_s == segments[2].start_s


def test_espeak_sentences_are_split_by_pauses(audio_factory, espeak):
    import soundfile as sf

    sentences = ["The weather is lovely today.", "I did not expect that at all.", "Please close the door."]
    parts, rate = [], None
    for i, text in enumerate(sentences):
        y, rate = sf.read(espeak(text, f"s{i}.wav"), dtype="float32")
        parts += [y, np.zeros(int(1.5 * rate), dtype=np.float32)]
    path = audio_factory.write("spoken.wav", np.concatenate(parts), rate)

    whole = load_audio(path)
    assert len(whole) == 1
    split = load_audio(path, AudioConfig(max_segment_s=4.0))
    assert len(split) == 3
    assert all(0.8 < s.duration_s <= 4.0 for s in split)
