"""Importing audio and labels into a project: uploaded files, folders, zip archives, CSV manifests.

Each file is read, checked and split at pauses on its own: a bad file is reported with its
reason and the rest go in. One file's clips are stored in one transaction (all or none). What an
import keeps is copied into the content-addressed blob store, so the upload itself is deleted
afterwards (:func:`discard_uploads`).
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sere_core import storage as st
from sere_core.app.access import Caller
from sere_core.app.context import AppContext
from sere_core.app.messages import plural, user_message, without_paths
from sere_core.app.pipeline import Progress
from sere_core.app.projects import check_room
from sere_core.app.warmup import import_engine
from sere_core.errors import ConfigError, InvalidDataError, LimitError, ManifestError, SereError

ARCHIVE_EXTENSIONS = (".zip",)
#: Files in one upload (the web server's own limit per request is the same).
MAX_UPLOAD_FILES = 1000
#: Rejected files listed one by one in an import report; the rest are counted by reason.
MAX_REPORT_ROWS = 50


def _noop(done: int, total: int, desc: str) -> None:
    return None


@dataclass(frozen=True)
class FileFailure:
    """A file (or a row of a manifest) that was not imported, and why."""

    file: str
    reason: str
    message: str


@dataclass
class ImportReport:
    """What an import did, per file."""

    files: int = 0
    added: int = 0
    duplicates: int = 0
    labeled: int = 0
    split_files: int = 0
    clip_ids: list[int] = field(default_factory=list)
    failures: list[FileFailure] = field(default_factory=list)

    def markdown(self) -> str:
        parts = [f"**{plural(self.added, 'clip')} added** from {plural(self.files, 'file')}"]
        if self.split_files:
            parts.append(f"{plural(self.split_files, 'long recording')} split at pauses")
        if self.duplicates:
            parts.append(f"{self.duplicates} already in the project (skipped)")
        if self.labeled:
            parts.append(f"{self.labeled} labels taken from the manifest")
        text = "; ".join(parts) + "."
        if self.failures:
            shown = self.failures[:MAX_REPORT_ROWS]
            rows = "\n".join(f"| {_md(f.file)} | {_md(f.reason)} | {_md(f.message)} |" for f in shown)
            text += (f"\n\n**{plural(len(self.failures), 'file')} rejected:**\n\n"
                     "| file | reason | details |\n| --- | --- | --- |\n" + rows)
            rest = Counter(f.reason for f in self.failures[MAX_REPORT_ROWS:])
            if rest:
                counts = ", ".join(f"{n:,} {reason}" for reason, n in rest.most_common())
                text += f"\n\n… and {rest.total():,} more ({counts})."
        return text


def _md(text: str) -> str:
    return without_paths(str(text)).replace("|", "\\|").replace("\n", " ")


@dataclass(frozen=True)
class _Item:
    path: Path
    name: str
    emotion: str | None
    language: str | None
    speaker: str | None


def _import_items(ctx: AppContext, caller: Caller, project_id: int, items: Sequence[_Item], role: str,
                  progress: Progress, warm: bool) -> ImportReport:
    from sere_core.audio import load_audio
    from sere_core.errors import AudioError

    report = ImportReport()
    with ctx.session() as s:
        project = st.owned_project(s, caller.workspace, project_id)
        emotions = {e.casefold(): e for e in project.emotions}
        known = st.audio_ids(s, project_id, role)
    for done, item in enumerate(items, start=1):
        progress(done - 1, len(items), f"Reading {item.name}")
        report.files += 1
        try:
            segments = load_audio(item.path)
        except AudioError as exc:
            report.failures.append(FileFailure(item.name, exc.reason, exc.message))
            continue
        except Exception as exc:  # an unexpected decoder failure on one file must not stop the rest
            report.failures.append(FileFailure(item.name, "error", f"could not be read ({type(exc).__name__})"))
            continue
        emotion = None
        if item.emotion:
            emotion = emotions.get(item.emotion.strip().casefold())
            if emotion is None:
                report.failures.append(FileFailure(
                    item.name, "unknown-emotion",
                    f"its emotion {item.emotion!r} is not one of {', '.join(project.emotions)}; "
                    "imported without a label"))
        try:
            _add_segments(ctx, caller, project_id, item, segments, role, emotion, known, report)
        except LimitError as exc:  # the workspace is full: nothing more goes in
            rest = items[done - 1:]
            report.files += len(rest) - 1
            report.failures += [FileFailure(r.name, "limit", user_message(exc)) for r in rest]
            break
        except SereError as exc:  # a bad value in this row: the file is refused, the rest go on
            report.failures.append(FileFailure(item.name, "invalid", user_message(exc)))
            continue
        if len(segments) > 1:
            report.split_files += 1
        if warm and report.added:  # features are computed while the upload goes on
            ctx.jobs.warm_features(project_id)
    progress(len(items), len(items), "Imported")
    return report


def _add_segments(ctx: AppContext, caller: Caller, project_id: int, item: _Item, segments: Sequence[Any],
                  role: str, emotion: str | None, known: set[str], report: ImportReport) -> None:
    """One file's clips, in one transaction: all of them or (on an error) none."""
    added: list[int] = []
    fresh: set[str] = set()
    new = [seg for seg in segments if seg.audio_id not in known]
    with ctx.audio_lock, ctx.session() as s:  # see projects.free_audio
        if new:
            check_room(ctx, s, caller, clips=len(new), megabytes=item.path.stat().st_size / 1e6)
        recording = st.add_recording(s, ctx.blobs, item.path, original_name=item.name)
        for k, seg in enumerate(segments):
            if seg.audio_id in known or seg.audio_id in fresh:
                report.duplicates += 1
                continue
            ctx.segments.put(seg.audio_id, seg.samples, seg.sample_rate)
            stem, suffix = Path(item.name).stem, Path(item.name).suffix
            name = item.name if len(segments) == 1 else f"{stem} #{k + 1:03d} ({seg.start_s:.1f}-{seg.end_s:.1f} s){suffix}"
            clip = st.add_clip(s, project_id, audio_id=seg.audio_id, original_name=name,
                               duration_s=seg.duration_s, role=role, language=item.language,
                               speaker=item.speaker, recording_id=recording.id,
                               start_s=seg.start_s, end_s=seg.end_s)
            fresh.add(seg.audio_id)
            added.append(clip.id)
            if emotion is not None and role == "source":
                st.set_label(s, clip.id, emotion, author=caller.labeler, session_id=caller.tab or None)
    known |= fresh  # only once the transaction has committed
    report.added += len(added)
    report.clip_ids += added
    if emotion is not None and role == "source":
        report.labeled += len(added)


