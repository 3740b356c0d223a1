"""Open an Optuna storage from one URL string.

Every study command takes ``--storage URL``; this module turns the URL into an
:class:`optuna.storages.BaseStorage`. Accepted schemes:

=====================================  =============================================================
``journal:PATH``                       append-only journal file (``JournalFileBackend``); the default,
                                       ``journal:runs/<study>/study.journal``. Works for any number of
                                       processes on one machine or a shared filesystem.
``sqlite:///PATH``                     SQLite file via ``RDBStorage`` (one writer at a time: fine for a
                                       few local workers, slow for many).
``postgresql+psycopg://U@H:P/DB``      PostgreSQL via ``RDBStorage`` (extra ``postgres``); plain
                                       ``postgresql://`` uses psycopg 3 when psycopg2 is absent.
``mysql+pymysql://U@H:P/DB``           MySQL via ``RDBStorage`` (needs ``pymysql``).
``grpc://HOST:PORT``                   ``GrpcStorageProxy`` to an ``optuna.storages.run_grpc_proxy_server``
                                       (needs ``grpcio`` and ``protobuf``).
``memory:`` / ``memory:NAME``          in-process memory (tests); ``memory:NAME`` returns the same
                                       storage for the same name within one process.
=====================================  =============================================================

Storages are opened without Optuna's RDB heartbeat: the study runner keeps its own ``heartbeat`` user
attribute, which works the same on every scheme (journal files have no RDB heartbeat at all).
"""

from __future__ import annotations

import importlib.util
import os
import re
import time
import warnings
from pathlib import Path
from typing import Literal

import optuna
from optuna.storages import BaseStorage, GrpcStorageProxy, InMemoryStorage, RDBStorage
from optuna.storages.journal import (
    JournalFileBackend,
    JournalFileOpenLock,
    JournalFileSymlinkLock,
    JournalStorage,
)

from dicelab.errors import ConfigError, DicelabError

__all__ = [
    "ACCEPTED_SCHEMES",
    "default_storage_url",
    "open_storage",
    "storage_kind",
    "storage_label",
]

ACCEPTED_SCHEMES = (
    "journal:PATH",
    "sqlite:///PATH",
    "postgresql+psycopg://USER@HOST:PORT/DB",
    "mysql+pymysql://USER@HOST:PORT/DB",
    "grpc://HOST:PORT",
    "memory:",
)

JournalLock = Literal["symlink", "open"]

# SQLite: a writer waits this long for another process's lock before "database is locked".
SQLITE_TIMEOUT_S = 60.0
# RDB: creating the tables of a fresh database can race with another process doing the same.
_RDB_OPEN_ATTEMPTS = 3

# SQLAlchemy driver name -> the module it imports, and the pip install hint when it is missing.
_RDB_DRIVERS = {
    "postgresql+psycopg": ("psycopg", "pip install 'dicelab[postgres]'"),
    "postgresql+psycopg2": ("psycopg2", "pip install 'dicelab[postgres]' and use postgresql+psycopg://"),
    "mysql+pymysql": ("pymysql", "pip install pymysql"),
}

_MEMORY: dict[str, InMemoryStorage] = {}


def default_storage_url(study_name: str, runs_dir: str | Path = "runs") -> str:
    """The default storage of a study: ``journal:<runs_dir>/<study_name>/study.journal``."""
    name = str(study_name)
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ConfigError(f"study.name: {name!r} is not a valid study name (no path separators, not empty)")
    return "journal:" + (Path(runs_dir) / name / "study.journal").as_posix()


def storage_label(url: str) -> str:
    """``url`` with any password replaced by ``***``, for printing and logs."""
    text = re.sub(r"(://[^/?#@:]*:)[^/?#]*@", r"\1***@", str(url))
    return re.sub(r"(?i)([?&]password=)[^&#]*", r"\1***", text)


def storage_kind(url: str) -> str:
    """The scheme family of ``url``: journal, sqlite, postgresql, mysql, grpc or memory.

    Raises :class:`ConfigError` for an unsupported URL. ``memory`` storages live in one process only,
    so a caller starting worker processes must refuse them.
    """
    text = str(url).strip()
    for prefix, kind in (("journal:", "journal"), ("memory:", "memory"), ("grpc://", "grpc")):
        if text.startswith(prefix):
            return kind
    if text == "memory":
        return "memory"
    scheme = text.split("://", 1)[0] if "://" in text else ""
    if scheme == "sqlite" or scheme.startswith("sqlite+"):
        return "sqlite"
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        return "postgresql"
    if scheme == "mysql" or scheme.startswith("mysql+"):
        return "mysql"
    raise _bad_url(url, "unsupported scheme")


def open_storage(url: str, *, journal_lock: JournalLock | None = None) -> BaseStorage:
    """Open (creating when needed) the storage that ``url`` names.

    ``journal_lock`` picks the journal file lock: ``symlink`` (default, any POSIX filesystem) or ``open``
    (``O_EXCL`` lock file, for network filesystems where symlinks are not atomic). A malformed URL or an
    unsupported scheme raises :class:`ConfigError` naming the URL and the accepted schemes; a missing
    database driver raises :class:`ConfigError` with the install command; a server or file that cannot be
    opened raises :class:`DicelabError` naming the URL (password hidden). ``journal_lock=None`` reads
    ``$DICELAB_JOURNAL_LOCK`` (set by ``--journal-lock``, so spawned workers inherit it), else ``symlink``.
    """
    if journal_lock is None:
        journal_lock = os.environ.get("DICELAB_JOURNAL_LOCK", "symlink")
    if journal_lock not in ("symlink", "open"):
        raise ConfigError(f"journal_lock: {journal_lock!r} is not one of 'symlink', 'open'")
    text = str(url).strip()
    kind = storage_kind(text)
    if kind == "journal":
        return _open_journal(text, journal_lock)
    if kind == "memory":
        return _open_memory(text)
    if kind == "grpc":
        return _open_grpc(text)
    return _open_rdb(text, kind)


