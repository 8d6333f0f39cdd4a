"""Projects, recordings and clips.

Like every data function here, these take the caller's :class:`~sqlalchemy.orm.Session`, add and
flush, and never commit: the caller decides what one unit of work is (see ``session_scope``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import (
    ActiveRunError,
    EmotionError,
    EmotionInUseError,
    InvalidDataError,
    NotFoundError,
    ProjectExistsError,
)
from ..manifests.entry import MAX_CHARS
from ._util import clean_text, finite_float
from .blobs import BlobStore
from .models import ACTIVE_STATUSES, Clip, ClipRole, Label, Project, Recording, TrainingRun, Workspace

MIN_EMOTIONS = 2
MAX_EMOTIONS = 10
MAX_EMOTION_LEN = 64

_T = TypeVar("_T")


def insert_or_get(session: Session, obj: _T, lookup: Callable[[], _T | None]) -> _T:
    """Add ``obj`` in a savepoint; if a unique constraint says it exists already, return that one.

    The savepoint keeps the caller's transaction usable after the constraint error (PostgreSQL
    aborts the whole transaction otherwise), which makes "add if missing" safe under concurrency.
    """
    try:
        with session.begin_nested():
            session.add(obj)
    except IntegrityError:
        existing = lookup()
        if existing is None:
            raise
        return existing
    return obj


def validate_emotions(emotions: Sequence[str]) -> list[str]:
    """2-10 distinct, non-empty names (compared ignoring case), stripped, order kept."""
    if isinstance(emotions, str) or not isinstance(emotions, Sequence):
        raise EmotionError("emotions must be a list of names, e.g. ['angry', 'happy', 'neutral', 'sad'].")
    cleaned: list[str] = []
    seen: dict[str, str] = {}
    for position, name in enumerate(emotions, start=1):
        if not isinstance(name, str) or not name.strip():
            raise EmotionError(f"emotions: name {position} is empty; every emotion needs a name.")
        name = name.strip()
        if len(name) > MAX_EMOTION_LEN:
            raise EmotionError(f"emotions: {name[:20]!r}... is longer than {MAX_EMOTION_LEN} characters.")
        if "\x00" in name:
            raise EmotionError(f"emotions: {name!r} contains a NUL character.")
        key = name.casefold()
        if key in seen:
            raise EmotionError(f"emotions: {name!r} is listed twice (as {seen[key]!r} before); names must differ.")
        seen[key] = name
        cleaned.append(name)
    if not MIN_EMOTIONS <= len(cleaned) <= MAX_EMOTIONS:
        raise EmotionError(
            f"emotions: a project needs {MIN_EMOTIONS} to {MAX_EMOTIONS} emotions, got {len(cleaned)}."
        )
    return cleaned


def parse_role(role: ClipRole | str) -> ClipRole:
    try:
        return ClipRole(role)
    except ValueError:
        raise InvalidDataError(f"role must be 'source' or 'target', got {role!r}.") from None


# --------------------------------------------------------------------------------------------
# Projects


def _in_workspace(workspace: int | str):
    """The SQL condition "the project belongs to ``workspace``" (its id or its key)."""
    if isinstance(workspace, int):
        return Project.workspace_id == workspace
    return Project.workspace_id == select(Workspace.id).where(Workspace.key == workspace).scalar_subquery()


def find_project(session: Session, name: str, *, workspace: int | str) -> Project | None:
    """The project called ``name`` in ``workspace`` (a workspace id or key)."""
    return session.scalars(select(Project).where(_in_workspace(workspace), Project.name == name.strip())).one_or_none()


def find_template(session: Session, template: str, *, workspace: int | str) -> Project | None:
    """The workspace's project made from ``template`` (its demo), whatever it is called now."""
    return session.scalars(select(Project).where(_in_workspace(workspace), Project.template == template)
                           .order_by(Project.id).limit(1)).first()


def _name_taken(name: str) -> ProjectExistsError:
    return ProjectExistsError(f"A project named {name!r} already exists; choose another name.")


