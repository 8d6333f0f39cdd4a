"""Hostile inputs of issue #5, written into a folder, each with what SERE must say about it.

Import into a test module (``sys.path`` holds ``tests/``). Every writer takes the folder to fill
and returns :class:`Case` rows: the file's name, the failure reason SERE must report ("" for an
odd but valid file that must load) and words its message must contain.
"""

from __future__ import annotations

import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from sere_core.audio import write_audio
from sere_core.audio.io import mp3_supported

#: Bytes that start no known format (no RIFF/fLaC/OggS magic, no 0xFF MP3 sync) and are not text.
GARBAGE = bytes(128 + (i * 37) % 120 for i in range(256))
HOUR_S = 3600


@dataclass(frozen=True)
class Case:
    """A hostile file and what must come of it."""

    name: str
    reason: str = ""  # the Failure/FileFailure reason code; "" means the file must load
    words: tuple[str, ...] = ()  # the message must contain each (besides the file's name)


def speech(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Noise amplitude-modulated at a syllable rate: a cheap stand-in the VAD takes for speech."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    envelope = 0.25 + 0.75 * np.abs(np.sin(np.pi * 4.0 * t + rng.uniform(0, np.pi)))
    return (0.2 * envelope * rng.standard_normal(len(t))).astype(np.float32)


def _encoded(folder: Path, ext: str, samples: np.ndarray, rate: int = 16000) -> bytes:
    """The bytes of ``samples`` encoded as ``ext`` (written to a scratch file, then removed)."""
    scratch = write_audio(folder / f".scratch.{ext}", samples, rate)
    data = scratch.read_bytes()
    scratch.unlink()
    return data


def formats() -> list[str]:
    return ["wav", "flac", "ogg", *(["mp3"] if mp3_supported() else [])]


def write_audio_cases(folder: Path) -> list[Case]:
    """Broken, empty, silent, invalid and oversized files of every format, and odd valid ones."""
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []
    x = speech(1.5)
    for ext in formats():
        data = _encoded(folder, ext, x)
        (folder / f"corrupt.{ext}").write_bytes(GARBAGE + data[len(GARBAGE):])
        cases.append(Case(f"corrupt.{ext}", "unreadable", ("damaged",)))
        (folder / f"truncated.{ext}").write_bytes(data[: len(data) // 2])
        cases.append(Case(f"truncated.{ext}", "unreadable", ("incomplete",)))
        if ext != "wav":  # PCM has no checksums: damage inside a WAV's samples is just noise
            damaged = bytearray(data)
            mid = len(damaged) // 3
            damaged[mid : mid + 600] = GARBAGE * 2 + GARBAGE[:88]
            (folder / f"damaged-middle.{ext}").write_bytes(bytes(damaged))
            cases.append(Case(f"damaged-middle.{ext}", "unreadable", ("copy",)))

    (folder / "notes.wav").write_text("Interview notes, speaker 3: mostly angry.\n", encoding="utf-8")
    cases.append(Case("notes.wav", "unsupported-format", ("text, not audio",)))
    (folder / "empty.wav").write_bytes(b"")
    cases.append(Case("empty.wav", "empty", ("empty",)))
    write_audio(folder / "silent.flac", np.zeros(32000, np.float32), 16000)
    cases.append(Case("silent.flac", "silent", ("silent",)))
    for name, bad in (("nan.wav", np.nan), ("inf.wav", np.inf)):
        y = x.copy()
        y[8000:8010] = bad
        write_audio(folder / name, y, 16000, subtype="FLOAT")
        cases.append(Case(name, "invalid-samples", ("NaN or infinity", "0.50 s")))
    huge = write_audio(folder / "huge.wav", x, 16000)
    with huge.open("r+b") as fh:  # sparse: 501 MB on paper, nothing on disk
        fh.truncate(501_000_000)
    cases.append(Case("huge.wav", "too-large", ("501.0 MB", "500 MB allowed")))

    write_audio(folder / "good.wav", speech(1.2, seed=1), 16000)
    write_audio(folder / "telephone-8k.wav", speech(1.5, 8000, seed=2), 8000)
    write_audio(folder / "studio-96k.flac", speech(1.5, 96000, seed=3), 96000)
    write_audio(folder / "surround-6ch.wav", np.stack([speech(1.5, seed=4)] * 6, axis=1) * 0.5, 16000)
    cases += [Case("good.wav"), Case("telephone-8k.wav"), Case("studio-96k.flac"), Case("surround-6ch.wav")]
    return cases


def write_hour(path: Path, utterance_s: float = 3.0) -> Path:
    """One hour of 16 kHz audio: a different utterance every minute, digital silence between
    (a 5 MB FLAC, written in a second or two)."""
    rate = 16000
    minute = np.zeros(60 * rate, np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(path, "w", rate, 1, subtype="PCM_16") as fh:
        for k in range(HOUR_S // 60):
            minute[rate : rate + int(utterance_s * rate)] = speech(utterance_s, rate, seed=100 + k)
            fh.write(minute)
    return path


def _zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return path


def _symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    info.create_system = 3  # Unix
    return info


def _declare_size(path: Path, size: int) -> None:
    """Make every entry of a (one-entry) zip claim ``size`` uncompressed bytes, as bombs do."""
    data = bytearray(path.read_bytes())
    for magic, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.find(magic)
        data[at + offset : at + offset + 4] = size.to_bytes(4, "little")
    path.write_bytes(bytes(data))


def write_archive_cases(folder: Path) -> list[Case]:
    """Zip bombs (by ratio and by total size), entries escaping the folder, links, bad CSVs."""
    folder.mkdir(parents=True, exist_ok=True)
    wav = _encoded(folder, "wav", speech(1.0, seed=6))
    _zip(folder / "bomb-ratio.zip", [("speech.wav", bytes(20_000_000))])
    _declare_size(_zip(folder / "bomb-size.zip", [("speech.wav", bytes(1000))]), 2_500_000_000)
    _zip(folder / "traversal.zip", [("ok.wav", wav), ("../escaped.wav", wav)])
    _zip(folder / "absolute.zip", [("ok.wav", wav), (zipfile.ZipInfo("/tmp/sere-escaped.wav"), wav)])
    _zip(folder / "symlink.zip", [("ok.wav", wav), (_symlink("passwd.wav"), b"/etc/passwd")])

    (folder / "missing-columns.csv").write_text("file,label\nok.wav,happy\n", encoding="utf-8")
    (folder / "outside.csv").write_text("path,emotion\nok.wav,happy\n../secret.wav,sad\n", encoding="utf-8")
    (folder / "etc-passwd.csv").write_text("path\n/etc/passwd\n", encoding="utf-8")
    (folder / "ok.wav").write_bytes(wav)
    return [
        Case("bomb-ratio.zip", "manifest", ("zip bombs", "speech.wav")),
        Case("bomb-size.zip", "manifest", ("2000.0 MB once extracted",)),
        Case("traversal.zip", "manifest", ("../escaped.wav", "outside")),
        Case("absolute.zip", "manifest", ("/tmp/sere-escaped.wav", "absolute path")),
        Case("symlink.zip", "manifest", ("passwd.wav", "symbolic link")),
        Case("missing-columns.csv", "manifest", ("no 'path' column", "'file', 'label'")),
        Case("outside.csv", "manifest", ("row 3", "../secret.wav", "outside")),
        Case("etc-passwd.csv", "manifest", ("row 2", "/etc/passwd", "outside")),
    ]


def write_labeled_zip(path: Path, emotions: dict[str, str]) -> Path:
    """A zip of clips with a manifest naming each one's emotion (``{file name: emotion}``)."""
    entries: list[tuple[zipfile.ZipInfo | str, bytes]] = [
        ("manifest.csv", ("path,emotion\n" + "".join(f"{n},{e}\n" for n, e in emotions.items())).encode())
    ]
    scratch = path.parent / ".labeled-scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(emotions):
        entries.append((name, _encoded(scratch, "wav", speech(1.0 + 0.1 * i, seed=20 + i))))
    scratch.rmdir()
    return _zip(path, entries)
