"""A throwaway PostgreSQL server for the distributed-storage tests (spec 07: a real server on loopback).

``PostgresServer.start()`` runs ``initdb`` in a fresh temporary directory, starts ``postgres`` on a free
loopback port (unix sockets in the same directory, fsync off: the data is thrown away), and ``stop()``
shuts it down and deletes the directory. PostgreSQL refuses to run as root, so under root the cluster
belongs to the ``postgres`` system user (made by the Debian package), or ``nobody``.

The fixtures (re-exported by tests/study/conftest.py):
- ``postgres_server``: one server per test session;
- ``postgres_url``: ``postgresql+psycopg://dicelab@127.0.0.1:PORT/dicelab_test`` on that server;
- ``fresh_postgres_url``: a new, empty database on that server for each test.

Where the server truly cannot start (no PostgreSQL binaries, psycopg not importable, initdb or the
server failing), the tests are skipped with the reason; ``.ci/run`` installs Debian's ``postgresql``
when ``initdb`` is missing.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

SUPERUSER = "dicelab"
DATABASE = "dicelab_test"
_START_TIMEOUT_S = 60


def find_pg_bin() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: $DICELAB_PG_BIN, PATH, or the newest Debian one."""
    candidates = []
    if os.environ.get("DICELAB_PG_BIN"):
        candidates.append(Path(os.environ["DICELAB_PG_BIN"]))
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)

    def version(path: str) -> float:
        try:
            return float(Path(path).parent.name)
        except ValueError:
            return 0.0

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)]
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerUnavailable(RuntimeError):
    """The server cannot start here; the message says why."""


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory, trust authentication on 127.0.0.1 only."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.root: Path | None = None
        self.port: int | None = None
        self._user: pwd.struct_passwd | None = None
        self._running = False
        self._db_counter = itertools.count()

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> PostgresServer:
        import psycopg  # noqa: F401  (checked by the fixture; fail early here too)

        if os.geteuid() == 0:
            self._user = _unprivileged_user()
        self.root = Path(tempfile.mkdtemp(prefix="dicelab-pg-"))
        if self._user is not None:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        data = self.root / "data"
        self._run(
            [self.bin_dir / "initdb", "-D", data, "-U", SUPERUSER, "--auth=trust", "--no-sync",
             "--encoding=UTF8", "--locale=C", "--no-instructions"],
            what="initdb",
        )
        # A free port can be taken between the probe and the server's bind: try a few.
        last_error = ""
        for _ in range(3):
            self.port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=60"
            )
            try:
                self._run(
                    [self.bin_dir / "pg_ctl", "-D", data, "-l", self.root / "server.log", "-w",
                     "-t", str(_START_TIMEOUT_S), "-o", options, "start"],
                    what="pg_ctl start",
                )
            except ServerUnavailable as exc:
                last_error = str(exc)
                continue
            self._running = True
            atexit.register(self.stop)
            self.create_database(DATABASE)
            return self
        raise ServerUnavailable(last_error)

    def stop(self) -> None:
        if self.root is None:
            return
        if self._running:
            self._running = False
            try:
                self._run([self.bin_dir / "pg_ctl", "-D", self.root / "data", "-m", "fast", "-w", "stop"],
                          what="pg_ctl stop")
            except ServerUnavailable:
                pass
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    # -- use ---------------------------------------------------------------------------------------
    def url(self, database: str = DATABASE) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """Create a database (default: a new unique name) and return its SQLAlchemy URL."""
        import psycopg

        name = name or f"dicelab_t{next(self._db_counter)}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    # -- helpers -----------------------------------------------------------------------------------
    def _run(self, argv: list, *, what: str) -> None:
        kwargs: dict = {}
        if self._user is not None:
            kwargs = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
        if self._user is not None:
            env["HOME"] = str(self.root)
        proc = subprocess.run([str(a) for a in argv], cwd=self.root, env=env, capture_output=True,
                              text=True, timeout=_START_TIMEOUT_S + 30, **kwargs)
        if proc.returncode != 0:
            log = self.root / "server.log" if self.root else None
            tail = log.read_text(errors="replace")[-800:] if log and log.exists() else ""
            detail = (proc.stderr or proc.stdout).strip()[-800:]
            raise ServerUnavailable(f"{what} failed (exit {proc.returncode}): {detail} {tail}".strip())


def _unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServerUnavailable("running as root and neither a 'postgres' nor a 'nobody' user exists")


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server for the whole session, or a skip that prints why there is none."""
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"PostgreSQL tests need psycopg (pip install 'dicelab[postgres]'): {exc}")
    bin_dir = find_pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; apt-get install postgresql")
    server = PostgresServer(bin_dir)
    try:
        server.start()
    except (ServerUnavailable, OSError, subprocess.TimeoutExpired) as exc:
        server.stop()
        pytest.skip(f"PostgreSQL server could not start: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server) -> str:
    """``postgresql+psycopg://dicelab@127.0.0.1:PORT/dicelab_test``, shared by the session's tests."""
    return postgres_server.url()


@pytest.fixture
def fresh_postgres_url(postgres_server) -> str:
    """A new empty database on the session's server, for one test."""
    return postgres_server.create_database()
