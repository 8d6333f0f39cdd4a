"""Uploads as the app receives them (issue 14): each file in a folder of its own, deleted once
imported or refused; bad manifest rows reported with file and row while the rest go in; a CSV
finds the audio sent with it; reports stay short and show no server paths."""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sere_core.app import AppContext, AppSettings
from sere_core.app import imports, projects, review
from sere_core.app.messages import user_message, without_paths
from sere_core.app.testing import local_caller
from sere_core.errors import InvalidDataError
from sere_core.storage import labels_for_project

ME = local_caller()  # the shared workspace of a private server


@pytest.fixture
def ctx(tmp_path):
    c = AppContext.open(AppSettings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", encoder="prosody"))
    yield c
    c.close()


def speech(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.2 * (0.25 + 0.75 * np.abs(np.sin(4 * np.pi * t))) * rng.standard_normal(len(t))).astype(np.float32)


def wav_bytes(seed: int, seconds: float = 1.0) -> bytes:
    path = Path(tempfile.mkdtemp()) / "x.wav"
    sf.write(path, speech(seconds, seed), 16000)
    return path.read_bytes()


def uploaded(root: Path, name: str, data: bytes) -> Path:
    """A file as Gradio stores an upload: ``<upload folder>/<hash>/<name>``."""
    folder = root / f"{abs(hash((name, data))):x}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return folder / name


def test_rejected_and_imported_uploads_leave_nothing_in_the_upload_folder(ctx, tmp_path):
    root = tmp_path / "gradio"
    rng = np.random.default_rng(0)
    junk = [uploaded(root, f"noise-{i}.wav", rng.integers(0, 255, 200_000, dtype=np.uint8).tobytes())
            for i in range(5)]
    good = uploaded(root, "good.wav", wav_bytes(1))
    outside = tmp_path / "mine.wav"
    outside.write_bytes(wav_bytes(2))
    pid = projects.create_project(ctx, ME, "uploads", "happy, sad").id
    paths = [*junk, good, outside]
    report = imports.import_audio(ctx, ME, pid, paths, "target", warm=False)
    imports.discard_uploads(paths, root)
    assert report.added == 2 and len(report.failures) == 5
    assert list(root.iterdir()) == []  # files and their folders are gone...
    assert outside.exists()  # ...but nothing outside the upload folder is touched
    view = review.clip_view(ctx, ME, report.clip_ids[0])  # the imported clip still plays
    assert view.samples.size > 8000


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="open files are listed through /proc")
def test_gradios_empty_placeholders_go_but_an_upload_being_written_stays(tmp_path):
    root = tmp_path / "gradio"
    root.mkdir()
    (root / "tmpleft1").touch()  # what gr.File's preprocessing leaves, one per file
    (root / "tmpfull").write_bytes(b"RIFF")  # not empty: not a placeholder
    (root / "mine").touch()
    with (root / "tmpwriting").open("wb"):  # the server is writing an upload into it
        imports.discard_uploads([], root)
        assert sorted(p.name for p in root.iterdir()) == ["mine", "tmpfull", "tmpwriting"]


def test_too_many_files_in_one_upload_are_refused_with_a_message(ctx, tmp_path):
    pid = projects.create_project(ctx, ME, "many", "happy, sad").id
    with pytest.raises(InvalidDataError, match=f"at most {imports.MAX_UPLOAD_FILES} go in one upload"):
        imports.import_audio(ctx, ME, pid, [tmp_path / f"{i}.wav" for i in range(imports.MAX_UPLOAD_FILES + 1)], "target")


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def test_a_bad_manifest_row_is_reported_with_its_row_and_the_rest_goes_in(ctx, tmp_path):
    rows = [f"clip{i}.wav,happy,de,{'x' * 300 if i == 5 else f'spk{i}'}" for i in range(1, 9)]
    archive = _zip(tmp_path / "batch.zip", {"manifest.csv": ("path,emotion,language,speaker\n" + "\n".join(rows)).encode(),
                                           **{f"clip{i}.wav": wav_bytes(10 + i) for i in range(1, 9)}})
    pid = projects.create_project(ctx, ME, "rows", "happy, sad").id
    report = imports.import_audio(ctx, ME, pid, [archive], "source", warm=False)
    assert report.added == 7 and report.labeled == 7
    [failure] = report.failures
    assert failure.file == "batch.zip" and failure.reason == "manifest-row"
    assert "manifest.csv, row 6" in failure.message and "speaker" in failure.message
    with ctx.session() as s:
        assert len(labels_for_project(s, pid)) == 7


def test_a_csv_uploaded_with_its_audio_finds_it_by_name(ctx, tmp_path):
    root = tmp_path / "gradio"
    csv = uploaded(root, "labels.csv", b"path,emotion\naudio/a.wav,happy\nb.wav,sad\nc.wav,happy\n")
    files = [uploaded(root, name, wav_bytes(20 + i)) for i, name in enumerate(("a.wav", "b.wav", "c.wav"))]
    pid = projects.create_project(ctx, ME, "csv", "happy, sad").id
    report = imports.import_audio(ctx, ME, pid, [csv, *files], "source", warm=False)
    assert report.failures == [] and report.added == 3 and report.labeled == 3  # each file once, labeled
    with ctx.session() as s:
        assert sorted(labels_for_project(s, pid).values()) == ["happy", "happy", "sad"]


