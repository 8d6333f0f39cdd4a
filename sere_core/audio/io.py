"""The one audio I/O module: format checks, streamed decoding with soundfile, atomic writing.

Decoding goes through libsndfile (``soundfile``) only; ``torchaudio.load`` is not used because it
depends on FFmpeg builds that are often missing. Every problem a file can have is turned into an
``AudioError`` subclass whose message names the file and says, in plain words, what is wrong.
"""

from __future__ import annotations

import functools
import logging
import os
import stat
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from sere_core.atomic import atomic_write
from sere_core.audio.config import AudioConfig
from sere_core.errors import (
    EmptyAudioError,
    FileTooLargeError,
    InvalidSamplesError,
    RecordingTooLongError,
    SampleRateError,
    UnreadableAudioError,
    UnsupportedFormatError,
)

log = logging.getLogger(__name__)

#: File name extensions the pipeline decodes.
SUPPORTED_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3")

#: Extensions of audio formats the pipeline recognises but does not decode. Folder manifests
#: still list such files so that the batch reports them instead of skipping them unnoticed.
UNSUPPORTED_AUDIO_EXTENSIONS: tuple[str, ...] = (
    ".aif", ".aiff", ".aifc", ".m4a", ".aac", ".wma", ".opus", ".amr", ".au", ".caf",
    ".w64", ".webm", ".mka", ".ape", ".wv",
)

AUDIO_EXTENSIONS: tuple[str, ...] = SUPPORTED_EXTENSIONS + UNSUPPORTED_AUDIO_EXTENSIONS

# libsndfile's major format name -> the name users know. Anything else is refused.
_SUPPORTED_FORMATS = {"WAV": "WAV", "WAVEX": "WAV", "RF64": "WAV", "FLAC": "FLAC", "OGG": "OGG", "MP3": "MP3"}
_FORMAT_NAMES = {
    "AIFF": "AIFF", "AU": "Sun AU", "CAF": "Apple CAF", "W64": "Wave64", "RAW": "raw PCM",
    "MAT4": "MATLAB", "MAT5": "MATLAB", "NIST": "NIST Sphere", "VOC": "Creative VOC",
    "IRCAM": "IRCAM", "PAF": "PARIS", "SVX": "Amiga IFF", "SD2": "Sound Designer II",
}
# Lossy decoders may report a length estimate that differs by a frame or two from what they
# decode; a bigger shortfall means the file was cut off.
_LOSSY_LENGTH_TOLERANCE = 2304
_EXT_NAMES = {".wav": "a WAV", ".flac": "a FLAC", ".ogg": "an Ogg", ".mp3": "an MP3"}
_HEAD_BYTES = 4096
# libsndfile reports a length it does not know as the largest frame count (2**63 - 1).
_UNKNOWN_FRAMES = 2**62


