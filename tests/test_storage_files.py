"""Blob store (content-addressed files) and CSV export/import of labels."""

from __future__ import annotations

import csv
import doctest
import hashlib
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from pg_server import db_url, postgres_admin_url, postgres_url  # noqa: E402,F401  (fixtures)

from sere_core.errors import InvalidDataError, UnsafePathError  # noqa: E402
from sere_core.storage import (
    SHARED_WORKSPACE,
    ensure_workspace,  # noqa: E402
    LABEL_COLUMNS,
    BlobStore,
    add_clip,
    add_recording,
    create_project,
    get_label,
    import_labels,
    label_history,
    labels_to_rows,
    open_database,
    remove_label,
    session_factory,
    session_scope,
    set_label,
)
from sere_core.storage import export as export_module  # noqa: E402
from sere_core.storage.export import safe_csv_cell, write_csv  # noqa: E402


# ---------------------------------------------------------------------------------- blob store


def test_put_file_is_content_addressed_and_deduplicated(tmp_path):
    store = BlobStore(tmp_path / "data")
    data = b"RIFF....WAVEfmt " + bytes(range(256)) * 40
    first = tmp_path / "Take 1.WAV"
    second = tmp_path / "copy.wav"
    first.write_bytes(data)
    second.write_bytes(data)

    sha, rel = store.put_file(first)
    assert sha == hashlib.sha256(data).hexdigest()
    assert rel == f"audio/{sha[:2]}/{sha}.wav"
    assert store.path_for(rel).read_bytes() == data
    assert store.put_file(second) == (sha, rel)  # same bytes, other name: stored once
    stored = [p for p in (tmp_path / "data" / "audio").rglob("*") if p.is_file()]
    assert stored == [store.path_for(rel)]  # no duplicate, no leftover temp file
    assert store.has(sha) and not store.has("0" * 64)

    other_sha, other_rel = store.put_bytes(b"different bytes", ext="flac")
    assert other_sha != sha and other_rel.endswith(".flac")
    _, odd_rel = store.put_bytes(b"x", ext="w a/v")
    assert odd_rel.endswith(".bin")  # untrusted extensions never shape the path


@pytest.mark.parametrize(
    "rel",
    ["../outside.wav", "audio/../../outside.wav", "/etc/passwd", "", "audio/\x00x", "C:\\Windows\\x", "..", "."],
)
def test_path_for_refuses_escaping_paths(tmp_path, rel):
    store = BlobStore(tmp_path / "data")
    with pytest.raises(UnsafePathError):
        store.path_for(rel)


def test_path_for_refuses_symlinks_out_of_the_data_dir(tmp_path):
    store = BlobStore(tmp_path / "data")
    (tmp_path / "data" / "audio").mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", tmp_path / "data" / "audio" / "link.wav")
    with pytest.raises(UnsafePathError, match="outside the data folder"):
        store.path_for("audio/link.wav")
    assert store.path_for("audio/ab/ok.wav") == (tmp_path / "data" / "audio" / "ab" / "ok.wav").resolve()
    with pytest.raises(UnsafePathError):
        store.relative(tmp_path / "secret.txt")


def test_model_dir_is_fresh_and_relative(tmp_path):
    store = BlobStore(tmp_path)
    folder = store.model_dir(7)
    (folder / "old.safetensors").write_bytes(b"old")
    folder = store.model_dir(7)
    assert list(folder.iterdir()) == []
    assert store.relative(folder) == "models/run-7"
    with pytest.raises(InvalidDataError):
        store.model_dir(-1)


def test_add_recording_stores_file_once(tmp_path):
    store = BlobStore(tmp_path / "data")
    engine = open_database(f"sqlite:///{tmp_path / 'sere.db'}")
    try:
        src = tmp_path / "interview.wav"
        src.write_bytes(b"\x00\x01" * 5000)
        with session_scope(engine) as s:
            rec = add_recording(s, store, src)
            again = add_recording(s, store, src, original_name="renamed.wav")
            assert again.id == rec.id
            assert (rec.original_name, rec.size_bytes) == ("interview.wav", 10000)
            assert store.path_for(rec.stored_path).read_bytes() == src.read_bytes()
    finally:
        engine.dispose()


# --------------------------------------------------------------------------------------- CSV


@pytest.mark.parametrize("cell", ["=1+1", "+SUM(A1)", "-2+3", "@cmd", "\tx", "\rx", "=HYPERLINK(\"http://e\")"])
def test_formula_cells_are_neutralized(cell):
    assert safe_csv_cell(cell) == "'" + cell
    assert export_module.unescape_csv_cell(safe_csv_cell(cell)) == cell


@pytest.mark.parametrize(
    "value, expected",
    [("angry", "angry"), ("it's", "it's"), (None, ""), (3, "3"), (-0.5, "-0.5"), ("a=b", "a=b")],
)
def test_harmless_cells_are_unchanged(value, expected):
    assert safe_csv_cell(value) == expected