def create_project(
    session: Session,
    name: str,
    emotions: Sequence[str],
    encoder: str,
    source_language: str | None = None,
    *,
    workspace: int,
    template: str | None = None,
) -> Project:
    """A new project of ``workspace`` (its id). Raises :class:`ProjectExistsError` (the workspace
    has a project of that name) or :class:`EmotionError` on bad input."""
    name = clean_text(name, "project name", max_len=200)
    encoder = clean_text(encoder, "encoder", max_len=200)
    source_language = clean_text(source_language, "source language", max_len=32, required=False)
    cleaned = validate_emotions(emotions)
    if find_project(session, name, workspace=workspace) is not None:
        raise _name_taken(name)
    project = Project(workspace_id=workspace, name=name, emotions=cleaned, encoder=encoder,
                      source_language=source_language, template=template)
    try:
        with session.begin_nested():
            session.add(project)
    except IntegrityError:  # created concurrently by someone else
        raise _name_taken(name) from None
    return project


def rename_project(session: Session, project: Project, name: str) -> Project:
    """Give ``project`` a new name, unique in its workspace."""
    name = clean_text(name, "project name", max_len=200)
    if name == project.name:
        return project
    if find_project(session, name, workspace=project.workspace_id) is not None:
        raise _name_taken(name)
    try:
        with session.begin_nested():
            project.name = name
    except IntegrityError:
        raise _name_taken(name) from None
    return project


def get_project(session: Session, project_id: int) -> Project:
    project = session.get(Project, project_id)
    if project is None:
        raise NotFoundError(f"Project {project_id} does not exist (was it deleted?).")
    return project


def list_projects(session: Session, *, workspace: int | str) -> list[Project]:
    """The projects of ``workspace`` (its id or key), by name."""
    return list(session.scalars(select(Project).where(_in_workspace(workspace)).order_by(Project.name, Project.id)))


@dataclass(frozen=True)
class ProjectCounts:
    n_source: int
    n_target: int
    n_labeled: int


def project_counts(session: Session, project_id: int) -> ProjectCounts:
    """Clips per role and labeled clips of a project, in two queries."""
    counts = dict(session.execute(
        select(Clip.role, func.count()).where(Clip.project_id == project_id).group_by(Clip.role)).all())
    labeled = session.scalar(select(func.count()).select_from(Label).join(Clip, Clip.id == Label.clip_id)
                             .where(Clip.project_id == project_id)) or 0
    return ProjectCounts(int(counts.get(ClipRole.SOURCE, 0)), int(counts.get(ClipRole.TARGET, 0)), int(labeled))


def update_emotions(session: Session, project_id: int, emotions: Sequence[str]) -> Project:
    """Replace the project's emotion list (add, remove, reorder).

    An emotion can only be removed while no clip is labeled with it, otherwise
    :class:`EmotionInUseError` names the emotions and how many clips use them.
    """
    project = get_project(session, project_id)
    cleaned = validate_emotions(emotions)
    removed = set(project.emotions) - set(cleaned)
    if removed:
        in_use = session.execute(
            select(Label.emotion, func.count())
            .join(Clip, Clip.id == Label.clip_id)
            .where(Clip.project_id == project_id, Label.emotion.in_(sorted(removed)))
            .group_by(Label.emotion)
            .order_by(Label.emotion)
        ).all()
        if in_use:
            detail = ", ".join(f"{emotion!r} ({count} clips)" for emotion, count in in_use)
            raise EmotionInUseError(
                f"Cannot remove {detail} from project {project.name!r}: relabel or unlabel those clips first."
            )
    project.emotions = cleaned
    session.flush()
    return project


def delete_project(session: Session, project_id: int) -> None:
    """Delete a project with its clips, labels, runs and predictions (recordings are shared, kept)."""
    project = get_project(session, project_id)
    active = session.scalar(
        select(func.count()).where(TrainingRun.project_id == project_id, TrainingRun.status.in_(ACTIVE_STATUSES))
    )
    if active:
        raise ActiveRunError(f"Project {project.name!r} is training; cancel the training before deleting it.")
    session.delete(project)
    session.flush()


# --------------------------------------------------------------------------------------------
# Recordings (uploaded files) and clips (segments in a project)


def add_recording(
    session: Session, blobs: BlobStore, src: str | Path, original_name: str | None = None
) -> Recording:
    """Store an uploaded file once (by the sha256 of its bytes) and return its row.

    Uploading the same bytes again returns the existing recording; the file is written only once.
    """
    sha256, rel = blobs.put_file(src)
    name = clean_text(original_name if original_name is not None else Path(src).name, "file name", max_len=500)

    def lookup() -> Recording | None:
        return session.scalars(select(Recording).where(Recording.sha256 == sha256)).one_or_none()

    existing = lookup()
    if existing is not None:
        return existing
    size = blobs.path_for(rel).stat().st_size
    recording = Recording(sha256=sha256, original_name=name, stored_path=rel, size_bytes=size)
    return insert_or_get(session, recording, lookup)


