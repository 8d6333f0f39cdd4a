"""The app's business logic as plain functions: ``ctx`` (an :class:`AppContext`) in, data out.

Every function is one short unit of work on the database (``ctx.session()``); long work (features,
training) is handed to ``ctx.jobs``. Nothing here imports Gradio: ``app.py`` wires these functions
to the page, and the tests call them directly. User mistakes raise ``SereError`` subclasses whose
message says what to do; the page shows them as they are.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sere_core.app.context import AppContext
from sere_core.app.pipeline import ClipRecord, clip_records, demo_reference, embed_clips
from sere_core.atomic import atomic_write, atomic_write_bytes
from sere_core.errors import (
    ActiveRunError,
    ConfigError,
    InvalidDataError,
    ManifestError,
    NotFoundError,
    SereError,
    TrainingDataError,
)

log = logging.getLogger(__name__)

#: Name of the project "Load demo" builds (and re-opens when it exists).
DEMO_PROJECT_NAME = "Demo: German → English"
DEFAULT_EMOTIONS = ("neutral", "happy", "sad", "angry")
#: Labels per emotion the method is designed for (few-shot).
SHOTS = 5
ARCHIVE_EXTENSIONS = (".zip",)
#: Files in one upload (the web server's own limit per request is the same).
MAX_UPLOAD_FILES = 1000
#: Rejected files listed one by one in an import report; the rest are counted by reason.
MAX_REPORT_ROWS = 50

Progress = Callable[[int, int, str], Any]


def _noop(done: int, total: int, desc: str) -> None:
    return None


# --------------------------------------------------------------------------------------------
# Views handed to the page


@dataclass(frozen=True)
class ProjectSummary:
    id: int
    name: str
    emotions: list[str]
    encoder: str
    n_source: int
    n_target: int
    n_labeled: int


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

    def merge(self, other: ImportReport) -> ImportReport:
        self.files += other.files
        self.added += other.added
        self.duplicates += other.duplicates
        self.labeled += other.labeled
        self.split_files += other.split_files
        self.clip_ids += other.clip_ids
        self.failures += other.failures
        return self

    def markdown(self) -> str:
        parts = [f"**{self.added} clip{'s' if self.added != 1 else ''} added** from {self.files} "
                 f"file{'s' if self.files != 1 else ''}"]
        if self.split_files:
            parts.append(f"{self.split_files} long recording{'s' if self.split_files != 1 else ''} split at pauses")
        if self.duplicates:
            parts.append(f"{self.duplicates} already in the project (skipped)")
        if self.labeled:
            parts.append(f"{self.labeled} labels taken from the manifest")
        text = "; ".join(parts) + "."
        if self.failures:
            shown = self.failures[:MAX_REPORT_ROWS]
            rows = "\n".join(f"| {_md(f.file)} | {_md(f.reason)} | {_md(f.message)} |" for f in shown)
            text += (f"\n\n**{len(self.failures)} file{'s' if len(self.failures) != 1 else ''} rejected:**\n\n"
                     "| file | reason | details |\n| --- | --- | --- |\n" + rows)
            rest = Counter(f.reason for f in self.failures[MAX_REPORT_ROWS:])
            if rest:
                counts = ", ".join(f"{n:,} {reason}" for reason, n in rest.most_common())
                text += f"\n\n… and {rest.total():,} more ({counts})."
        return text


def _md(text: str) -> str:
    return without_paths(str(text)).replace("|", "\\|").replace("\n", " ")


#: An absolute path of two or more parts (``/tmp/sere-upload-x/a.wav``), not a relative one
#: (``happy/a.wav``), a ratio (``1/2``) or the path of a URL.
_SERVER_PATH = re.compile(r"(?<![\w.~/:-])/(?:[^\s/'\"`()<>|,;:]+/)+[^\s/'\"`()<>|,;:]*")


def without_paths(text: str) -> str:
    """``text`` with each absolute path cut to its file name: messages go to web visitors, who
    need the name of their file, not the server's folders (temporary, data or upload)."""
    return _SERVER_PATH.sub(lambda m: Path(m.group(0)).name or "…", text)


@dataclass(frozen=True)
class PredictionView:
    emotion: str
    confidence: float
    probabilities: dict[str, float]
    highlights: list[tuple[float, float]]


