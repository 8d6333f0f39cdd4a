"""A throwaway PostgreSQL server for the storage tests.

Import the fixtures into a test module (``from pg_server import postgres_admin_url, ...``).

* ``SERE_TEST_POSTGRES_URL`` set (e.g. a CI service container, ``postgresql+psycopg://postgres@
  localhost:5432/postgres``): that server is used.
* Otherwise ``initdb``/``pg_ctl`` (from ``$PG_BIN``, ``/usr/lib/postgresql/*/bin`` or ``PATH``)
  start a private cluster for the test session in a temporary folder, listening only on a unix
  socket inside it (no TCP port, so parallel sessions never collide). As root the cluster runs
  as the ``postgres`` user, because PostgreSQL refuses to run as root.
* Neither possible: the PostgreSQL tests are skipped with the reason, except when ``CI=true``,
  where they fail (CI installs the ``postgresql`` package and must test it).

Every test gets its own fresh database (``CREATE DATABASE``), dropped afterwards.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

_SERVER: PostgresServer | None = None
_SERVER_ERROR: str | None = None


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _unavailable(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"PostgreSQL tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL tests skipped: {reason}")


def find_pg_bin() -> Path | None:
    candidates: list[Path] = []
    if os.environ.get("PG_BIN"):
        candidates.append(Path(os.environ["PG_BIN"]))
    def major(folder: str) -> int:
        name = Path(folder).parent.name
        return int(name) if name.isdigit() else 0

    candidates.extend(Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=major, reverse=True))
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(found).parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


class PostgresServer:
    """A private cluster in ``root``; ``admin_url`` connects as superuser to database ``postgres``."""

    port = 5432  # only names the socket file; nothing listens on TCP

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.run_as: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "running as root and there is no 'postgres' user to run the server as "
                    "(install the 'postgresql' package, or run the tests as a normal user)"
                ) from None
            self.run_as = "postgres"
        self.root = Path(tempfile.mkdtemp(prefix="sere-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        if self.run_as:
            shutil.chown(self.root, user=self.run_as)
        self.admin_url = f"postgresql+psycopg://postgres@/postgres?host={self.root}&port={self.port}"

    def _cmd(self, *args: str) -> list[str]:
        if self.run_as is None:
            return list(args)
        if shutil.which("runuser"):
            return ["runuser", "-u", self.run_as, "--", *args]
        import shlex

        return ["su", self.run_as, "-s", "/bin/sh", "-c", shlex.join(args)]

    def _run(self, *args: str, timeout: float = 60) -> None:
        proc = subprocess.run(self._cmd(*args), capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({proc.returncode}): {proc.stderr.strip()}\n{log}")

    def start(self) -> None:
        # Lets a later session clean up after this one if it is killed before its teardown.
        (self.root / "owner.pid").write_text(str(os.getpid()))
        self._run(
            str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--no-sync", "--no-instructions",
        )
        options = (
            f"-k {self.root} -c listen_addresses='' -p {self.port} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
        )
        self._run(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log),
            "-w", "-t", "60", "start",
        )

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _sweep_abandoned_clusters(bin_dir: Path) -> None:
    """Stop and delete clusters of earlier test sessions that were killed (their owner is gone)."""
    for owner in glob.glob(os.path.join(tempfile.gettempdir(), "sere-pg-*", "owner.pid")):
        root = Path(owner).parent
        try:
            pid = int(Path(owner).read_text().strip())
            os.kill(pid, 0)
            continue  # still running: another session's server
        except ProcessLookupError:
            pass
        except (ValueError, OSError):
            continue
        stale = PostgresServer.__new__(PostgresServer)
        stale.bin_dir, stale.root, stale.data, stale.log = bin_dir, root, root / "data", root / "server.log"
        stale.run_as = "postgres" if os.geteuid() == 0 else None
        try:
            stale.stop()
        except (RuntimeError, subprocess.TimeoutExpired, OSError):
            pass


def _server() -> PostgresServer:
    global _SERVER, _SERVER_ERROR
    if _SERVER is not None:
        return _SERVER
    if _SERVER_ERROR is not None:
        _unavailable(_SERVER_ERROR)
    bin_dir = find_pg_bin()
    if bin_dir is None:
        _SERVER_ERROR = (
            "initdb/pg_ctl not found (apt-get install -y postgresql; or set PG_BIN or SERE_TEST_POSTGRES_URL)"
        )
        _unavailable(_SERVER_ERROR)
    _sweep_abandoned_clusters(bin_dir)
    try:
        server = PostgresServer(bin_dir)
    except RuntimeError as exc:
        _SERVER_ERROR = str(exc)
        _unavailable(_SERVER_ERROR)
    try:
        server.start()
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
        server.stop()
        _SERVER_ERROR = f"the binaries in {bin_dir} are there but the server did not start: {exc}"
        pytest.fail(_SERVER_ERROR, pytrace=False)
    _SERVER = server
    atexit.register(_stop_at_exit, server)
    return server


def _stop_at_exit(server: PostgresServer) -> None:
    if server.root.exists():
        try:
            server.stop()
        except (RuntimeError, subprocess.TimeoutExpired, OSError):
            pass


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A superuser URL on a running server (started once per test session)."""
    external = os.environ.get("SERE_TEST_POSTGRES_URL")
    if external:
        yield external
        return
    server = _server()
    yield server.admin_url
    global _SERVER
    if _SERVER is server:
        _SERVER = None
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs twice: on a SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sere.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A URL to a new, empty database, dropped after the test."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"sere_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