def _bad_url(url: str, why: str) -> ConfigError:
    return ConfigError(
        f"storage URL {storage_label(url)!r}: {why}; accepted: " + ", ".join(ACCEPTED_SCHEMES)
    )


def _open_journal(url: str, journal_lock: JournalLock) -> BaseStorage:
    path_text = url[len("journal:") :]
    if path_text.startswith("///"):  # journal:///abs/path, file-URL style
        path_text = path_text[2:]
    if not path_text or path_text.endswith("/"):
        raise _bad_url(url, "journal needs a file path")
    path = Path(path_text).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_cls = JournalFileSymlinkLock if journal_lock == "symlink" else JournalFileOpenLock
        backend = JournalFileBackend(str(path), lock_obj=lock_cls(str(path)))
        return JournalStorage(backend)
    except (OSError, ValueError) as exc:
        raise DicelabError(f"cannot open storage {storage_label(url)!r}: {exc}") from exc


def _open_memory(url: str) -> BaseStorage:
    name = url.partition(":")[2]
    if not name:
        return InMemoryStorage()
    if name not in _MEMORY:
        _MEMORY[name] = InMemoryStorage()
    return _MEMORY[name]


def _open_grpc(url: str) -> BaseStorage:
    match = re.fullmatch(r"grpc://(\[[^\]]+\]|[^:/\[\]]+):(\d{1,5})/?", url)
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise _bad_url(url, "grpc needs grpc://HOST:PORT")
    if not (_has_module("grpc") and _has_module("google.protobuf")):
        raise ConfigError(f"storage URL {storage_label(url)!r} needs gRPC: pip install grpcio protobuf")
    host = match.group(1).strip("[]")
    with warnings.catch_warnings():
        # GrpcStorageProxy is marked experimental in Optuna; the warning says nothing actionable.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return GrpcStorageProxy(host=host, port=int(match.group(2)))


def _open_rdb(url: str, kind: str) -> BaseStorage:
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:
        raise _bad_url(url, "not a database URL") from exc
    engine_kwargs: dict = {}
    if kind == "sqlite":
        if parsed.drivername not in ("sqlite", "sqlite+pysqlite"):
            raise _bad_url(url, f"unsupported SQLite driver {parsed.drivername!r}")
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            try:
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except (OSError, ValueError) as exc:
                raise DicelabError(f"cannot open storage {storage_label(url)!r}: {exc}") from exc
        if "timeout" not in parsed.query:
            engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
    else:
        parsed = _with_driver(url, parsed, kind)
        module, hint = _RDB_DRIVERS[parsed.drivername]
        if not _has_module(module):
            raise ConfigError(f"storage URL {storage_label(url)!r} needs the {module} driver: {hint}")
        if not parsed.database:
            raise _bad_url(url, "the URL names no database")
        # Workers hold connections for hours; a server restart or idle timeout must not kill them.
        engine_kwargs["pool_pre_ping"] = True

    for attempt in range(_RDB_OPEN_ATTEMPTS):
        try:
            return RDBStorage(parsed.render_as_string(hide_password=False), engine_kwargs=engine_kwargs)
        except sqlalchemy.exc.ArgumentError as exc:
            raise _bad_url(url, str(exc).splitlines()[0]) from exc
        except sqlalchemy.exc.DBAPIError as exc:
            # Two processes creating the tables of a fresh database at once: one loses the race.
            if attempt + 1 < _RDB_OPEN_ATTEMPTS and not _is_connection_error(exc):
                time.sleep(0.2 * (attempt + 1))
                continue
            reason = str(getattr(exc, "orig", exc)).strip().splitlines()
            raise DicelabError(
                f"cannot open storage {storage_label(url)!r}: {reason[0] if reason else type(exc).__name__}"
            ) from exc
        except ImportError as exc:
            raise ConfigError(f"storage URL {storage_label(url)!r}: {exc}") from exc
    raise AssertionError("unreachable")


def _with_driver(url: str, parsed, kind: str):
    """Pin the DBAPI driver: plain ``postgresql://`` takes psycopg 3 unless psycopg2 is installed."""
    name = parsed.drivername
    if name in ("postgresql", "postgres"):
        has_pg2 = _has_module("psycopg2")
        name = "postgresql+psycopg2" if has_pg2 else "postgresql+psycopg"
    elif name == "mysql":
        name = "mysql+pymysql"
    if name not in _RDB_DRIVERS:
        raise _bad_url(url, f"unsupported {kind} driver {parsed.drivername!r}")
    return parsed.set(drivername=name)


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a missing parent package
        return False


def _is_connection_error(exc: Exception) -> bool:
    text = str(getattr(exc, "orig", exc)).lower()
    return any(
        word in text
        for word in ("connection refused", "could not connect", "connection failed", "password authentication",
                     "does not exist", "unable to open database", "no such host", "name or service not known")
    )