@dataclass(frozen=True)
class ClipView:
    """One clip, ready to listen to and look at."""

    clip_id: int
    name: str
    role: str
    language: str | None
    speaker: str | None
    duration_s: float
    label: str | None
    samples: np.ndarray
    sample_rate: int
    prediction: PredictionView | None
    reference: str | None


@dataclass(frozen=True)
class TrainingStatus:
    run_id: int
    status: str
    step: int
    total_steps: int | None
    progress: float
    losses: list[dict[str, float]]
    error: str | None
    phase: str | None
    metrics: dict[str, Any]
    members: int = 1  # models of the ensemble, trained one after another within the steps

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")

    def history(self) -> pd.DataFrame:
        """Loss history as a long table ``step, term, value`` (for the training curve)."""
        rows = [(int(entry["step"]), str(k), float(v)) for entry in self.losses
                for k, v in entry.items() if k != "step"]
        return pd.DataFrame(rows, columns=["step", "term", "value"])


@dataclass(frozen=True)
class FieldData:
    """Everything the resonance field plot needs (see ``sere_core.viz.resonance_field_figure``)."""

    run_id: int
    emotions: list[str]
    points: pd.DataFrame
    prototypes: pd.DataFrame
    snapshot_frames: pd.DataFrame
    prototype_frames: pd.DataFrame
    members: int = 1  # a snapshot's step is each model's step; the ensemble's models side by side


# --------------------------------------------------------------------------------------------
# Projects


def parse_emotions(text: str | Sequence[str]) -> list[str]:
    """Emotion names from text separated by commas, semicolons or new lines (order kept).

    >>> parse_emotions("neutral, happy;sad\\nangry ")
    ['neutral', 'happy', 'sad', 'angry']
    """
    if not isinstance(text, str):
        return [str(t).strip() for t in text if str(t).strip()]
    return [p.strip() for p in re.split(r"[,;\n]", text) if p.strip()]


def _summary(session: Any, project: Any) -> ProjectSummary:
    from sqlalchemy import func, select

    from sere_core.storage import Clip, ClipRole, Label

    counts = dict(session.execute(
        select(Clip.role, func.count()).where(Clip.project_id == project.id).group_by(Clip.role)).all())
    labeled = session.scalar(select(func.count()).select_from(Label).join(Clip, Clip.id == Label.clip_id)
                             .where(Clip.project_id == project.id)) or 0
    return ProjectSummary(project.id, project.name, list(project.emotions), project.encoder,
                          int(counts.get(ClipRole.SOURCE, 0)), int(counts.get(ClipRole.TARGET, 0)), int(labeled))


def list_projects(ctx: AppContext) -> list[ProjectSummary]:
    from sere_core import storage as st

    with ctx.session() as s:
        return [_summary(s, p) for p in st.list_projects(s)]


def get_summary(ctx: AppContext, project_id: int) -> ProjectSummary:
    from sere_core import storage as st

    with ctx.session() as s:
        return _summary(s, st.get_project(s, int(project_id)))


def create_project(ctx: AppContext, name: str, emotions: str | Sequence[str] = DEFAULT_EMOTIONS, *,
                   encoder: str | None = None, source_language: str | None = None) -> ProjectSummary:
    """A new, empty project. Emotions can still be edited until training starts."""
    from sere_core import storage as st

    if not str(name or "").strip():
        raise InvalidDataError("Give the project a name, for example 'Yoruba interviews'.")
    with ctx.session() as s:
        project = st.create_project(s, str(name), parse_emotions(emotions), encoder or ctx.settings.encoder,
                                    source_language=source_language or None)
        return _summary(s, project)


def set_emotions(ctx: AppContext, project_id: int, emotions: str | Sequence[str]) -> ProjectSummary:
    """Change the emotion list (not while training; removing an emotion in use is refused)."""
    from sere_core import storage as st

    with ctx.session() as s:
        if st.active_run(s, int(project_id)) is not None:
            raise ActiveRunError("The project is training; change the emotions after the training ends.")
        project = st.update_emotions(s, int(project_id), parse_emotions(emotions))
        return _summary(s, project)


