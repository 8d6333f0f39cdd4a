"""Where the database lives and how to talk to it: engines, sessions, transactions.

The embedded default is one SQLite file in the data folder, so a user's work survives a reload or a
restart without any server. ``SERE_DATABASE_URL`` (or the ``url`` argument) switches to any
SQLAlchemy URL, e.g. ``postgresql+psycopg://user@host/sere`` for a shared lab server.

SQLite is tuned for a web app with a few concurrent handlers and one training worker:

* WAL journal: readers never block the writer and a killed process leaves no torn write.
* ``busy_timeout``: a writer waits for the lock instead of failing with "database is locked".
* ``foreign_keys=ON``: SQLite ignores ``ON DELETE CASCADE`` without it.
* Every transaction starts with ``BEGIN IMMEDIATE`` (taking the write lock up front). The sqlite3
  driver's default only begins on the first INSERT/UPDATE, so a transaction that read first and
  wrote later could fail instantly with ``SQLITE_BUSY`` when another writer committed in between,
  and DDL (migrations) would run outside any transaction. Transactions here are a few
  milliseconds long, so serializing them costs nothing a user can notice.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import StorageError

#: Environment variable naming the data folder (database file, audio, models).
DATA_DIR_ENV = "SERE_DATA_DIR"
#: Environment variable holding a SQLAlchemy database URL that replaces the embedded SQLite file.
DATABASE_URL_ENV = "SERE_DATABASE_URL"
#: File name of the embedded database inside the data folder.
SQLITE_FILENAME = "sere.db"
#: How long a SQLite writer waits for another writer before giving up, in seconds.
SQLITE_BUSY_TIMEOUT_S = 30.0


def default_data_dir() -> Path:
    """``$SERE_DATA_DIR``, else the per-user data folder of the platform."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("sere-studio"))


def _normalize_url(url: str) -> str:
    # "postgresql://" would pick psycopg2, which is not a dependency; "postgres://" is the
    # Heroku-style spelling SQLAlchemy does not accept at all.
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


@dataclass(frozen=True)
class StorageConfig:
    """Where data lives: ``data_dir`` holds files (audio, models) and, by default, the database."""

    data_dir: Path
    database_url: str

    @classmethod
    def from_env(cls, data_dir: str | Path | None = None, database_url: str | None = None) -> StorageConfig:
        """Arguments first, then ``SERE_DATA_DIR`` / ``SERE_DATABASE_URL``, then the defaults."""
        folder = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
        url = database_url or os.environ.get(DATABASE_URL_ENV) or f"sqlite:///{folder / SQLITE_FILENAME}"
        return cls(data_dir=folder, database_url=_normalize_url(url))

    @property
    def is_sqlite(self) -> bool:
        return make_url(self.database_url).get_backend_name() == "sqlite"


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # pragma: no cover - exercised via engine
        # Hand transaction control to SQLAlchemy (see the "begin" hook below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            # FULL: a committed label survives a power cut too, not only a process crash.
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:  # pragma: no cover - exercised via engine
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def open_database(url: str | None = None, *, data_dir: str | Path | None = None, migrate: bool = True) -> Engine:
    """Open (and by default create or upgrade) the database and return its engine.

    ``url`` beats ``SERE_DATABASE_URL``, which beats the SQLite file ``<data dir>/sere.db``.
    With ``migrate`` the schema is created or brought up to date (:func:`init_schema`), which is
    safe to run on every start.
    """
    config = StorageConfig.from_env(data_dir=data_dir, database_url=url)
    try:
        parsed = make_url(config.database_url)
    except ArgumentError:
        raise StorageError(
            f"{DATABASE_URL_ENV} / url is not a database URL (expected e.g. sqlite:///path/sere.db "
            "or postgresql+psycopg://user@host/dbname)."
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
        _configure_sqlite(engine)
    else:
        try:
            engine = create_engine(parsed, pool_pre_ping=True)
        except Exception as exc:  # missing driver, malformed URL
            shown = parsed.render_as_string(hide_password=True)
            raise StorageError(f"Cannot open the database {shown}: {exc}") from exc
    if migrate:
        from .schema import init_schema

        try:
            init_schema(engine)
        except DBAPIError as exc:  # server down, wrong password, unwritable file
            engine.dispose()
            shown = parsed.render_as_string(hide_password=True)
            raise StorageError(f"Cannot open the database {shown}: {exc.orig}") from exc
        except BaseException:
            engine.dispose()  # the caller never sees this engine: close its connections now
            raise
    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for ``engine``. Objects stay readable after commit (handlers return them to the UI)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session] | Engine) -> Iterator[Session]:
    """One unit of work: commit when the block succeeds, roll back when it raises.

    This is the one place that commits; the data functions only add and flush, so whatever a
    handler does inside one block is all-or-nothing.
    """
    if isinstance(factory, Engine):
        factory = session_factory(factory)
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
