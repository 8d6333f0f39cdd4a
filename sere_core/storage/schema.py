"""Create and upgrade the schema, without alembic.

The schema version is the highest row of ``schema_version``. :data:`MIGRATIONS` is an ordered
list; :func:`init_schema` applies each one above the stored version in its own transaction,
together with the row that records it, so a failed migration leaves the database exactly at the
previous version. Every migration is idempotent (``checkfirst`` / ``IF NOT EXISTS`` / data
updates that match nothing the second time):

* Migration 1 creates the current tables on a fresh database (``create_all`` skips tables that
  exist), so a new install is complete after it.
* Later migrations bring databases made by older releases up to date; on a fresh database they
  find nothing to do.

Two processes starting at once (app and worker) are serialized: SQLite by ``BEGIN IMMEDIATE``,
PostgreSQL by a transaction-scoped advisory lock; each re-reads the version after locking.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, func, inspect, select, text, update

from ..errors import SchemaVersionError
from .models import (
    ACTIVE_RUN_INDEX,
    ACTIVE_RUN_WHERE,
    Base,
    RunStatus,
    SchemaVersion,
    TrainingRun,
    utcnow,
)

#: Arbitrary constant naming SERE Studio's migration lock on PostgreSQL.
_PG_LOCK_KEY = 0x5E8E_0001


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


def _m1_initial_schema(conn: Connection) -> None:
    Base.metadata.create_all(conn, checkfirst=True)


def _m2_one_active_run_per_project(conn: Connection) -> None:
    # Releases before this index could leave two queued/running runs for one project; keep the
    # newest and fail the others so that the unique index can be built.
    rows = conn.execute(
        select(TrainingRun.id, TrainingRun.project_id)
        .where(text(ACTIVE_RUN_WHERE))
        .order_by(TrainingRun.project_id, TrainingRun.id.desc())
    ).all()
    seen: set[int] = set()
    superseded = []
    for run_id, project_id in rows:
        if project_id in seen:
            superseded.append(run_id)
        seen.add(project_id)
    if superseded:
        conn.execute(
            update(TrainingRun)
            .where(TrainingRun.id.in_(superseded))
            .values(
                status=RunStatus.FAILED,
                error="Superseded by a newer training run of the same project during an upgrade.",
                finished_at=utcnow(),
            )
        )
    conn.execute(
        text(
            f"CREATE UNIQUE INDEX IF NOT EXISTS {ACTIVE_RUN_INDEX} "
            f"ON training_runs (project_id) WHERE {ACTIVE_RUN_WHERE}"
        )
    )


def _m3_run_worker_instance(conn: Connection) -> None:
    if "worker_instance" not in {c["name"] for c in inspect(conn).get_columns("training_runs")}:
        conn.execute(text("ALTER TABLE training_runs ADD COLUMN worker_instance VARCHAR(64)"))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _m1_initial_schema),
    Migration(2, "one queued/running training run per project", _m2_one_active_run_per_project),
    Migration(3, "a run belongs to a process instance, not to a pid", _m3_run_worker_instance),
)

#: The version a database has after :func:`init_schema` with this release.
SCHEMA_VERSION = MIGRATIONS[-1].version


def schema_version(conn_or_engine: Connection | Engine) -> int:
    """The stored schema version; 0 for an empty database."""
    if isinstance(conn_or_engine, Engine):
        with conn_or_engine.connect() as conn:
            return schema_version(conn)
    if not inspect(conn_or_engine).has_table(SchemaVersion.__tablename__):
        return 0
    return conn_or_engine.execute(select(func.max(SchemaVersion.version))).scalar() or 0


def _check_sequence(migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise SchemaVersionError(f"Migrations must be numbered 1, 2, 3, ... without gaps; got {versions}.")


def init_schema(engine: Engine, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Create or upgrade the schema to the last of ``migrations``; return the resulting version.

    Raises :class:`SchemaVersionError` when the database is newer than this release (downgrades
    are not supported) or when a migration fails (the database stays at the version before it).
    """
    _check_sequence(migrations)
    target = migrations[-1].version if migrations else 0
    for migration in migrations:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            SchemaVersion.__table__.create(conn, checkfirst=True)
            current = schema_version(conn)
            if current > target:
                raise SchemaVersionError(
                    f"The database is at schema version {current}, newer than this SERE Studio "
                    f"(version {target}). Update SERE Studio, or point SERE_DATABASE_URL elsewhere."
                )
            if current >= migration.version:
                continue
            try:
                migration.apply(conn)
            except Exception as exc:
                raise SchemaVersionError(
                    f"Upgrading the database to schema version {migration.version} "
                    f"({migration.description}) failed: {exc}. It was left at version {current}."
                ) from exc
            conn.execute(
                SchemaVersion.__table__.insert().values(
                    version=migration.version, description=migration.description, applied_at=utcnow()
                )
            )
    return schema_version(engine)