def _read_demo_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise NotFoundError(f"The demo set is missing ({path}); it ships in the repository's data/demo folder.")
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def load_demo(ctx: AppContext, *, name: str = DEMO_PROJECT_NAME, progress: Progress = _noop,
              warm: bool = True) -> tuple[ProjectSummary, ImportReport]:
    """Build the demo project from ``data/demo`` (German source clips, English target clips).

    Opens the existing demo project if there is one, first finishing its import if an earlier build
    was interrupted (clips already there are skipped, labels kept). The clips come in unlabeled; the
    corpus's own labels are kept aside (``reference.json``) to show as hints and to report agreement.
    """
    from sere_core import storage as st

    demo = Path(ctx.settings.demo_dir)
    source_rows = _read_demo_csv(demo / "source.csv")
    target_rows = _read_demo_csv(demo / "target.csv")
    with ctx.session() as s:
        existing = st.find_project(s, name)
        if existing is not None:
            summary = _summary(s, existing)
            if summary.n_source >= len(source_rows) and summary.n_target >= len(target_rows):
                return summary, ImportReport()
            log.info("the demo project %d is incomplete: finishing its import", summary.id)
    truth = {r["path"]: r["emotion"] for r in _read_demo_csv(demo / "target_truth.csv")} \
        if (demo / "target_truth.csv").is_file() else {}
    if existing is None:
        summary = create_project(ctx, name, DEFAULT_EMOTIONS, source_language="de")
    report = ImportReport()
    items_src = [_Item(demo / r["path"], Path(r["path"]).name, None, r.get("language") or "de",
                       r.get("speaker") or None, reference=r.get("emotion") or None) for r in source_rows]
    items_tgt = [_Item(demo / r["path"], Path(r["path"]).name, None, r.get("language") or "en",
                       r.get("speaker") or None, reference=truth.get(r["path"])) for r in target_rows]
    total = len(items_src) + len(items_tgt)
    reference = demo_reference(ctx, summary.id)
    report.merge(_import_items(ctx, summary.id, items_src, "source", reference,
                               lambda d, t, m: progress(d, total, m)))
    report.merge(_import_items(ctx, summary.id, items_tgt, "target", reference,
                               lambda d, t, m: progress(len(items_src) + d, total, m)))
    atomic_write_bytes(ctx.project_dir(summary.id) / "reference.json",
                       json.dumps(reference, indent=1).encode("utf-8"))
    if warm:
        ctx.jobs.warm_features(summary.id)
    return get_summary(ctx, summary.id), report


# --------------------------------------------------------------------------------------------
# Importing audio


@dataclass(frozen=True)
class _Item:
    path: Path
    name: str
    emotion: str | None
    language: str | None
    speaker: str | None
    reference: str | None = None


def _import_items(ctx: AppContext, project_id: int, items: Sequence[_Item], role: str,
                  reference: dict[str, str] | None, progress: Progress) -> ImportReport:
    from sqlalchemy import select

    from sere_core import storage as st
    from sere_core.audio import load_audio
    from sere_core.errors import AudioError

    report = ImportReport()
    with ctx.session() as s:
        project = st.get_project(s, project_id)
        emotions = {e.casefold(): e for e in project.emotions}
        known = set(s.scalars(select(st.Clip.audio_id).where(st.Clip.project_id == project_id,
                                                             st.Clip.role == st.ClipRole(role))))
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
        if len(segments) > 1:
            report.split_files += 1
        try:
            _add_segments(ctx, project_id, item, segments, role, emotion, known, reference, report)
        except SereError as exc:  # a bad value in this row: the file is refused, the rest go on
            report.failures.append(FileFailure(item.name, "invalid", user_message(exc)))
    progress(len(items), len(items), "Imported")
    return report


def _add_segments(ctx: AppContext, project_id: int, item: _Item, segments: Sequence[Any], role: str,
                  emotion: str | None, known: set[str], reference: dict[str, str] | None,
                  report: ImportReport) -> None:
    """One file's clips, in one transaction: all of them or (on an error) none."""
    from sere_core import storage as st

    added: list[int] = []
    fresh: set[str] = set()
    with ctx.session() as s:
        recording = st.add_recording(s, ctx.blobs, item.path, original_name=item.name)
        for k, seg in enumerate(segments):
            if reference is not None and item.reference:
                reference[seg.audio_id] = item.reference
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
                st.set_label(s, clip.id, emotion)
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


