"""Manifests from CSV files, folders and zip archives."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from sere_core.errors import ArchiveError, ManifestError
from sere_core.manifests import ManifestEntry, read_manifest


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF")
    return path


def write_csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


# -- CSV --------------------------------------------------------------------------------------


def test_csv_with_labels_and_extra_columns(tmp_path):
    touch(tmp_path / "data" / "audio" / "a.wav")
    manifest = write_csv(
        tmp_path / "data" / "manifest.csv",
        "path,emotion,language,speaker,notes\n"
        "audio/a.wav, Angry ,de, spk1 ,loud\n"
        "audio/b.flac,,en,,\n",
    )
    entries = read_manifest(manifest)
    base = (tmp_path / "data").resolve()
    assert entries == [
        ManifestEntry(base / "audio" / "a.wav", "angry", "de", "spk1"),
        ManifestEntry(base / "audio" / "b.flac", None, "en", None),
    ]
    assert all(e.path.is_absolute() for e in entries)


def test_csv_only_path_column_semicolons_bom_and_blank_lines(tmp_path):
    manifest = write_csv(tmp_path / "m.csv", "\ufeffPath;Emotion\r\nx.wav;Fröhlich\r\n\r\n;\r\ny.wav;SAD\r\n")
    entries = read_manifest(manifest)
    assert [(e.path.name, e.emotion) for e in entries] == [("x.wav", "fröhlich"), ("y.wav", "sad")]


def test_csv_windows_encoding_and_backslashes(tmp_path):
    manifest = write_csv(tmp_path / "m.csv", "path,emotion\nsub\\é.wav,colère\n", encoding="cp1252")
    (entry,) = read_manifest(manifest)
    assert entry.path == (tmp_path / "sub" / "é.wav").resolve()
    assert entry.emotion == "colère"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", ["empty"]),
        ("   \n\n", ["empty"]),
        ("file,emotion\na.wav,happy\n", ["row 1", "'path'"]),
        ("path,emotion\n", ["lists no recordings"]),
        ("path,emotion\na.wav,happy\n../outside.wav,sad\n", ["row 3", "outside"]),
        ("path\na.wav\nsub/../../outside.wav\n", ["row 3", "outside"]),
        ("path\n/etc/passwd\n", ["row 2", "outside"]),
        ("path\nC:\\Users\\x.wav\n", ["row 2", "Windows"]),
        ("path\nhttps://example.org/a.wav\n", ["row 2", "web address"]),
        ("path,emotion\na.wav,happy\nb.wav,sad\na.wav,angry\n", ["row 4", "row 2"]),
        ("path,emotion\n,happy\n", ["row 2", "empty"]),
        ("path,path\na.wav,b.wav\n", ["row 1", "more than once"]),
    ],
)
def test_bad_csv_names_the_row(tmp_path, text, words):
    manifest = write_csv(tmp_path / "in" / "manifest.csv", text)
    with pytest.raises(ManifestError) as info:
        read_manifest(manifest)
    message = str(info.value)
    assert message.startswith("manifest.csv"), message
    for word in words:
        assert word in message, message


def test_absolute_path_inside_the_folder_is_accepted(tmp_path):
    inside = touch(tmp_path / "a.wav").resolve()
    (entry,) = read_manifest(write_csv(tmp_path / "m.csv", f"path\n{inside}\n"))
    assert entry.path == inside


def test_link_pointing_outside_is_refused(tmp_path):
    secret = touch(tmp_path / "secret.wav")
    data = tmp_path / "data"
    data.mkdir()
    (data / "link.wav").symlink_to(secret)
    with pytest.raises(ManifestError, match="row 2.*outside"):
        read_manifest(write_csv(data / "m.csv", "path\nlink.wav\n"))


def test_binary_file_named_csv(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes(b"\x00\x01\x02binary")
    with pytest.raises(ManifestError, match="not a text CSV"):
        read_manifest(path)


def test_row_round_trip(tmp_path):
    entry = ManifestEntry(tmp_path.resolve() / "a" / "b.wav", "Happy", "en", "s1")
    row = entry.to_row(base=tmp_path)
    assert row == {"path": "a/b.wav", "emotion": "happy", "language": "en", "speaker": "s1"}
    assert ManifestEntry.from_row(row, tmp_path) == entry
    with pytest.raises(ManifestError):
        ManifestEntry.from_row({"path": "../b.wav"}, tmp_path)
    with pytest.raises(ValueError):
        ManifestEntry(Path("relative.wav"))


# -- folders ----------------------------------------------------------------------------------


def test_flat_folder_has_no_labels(tmp_path):
    for name in ("b.wav", "a.FLAC", "c.mp3", "notes.txt", ".hidden.wav"):
        touch(tmp_path / name)
    entries = read_manifest(tmp_path)
    assert [e.path.name for e in entries] == ["a.FLAC", "b.wav", "c.mp3"]
    assert {e.emotion for e in entries} == {None}


def test_emotion_subfolders(tmp_path):
    touch(tmp_path / "Angry" / "1.wav")
    touch(tmp_path / "happy" / "2.ogg")
    touch(tmp_path / "happy" / "3.m4a")  # listed so the audio stage reports the format
    touch(tmp_path / "__MACOSX" / "happy" / "._2.ogg")
    touch(tmp_path / ".git" / "x.wav")
    entries = read_manifest(tmp_path)
    assert [(e.path.name, e.emotion) for e in entries] == [("1.wav", "angry"), ("2.ogg", "happy"), ("3.m4a", "happy")]


def test_speaker_then_emotion_subfolders(tmp_path):
    touch(tmp_path / "spk1" / "sad" / "a.wav")
    touch(tmp_path / "spk2" / "neutral" / "b.wav")
    touch(tmp_path / "top.wav")  # root-level files never get a label
    entries = {e.path.name: e.emotion for e in read_manifest(tmp_path)}
    assert entries == {"a.wav": "sad", "b.wav": "neutral", "top.wav": None}


def test_mixed_depths_give_no_labels(tmp_path):
    touch(tmp_path / "angry" / "a.wav")
    touch(tmp_path / "spk1" / "sad" / "b.wav")
    assert {e.emotion for e in read_manifest(tmp_path)} == {None}


def test_deep_folders_give_no_labels(tmp_path):
    touch(tmp_path / "2023" / "05" / "session" / "a.wav")
    assert read_manifest(tmp_path)[0].emotion is None


def test_folder_without_audio(tmp_path):
    touch(tmp_path / "readme.txt")
    with pytest.raises(ManifestError, match="no audio files"):
        read_manifest(tmp_path)


def test_folder_link_to_outside_file_is_refused(tmp_path):
    secret = touch(tmp_path / "elsewhere" / "secret.wav")
    data = tmp_path / "data"
    touch(data / "ok.wav")
    (data / "link.wav").symlink_to(secret)
    with pytest.raises(ManifestError, match="outside the folder"):
        read_manifest(data)


def test_unknown_source(tmp_path):
    with pytest.raises(ManifestError, match="no such file"):
        read_manifest(tmp_path / "nothing.csv")
    with pytest.raises(ManifestError, match="CSV file, a folder"):
        read_manifest(touch(tmp_path / "list.txt"))


# -- zip archives -----------------------------------------------------------------------------


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def test_zip_of_a_labelled_folder(tmp_path):
    archive = make_zip(tmp_path / "upload.zip", {
        "corpus/angry/a.wav": b"RIFF1",
        "corpus/happy/b.wav": b"RIFF2",
        "__MACOSX/corpus/angry/._a.wav": b"junk",
    })
    work = tmp_path / "work"
    entries = read_manifest(archive, workdir=work)
    assert [(e.path.name, e.emotion) for e in entries] == [("a.wav", "angry"), ("b.wav", "happy")]
    assert all(e.path.is_relative_to(work.resolve()) for e in entries)
    assert entries[0].path.read_bytes() == b"RIFF1"


def test_zip_with_one_csv_is_read_as_csv(tmp_path):
    archive = make_zip(tmp_path / "upload.zip", {
        "labels.csv": b"path,emotion,speaker\nclips/1.wav,Sad,anna\n",
        "clips/1.wav": b"RIFF",
    })
    (entry,) = read_manifest(archive, workdir=tmp_path / "w")
    assert (entry.emotion, entry.speaker, entry.path.read_bytes()) == ("sad", "anna", b"RIFF")


def test_zip_without_workdir_uses_a_temporary_folder(tmp_path):
    archive = make_zip(tmp_path / "upload.zip", {"a.wav": b"RIFF"})
    (entry,) = read_manifest(archive)
    try:
        assert entry.path.exists() and not entry.path.is_relative_to(tmp_path.resolve())
    finally:
        import shutil

        shutil.rmtree(entry.path.parent)


def test_zip_with_two_csvs_is_ambiguous(tmp_path):
    archive = make_zip(tmp_path / "u.zip", {"a.csv": b"path\nx.wav\n", "b.csv": b"path\ny.wav\n"})
    with pytest.raises(ManifestError, match="u.zip.*several CSV"):
        read_manifest(archive, workdir=tmp_path / "w")


def test_zip_csv_errors_name_the_archive_and_row(tmp_path):
    archive = make_zip(tmp_path / "u.zip", {"m.csv": b"path\nok.wav\n../../etc/passwd\n"})
    with pytest.raises(ManifestError, match=r"u\.zip: m\.csv, row 3"):
        read_manifest(archive, workdir=tmp_path / "w")


def test_unsafe_zip_is_refused_by_read_manifest(tmp_path):
    archive = make_zip(tmp_path / "evil.zip", {"../escape.wav": b"RIFF"})
    with pytest.raises(ArchiveError, match="evil.zip"):
        read_manifest(archive, workdir=tmp_path / "w")
    assert not (tmp_path / "escape.wav").exists()
    assert os.listdir(tmp_path / "w") == []  # the extraction folder was removed


def test_failed_zip_manifest_leaves_nothing_behind(tmp_path):
    archive = make_zip(tmp_path / "u.zip", {"m.csv": b"nopath\nx.wav\n", "x.wav": b"RIFF"})
    with pytest.raises(ManifestError, match="row 1"):
        read_manifest(archive, workdir=tmp_path / "w")
    assert os.listdir(tmp_path / "w") == []


def test_docstring_examples_run():
    import doctest

    import sere_core.manifests
    from sere_core.manifests import entry

    for module in (sere_core.manifests, entry):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__


def test_row_numbers_count_blank_lines_like_a_spreadsheet(tmp_path):
    manifest = write_csv(tmp_path / "m.csv", "\npath\na.wav\n\n../x.wav\n")
    with pytest.raises(ManifestError, match="row 5"):
        read_manifest(manifest)