def test_a_csv_without_its_audio_says_what_is_missing(ctx, tmp_path):
    csv = uploaded(tmp_path / "gradio", "labels.csv", b"path,emotion\na.wav,happy\nb.wav,sad\n")
    pid = projects.create_project(ctx, ME, "csv alone", "happy, sad").id
    report = imports.import_audio(ctx, ME, pid, [csv], "source", warm=False)
    assert report.added == 0
    [failure] = report.failures
    assert failure.reason == "missing-audio"
    assert "2 files it lists were not uploaded (a.wav, b.wav)" in failure.message
    assert "upload the CSV together with its audio files, or both in one .zip" in failure.message


def test_an_unclosed_quote_is_reported_as_malformed_at_its_row(ctx, tmp_path):
    csv = tmp_path / "quotes.csv"
    csv.write_text('path,emotion\na.wav,happy\n"b.wav,sad\nc.wav,happy\n')
    pid = projects.create_project(ctx, ME, "quotes", "happy, sad").id
    [failure] = imports.import_audio(ctx, ME, pid, [csv], "source", warm=False).failures
    assert failure.reason == "manifest"
    assert "quotes.csv, row 3: the CSV is malformed" in failure.message and "never closed" in failure.message


def test_an_archive_inside_an_archive_is_reported_not_ignored(ctx, tmp_path):
    inner = _zip(tmp_path / "inner.zip", {"x.wav": wav_bytes(30)})
    archive = _zip(tmp_path / "outer.zip", {"a.wav": wav_bytes(31), "more/inner.zip": inner.read_bytes()})
    pid = projects.create_project(ctx, ME, "nested", "happy, sad").id
    report = imports.import_audio(ctx, ME, pid, [archive], "target", warm=False)
    assert report.added == 1
    [failure] = report.failures
    assert failure.file == "outer.zip" and "more/inner.zip" in failure.message
    assert "not opened; unpack it and upload its contents" in failure.message


def test_every_file_left_out_is_in_the_report_even_inside_a_zip(ctx, tmp_path):
    """The pickers take any file: what is not audio is named in the report, also a zip's
    non-audio entries (a system's hidden files, .DS_Store and __MACOSX, are not the user's)."""
    archive = _zip(tmp_path / "clips.zip", {"a.wav": wav_bytes(40), "notes.txt": b"about the clips",
                                            "scans/cover.jpg": b"jpeg", ".DS_Store": b"x",
                                            "__MACOSX/._a.wav": b"x"})
    readme = tmp_path / "README.pdf"
    readme.write_bytes(b"%PDF-1.4")
    pid = projects.create_project(ctx, ME, "left out", "happy, sad").id
    report = imports.import_audio(ctx, ME, pid, [archive, readme], "target", warm=False)
    assert report.added == 1
    told = sorted((f.file, f.message) for f in report.failures)
    assert [file for file, _ in told] == ["README.pdf", "clips.zip", "clips.zip"], told
    assert "not audio" in told[0][1]
    assert sorted(m.removeprefix("clips.zip: ") for _, m in told[1:]) == [
        "notes.txt: not an audio file; skipped", "scans/cover.jpg: not an audio file; skipped"]
    text = report.markdown()
    assert "notes.txt" in text and "scans/cover.jpg" in text and "README.pdf" in text
    assert ".DS_Store" not in text and "__MACOSX" not in text


def test_a_long_report_is_summarized_and_names_no_server_path(ctx, tmp_path):
    bad = []
    for i in range(120):
        path = tmp_path / f"empty-{i}.wav"
        path.write_bytes(b"")
        bad.append(path)
    outside = tmp_path / "outside.csv"
    outside.write_text("path\n../../secret.wav\n")
    pid = projects.create_project(ctx, ME, "long", "happy, sad").id
    report = imports.import_audio(ctx, ME, pid, [*bad, outside], "target", warm=False)
    text = report.markdown()
    assert len(report.failures) == 121
    assert text.count("\n| ") == imports.MAX_REPORT_ROWS + 2  # header, separator and 50 files
    assert f"… and {121 - imports.MAX_REPORT_ROWS} more (71 empty)." in text
    assert "| outside.csv | manifest-row |" in text  # manifests come first
    for message in (f.message for f in report.failures):
        assert str(tmp_path) not in message and tempfile.gettempdir() + "/" not in message, message


