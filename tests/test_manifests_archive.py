"""Safe zip extraction: hostile archives are refused before (or while) anything is written."""

from __future__ import annotations

import io
import stat
import struct
import zipfile
from pathlib import Path

import pytest

from sere_core.errors import ArchiveError, ConfigError
from sere_core.manifests import ArchiveLimits, extract_zip


def make_zip(path: Path, entries: list[tuple[str | zipfile.ZipInfo, bytes]], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


def refused(archive: Path, dest: Path, *words: str, limits: ArchiveLimits = ArchiveLimits()) -> str:
    with pytest.raises(ArchiveError) as info:
        extract_zip(archive, dest, limits)
    message = str(info.value)
    assert message.startswith(archive.name), message
    for word in words:
        assert word in message, message
    assert not dest.exists(), "a refused archive must leave nothing behind"
    return message


def test_normal_archive_is_extracted(tmp_path):
    archive = make_zip(tmp_path / "ok.zip", [("a/b.wav", b"123"), ("c.wav", b"45"), ("empty/", b"")])
    files = extract_zip(archive, tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in files) == ["a/b.wav", "c.wav"]
    assert (tmp_path / "out" / "a" / "b.wav").read_bytes() == b"123"
    assert (tmp_path / "out" / "empty").is_dir()


@pytest.mark.parametrize(
    ("name", "word"),
    [
        ("../escape.wav", "'..'"),
        ("a/../../escape.wav", "'..'"),
        ("..\\escape.wav", "'..'"),
        ("/etc/cron.d/evil", "absolute"),
        ("C:/Windows/evil.wav", "absolute"),
        ("C:evil.wav", "absolute"),
    ],
)
def test_unsafe_names(tmp_path, name, word):
    archive = make_zip(tmp_path / "evil.zip", [("fine.wav", b"ok"), (zipfile.ZipInfo(name), b"bad")])
    refused(archive, tmp_path / "out", word, name)
    assert not (tmp_path / "escape.wav").exists()


def test_symlink_entry(tmp_path):
    link = zipfile.ZipInfo("innocent.wav")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = make_zip(tmp_path / "link.zip", [(link, b"/etc/passwd")])
    refused(archive, tmp_path / "out", "symbolic link")


def test_device_entry(tmp_path):
    fifo = zipfile.ZipInfo("pipe")
    fifo.create_system = 3
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    refused(make_zip(tmp_path / "fifo.zip", [(fifo, b"")]), tmp_path / "out", "device or pipe")


def test_zip_bomb_by_ratio(tmp_path):
    archive = make_zip(tmp_path / "bomb.zip", [("zeros.wav", bytes(20_000_000))])
    assert archive.stat().st_size < 100_000
    refused(archive, tmp_path / "out", "zip bomb")


def test_small_files_may_compress_well(tmp_path):
    archive = make_zip(tmp_path / "csv.zip", [("silence.wav", bytes(500_000))])
    assert len(extract_zip(archive, tmp_path / "out")) == 1


def test_too_many_entries(tmp_path):
    archive = make_zip(tmp_path / "many.zip", [(f"f{i}.wav", b"x") for i in range(12)])
    refused(archive, tmp_path / "out", "12 entries", "10", limits=ArchiveLimits(max_entries=10))


def test_default_entry_limit_is_ten_thousand():
    assert ArchiveLimits().max_entries == 10_000
    assert ArchiveLimits().max_total_bytes == 2_000_000_000
    assert ArchiveLimits().max_ratio == 200


def test_total_size_limit(tmp_path):
    archive = make_zip(tmp_path / "big.zip", [("a.wav", b"a" * 600), ("b.wav", b"b" * 600)], zipfile.ZIP_STORED)
    refused(archive, tmp_path / "out", "more than 1000 bytes", limits=ArchiveLimits(max_total_bytes=1000))


def test_duplicate_entries(tmp_path):
    archive = tmp_path / "dup.zip"
    with zipfile.ZipFile(archive, "w") as zf, pytest.warns(UserWarning):
        zf.writestr("a.wav", b"1")
        zf.writestr("a.wav", b"2")
    refused(archive, tmp_path / "out", "more than once")


def _patch_sizes(data: bytes, new_size: int) -> bytes:
    """Rewrite the uncompressed size of the (only) entry in local and central headers."""
    out = bytearray(data)
    local = out.find(b"PK\x03\x04")
    struct.pack_into("<I", out, local + 22, new_size)
    central = out.find(b"PK\x01\x02")
    struct.pack_into("<I", out, central + 24, new_size)
    return bytes(out)


def test_declared_size_that_lies_is_caught_while_streaming(tmp_path):
    # 20 MB of zeros that claim to be 10 kB: the declared ratio looks harmless.
    honest = make_zip(tmp_path / "honest.zip", [("zeros.wav", bytes(20_000_000))]).read_bytes()
    liar = tmp_path / "liar.zip"
    liar.write_bytes(_patch_sizes(honest, 10_000))
    with zipfile.ZipFile(liar) as zf:
        assert zf.infolist()[0].file_size == 10_000
    refused(liar, tmp_path / "out")
    assert not (tmp_path / "out" / "zeros.wav").exists()


def test_stream_counter_stops_entries_that_outgrow_their_declared_size(tmp_path, monkeypatch):
    archive = make_zip(tmp_path / "ok.zip", [("a.wav", b"x" * 100)])
    real_open = zipfile.ZipFile.open

    def lying_open(self, info, *args, **kwargs):
        real_open(self, info, *args, **kwargs).close()
        return io.BytesIO(b"y" * 5_000_000)  # a reader that yields far more than declared

    monkeypatch.setattr(zipfile.ZipFile, "open", lying_open)
    refused(archive, tmp_path / "out", "more data than", "100 bytes")


def test_not_a_zip(tmp_path):
    fake = tmp_path / "fake.zip"
    fake.write_text("hello")
    refused(fake, tmp_path / "out", "not a readable zip")


def test_existing_files_are_never_overwritten(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.wav").write_bytes(b"mine")
    archive = make_zip(tmp_path / "x.zip", [("new.wav", b"n"), ("a.wav", b"theirs")])
    with pytest.raises(ArchiveError, match="overwrite"):
        extract_zip(archive, out)
    assert (out / "a.wav").read_bytes() == b"mine"
    assert sorted(p.name for p in out.iterdir()) == ["a.wav"]  # partial extraction rolled back


def test_file_and_folder_with_the_same_name(tmp_path):
    archive = make_zip(tmp_path / "clash.zip", [("a", b"file"), ("a/b.wav", b"x")])
    refused(archive, tmp_path / "out")


def test_limits_are_validated():
    with pytest.raises(ConfigError):
        ArchiveLimits(max_ratio=0)


def test_extractall_is_never_used(tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("extractall used")

    monkeypatch.setattr(zipfile.ZipFile, "extractall", forbidden)
    monkeypatch.setattr(zipfile.ZipFile, "extract", forbidden)
    archive = make_zip(tmp_path / "ok.zip", [("a.wav", b"1")])
    assert len(extract_zip(archive, tmp_path / "out")) == 1
