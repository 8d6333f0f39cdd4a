"""The tables, as typed SQLAlchemy 2 models.

Times are stored as UTC and always come back timezone-aware (SQLite has no time zone type, so
:class:`UTCDateTime` converts on the way in and out). JSON columns are replaced as a whole by the
data functions, never mutated in place (plain JSON columns do not track in-place changes).
Enums are stored as short strings with a CHECK constraint rather than a native PostgreSQL enum,
so adding a value later is a plain migration on both databases.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend. Naive inputs are taken to be UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
        # SQLite stores text without an offset; keep it naive there, always in UTC.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


#: JSON everywhere, JSONB on PostgreSQL (validated, compact).
JSONType = JSON().with_variant(JSONB(), "postgresql")


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class ClipRole(str, enum.Enum):
    """Source clips carry the labels the model learns from; target clips are the new language."""

    SOURCE = "source"
    TARGET = "target"


class WorkspaceKind(str, enum.Enum):
    """Who owns a workspace: everyone on a private server, a signed-in user, or one browser."""

    SHARED = "shared"
    USER = "user"
    ANONYMOUS = "anonymous"


class RunStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_active(self) -> bool:
        return self in ACTIVE_STATUSES


ACTIVE_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)
#: The SQL condition shared by the partial unique index and migration 2.
ACTIVE_RUN_WHERE = "status IN ('queued', 'running')"
ACTIVE_RUN_INDEX = "uq_training_runs_one_active_per_project"


class Base(DeclarativeBase):
    pass


class SchemaVersion(Base):
    """One row per applied migration; the schema version is the highest ``version``."""

    __tablename__ = "schema_version"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    description: Mapped[str] = mapped_column(String(200))
    applied_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Workspace(Base):
    """What owns projects: one per signed-in user or anonymous browser on a public server, or the
    one shared workspace of a private one. ``key`` names it (``local``, ``user:<name>``,
    ``anon:<digest>``); nothing else identifies a visitor."""

    __tablename__ = "workspaces"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[WorkspaceKind] = mapped_column(_enum(WorkspaceKind, "workspace_kind"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: When its owner last opened the app; idle anonymous workspaces expire from it.
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    projects: Mapped[list[Project]] = relationship(
        back_populates="workspace", cascade="all, delete-orphan", passive_deletes=True
    )


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("workspace_id", "name", name="uq_projects_workspace_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    #: Ordered emotion names; the order is the order of the model's probability columns.
    emotions: Mapped[list[str]] = mapped_column(JSONType)
    encoder: Mapped[str] = mapped_column(String(200))
    source_language: Mapped[str | None] = mapped_column(String(32))
    #: What the project was made from: ``demo`` for a workspace's copy of the shipped demo.
    template: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    workspace: Mapped[Workspace] = relationship(back_populates="projects")
    clips: Mapped[list[Clip]] = relationship(
        back_populates="project", cascade="all, delete-orphan", passive_deletes=True
    )
    runs: Mapped[list[TrainingRun]] = relationship(
        back_populates="project", cascade="all, delete-orphan", passive_deletes=True
    )

    def __repr__(self) -> str:
        return f"Project(id={self.id!r}, name={self.name!r}, emotions={self.emotions!r})"


class Recording(Base):
    """An uploaded file, stored once under the data folder and named by the sha256 of its bytes."""

    __tablename__ = "recordings"

    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    original_name: Mapped[str] = mapped_column(String(500))
    #: Relative to the data folder (``audio/ab/abcd....wav``); resolve with ``BlobStore.path_for``.
    stored_path: Mapped[str] = mapped_column(String(500))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Clip(Base):
    """A speech segment in a project: ``audio_id`` is the hash of its 16 kHz samples."""

    __tablename__ = "clips"
    __table_args__ = (
        UniqueConstraint("project_id", "audio_id", "role", name="uq_clips_project_audio_role"),
        Index("ix_clips_project_role", "project_id", "role"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    audio_id: Mapped[str] = mapped_column(String(64))
    recording_id: Mapped[int | None] = mapped_column(
        ForeignKey("recordings.id", ondelete="SET NULL"), index=True
    )
    original_name: Mapped[str] = mapped_column(String(500))
    language: Mapped[str | None] = mapped_column(String(32))
    speaker: Mapped[str | None] = mapped_column(String(200))
    duration_s: Mapped[float] = mapped_column(Float)
    #: Where the segment sits in its recording, in seconds.
    start_s: Mapped[float] = mapped_column(Float, default=0.0)
    end_s: Mapped[float] = mapped_column(Float)
    role: Mapped[ClipRole] = mapped_column(_enum(ClipRole, "clip_role"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    project: Mapped[Project] = relationship(back_populates="clips")
    recording: Mapped[Recording | None] = relationship()
    label: Mapped[Label | None] = relationship(
        back_populates="clip", cascade="all, delete-orphan", passive_deletes=True, uselist=False
    )

    def __repr__(self) -> str:
        return f"Clip(id={self.id!r}, name={self.original_name!r}, role={self.role.value!r})"


class Label(Base):
    """The current label of a clip (at most one). Its history lives in :class:`LabelEvent`."""

    __tablename__ = "labels"

    id: Mapped[int] = mapped_column(primary_key=True)
    clip_id: Mapped[int] = mapped_column(ForeignKey("clips.id", ondelete="CASCADE"), unique=True)
    emotion: Mapped[str] = mapped_column(String(64))
    author: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    clip: Mapped[Clip] = relationship(back_populates="label")


class LabelAction(str, enum.Enum):
    SET = "set"
    REMOVE = "remove"
    UNDO = "undo"


class LabelEvent(Base):
    """Every change to a clip's label, append-only; ``emotion`` None means the label was removed.

    ``author`` is the labeler (a signed-in user or a browser), whose own changes Undo walks back.
    """

    __tablename__ = "label_events"
    __table_args__ = (
        Index("ix_label_events_clip", "clip_id", "id"),
        Index("ix_label_events_author", "author", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    clip_id: Mapped[int] = mapped_column(ForeignKey("clips.id", ondelete="CASCADE"))
    action: Mapped[LabelAction] = mapped_column(_enum(LabelAction, "label_action"))
    emotion: Mapped[str | None] = mapped_column(String(64))
    previous_emotion: Mapped[str | None] = mapped_column(String(64))
    #: For an undo: the event it reverted (each set/remove is undone at most once).
    reverts_event_id: Mapped[int | None] = mapped_column(ForeignKey("label_events.id", ondelete="SET NULL"))
    author: Mapped[str | None] = mapped_column(String(200))
    #: The UI session (browser tab) that made the change.
    session_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ClipLease(Base):
    """A clip shown to one labeler's screen (``holder``, a browser tab) until ``expires_at``, so that
    two people labeling one project are shown different clips. A lease only steers which clip is
    shown next; labels are never refused because of one."""

    __tablename__ = "clip_leases"

    clip_id: Mapped[int] = mapped_column(ForeignKey("clips.id", ondelete="CASCADE"), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    holder: Mapped[str] = mapped_column(String(200), index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TrainingRun(Base):
    __tablename__ = "training_runs"
    __table_args__ = (
        # One queued/running run per project, enforced by the database itself.
        Index(
            ACTIVE_RUN_INDEX,
            "project_id",
            unique=True,
            sqlite_where=text(ACTIVE_RUN_WHERE),
            postgresql_where=text(ACTIVE_RUN_WHERE),
        ),
        Index("ix_training_runs_project_created", "project_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    status: Mapped[RunStatus] = mapped_column(_enum(RunStatus, "run_status"), default=RunStatus.QUEUED)
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    #: ``[{"step": 10, "tric": 0.71, ...}, ...]`` one entry per progress update.
    losses: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    model_path: Mapped[str | None] = mapped_column(String(500))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    worker_pid: Mapped[int | None] = mapped_column(Integer)
    worker_host: Mapped[str | None] = mapped_column(String(255))
    #: The worker process's instance id (``runs.PROCESS_INSTANCE``): a pid alone is reused, and a
    #: restarted container's app has the pid the killed one had.
    worker_instance: Mapped[str | None] = mapped_column(String(64))

    project: Mapped[Project] = relationship(back_populates="runs")

    def __repr__(self) -> str:
        return f"TrainingRun(id={self.id!r}, project_id={self.project_id!r}, status={self.status.value!r})"


class Prediction(Base):
    __tablename__ = "predictions"
    __table_args__ = (UniqueConstraint("run_id", "clip_id", name="uq_predictions_run_clip"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("training_runs.id", ondelete="CASCADE"))
    clip_id: Mapped[int] = mapped_column(ForeignKey("clips.id", ondelete="CASCADE"), index=True)
    emotion: Mapped[str] = mapped_column(String(64))
    confidence: Mapped[float] = mapped_column(Float)
    probabilities: Mapped[dict[str, float]] = mapped_column(JSONType)
    #: ``[[start_s, end_s], ...]`` where the emotion is heard most.
    highlights: Mapped[list[list[float]]] = mapped_column(JSONType, default=list)
    #: The share of the ensemble's models that decide this emotion on their own (None: one model,
    #: or a run before schema version 5).
    agreement: Mapped[float | None] = mapped_column(Float, nullable=True)


class Snapshot(Base):
    """All 2-D points of one training snapshot in one row.

    The viewer always reads every snapshot of a run at once (to animate training), so one row per
    (run, snapshot) with the coordinates packed as little-endian float32 ``[N, 2]`` plus the clip
    order as a JSON list turns "load run 7" into one indexed range scan of ~50 rows, instead of
    ~50 x N row objects (50 snapshots of 2,000 clips would be 100,000 rows). Points are never
    queried individually, so nothing is lost by packing them.
    """

    __tablename__ = "snapshots"
    __table_args__ = (UniqueConstraint("run_id", "index", name="uq_snapshots_run_index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("training_runs.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    clip_ids: Mapped[list[int]] = mapped_column(JSONType)
    #: float32 little-endian, shape ``[len(clip_ids), 2]``.
    coords: Mapped[bytes] = mapped_column(LargeBinary)
    #: float32 little-endian, shape ``[n_emotions, 2]`` (emotion prototypes), optional.
    prototypes: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