def get_recording(session: Session, recording_id: int) -> Recording:
    recording = session.get(Recording, recording_id)
    if recording is None:
        raise NotFoundError(f"Recording {recording_id} does not exist.")
    return recording


def add_clip(
    session: Session,
    project_id: int,
    *,
    audio_id: str,
    original_name: str,
    duration_s: float,
    role: ClipRole | str,
    language: str | None = None,
    speaker: str | None = None,
    recording_id: int | None = None,
    start_s: float = 0.0,
    end_s: float | None = None,
) -> Clip:
    """Add a clip, or return the existing one with the same (project, audio_id, role).

    Adding the same audio twice (a re-upload, a double click, a retried job) is therefore
    harmless; the first clip's details are kept.
    """
    role = parse_role(role)
    audio_id = clean_text(audio_id, "audio_id", max_len=64)
    get_project(session, project_id)

    def lookup() -> Clip | None:
        return session.scalars(
            select(Clip).where(Clip.project_id == project_id, Clip.audio_id == audio_id, Clip.role == role)
        ).one_or_none()

    existing = lookup()
    if existing is not None:
        return existing
    original_name = clean_text(original_name, "original_name", max_len=500)
    duration = finite_float(duration_s, "duration_s", minimum=0.0)
    if duration <= 0:
        raise InvalidDataError(f"{original_name}: duration_s must be positive, got {duration}.")
    start = finite_float(start_s, "start_s", minimum=0.0)
    end = start + duration if end_s is None else finite_float(end_s, "end_s", minimum=start)
    if recording_id is not None:
        get_recording(session, recording_id)
    clip = Clip(
        project_id=project_id,
        audio_id=audio_id,
        recording_id=recording_id,
        original_name=original_name,
        language=clean_text(language, "language", max_len=MAX_CHARS["language"], required=False),
        speaker=clean_text(speaker, "speaker", max_len=MAX_CHARS["speaker"], required=False),
        duration_s=duration,
        start_s=start,
        end_s=end,
        role=role,
    )
    return insert_or_get(session, clip, lookup)


def get_clip(session: Session, clip_id: int) -> Clip:
    clip = session.get(Clip, clip_id)
    if clip is None:
        raise NotFoundError(f"Clip {clip_id} does not exist (was its project deleted?).")
    return clip


def clips_for_project(session: Session, project_id: int, role: ClipRole | str | None = None) -> list[Clip]:
    """The project's clips in the order they were added, optionally only one role."""
    query = select(Clip).where(Clip.project_id == project_id)
    if role is not None:
        query = query.where(Clip.role == parse_role(role))
    return list(session.scalars(query.order_by(Clip.id)))


@dataclass(frozen=True)
class ClipRecord:
    """What the app's pipeline needs of a clip, read in one query (no ORM objects cross threads)."""

    clip_id: int
    audio_id: str
    name: str
    role: str
    language: str | None
    speaker: str | None
    stored_path: str | None
    start_s: float
    end_s: float


def clip_records(session: Session, project_id: int, clip_ids: Sequence[int] | None = None) -> list[ClipRecord]:
    """The project's clips (or those of ``clip_ids`` among them) with their recording's stored path."""
    query = (
        select(Clip, Recording.stored_path)
        .outerjoin(Recording, Recording.id == Clip.recording_id)
        .where(Clip.project_id == project_id)
        .order_by(Clip.id)
    )
    if clip_ids is not None:
        query = query.where(Clip.id.in_([int(c) for c in clip_ids]))
    return [
        ClipRecord(c.id, c.audio_id, c.original_name, c.role.value, c.language, c.speaker, path,
                   float(c.start_s), float(c.end_s))
        for c, path in session.execute(query).all()
    ]


def names_speakers(session: Session, project_id: int) -> bool:
    """Whether any clip of the project says who speaks in it."""
    return session.scalar(select(Clip.id).where(Clip.project_id == project_id, Clip.speaker.is_not(None))
                          .limit(1)) is not None


def audio_ids(session: Session, project_id: int, role: ClipRole | str) -> set[str]:
    """The audio ids of the project's clips of ``role`` (what an upload would add twice)."""
    return set(session.scalars(select(Clip.audio_id).where(Clip.project_id == project_id,
                                                           Clip.role == parse_role(role))))