def _expand_uploads(paths: Iterable[str | Path], workdir: Path, language: str | None,
                    speaker: str | None) -> tuple[list[_Item], list[FileFailure]]:
    """Uploaded files -> items; zip archives and CSV manifests go through ``read_manifest``.

    A browser uploads each file into a folder of its own, so a CSV's relative paths cannot reach
    the audio files sent with it: a row whose file is not beside the CSV is matched by file name
    with the other files of the same upload, which then come in once, with the row's labels.
    """
    from sere_core.audio import SUPPORTED_EXTENSIONS
    from sere_core.manifests import read_manifest

    uploads = [Path(raw) for raw in paths]
    by_name: dict[str, list[Path]] = {}
    for path in uploads:
        if path.suffix.lower() not in (*ARCHIVE_EXTENSIONS, ".csv"):
            by_name.setdefault(path.name, []).append(path)
    items: list[_Item] = []
    failures: list[FileFailure] = []
    claimed: set[Path] = set()  # uploaded audio files a CSV row refers to
    for n, path in enumerate(uploads):
        suffix = path.suffix.lower()
        if suffix not in (*ARCHIVE_EXTENSIONS, ".csv"):
            continue
        skipped: list[ManifestError] = []
        try:
            entries = read_manifest(path, workdir=workdir / f"upload-{n}-{path.stem}"[:200], skipped=skipped)
        except ManifestError as exc:
            failures.append(FileFailure(path.name, "manifest", str(exc)))
            continue
        failures += [FileFailure(path.name, "manifest-row", str(exc)) for exc in skipped]
        if suffix == ".csv" and not entries and not skipped:
            failures.append(FileFailure(path.name, "manifest", "the CSV lists no audio files"))
        missing = []
        for e in entries:
            found = Path(e.path)
            if suffix == ".csv" and not found.exists():
                same = by_name.get(found.name, [])
                if not same:
                    missing.append(found.name)
                    continue
                if len(same) > 1:
                    failures.append(FileFailure(found.name, "manifest-row", f"{path.name} lists it, and several "
                                                "uploaded files have this name; upload the CSV and its audio in "
                                                "one .zip instead"))
                    continue
                found = same[0]
                claimed.add(found)
            items.append(_Item(found, found.name, e.emotion, e.language or language, e.speaker or speaker))
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            failures.append(FileFailure(
                path.name, "missing-audio", f"{len(missing)} file{'s' if len(missing) != 1 else ''} it lists "
                f"{'were' if len(missing) != 1 else 'was'} not uploaded ({shown}); upload the CSV together "
                "with its audio files, or both in one .zip"))
    for path in uploads:
        suffix = path.suffix.lower()
        if suffix in (*ARCHIVE_EXTENSIONS, ".csv") or path in claimed:
            continue
        if suffix in SUPPORTED_EXTENSIONS or not suffix:
            items.append(_Item(path, path.name, None, language, speaker))
        else:
            failures.append(FileFailure(path.name, "unsupported-format",
                                        f"'{suffix}' files are not audio; use {', '.join(sorted(SUPPORTED_EXTENSIONS))} or .zip"))
    return items, failures