def test_export_docstrings_run():
    result = doctest.testmod(export_module)
    assert result.attempted > 0 and result.failed == 0


def test_write_csv_neutralizes_every_cell(tmp_path):
    path = tmp_path / "out" / "labels.csv"
    rows = [{"name": "=cmd|' /C calc'!A0", "speaker": "@bob", "start": -1.5, "extra": "ignored"}]
    assert write_csv(path, rows, ["name", "speaker", "start"]) == 1
    with path.open(newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    assert table == [["name", "speaker", "start"], ["'=cmd|' /C calc'!A0", "'@bob", "-1.5"]]
    assert [p.name for p in path.parent.iterdir()] == ["labels.csv"]  # no temp file left


def _labeled_project(factory, tmp_path):
    store = BlobStore(tmp_path / "data")
    src = tmp_path / "=evil.wav"
    src.write_bytes(b"audio bytes" * 100)
    with session_scope(factory) as s:
        project = create_project(s, "Round trip", ["angry", "happy", "sad"], "prosody", workspace=ensure_workspace(s, SHARED_WORKSPACE, "shared").id)
        rec = add_recording(s, store, src)
        clips = [
            add_clip(s, project.id, audio_id=f"{i:064x}", original_name="=evil.wav", duration_s=1.0,
                     start_s=float(i), role="target", language="yo", speaker="+spk", recording_id=rec.id)
            for i in range(3)
        ]
        plain = add_clip(s, project.id, audio_id="f" * 64, original_name="plain.wav", duration_s=1.0, role="source")
        set_label(s, clips[0].id, "angry")
        set_label(s, clips[1].id, "sad")
        set_label(s, plain.id, "happy")
        return project.id, [c.id for c in clips], plain.id, rec.stored_path


def test_labels_round_trip_through_csv(db_url, tmp_path):
    engine = open_database(db_url)
    factory = session_factory(engine)
    try:
        project_id, clip_ids, plain_id, stored_path = _labeled_project(factory, tmp_path)
        with session_scope(factory) as s:
            rows = labels_to_rows(s, project_id)
        assert [(r["emotion"], r["start_s"]) for r in rows] == [("angry", 0.0), ("sad", 1.0), ("happy", 0.0)]
        assert rows[0]["path"] == stored_path and rows[2]["path"] == ""
        assert rows[0]["original_name"] == "=evil.wav" and rows[0]["speaker"] == "+spk"

        path = tmp_path / "labels.csv"
        write_csv(path, rows, LABEL_COLUMNS)
        raw = path.read_text(encoding="utf-8")
        assert "'=evil.wav" in raw and "'+spk" in raw and ",=evil" not in raw

        expected = {clip_ids[0]: "angry", clip_ids[1]: "sad", clip_ids[2]: None, plain_id: "happy"}
        with session_scope(factory) as s:
            for clip_id in expected:
                remove_label(s, clip_id)
        with session_scope(factory) as s:
            result = import_labels(s, project_id, path, author="importer")
        assert (result.applied, result.unchanged, result.rejected) == (3, 0, [])
        with session_scope(factory) as s:
            assert {c: get_label(s, c) for c in expected} == expected
            assert label_history(s, clip_ids[0])[-1].author == "importer"
            # Importing the same file again changes nothing.
            again = import_labels(s, project_id, path)
            assert (again.applied, again.unchanged) == (0, 3)
    finally:
        engine.dispose()


def test_import_matches_by_name_and_reports_bad_rows(tmp_path):
    engine = open_database(f"sqlite:///{tmp_path / 'sere.db'}")
    factory = session_factory(engine)
    try:
        project_id, clip_ids, plain_id, _ = _labeled_project(factory, tmp_path)
        path = tmp_path / "hand-made.csv"
        path.write_text(
            "\ufefforiginal_name,start_s,emotion\n"   # Excel's BOM, no audio_id column
            "plain.wav,,SAD\n"                       # emotion names ignore case
            "'=evil.wav,2.0,happy\n"                 # neutralized cell, narrowed by start_s
            "=evil.wav,,angry\n"                     # ambiguous: three clips share the name
            "missing.wav,,sad\n"
            "plain.wav,,joy\n"
            "plain.wav,,\n",                         # no emotion: skipped
            encoding="utf-8",
        )
        with session_scope(factory) as s:
            result = import_labels(s, project_id, path)
            assert (result.applied, result.skipped) == (2, 1)
            assert [line for line, _ in result.rejected] == [4, 5, 6]
            assert "matches 3 clips" in result.rejected[0][1]
            assert "no clip" in result.rejected[1][1]
            assert "'joy' is not an emotion" in result.rejected[2][1]
            assert get_label(s, plain_id) == "sad" and get_label(s, clip_ids[2]) == "happy"

        bad = tmp_path / "bad.csv"
        bad.write_text("file,label\na.wav,sad\n", encoding="utf-8")
        with session_scope(factory) as s:
            with pytest.raises(InvalidDataError, match="'emotion' column"):
                import_labels(s, project_id, bad)
    finally:
        engine.dispose()