@dataclass(frozen=True)
class AudioFileInfo:
    """What a file's header says, after the checks that need no decoding."""

    path: str
    format: str  # "WAV", "FLAC", "OGG" or "MP3"
    subtype: str  # e.g. "PCM_16", "FLOAT", "VORBIS"
    sample_rate: int
    channels: int
    frames: int  # per channel, as announced by the header
    size_bytes: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def probe(path: str | os.PathLike[str], config: AudioConfig = AudioConfig()) -> AudioFileInfo:
    """Check a file without decoding its audio: extension, size, content type, header, integrity.

    Size is checked before anything is decoded, so an oversized file costs nothing.
    """
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        what = f"'{p.suffix}' files are" if p.suffix else "files without an extension are"
        raise UnsupportedFormatError(
            p, f"{what} not supported; please use WAV, FLAC, OGG (Vorbis) or MP3 recordings"
        )
    try:
        st = p.stat()
    except FileNotFoundError:
        raise UnreadableAudioError(p, "the file does not exist (check the path or the manifest)") from None
    except OSError as exc:
        raise UnreadableAudioError(p, f"the file cannot be opened ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise UnreadableAudioError(p, "this is a folder, not an audio file")
    if not stat.S_ISREG(st.st_mode):  # a pipe or device would block or never end
        raise UnreadableAudioError(p, "this is not a regular file (it is a pipe, socket or device)")
    size = st.st_size
    if size == 0:
        raise EmptyAudioError(p, "the file is empty (0 bytes)")
    if size > config.max_file_bytes:
        raise FileTooLargeError(
            p,
            f"the file is {size / 1e6:.1f} MB, larger than the {config.max_file_mb:g} MB allowed; "
            "please cut it into shorter recordings",
        )
    try:
        with open(p, "rb") as fh:
            head = fh.read(_HEAD_BYTES)
    except OSError as exc:
        raise UnreadableAudioError(p, f"the file cannot be opened ({exc.strerror or exc})") from None

    if ext == ".mp3" and not mp3_supported():
        raise UnsupportedFormatError(
            p, "MP3 files cannot be read on this computer (libsndfile 1.1 or newer is needed); "
            "please convert the recording to WAV or FLAC"
        )
    kind = sniff_format(head)
    if kind is not None and kind not in _SUPPORTED_FORMATS.values():
        raise UnsupportedFormatError(
            p, f"this is {kind} audio, which is not supported; please convert it to WAV or FLAC"
        )
    if kind is None and _looks_like_text(head):
        raise UnsupportedFormatError(
            p, f"the file contains text, not audio (it is not a real {ext[1:].upper()} recording)"
        )

    try:
        raw = sf.info(str(p))
    except Exception as exc:  # libsndfile reports damage with several exception types
        log.debug("libsndfile could not open %s: %s", p, exc)
        name = _EXT_NAMES[ext]
        raise UnreadableAudioError(
            p, f"the file could not be decoded; it is damaged, incomplete or not really {name} file"
        ) from None
    fmt = _SUPPORTED_FORMATS.get(raw.format)
    if fmt is None:
        name = _FORMAT_NAMES.get(raw.format, raw.format)
        raise UnsupportedFormatError(
            p, f"this is {name} audio, which is not supported; please convert it to WAV or FLAC"
        )
    rate = int(raw.samplerate)
    if not config.min_sample_rate <= rate <= config.max_sample_rate:
        raise SampleRateError(
            p,
            f"the sample rate is {rate} Hz, outside the {config.min_sample_rate}-"
            f"{config.max_sample_rate} Hz that real recordings use; the file header is probably damaged",
        )
    if raw.channels < 1:
        raise UnreadableAudioError(p, "the file header announces no audio channels")
    if fmt == "OGG":  # before the length check: libsndfile reports a cut Ogg file as empty
        _check_ogg_pages(p, size)
    if fmt == "MP3" and sniff_format(head.lstrip(b"\x00")) != "MP3":
        # The decoder skips garbage until it finds a frame; a damaged start would go unnoticed.
        raise UnreadableAudioError(
            p, "the beginning of the file is damaged (it does not start like an MP3 recording); "
            "please copy or export it again"
        )
    if raw.frames <= 0:
        raise EmptyAudioError(p, "the file contains no sound (its header is there but no samples follow)")
    if raw.frames >= _UNKNOWN_FRAMES:  # libsndfile's "length unknown" (a FLAC header without a length)
        raise UnreadableAudioError(
            p, "the file's header does not say how long the recording is, so it cannot be read "
            "safely; please export it again from your audio editor"
        )
    if raw.frames > config.max_frames(rate):
        raise too_long(p, raw.frames / rate, config)
    info = AudioFileInfo(
        path=str(p), format=fmt, subtype=str(raw.subtype), sample_rate=rate,
        channels=int(raw.channels), frames=int(raw.frames), size_bytes=size,
    )
    if fmt == "WAV":
        _check_wav_complete(p, info)
    return info


def too_long(path: str | os.PathLike[str], seconds: float | None, config: AudioConfig) -> RecordingTooLongError:
    """The error for a recording over ``config.max_duration_s`` (``seconds`` None: decoding was
    stopped at the limit, so the real length is unknown)."""
    allowed = _duration(config.max_duration_s)
    lasts = f"lasts {_duration(seconds)}, longer than" if seconds is not None else "lasts more than"
    return RecordingTooLongError(
        path, f"the recording {lasts} the {allowed} allowed; please cut it into shorter recordings"
    )


def _duration(seconds: float) -> str:
    """A length as people say it: '24 h', '1.5 h', '95 min', '2.5 min', '40 s'."""
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}".removesuffix(".0") + f" {unit}"
    return f"{seconds:.0f} s"