def import_audio(ctx: AppContext, project_id: int, paths: Sequence[str | Path], role: str, *,
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
    get_summary(ctx, project_id)  # a clear error for a deleted project
    with tempfile.TemporaryDirectory(prefix="sere-upload-") as tmp:
        items, failures = _expand_uploads(paths, Path(tmp), (language or "").strip() or None,
                                          (speaker or "").strip() or None)
        report = _import_items(ctx, project_id, items, role, None, progress)
    report.failures = failures + report.failures
    report.files += len(failures)
    if warm and report.added:
        ctx.jobs.warm_features(project_id)
    return report


# --------------------------------------------------------------------------------------------
# Labeling


def label_counts(ctx: AppContext, project_id: int, role: str | None = "source") -> dict[str, int]:
    from sere_core import storage as st

    with ctx.session() as s:
        return st.label_counts(s, int(project_id), role)


def unlabeled_clip_ids(ctx: AppContext, project_id: int, role: str = "source") -> list[int]:
    from sqlalchemy import select

    from sere_core import storage as st

    with ctx.session() as s:
        query = (select(st.Clip.id).outerjoin(st.Label, st.Label.clip_id == st.Clip.id)
                 .where(st.Clip.project_id == int(project_id), st.Clip.role == st.ClipRole(role),
                        st.Label.id.is_(None)).order_by(st.Clip.id))
        return list(s.scalars(query))


def next_clip_to_label(ctx: AppContext, project_id: int, order: Sequence[int] | None = None,
                       skipped: Sequence[int] = ()) -> int | None:
    """The next unlabeled source clip: in suggestion ``order`` first, skipped clips last."""
    todo = unlabeled_clip_ids(ctx, project_id)
    if not todo:
        return None
    rank = {c: i for i, c in enumerate(order or [])}
    skip = {c: i for i, c in enumerate(skipped)}
    todo.sort(key=lambda c: (c in skip, skip.get(c, 0), rank.get(c, len(rank)), c))
    return todo[0]


def label_clip(ctx: AppContext, clip_id: int, emotion: str, session_id: str | None = None) -> None:
    from sere_core import storage as st

    with ctx.session() as s:
        st.set_label(s, int(clip_id), emotion, session_id=session_id)


def undo_label(ctx: AppContext, clip_id: int, session_id: str | None = None) -> str | None:
    """Undo the clip's latest label change; returns the label it has now (None: unlabeled)."""
    from sere_core import storage as st

    with ctx.session() as s:
        st.undo_label(s, int(clip_id), session_id=session_id)
        return st.get_label(s, int(clip_id))


def suggest_clips(ctx: AppContext, project_id: int, progress: Progress = _noop) -> list[int]:
    """Unlabeled source clips in the order worth labeling: typical and diverse first.

    Uses the clips' speech features (computed now if the background job has not finished).
    """
    from sere_core import storage as st
    from sere_core.app.suggest import diverse_order, pooled_embedding

    with ctx.session() as s:
        project = st.get_project(s, int(project_id))
        encoder, n_emotions = project.encoder, len(project.emotions)
        records = clip_records(s, int(project_id))
        labels = st.labels_for_project(s, int(project_id))
    records = [r for r in records if r.role == "source"]
    if not records:
        raise InvalidDataError("Upload some source-language clips first.")
    frames = embed_clips(ctx, int(project_id), encoder, records,
                         lambda d, t: progress(d, t, "Listening to the clips"))
    x = np.stack([pooled_embedding(frames[r.clip_id]) for r in records])
    labeled = [i for i, r in enumerate(records) if r.clip_id in labels]
    order = diverse_order(x, n_clusters=SHOTS * n_emotions, labeled=labeled)
    return [records[i].clip_id for i in order]


def apply_reference_labels(ctx: AppContext, project_id: int, per_emotion: int = SHOTS) -> int:
    """Demo shortcut: label ``per_emotion`` source clips per emotion with the corpus's labels."""
    from sere_core import storage as st

    reference = demo_reference(ctx, int(project_id))
    if not reference:
        raise InvalidDataError("This project has no corpus labels; only the demo project has them.")
    applied = 0
    with ctx.session() as s:
        project = st.get_project(s, int(project_id))
        counts = st.label_counts(s, project.id, "source")
        for rec in clip_records(s, project.id):
            emo = reference.get(rec.audio_id)
            if rec.role != "source" or emo not in counts or counts[emo] >= per_emotion:
                continue
            if st.get_label(s, rec.clip_id) is None:
                st.set_label(s, rec.clip_id, emo)
                counts[emo] += 1
                applied += 1
    return applied


def clip_view(ctx: AppContext, clip_id: int, run_id: int | None = None) -> ClipView:
    """A clip's audio, label, the corpus hint (demo) and its prediction in ``run_id`` (default:
    the project's latest finished training)."""
    from sqlalchemy import select

    from sere_core import storage as st

    with ctx.session() as s:
        clip = st.get_clip(s, int(clip_id))
        label = st.get_label(s, clip.id)
        rec = clip_records(s, clip.project_id, [clip.id])[0]
        if run_id is None:
            run_id = _latest_result_id(s, clip.project_id)
        pred = None
        if run_id is not None:
            row = s.scalars(select(st.Prediction).where(st.Prediction.run_id == run_id,
                                                        st.Prediction.clip_id == clip.id)).one_or_none()
            if row is not None:
                pred = PredictionView(row.emotion, float(row.confidence), dict(row.probabilities),
                                      [tuple(h) for h in row.highlights])
        project_id = clip.project_id
    audio = _clip_audio(ctx, rec)
    return ClipView(rec.clip_id, rec.name, rec.role, rec.language, rec.speaker, rec.end_s - rec.start_s,
                    label, audio[0], audio[1], pred, demo_reference(ctx, project_id).get(rec.audio_id))


def _clip_audio(ctx: AppContext, rec: ClipRecord) -> tuple[np.ndarray, int]:
    stored = ctx.segments.get(rec.audio_id)
    if stored is not None:
        return stored
    if rec.stored_path:  # the listening copy is gone: decode the recording again
        from sere_core.audio import load_audio

        for seg in load_audio(ctx.blobs.path_for(rec.stored_path)):
            if seg.audio_id == rec.audio_id:
                ctx.segments.put(seg.audio_id, seg.samples, seg.sample_rate)
                return np.array(seg.samples), seg.sample_rate
    raise NotFoundError(f"The audio of {rec.name} is missing from the data folder.")


# --------------------------------------------------------------------------------------------
# Training


def training_config(ctx: AppContext, project_id: int | None = None) -> dict[str, Any]:
    """The SERE settings a new run uses: ``recommended_config`` for the project's encoder, with
    per-speaker normalization when the project's clips name their speakers (it added about 3 UAR
    points on the benchmark), ``$SERE_TRAIN_STEPS`` applied, and snapshots spread so the replay has
    about ``settings.snapshots`` frames."""
    from sqlalchemy import select

    from sere_core import storage as st
    from sere_core.method import recommended_config

    encoder, speakers = ctx.settings.encoder, False
    if project_id is not None:
        with ctx.session() as s:
            encoder = st.get_project(s, int(project_id)).encoder
            speakers = s.scalar(select(st.Clip.id).where(st.Clip.project_id == int(project_id),
                                                         st.Clip.speaker.is_not(None)).limit(1)) is not None
    base = recommended_config(ctx.encoders.info(encoder), per_speaker_norm=speakers)
    steps = ctx.settings.train_steps or base.steps
    every = max(1, round(steps / max(1, ctx.settings.snapshots)))
    return replace(base, steps=steps, snapshot_every=every).to_dict()


def training_readiness(ctx: AppContext, project_id: int) -> tuple[bool, list[str]]:
    """Whether the project can train now, and what to tell the user (problems or advice)."""
    from sere_core import storage as st

    with ctx.session() as s:
        project = st.get_project(s, int(project_id))
        counts = st.label_counts(s, project.id)
        summary = _summary(s, project)
    notes: list[str] = []
    ok = True
    labeled = [e for e, n in counts.items() if n > 0]
    if len(labeled) < 2:
        ok = False
        notes.append("Label clips of at least two emotions (5 per emotion is best).")
    missing = [e for e, n in counts.items() if n == 0]
    if ok and missing:
        notes.append(f"No clip is labeled {', '.join(missing)}: the model will not predict "
                     f"{'it' if len(missing) == 1 else 'them'}.")
    few = [e for e, n in counts.items() if 0 < n < SHOTS]
    if ok and few:
        notes.append(f"Fewer than {SHOTS} labels for {', '.join(few)}; more labels give steadier results.")
    if summary.n_target == 0:
        notes.append("No target-language clips yet: SERE learns best with unlabeled target clips (step 3).")
    return ok, notes


def start_training(ctx: AppContext, project_id: int) -> int:
    """Queue a training run and start its worker; returns the run id.

    Raises :class:`TrainingDataError` when there are too few labels and :class:`ActiveRunError`
    when the project is already training.
    """
    from sere_core import storage as st

    ok, notes = training_readiness(ctx, project_id)
    if not ok:
        raise TrainingDataError(" ".join(notes))
    with ctx.session() as s:  # this process runs it: a restart fails it even if it never started
        run = st.create_run(s, int(project_id), {"sere": training_config(ctx, project_id)}, worker_pid=os.getpid())
        run_id = run.id
    ctx.jobs.start_training(int(project_id), run_id)
    return run_id


def _members(run: Any) -> int:
    """How many models the run's SERE ensemble trains (1 for runs stored without it)."""
    return max(1, int(((run.config or {}).get("sere") or {}).get("ensemble") or 1))


def _status(ctx: AppContext, run: Any) -> TrainingStatus:
    return TrainingStatus(run.id, run.status.value, int(run.step or 0), run.total_steps,
                          float(run.progress or 0.0), list(run.losses or []), run.error,
                          ctx.jobs.phase(run.id) if ctx.jobs else None, dict(run.metrics or {}),
                          _members(run))


def training_status(ctx: AppContext, project_id: int) -> TrainingStatus | None:
    """The project's active run, else its latest run; None if it never trained."""
    from sere_core import storage as st

    with ctx.session() as s:
        run = st.active_run(s, int(project_id)) or st.latest_run(s, int(project_id))
        return _status(ctx, run) if run is not None else None


def cancel_training(ctx: AppContext, project_id: int) -> TrainingStatus | None:
    from sere_core import storage as st

    with ctx.session() as s:
        run = st.active_run(s, int(project_id))
        if run is None:
            return None
        return _status(ctx, st.cancel_run(s, run.id))


# --------------------------------------------------------------------------------------------
# Results


def _latest_result_id(session: Any, project_id: int) -> int | None:
    from sqlalchemy import select

    from sere_core import storage as st

    return session.scalar(
        select(st.TrainingRun.id)
        .where(st.TrainingRun.project_id == project_id, st.TrainingRun.status == st.RunStatus.SUCCEEDED)
        .order_by(st.TrainingRun.finished_at.desc(), st.TrainingRun.id.desc()).limit(1))


def latest_result(ctx: AppContext, project_id: int) -> int | None:
    """Id of the project's most recent successful training run."""
    with ctx.session() as s:
        return _latest_result_id(s, int(project_id))


def field_data(ctx: AppContext, project_id: int, run_id: int | None = None) -> FieldData | None:
    """Points, prototypes and replay frames of a finished run (None before the first training)."""
    from sere_core import storage as st

    with ctx.session() as s:
        run_id = run_id if run_id is not None else _latest_result_id(s, int(project_id))
        if run_id is None:
            return None
        run = st.get_run(s, run_id)
        project = st.get_project(s, run.project_id)
        snaps = st.snapshots_for_run(s, run_id)
        preds = st.predictions_for_run(s, run_id)
        labels = st.labels_for_project(s, project.id)
        records = {r.clip_id: r for r in clip_records(s, project.id)}
        classes = list(run.metrics.get("classes") or project.emotions)
        members = _members(run)
    if not snaps:
        return None
    final = snaps[-1]
    rows = []
    for cid, (x, y) in zip(final.clip_ids, final.coords):
        rec = records.get(cid)
        if rec is None:  # deleted since
            continue
        pred = preds.get(cid)
        label = labels.get(cid)
        rows.append({
            "clip_id": str(cid), "x": float(x), "y": float(y), "name": rec.name,
            "emotion": label or (pred.emotion if pred else None),
            "confidence": float(pred.confidence) if pred else np.nan,
            "role": rec.role, "labeled": label is not None,
        })
    points = pd.DataFrame(rows, columns=["clip_id", "x", "y", "name", "emotion", "confidence", "role", "labeled"])
    frames = pd.DataFrame(
        [(sn.step, str(c), float(x), float(y)) for sn in snaps for c, (x, y) in zip(sn.clip_ids, sn.coords)],
        columns=["step", "clip_id", "x", "y"])
    pframes = pd.DataFrame(
        [(sn.step, classes[i], float(x), float(y)) for sn in snaps if sn.prototypes is not None
         for i, (x, y) in enumerate(sn.prototypes) if i < len(classes)],
        columns=["step", "emotion", "x", "y"])
    protos = pframes[pframes["step"] == final.step][["emotion", "x", "y"]].reset_index(drop=True)
    emotions = list(project.emotions) + [c for c in classes if c not in project.emotions]
    return FieldData(run_id, emotions, points, protos, frames, pframes, members)


def _fmt_spans(spans: Iterable[Sequence[float]]) -> str:
    return ", ".join(f"{a:.2f}-{b:.2f} s" for a, b in spans)


#: Orders of the review table: (what to sort by, descending); see ``storage.prediction_page``.
SORTS = {
    "least confident first": ("confidence", False),
    "most confident first": ("confidence", True),
    "by emotion": ("emotion", False),
    "by file name": ("name", False),
}
#: Rows per page of the review table: the page never receives a whole large project.
PAGE_SIZE = 100
TABLE_COLUMNS = ["clip", "file", "predicted", "confidence", "your label", "highlights", "speaker"]


@dataclass(frozen=True)
class TablePage:
    """One page of the review table; ``page`` counts from 1, ``offset`` is the rows before it."""

    rows: pd.DataFrame
    page: int
    pages: int
    total: int
    offset: int = 0

    def caption(self) -> str:
        if not self.total:
            return "No clips to review yet."
        return (f"Clips {self.offset + 1}-{self.offset + len(self.rows)} of {self.total} · "
                f"page {self.page} of {self.pages}")


def predictions_page(ctx: AppContext, project_id: int, run_id: int | None = None, *,
                     role: str | None = "target", sort: str = "least confident first", page: int = 1,
                     page_size: int | None = PAGE_SIZE) -> TablePage:
    """One page of the clips of ``role``: prediction, confidence, highlights and the user's label.

    Sorted and cut by the database; ``page`` is clamped to the pages there are, ``page_size=None``
    gives every row on one page.
    """
    from sere_core import storage as st

    empty = TablePage(pd.DataFrame(columns=TABLE_COLUMNS), 1, 1, 0)
    order, descending = SORTS.get(sort, SORTS["least confident first"])
    size = None if page_size is None else max(1, int(page_size))
    with ctx.session() as s:
        run_id = run_id if run_id is not None else _latest_result_id(s, int(project_id))
        if run_id is None:
            return empty
        page = max(1, int(page)) if size else 1
        rows, total = st.prediction_page(s, run_id, role=role, order=order, descending=descending,
                                         offset=(page - 1) * (size or 0), limit=size)
        pages = max(1, -(-total // size)) if size else 1
        if page > pages:  # asked past the end (the table shrank): show the last page
            page = pages
            rows, total = st.prediction_page(s, run_id, role=role, order=order, descending=descending,
                                             offset=(page - 1) * (size or 0), limit=size)
    df = pd.DataFrame(
        [[r.clip_id, r.name, r.emotion or "", np.nan if r.confidence is None else round(r.confidence, 3),
          r.label or "", _fmt_spans(r.highlights), r.speaker or ""] for r in rows],
        columns=TABLE_COLUMNS)
    return TablePage(df, page, pages, total, (page - 1) * (size or 0))


def predictions_table(ctx: AppContext, project_id: int, run_id: int | None = None, *,
                      role: str | None = "target", sort: str = "least confident first") -> pd.DataFrame:
    """Every row of :func:`predictions_page` (for exports and small projects)."""
    return predictions_page(ctx, project_id, run_id, role=role, sort=sort, page_size=None).rows


def next_to_review(ctx: AppContext, project_id: int, sort: str = "least confident first",
                   current: int | None = None) -> int | None:
    """The first target clip without a label in the table's order, other than ``current``."""
    from sere_core import storage as st

    order, descending = SORTS.get(sort, SORTS["least confident first"])
    with ctx.session() as s:
        run_id = _latest_result_id(s, int(project_id))
        if run_id is None:
            return None
        rows, _ = st.prediction_page(s, run_id, role="target", order=order, descending=descending,
                                     limit=2, unlabeled_only=True)
    return next((r.clip_id for r in rows if r.clip_id != current), None)


def confirm_prediction(ctx: AppContext, clip_id: int, emotion: str | None = None,
                       session_id: str | None = None) -> str:
    """Store the prediction (or the user's correction ``emotion``) as the clip's label."""
    if emotion is None:
        view = clip_view(ctx, clip_id)
        if view.prediction is None:
            raise InvalidDataError(f"{view.name} has no prediction yet; train first or choose an emotion.")
        emotion = view.prediction.emotion
    label_clip(ctx, clip_id, emotion, session_id)
    return emotion


# --------------------------------------------------------------------------------------------
# Export and import


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40] or "project"


def _export_path(ctx: AppContext, project_id: int, name: str, suffix: str) -> Path:
    with ctx.session() as s:
        from sere_core import storage as st

        project_name = st.get_project(s, int(project_id)).name
    folder = ctx.export_dir() / f"project-{int(project_id)}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{_slug(project_name)}-{name}{suffix}"


PREDICTION_COLUMNS_HEAD = ("clip_id", "original_name", "role", "language", "speaker", "start_s", "end_s",
                           "predicted_emotion", "confidence")


def export_predictions(ctx: AppContext, project_id: int, run_id: int | None = None) -> Path:
    """A CSV of every clip's prediction (cells safe to open in a spreadsheet)."""
    from sere_core import storage as st

    with ctx.session() as s:
        run_id = run_id if run_id is not None else _latest_result_id(s, int(project_id))
        if run_id is None:
            raise InvalidDataError("There are no predictions yet: train the model first (step 4).")
        project = st.get_project(s, int(project_id))
        preds = st.predictions_for_run(s, run_id)
        labels = st.labels_for_project(s, project.id)
        records = clip_records(s, project.id)
        emotions = list(project.emotions)
    columns = [*PREDICTION_COLUMNS_HEAD, *[f"p_{e}" for e in emotions], "highlights", "your_label", "audio_id"]
    rows = []
    for rec in records:
        p = preds.get(rec.clip_id)
        if p is None:
            continue
        row = {"clip_id": rec.clip_id, "original_name": rec.name, "role": rec.role, "language": rec.language,
               "speaker": rec.speaker, "start_s": round(rec.start_s, 3), "end_s": round(rec.end_s, 3),
               "predicted_emotion": p.emotion, "confidence": round(float(p.confidence), 4),
               "highlights": ";".join(f"{a:.2f}-{b:.2f}" for a, b in p.highlights),
               "your_label": labels.get(rec.clip_id), "audio_id": rec.audio_id}
        row.update({f"p_{e}": round(float(p.probabilities.get(e, 0.0)), 4) for e in emotions})
        rows.append(row)
    path = _export_path(ctx, project_id, f"run{run_id}-predictions", ".csv")
    st.write_csv(path, rows, columns)
    return path


def export_labels(ctx: AppContext, project_id: int) -> Path:
    """A CSV of every label, which :func:`import_labels_file` (or the CLI) reads back."""
    from sere_core import storage as st

    with ctx.session() as s:
        rows = st.labels_to_rows(s, int(project_id))
    if not rows:
        raise InvalidDataError("No clip is labeled yet; there is nothing to export.")
    path = _export_path(ctx, project_id, "labels", ".csv")
    st.write_csv(path, rows, st.LABEL_COLUMNS)
    return path


def import_labels_file(ctx: AppContext, project_id: int, path: str | Path) -> Any:
    """Apply a labels CSV (as exported) to the project; returns storage's ``ImportResult``."""
    from sere_core import storage as st

    with ctx.session() as s:
        return st.import_labels(s, int(project_id), path)


def export_model(ctx: AppContext, project_id: int, run_id: int | None = None) -> Path:
    """A zip of the trained model (safetensors + JSON) with a small project description."""
    from sere_core import storage as st

    with ctx.session() as s:
        run_id = run_id if run_id is not None else _latest_result_id(s, int(project_id))
        if run_id is None:
            raise InvalidDataError("There is no trained model yet: train first (step 4).")
        run = st.get_run(s, run_id)
        project = st.get_project(s, run.project_id)
        if not run.model_path:
            raise NotFoundError(f"Training run {run_id} saved no model.")
        model_dir = ctx.blobs.path_for(run.model_path)
        about = {"project": project.name, "emotions": project.emotions, "encoder": project.encoder,
                 "run_id": run.id, "metrics": run.metrics, "config": run.config,
                 "load_with": "sere_core.method.SERE.load(<unzipped folder>)"}
    if not model_dir.is_dir():
        raise NotFoundError(f"The model files of run {run_id} are missing from the data folder.")
    path = _export_path(ctx, project_id, f"run{run_id}-model", ".zip")

    def write(handle: Any) -> None:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(model_dir.iterdir()):
                if f.is_file():
                    zf.write(f, arcname=f"model/{f.name}")
            zf.writestr("model/sere-project.json", json.dumps(about, indent=2, default=str))

    return atomic_write(path, write)


def user_message(exc: BaseException) -> str:
    """The text to show for an error: a ``SereError`` says it itself; anything else is a bug."""
    if isinstance(exc, SereError):
        return without_paths(str(exc))
    return f"Something went wrong ({type(exc).__name__}). The details are in the server log."
