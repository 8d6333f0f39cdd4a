"""Labels: the current emotion of each clip plus an append-only history that makes undo possible.

Every change writes the new current label (``labels``) and one history row (``label_events``) in
the caller's transaction, so both land or neither does. The clip row is locked first
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite transactions are serialized anyway), so when two
people label one clip at the same moment, the second waits for the first: the last write wins
the current label, and the history keeps both, the second with the first as its previous emotion.

Undo belongs to a labeler (the events' ``author``): :func:`undo_last` walks back through *my*
changes in a project, newest first, like an editor, and is itself recorded, so history never loses
a step. It never reverts another person's change: when someone changed the clip after me, my
change is marked undone and their label stays.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session, aliased

from ..errors import EmotionError, NotFoundError
from .models import Clip, ClipRole, Label, LabelAction, LabelEvent, Project
from .projects import parse_role


def _lock_clip(session: Session, clip_id: int) -> tuple[Clip, Project]:
    clip = session.scalars(
        select(Clip).where(Clip.id == clip_id).with_for_update().execution_options(populate_existing=True)
    ).one_or_none()
    if clip is None:
        raise NotFoundError(f"Clip {clip_id} does not exist (was its project deleted?).")
    project = session.get(Project, clip.project_id, populate_existing=True)
    return clip, project


def _current(session: Session, clip_id: int) -> Label | None:
    return session.scalars(
        select(Label).where(Label.clip_id == clip_id).execution_options(populate_existing=True)
    ).one_or_none()


def _check_emotion(project: Project, emotion: str) -> str:
    if not isinstance(emotion, str) or emotion.strip() not in project.emotions:
        raise EmotionError(
            f"{emotion!r} is not an emotion of project {project.name!r}; choose one of {', '.join(project.emotions)}."
        )
    return emotion.strip()


def _write(
    session: Session,
    clip_id: int,
    current: Label | None,
    emotion: str | None,
    action: LabelAction,
    author: str | None,
    session_id: str | None,
    reverts: LabelEvent | None = None,
) -> LabelEvent:
    previous = current.emotion if current is not None else None
    if emotion is None:
        if current is not None:
            session.delete(current)
    elif current is None:
        session.add(Label(clip_id=clip_id, emotion=emotion, author=author))
    else:
        current.emotion = emotion
        current.author = author
    event = LabelEvent(
        clip_id=clip_id,
        action=action,
        emotion=emotion,
        previous_emotion=previous,
        reverts_event_id=reverts.id if reverts is not None else None,
        author=author,
        session_id=session_id,
    )
    session.add(event)
    session.flush()
    return event


def set_label(
    session: Session,
    clip_id: int,
    emotion: str | None,
    author: str | None = None,
    session_id: str | None = None,
) -> LabelEvent:
    """Label a clip (``emotion`` None removes its label); returns the history row written.

    Raises :class:`EmotionError` when ``emotion`` is not one of the project's emotions.
    """
    clip, project = _lock_clip(session, clip_id)
    if emotion is not None:
        emotion = _check_emotion(project, emotion)
    action = LabelAction.SET if emotion is not None else LabelAction.REMOVE
    return _write(session, clip.id, _current(session, clip.id), emotion, action, author, session_id)


def remove_label(
    session: Session, clip_id: int, author: str | None = None, session_id: str | None = None
) -> LabelEvent | None:
    """Remove the clip's label (a "skip"); None, and nothing recorded, if it had none."""
    clip, _ = _lock_clip(session, clip_id)
    current = _current(session, clip.id)
    if current is None:
        return None
    return _write(session, clip.id, current, None, LabelAction.REMOVE, author, session_id)


@dataclass(frozen=True)
class Undone:
    """What :func:`undo_last` did: the clip it went back to and the label that clip has now.
    ``kept`` is True when another labeler had changed the clip since: their label stayed."""

    clip_id: int
    emotion: str | None
    kept: bool