def iter_blocks(
    info: AudioFileInfo, block_frames: int, config: AudioConfig = AudioConfig()
) -> Iterator[np.ndarray]:
    """Yield the decoded samples as float32 blocks of shape ``[n, channels]``.

    Raises ``InvalidSamplesError`` at the first NaN or infinite sample,
    ``UnreadableAudioError`` when decoding fails or the file ends early, and
    ``RecordingTooLongError`` as soon as more than ``config.max_duration_s`` has been decoded,
    whatever the header announced: a decoder may yield more than the header says.
    """
    p = Path(info.path)
    done = 0
    limit = config.max_frames(info.sample_rate)
    try:
        fh = sf.SoundFile(info.path)
    except Exception as exc:
        log.debug("libsndfile could not open %s: %s", p, exc)
        raise UnreadableAudioError(p, "the file could not be decoded; it is damaged or incomplete") from None
    with fh:
        while True:
            try:
                # Our own loop rather than SoundFile.blocks(): blocks() reuses its buffer and
                # returns stale samples when a damaged file yields fewer frames than announced.
                block = fh.read(block_frames, dtype="float32", always_2d=True)
            except Exception as exc:
                log.debug("libsndfile failed reading %s: %s", p, exc)
                where = f" beyond {done / info.sample_rate:.2f} s" if done else ""
                raise UnreadableAudioError(
                    p,
                    f"the audio could not be decoded{where}; the file is damaged or incomplete "
                    "(it was perhaps cut off while copying); please copy or export it again",
                ) from None
            if len(block) == 0:
                break
            finite = np.isfinite(block)
            if not finite.all():
                first = int(np.argmin(finite.all(axis=1)))
                raise InvalidSamplesError(
                    p,
                    "the file contains invalid sample values (NaN or infinity), the first at "
                    f"{(done + first) / info.sample_rate:.2f} s; please re-export it from your audio editor",
                )
            done += len(block)
            if done > limit:
                raise too_long(p, None, config)
            yield block
    tolerance = _LOSSY_LENGTH_TOLERANCE if info.format in ("MP3", "OGG") else 0
    if done < info.frames - tolerance:
        raise UnreadableAudioError(
            p,
            f"the file is incomplete: it stops after {done / info.sample_rate:.2f} s of the "
            f"{info.duration_s:.2f} s its header announces (it was probably cut off while copying)",
        )


@functools.cache
def mp3_supported() -> bool:
    """Whether this libsndfile decodes MP3 (it does from version 1.1)."""
    return "MP3" in sf.available_formats()


def sniff_format(head: bytes) -> str | None:
    """Name the audio format that a file's first bytes announce, or None when unrecognised."""
    if len(head) >= 12 and head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return "WAV"
    if head.startswith(b"fLaC"):
        return "FLAC"
    if head.startswith(b"OggS"):
        return "OGG"
    if head.startswith(b"ID3") or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "MP3"
    if len(head) >= 12 and head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "AIFF"
    if len(head) >= 8 and head[4:8] == b"ftyp":
        return "MP4/M4A"
    if head.startswith(b"\x1aE\xdf\xa3"):
        return "WebM/Matroska"
    if head.startswith(b"#!AMR"):
        return "AMR"
    if head.startswith(b".snd"):
        return "Sun AU"
    if head.startswith(b"caff"):
        return "Apple CAF"
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "WMA"
    return None


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 3:  # a multi-byte character cut by the read
            return True
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head)
    return printable / len(head) > 0.95


def _check_wav_complete(p: Path, info: AudioFileInfo) -> None:
    """libsndfile quietly shortens a truncated WAV; compare the data chunk's size with the file."""
    try:
        with open(p, "rb") as fh:
            riff = fh.read(12)
            endian = ">" if riff[:4] == b"RIFX" else "<"
            is_rf64 = riff[:4] == b"RF64"
            offset, block_align, rf64_data = 12, 0, None
            for _ in range(256):
                fh.seek(offset)
                header = fh.read(8)
                if len(header) < 8:
                    return
                chunk_id = header[:4]
                (size,) = struct.unpack(endian + "I", header[4:])
                if chunk_id == b"ds64" and is_rf64:
                    body = fh.read(16)
                    if len(body) == 16:
                        rf64_data = struct.unpack("<Q", body[8:16])[0]
                elif chunk_id == b"fmt ":
                    body = fh.read(16)
                    if len(body) >= 14:
                        (block_align,) = struct.unpack(endian + "H", body[12:14])
                elif chunk_id == b"data":
                    if is_rf64 and size == 0xFFFFFFFF and rf64_data is not None:
                        size = rf64_data
                    if size in (0, 0xFFFFFFFF):  # streaming writers leave the size unset
                        return
                    available = info.size_bytes - (offset + 8)
                    if size > available:
                        if block_align:
                            announced = size / block_align / info.sample_rate
                            present = max(available, 0) / block_align / info.sample_rate
                            detail = f"it stops after {present:.2f} s of the {announced:.2f} s its header announces"
                        else:
                            detail = "its audio data is shorter than its header announces"
                        raise UnreadableAudioError(
                            p, f"the file is incomplete: {detail} (it was probably cut off while copying)"
                        )
                    after = offset + 8 + size + (size & 1)
                    if info.size_bytes - after >= _TRAILING_BYTES:
                        fh.seek(after)
                        if not _plausible_chunk(fh.read(8), info.size_bytes - after, endian):
                            raise UnreadableAudioError(
                                p, "the file is damaged: its header announces less audio than the file "
                                "holds (it was perhaps written by a program that stopped early); "
                                "please export it again",
                            )
                    return
                offset += 8 + size + (size & 1)
    except OSError as exc:
        raise UnreadableAudioError(p, f"the file cannot be read ({exc.strerror or exc})") from None


