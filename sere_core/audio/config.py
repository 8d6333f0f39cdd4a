"""Settings of the audio pipeline, in one frozen dataclass.

Every number that decides what counts as speech, silence or a usable recording lives here so
that a run can be reproduced from its config alone.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from sere_core.errors import ConfigError


@dataclass(frozen=True)
class AudioConfig:
    """How recordings are decoded, cleaned and cut into utterances.

    Levels are in dBFS (0 dBFS is a full-scale sine's peak; a full-scale square wave has an RMS
    of 0 dBFS). Durations are in seconds.

    Attributes:
        sample_rate: rate every segment is resampled to; the encoders expect 16 kHz.
        max_file_mb: files bigger than this many megabytes (10**6 bytes) are refused before
            decoding, so a stray video or disk image cannot exhaust memory.
        max_duration_s: recordings longer than this are refused, from the header's length before
            decoding and again while decoding. The file size says little: a few megabytes of
            compressed silence can hold a day of audio, and each hour costs 230 MB at 16 kHz.
        max_segment_s: recordings whose speech lasts longer are split into utterances at pauses;
            no segment is longer.
        min_speech_s: a recording (or an utterance of a long recording) needs at least this much
            speech to say anything about emotion.
        target_dbfs: RMS level of the speech frames after loudness normalization, so quiet and
            loud recordings look alike to the encoders.
        peak_dbfs: the gain is lowered when needed so that no sample exceeds this peak (no clipping).
        silence_dbfs: a frame quieter than this is never speech; a file with no louder frame is
            silent. Low enough for very quiet but real recordings (some RAVDESS clips peak near
            -55 dBFS), high enough to reject digital silence, dither and faint hiss.
        dc_offset_db: a recording's mean (a constant offset, from a faulty sound card or
            microphone) less than this many dB below its loud frames is subtracted before levels are
            measured; else it would fill the pauses and skew the loudness. Weaker offsets, common
            in real recordings (some CASIA clips hold one 19 dB below their speech), look like
            background noise to the detector and are left, so those samples stay as recorded.
        vad_range_db: speech frames lie within this many dB of the file's loud frames.
        vad_noise_fraction: on a noisy recording speech must also rise this fraction of the way
            from the noise floor to the loud frames (0 disables the noise-floor rule).
        frame_s: length of the analysis frames of the voice activity detector.
        min_pause_s: pauses shorter than this stay inside an utterance (breaths, stop closures).
        hangover_s: sound kept before and after detected speech so soft onsets and endings
            (fricatives, decaying vowels) survive trimming.
        click_s: isolated bursts of sound shorter than this are clicks, not speech.
        min_sample_rate, max_sample_rate: sample rates outside this range are refused as absurd.
        anti_phase_corr: stereo channels correlated below this are anti-phase; averaging them
            would cancel the voice, so the louder channel is used instead.
        block_s: decoding and resampling work on blocks this long, bounding memory on long files.
    """

    sample_rate: int = 16000
    max_file_mb: float = 500.0
    max_duration_s: float = 7200.0
    max_segment_s: float = 30.0
    min_speech_s: float = 0.3
    target_dbfs: float = -23.0
    peak_dbfs: float = -1.0
    silence_dbfs: float = -60.0
    dc_offset_db: float = 15.0
    vad_range_db: float = 40.0
    vad_noise_fraction: float = 0.3
    frame_s: float = 0.02
    min_pause_s: float = 0.5
    hangover_s: float = 0.15
    click_s: float = 0.06
    min_sample_rate: int = 4000
    max_sample_rate: int = 384000
    anti_phase_corr: float = -0.5
    block_s: float = 20.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"AudioConfig.{f.name} must be a number, got {value!r}")
            if value != value:  # NaN
                raise ConfigError(f"AudioConfig.{f.name} must be a number, got NaN")
        if int(self.sample_rate) != self.sample_rate or not 8000 <= self.sample_rate <= 192000:
            raise ConfigError(
                f"AudioConfig.sample_rate must be a whole number of Hz between 8000 and 192000, "
                f"got {self.sample_rate}"
            )
        positive = ("max_file_mb", "max_duration_s", "max_segment_s", "min_speech_s", "frame_s", "block_s")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"AudioConfig.{name} must be positive, got {getattr(self, name)}")
        non_negative = ("min_pause_s", "hangover_s", "click_s", "vad_range_db", "dc_offset_db")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ConfigError(f"AudioConfig.{name} must not be negative, got {getattr(self, name)}")
        if self.min_speech_s > self.max_segment_s:
            raise ConfigError(
                f"AudioConfig.min_speech_s ({self.min_speech_s}) must not exceed "
                f"max_segment_s ({self.max_segment_s})"
            )
        if self.max_segment_s < 4 * self.frame_s:
            raise ConfigError(
                f"AudioConfig.max_segment_s ({self.max_segment_s}) must span at least four "
                f"frames of frame_s ({self.frame_s})"
            )
        if not self.peak_dbfs <= 0:
            raise ConfigError(f"AudioConfig.peak_dbfs must be at most 0 dBFS, got {self.peak_dbfs}")
        if not self.target_dbfs < self.peak_dbfs:
            raise ConfigError(
                f"AudioConfig.target_dbfs ({self.target_dbfs}) must be below peak_dbfs ({self.peak_dbfs})"
            )
        if not self.silence_dbfs < self.target_dbfs:
            raise ConfigError(
                f"AudioConfig.silence_dbfs ({self.silence_dbfs}) must be below target_dbfs ({self.target_dbfs})"
            )
        if not 0 <= self.vad_noise_fraction < 1:
            raise ConfigError(
                f"AudioConfig.vad_noise_fraction must be in [0, 1), got {self.vad_noise_fraction}"
            )
        if not 0 < self.min_sample_rate < self.max_sample_rate:
            raise ConfigError(
                f"AudioConfig.min_sample_rate ({self.min_sample_rate}) must be positive and below "
                f"max_sample_rate ({self.max_sample_rate})"
            )
        if not -1 <= self.anti_phase_corr <= 0:
            raise ConfigError(
                f"AudioConfig.anti_phase_corr must be between -1 and 0, got {self.anti_phase_corr}"
            )

    @property
    def max_file_bytes(self) -> int:
        """``max_file_mb`` in bytes."""
        return int(self.max_file_mb * 1_000_000)

    def max_frames(self, sample_rate: int) -> int:
        """``max_duration_s`` in frames at ``sample_rate``."""
        return int(self.max_duration_s * sample_rate)
