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

A migration that rebuilds a table (``rebuilds_tables``) runs on SQLite with foreign keys off, as
SQLite's own procedure for changing a table requires (dropping the old table would otherwise
delete every row that refers to it), and checks them before it commits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, MetaData, func, inspect, select, text, update

from ..errors import SchemaVersionError
from .models import (
    ACTIVE_RUN_INDEX,
    ACTIVE_RUN_WHERE,
    Base,
    ClipLease,
    Project,
    RunStatus,
    SchemaVersion,
    TrainingRun,
    Workspace,
    WorkspaceKind,
    utcnow,
)

#: Arbitrary constant naming SERE Studio's migration lock on PostgreSQL.
_PG_LOCK_KEY = 0x5E8E_0001


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]
    rebuilds_tables: bool = False


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


#: The workspace that owns every project of a database made before workspaces existed.
SHARED_WORKSPACE = "local"
#: The demo project's name in releases before projects knew their template.
_OLD_DEMO_NAME = "Demo: German → English"


def _m4_workspaces(conn: Connection) -> None:
    Base.metadata.create_all(conn, tables=[Workspace.__table__, ClipLease.__table__], checkfirst=True)
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_label_events_author ON label_events (author, id)"))
    if "workspace_id" in {c["name"] for c in inspect(conn).get_columns("projects")}:
        return  # made by this release's create_all
    shared = conn.scalar(select(Workspace.id).where(Workspace.key == SHARED_WORKSPACE))
    if shared is None:
        now = utcnow()
        shared = conn.execute(Workspace.__table__.insert().values(
            key=SHARED_WORKSPACE, kind=WorkspaceKind.SHARED, created_at=now, last_seen_at=now)).inserted_primary_key[0]
    columns = "id, name, emotions, encoder, source_language, created_at, updated_at"
    template = "CASE WHEN name = :demo THEN 'demo' END"
    if conn.dialect.name == "sqlite":
        # A project's name was unique on its own, which SQLite can only drop by rebuilding the table.
        staging = MetaData()
        Workspace.__table__.to_metadata(staging)  # for the foreign key; it exists already
        Project.__table__.to_metadata(staging, name="projects_new").create(conn)
        conn.execute(text(f"INSERT INTO projects_new ({columns}, workspace_id, template) "
                          f"SELECT {columns}, :ws, {template} FROM projects"), {"ws": shared, "demo": _OLD_DEMO_NAME})
        conn.execute(text("DROP TABLE projects"))
        conn.execute(text("ALTER TABLE projects_new RENAME TO projects"))
        return
    unique = [u["name"] for u in inspect(conn).get_unique_constraints("projects") if u["column_names"] == ["name"]]
    for name in unique:
        conn.execute(text(f'ALTER TABLE projects DROP CONSTRAINT "{name}"'))
    conn.execute(text("ALTER TABLE projects ADD COLUMN workspace_id INTEGER REFERENCES workspaces (id) ON DELETE CASCADE"))
    conn.execute(text("ALTER TABLE projects ADD COLUMN template VARCHAR(32)"))
    conn.execute(text(f"UPDATE projects SET workspace_id = :ws, template = {template}"),
                 {"ws": shared, "demo": _OLD_DEMO_NAME})
    conn.execute(text("ALTER TABLE projects ALTER COLUMN workspace_id SET NOT NULL"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_projects_workspace_id ON projects (workspace_id)"))
    conn.execute(text("ALTER TABLE projects ADD CONSTRAINT uq_projects_workspace_name UNIQUE (workspace_id, name)"))


def _m5_prediction_agreement(conn: Connection) -> None:
    if "agreement" not in {c["name"] for c in inspect(conn).get_columns("predictions")}:
        conn.execute(text("ALTER TABLE predictions ADD COLUMN agreement FLOAT"))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _m1_initial_schema),
    Migration(2, "one queued/running training run per project", _m2_one_active_run_per_project),
    Migration(3, "a run belongs to a process instance, not to a pid", _m3_run_worker_instance),
    Migration(4, "workspaces own projects; per-labeler undo; clip leases", _m4_workspaces, rebuilds_tables=True),
    Migration(5, "a prediction keeps how many of the ensemble's models agree", _m5_prediction_agreement),
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
        with engine.connect() as conn:
            sqlite_rebuild = migration.rebuilds_tables and conn.dialect.name == "sqlite"
            if sqlite_rebuild:  # outside any transaction: SQLite ignores it inside one
                conn.connection.dbapi_connection.execute("PRAGMA foreign_keys = OFF")
            try:
                with conn.begin():
                    _apply(conn, migration, target, check_keys=sqlite_rebuild)
            finally:
                if sqlite_rebuild:
                    conn.connection.dbapi_connection.execute("PRAGMA foreign_keys = ON")
    return schema_version(engine)


def _apply(conn: Connection, migration: Migration, target: int, *, check_keys: bool) -> None:
    """Apply ``migration`` in the open transaction, unless the database already has it."""
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
        return
    try:
        migration.apply(conn)
        if check_keys and conn.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
            raise SchemaVersionError("a row would refer to a row that does not exist")
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