def undo_last(
    session: Session, project_id: int, author: str, session_id: str | None = None
) -> Undone | None:
    """Revert ``author``'s newest change in the project that is not undone yet; None when there
    is none. Raises :class:`EmotionError` if the emotion to restore was removed from the project."""
    undo = aliased(LabelEvent)
    target = session.scalars(
        select(LabelEvent)
        .join(Clip, Clip.id == LabelEvent.clip_id)
        .where(Clip.project_id == project_id, LabelEvent.author == author,
               LabelEvent.action != LabelAction.UNDO,
               ~exists(select(undo.id).where(undo.reverts_event_id == LabelEvent.id)))
        .order_by(LabelEvent.id.desc())
        .limit(1)
    ).first()
    if target is None:
        return None
    clip, project = _lock_clip(session, target.clip_id)
    current = _current(session, clip.id)
    others = session.scalar(select(exists().where(  # another labeler's change since (an undo that kept
        LabelEvent.clip_id == clip.id, LabelEvent.id > target.id,  # the label as it was changed nothing)
        (LabelEvent.author != author) | LabelEvent.author.is_(None),
        ~LabelEvent.emotion.is_not_distinct_from(LabelEvent.previous_emotion))))
    if others:  # someone labeled it after me: mark mine undone, keep theirs
        now = current.emotion if current is not None else None
        session.add(LabelEvent(clip_id=clip.id, action=LabelAction.UNDO, emotion=now, previous_emotion=now,
                               reverts_event_id=target.id, author=author, session_id=session_id))
        session.flush()
        return Undone(clip.id, now, kept=True)
    restore = target.previous_emotion
    if restore is not None and restore not in project.emotions:
        raise EmotionError(
            f"Cannot undo: it would restore {restore!r}, which is no longer an emotion of project {project.name!r}."
        )
    _write(session, clip.id, current, restore, LabelAction.UNDO, author, session_id, target)
    return Undone(clip.id, restore, kept=False)


def get_label(session: Session, clip_id: int) -> str | None:
    return session.scalar(select(Label.emotion).where(Label.clip_id == clip_id))


def label_history(session: Session, clip_id: int) -> list[LabelEvent]:
    """All changes of one clip, oldest first."""
    return list(session.scalars(select(LabelEvent).where(LabelEvent.clip_id == clip_id).order_by(LabelEvent.id)))


def labels_for_project(
    session: Session, project_id: int, role: ClipRole | str | None = None
) -> dict[int, str]:
    """``{clip_id: emotion}`` for every labeled clip of the project, in clip order."""
    query = (
        select(Label.clip_id, Label.emotion)
        .join(Clip, Clip.id == Label.clip_id)
        .where(Clip.project_id == project_id)
    )
    if role is not None:
        query = query.where(Clip.role == parse_role(role))
    return dict(session.execute(query.order_by(Label.clip_id)).all())


def label_counts(session: Session, project_id: int, role: ClipRole | str | None = None) -> dict[str, int]:
    """Labeled clips per emotion, in the project's emotion order, zeros included."""
    project = session.get(Project, project_id)
    if project is None:
        raise NotFoundError(f"Project {project_id} does not exist (was it deleted?).")
    query = (
        select(Label.emotion, func.count())
        .join(Clip, Clip.id == Label.clip_id)
        .where(Clip.project_id == project_id)
        .group_by(Label.emotion)
    )
    if role is not None:
        query = query.where(Clip.role == parse_role(role))
    found = dict(session.execute(query).all())
    return {emotion: int(found.get(emotion, 0)) for emotion in project.emotions}


def unlabeled_clip_ids(session: Session, project_id: int, role: ClipRole | str = ClipRole.SOURCE) -> list[int]:
    """The project's clips of ``role`` without a label, by id."""
    query = (select(Clip.id).outerjoin(Label, Label.clip_id == Clip.id)
             .where(Clip.project_id == project_id, Clip.role == parse_role(role), Label.id.is_(None))
             .order_by(Clip.id))
    return list(session.scalars(query))