@pytest.mark.browser
@pytest.mark.slow
def test_files_uploaded_in_the_browser_are_deleted_once_refused(tmp_path):
    """Through Chromium, Gradio's upload route and the app's handler: five files of random bytes
    named .wav are refused, and the upload folder (in the data folder) holds none of them."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from app_server import AppProcess, chromium, open_page, open_project, tab

    setup = AppContext.open(AppSettings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", encoder="prosody"))
    try:
        projects.create_project(setup, ME, "Uploads", "happy, sad")
    finally:
        setup.close()
    rng = np.random.default_rng(0)
    junk = []
    for i in range(5):
        junk.append(tmp_path / f"random-{i}.wav")
        junk[-1].write_bytes(rng.integers(0, 255, 2_000_000, dtype=np.uint8).tobytes())
    app = AppProcess(tmp_path / "data", tmp_path / "cache")
    with chromium() as browser:
        try:
            page = open_page(browser, app.start().url)
            open_project(page, "Uploads")
            tab(page, "2 · Source clips")
            page.set_input_files("#sere-src-upload input[type=file]", [str(p) for p in junk])
            page.locator("#sere-src-report", has_text="5 files rejected").wait_for(timeout=60000)
            for p in junk:
                assert page.locator("#sere-src-report", has_text=p.name).count() == 1
            root = tmp_path / "data" / "gradio"
            # Every upload's folder is gone, and so are the empty files gr.File.preprocess leaves
            # at the root, one per file (gradio 6.31).
            assert list(root.iterdir()) == []
        finally:
            app.stop()


def test_a_server_path_in_a_message_is_cut_to_the_file_name(ctx, tmp_path):
    """A directory named like an archive makes the zip reader quote the OS error, path and all."""
    folder = tmp_path / "sere-upload-x" / "clips.zip"
    folder.mkdir(parents=True)
    pid = projects.create_project(ctx, ME, "paths", "happy, sad").id
    text = imports.import_audio(ctx, ME, pid, [folder], "target", warm=False).markdown()
    assert "clips.zip" in text and str(tmp_path) not in text and tempfile.gettempdir() + "/" not in text, text
    error = InvalidDataError(f"cannot read {tmp_path}/data/gradio/abc/a.wav (see /tmp/x/)")
    assert user_message(error) == "cannot read a.wav (see x)"
    kept = "happy/a.wav lasts 1/2 s; see https://example.org/a/b"  # relative paths, ratios and URLs stay
    assert without_paths(kept) == kept


def test_an_unclosed_quote_in_a_labels_file_is_reported_at_its_line(ctx, tmp_path):
    wavs = []
    for i in range(3):
        wavs.append(tmp_path / f"c{i}.wav")
        wavs[-1].write_bytes(wav_bytes(40 + i))
    pid = projects.create_project(ctx, ME, "labels", "happy, sad").id
    assert imports.import_audio(ctx, ME, pid, wavs, "source", warm=False).added == 3
    labels = tmp_path / "labels.csv"
    labels.write_text('original_name,emotion\nc0.wav,happy\n"c1.wav,sad\nc2.wav,happy\n')
    with pytest.raises(InvalidDataError, match=r'labels.csv, line 3: the CSV is malformed \(a quote " opened'):
        imports.import_labels_file(ctx, ME, pid, labels)
    with ctx.session() as s:
        assert labels_for_project(s, pid) == {}  # nothing half-applied


@pytest.mark.slow
def test_uploads_through_the_real_web_server_are_deleted_once_imported_or_refused(tmp_path):
    """The same through ``python app.py`` and Gradio's own upload route: the size limit the server
    enforces is SERE's, in bytes, and the upload folder is empty after the import."""
    from app_server import AppProcess, page_session

    from sere_core.audio import AudioConfig

    data, cache = tmp_path / "data", tmp_path / "cache"
    c = AppContext.open(AppSettings(data_dir=data, cache_dir=cache, encoder="prosody"))
    pid = projects.create_project(c, ME, "web uploads", "happy, sad").id
    c.close()
    mine = tmp_path / "mine"
    mine.mkdir()
    rng = np.random.default_rng(7)
    files = []
    for i in range(5):
        files.append(mine / f"noise-{i}.wav")
        files[-1].write_bytes(rng.integers(0, 255, 200_000, dtype=np.uint8).tobytes())
    files.append(mine / "good.wav")
    files[-1].write_bytes(wav_bytes(50, seconds=1.5))

    app = AppProcess(data, cache).start()
    try:
        page = page_session(app.url, project=pid)
        assert page.config["max_file_size"] == AudioConfig().max_file_bytes  # bytes, not MiB
        answer = page.call(page.handler("upload_source"), [None, pid, page.upload(files), None, None])
        report = answer["output"]["data"][0]
        assert "**1 clip added** from 6 files" in report and "**5 files rejected:**" in report, report
        assert str(data) not in report and str(tmp_path) not in report
        left = [p for p in (data / "gradio").rglob("*") if p.is_file()]
        assert left == [], left
        pad = next(x for x in answer["output"]["data"] if isinstance(x, dict) and x.get("kind") == "label")
        assert pad["clip"] is not None and pad["audio"].startswith("data:audio/flac;base64,")  # it plays
        page.close()
    finally:
        app.stop()
    assert all(p.exists() for p in files)  # the client's own files are untouched