def discard_uploads(paths: Iterable[str | Path], upload_root: str | Path) -> None:
    """Delete uploaded files once they are imported or refused, with the folders that held them.

    The web server keeps every upload in a folder of its own until deleted, so without this the
    disk only grows (rejected files included). What an import keeps is copied into the blob
    store first. Only files inside ``upload_root`` are touched, never a path given from elsewhere.
    """
    root = Path(upload_root).resolve()
    for raw in paths:
        path = Path(raw).resolve()
        if not path.is_relative_to(root) or path == root:
            continue
        path.unlink(missing_ok=True)
        folder = path.parent
        while folder != root and folder.is_relative_to(root):
            try:
                folder.rmdir()  # only when empty: a folder holding other files stays
            except OSError:
                break
            folder = folder.parent
    _discard_placeholders(root)


def _discard_placeholders(root: Path) -> None:
    """Delete the empty ``tmp*`` files Gradio's File component leaves in the upload folder, one
    per file it hands to a handler (``gr.File`` preprocessing opens a temporary file it never
    uses), so that a thousand-file upload does not leave a thousand files behind.

    The web server writes each upload into a ``tmp*`` file there too before moving it into its
    folder; that one is open while it is written, so only empty files this process does not hold
    open go. Where the open files cannot be listed (no ``/proc``), nothing is deleted.
    """
    try:
        fds = list(Path("/proc/self/fd").iterdir())
    except OSError:
        return
    held = set()
    for fd in fds:
        try:
            held.add(Path(os.readlink(fd)))
        except OSError:  # closed meanwhile
            continue
    for path in root.glob("tmp*"):
        try:
            if path.is_file() and not path.is_symlink() and path.stat().st_size == 0 and path not in held:
                path.unlink()
        except OSError:  # gone meanwhile, or being replaced: leave it
            continue


def import_audio(ctx: AppContext, caller: Caller, project_id: int, paths: Sequence[str | Path], role: str, *,
                 language: str | None = None, speaker: str | None = None,
                 progress: Progress = _noop, warm: bool = True) -> ImportReport:
    """Add uploaded audio files, zip archives or CSV manifests to a project as source or target clips.

    Long recordings are split at pauses; each bad file is reported with its reason and the rest go
    on. Source clips from a manifest with an ``emotion`` column arrive labeled.
    """
    if role not in ("source", "target"):
        raise ConfigError(f"role must be 'source' or 'target', not {role!r}.")
    if not paths:
        raise InvalidDataError("Choose one or more audio files (or a .zip) to upload first.")
    if len(paths) > MAX_UPLOAD_FILES:
        raise InvalidDataError(
            f"{len(paths)} files were chosen; at most {MAX_UPLOAD_FILES} go in one upload. Upload them in "
            "several parts, or as a .zip archive.")
    with ctx.session() as s:  # a clear error for a deleted project (or another visitor's) before any work
        st.owned_project(s, caller.workspace, project_id)
    import_engine()
    with tempfile.TemporaryDirectory(prefix="sere-upload-") as tmp:
        items, failures = _expand_uploads(paths, Path(tmp), (language or "").strip() or None,
                                          (speaker or "").strip() or None)
        report = _import_items(ctx, caller, project_id, items, role, progress, warm)
    report.failures = failures + report.failures
    report.files += len(failures)
    if warm and report.added:
        ctx.jobs.warm_features(project_id)
    return report




def import_labels_file(ctx: AppContext, caller: Caller, project_id: int, path: str | Path) -> st.ImportResult:
    """Apply a labels CSV (as exported) to the project; each label is the caller's (undoable)."""
    with ctx.session() as s:
        project = st.owned_project(s, caller.workspace, project_id)
        return st.import_labels(s, project.id, path, author=caller.labeler, session_id=caller.tab or None)


def labels_report(result: st.ImportResult) -> str:
    """What a labels import did, for the page."""
    text = f"{result.applied} labels applied, {result.unchanged} unchanged, {result.skipped} empty."
    if result.rejected:
        shown = result.rejected[:MAX_REPORT_ROWS]
        text += "\n\n" + "\n".join(f"- line {n}: {without_paths(why)}" for n, why in shown)
        if len(result.rejected) > len(shown):
            text += f"\n\n… and {len(result.rejected) - len(shown):,} more lines rejected."
    return text