# More bytes than this after a WAV's data chunk must be another chunk (LIST, id3, ...); anything
# else is audio that a damaged header does not count.
_TRAILING_BYTES = 4096


def _plausible_chunk(header: bytes, remaining: int, endian: str) -> bool:
    """Whether ``header`` starts a RIFF chunk: a printable four-letter id and a size that fits."""
    if len(header) < 8 or not all(32 <= b < 127 for b in header[:4]):
        return False
    (size,) = struct.unpack(endian + "I", header[4:])
    return size <= remaining - 8


_BIT_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _ogg_crc(page: bytes) -> int:
    """Ogg's page checksum (CRC-32, polynomial 0x04C11DB7, not reflected, no inversion).

    zlib's CRC-32 is the reflected variant, so the bytes go in bit-reversed and the result comes
    out bit-reversed; ``crc32(data, 0xFFFFFFFF)`` cancels zlib's initial and final inversion.
    """
    reflected = ~zlib.crc32(page.translate(_BIT_REVERSED), 0xFFFFFFFF) & 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


def _check_ogg_pages(p: Path, size: int) -> None:
    """Walk every Ogg page: each checksum must match and the last page must end the stream.

    libsndfile quietly stops at a damaged page and quietly reports a cut file as empty, so
    without this a damaged recording would come out shorter than it is, unnoticed.
    """
    incomplete = UnreadableAudioError(
        p, "the file is incomplete: its end is missing (it was probably cut off while copying)"
    )
    try:
        with open(p, "rb") as fh:
            offset, last_flags = 0, 0
            while offset < size:
                header = fh.read(27)
                if len(header) < 27:
                    raise incomplete
                if not header.startswith(b"OggS"):
                    raise UnreadableAudioError(
                        p, f"the file is damaged about {100 * offset // size} % of the way in (the "
                        "audio data is out of order); please copy or export it again"
                    )
                table = fh.read(header[26])
                body = fh.read(sum(table))
                if len(table) < header[26] or len(body) < sum(table):
                    raise incomplete
                page = header[:22] + b"\0\0\0\0" + header[26:] + table + body
                if _ogg_crc(page) != struct.unpack("<I", header[22:26])[0]:
                    raise UnreadableAudioError(
                        p, f"the file is damaged about {100 * offset // size} % of the way in (a "
                        "checksum does not match); please copy or export it again"
                    )
                last_flags = header[5]
                offset += 27 + len(table) + len(body)
    except OSError as exc:
        raise UnreadableAudioError(p, f"the file cannot be read ({exc.strerror or exc})") from None
    if not last_flags & 0x04:  # the end-of-stream flag
        raise incomplete


_WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".mp3": "MP3"}


def write_audio(
    path: str | os.PathLike[str],
    samples: np.ndarray,
    sample_rate: int,
    *,
    subtype: str | None = None,
) -> Path:
    """Write samples (``[n]`` or ``[n, channels]``) atomically; the format follows the extension.

    The file appears complete or not at all (temporary file in the same folder, then
    ``os.replace``), so a crash never leaves a half-written recording behind.
    """
    p = Path(path)
    fmt = _WRITE_FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise ValueError(f"{p.name}: cannot write '{p.suffix}' files; use .wav, .flac, .ogg or .mp3")
    data = np.asarray(samples)
    if data.ndim not in (1, 2):
        raise ValueError(f"{p.name}: samples must have shape [n] or [n, channels], got {data.shape}")
    p.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(p, lambda handle: sf.write(handle, data, int(sample_rate), format=fmt, subtype=subtype))


def write_wav(
    path: str | os.PathLike[str], samples: np.ndarray, sample_rate: int, subtype: str = "FLOAT"
) -> Path:
    """Write a WAV file atomically; 32-bit float by default so processed audio round-trips exactly."""
    p = Path(path)
    if p.suffix.lower() != ".wav":
        raise ValueError(f"{p.name}: write_wav writes .wav files")
    return write_audio(p, samples, sample_rate, subtype=subtype)
