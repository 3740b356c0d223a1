"""Storage URLs (spec 02 §4): every scheme opens, two handles on one URL see the same studies, bad URLs are
one-line ConfigErrors naming the URL, passwords never print, and two processes can add trials at once."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import InMemoryStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileOpenLock, JournalFileSymlinkLock
from optuna.trial import TrialState

from dicelab.errors import ConfigError, DicelabError
from dicelab.study import storage as storage_mod
from dicelab.study.storage import default_storage_url, open_storage, storage_kind, storage_label

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _add_trials(storage, name: str, values) -> None:
    study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True)
    for value in values:
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": value},
                distributions={"x": optuna.distributions.FloatDistribution(-10, 10)},
                value=value * value,
            )
        )


def _assert_shared(url: str, **kwargs) -> None:
    """A study and its trials written through one handle are read back through a second, fresh one."""
    _add_trials(open_storage(url, **kwargs), "shared", [1.5, -2.0])
    second = open_storage(url, **kwargs)
    summaries = optuna.get_all_study_summaries(second)
    assert [s.study_name for s in summaries] == ["shared"]
    study = optuna.load_study(study_name="shared", storage=second)
    assert [t.params["x"] for t in study.trials] == [1.5, -2.0]
    assert study.best_value == pytest.approx(2.25)
    # and writes through the second handle reach the first
    _add_trials(second, "shared", [0.5])
    assert len(optuna.load_study(study_name="shared", storage=open_storage(url, **kwargs)).trials) == 3


@pytest.mark.parametrize("lock, lock_cls", [("symlink", JournalFileSymlinkLock), ("open", JournalFileOpenLock)])
def test_journal_opens_with_either_lock_and_creates_parent_dirs(tmp_path, lock, lock_cls):
    path = tmp_path / "deep" / "er" / "study.journal"
    url = f"journal:{path}"
    storage = open_storage(url, journal_lock=lock)
    assert isinstance(storage, JournalStorage)
    assert isinstance(storage._backend._lock, lock_cls)
    assert path.is_file()
    _assert_shared(url, journal_lock=lock)
    assert path.stat().st_size > 0
    assert not Path(str(path) + ".lock").exists()  # released after every write


def test_journal_relative_path_and_default_url(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = default_storage_url("quick")
    assert url == "journal:runs/quick/study.journal"
    assert default_storage_url("quick", runs_dir=tmp_path / "r") == f"journal:{tmp_path}/r/quick/study.journal"
    _assert_shared(url)
    assert (tmp_path / "runs" / "quick" / "study.journal").is_file()
    # file-URL style absolute path
    _add_trials(open_storage(f"journal://{tmp_path}/abs.journal"), "a", [0.0])
    assert (tmp_path / "abs.journal").is_file()


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\\b"])
def test_default_storage_url_rejects_path_like_names(name):
    with pytest.raises(ConfigError, match="study.name"):
        default_storage_url(name)


def test_sqlite_opens_creates_parent_dir_and_waits_for_locks(tmp_path):
    path = tmp_path / "sub" / "study.db"
    url = f"sqlite:///{path}"
    storage = open_storage(url)
    assert isinstance(storage, RDBStorage)
    assert path.parent.is_dir()
    assert storage.engine_kwargs["connect_args"]["timeout"] == storage_mod.SQLITE_TIMEOUT_S
    assert storage.heartbeat_interval is None  # the runner keeps its own heartbeat
    _assert_shared(url)
    assert path.is_file()
    # a timeout in the URL wins over the default
    assert "connect_args" not in open_storage(f"{url}?timeout=5").engine_kwargs


def test_memory_storages(tmp_path):
    assert isinstance(open_storage("memory:"), InMemoryStorage)
    assert open_storage("memory:") is not open_storage("memory:")  # anonymous: always fresh
    _assert_shared("memory:test-shared")  # named: one storage per name in this process
    assert open_storage("memory:test-shared") is not open_storage("memory:other")
    assert storage_kind("memory:") == "memory"


def test_postgres_opens_and_is_shared(fresh_postgres_url):
    storage = open_storage(fresh_postgres_url)
    assert isinstance(storage, RDBStorage)
    assert storage.engine.dialect.driver == "psycopg"
    assert storage.engine_kwargs["pool_pre_ping"] is True
    _assert_shared(fresh_postgres_url)


def test_plain_postgresql_url_uses_an_installed_driver(postgres_server):
    url = postgres_server.create_database()
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    storage = open_storage(plain)
    expected = "psycopg2" if importlib.util.find_spec("psycopg2") else "psycopg"
    assert storage.engine.dialect.driver == expected
    _assert_shared(plain)


@pytest.mark.parametrize(
    "url, why",
    [
        ("", "unsupported scheme"),
        ("runs/x.journal", "unsupported scheme"),
        ("http://example.org/db", "unsupported scheme"),
        ("redis://localhost:6379", "unsupported scheme"),
        ("journal:", "file path"),
        ("journal:runs/", "file path"),
        ("grpc://localhost", "grpc://HOST:PORT"),
        ("grpc://localhost:99999", "grpc://HOST:PORT"),
        ("grpc://localhost:13000/extra/path", "grpc://HOST:PORT"),
        ("postgresql+asyncpg://u@localhost/db", "unsupported postgresql driver"),
        ("postgresql+psycopg://u@localhost", "names no database"),
        ("sqlite+aiosqlite:///x.db", "unsupported SQLite driver"),
        ("postgresql+psycopg://u@localhost:notaport/db", "not a database URL"),
    ],
)
def test_bad_urls_are_one_line_config_errors_naming_the_url(url, why):
    with pytest.raises(ConfigError) as info:
        open_storage(url)
    message = str(info.value)
    assert "\n" not in message
    assert f"'{url}'" in message
    assert why in message
    assert "journal:PATH" in message and "sqlite:///PATH" in message and "grpc://HOST:PORT" in message


def test_bad_journal_lock_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="journal_lock: 'flock'"):
        open_storage(f"journal:{tmp_path}/j", journal_lock="flock")


def test_missing_driver_says_what_to_install(monkeypatch):
    missing = {"psycopg", "psycopg2", "pymysql", "grpc"}
    monkeypatch.setattr(storage_mod, "_has_module", lambda name: name not in missing)
    with pytest.raises(ConfigError, match=r"needs the psycopg driver: pip install 'dicelab\[postgres\]'"):
        open_storage("postgresql+psycopg://u:pw@localhost/db")
    with pytest.raises(ConfigError, match=r"dicelab\[postgres\]"):
        open_storage("postgresql://u@localhost/db")
    with pytest.raises(ConfigError, match="pip install pymysql"):
        open_storage("mysql+pymysql://u@localhost/db")
    with pytest.raises(ConfigError, match="pip install grpcio protobuf"):
        open_storage("grpc://localhost:13000")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_is_a_one_line_error_without_the_password():
    url = f"postgresql+psycopg://someone:s3cr3t@127.0.0.1:{_free_port()}/db"
    start = time.perf_counter()
    with pytest.raises(DicelabError) as info:
        open_storage(url)
    assert not isinstance(info.value, ConfigError)  # environment, not usage: exit 1
    message = str(info.value)
    assert "s3cr3t" not in message and "someone:***@127.0.0.1" in message
    assert "\n" not in message and message.startswith("cannot open storage")
    assert time.perf_counter() - start < 5  # connection refused is not retried


def test_unwritable_journal_location_is_a_dicelab_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(DicelabError, match="cannot open storage 'journal:.*file/x.journal'"):
        open_storage(f"journal:{tmp_path}/file/x.journal")


@pytest.mark.parametrize(
    "url, label",
    [
        ("postgresql+psycopg://alice:hunter2@db.example:5432/optuna", "postgresql+psycopg://alice:***@db.example:5432/optuna"),
        ("mysql+pymysql://bob:p%40ss@h/db", "mysql+pymysql://bob:***@h/db"),
        ("postgresql://carol:a:b@c@h/db?sslmode=require", "postgresql://carol:***@h/db?sslmode=require"),
        ("postgresql+psycopg://dave@h/db?password=zzz&sslmode=disable", "postgresql+psycopg://dave@h/db?password=***&sslmode=disable"),
        ("postgresql+psycopg://erin@h:5432/db", "postgresql+psycopg://erin@h:5432/db"),
        ("journal:runs/x/study.journal", "journal:runs/x/study.journal"),
        ("sqlite:///runs/x.db", "sqlite:///runs/x.db"),
        ("grpc://localhost:13000", "grpc://localhost:13000"),
    ],
)
def test_storage_label_hides_passwords(url, label):
    assert storage_label(url) == label


def test_bad_url_error_hides_the_password():
    with pytest.raises(ConfigError) as info:
        open_storage("postgresql+asyncpg://u:topsecret@h/db")
    assert "topsecret" not in str(info.value) and "u:***@h" in str(info.value)


@pytest.mark.parametrize(
    "url, kind",
    [("journal:a", "journal"), ("sqlite:///a.db", "sqlite"), ("postgresql+psycopg://u@h/d", "postgresql"),
     ("postgresql://u@h/d", "postgresql"), ("mysql+pymysql://u@h/d", "mysql"), ("grpc://h:1", "grpc"),
     ("memory:x", "memory")],
)
def test_storage_kind(url, kind):
    assert storage_kind(url) == kind


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_grpc_proxy_round_trip(tmp_path):
    pytest.importorskip("grpc", reason="grpcio is not installed (optional; pip install grpcio protobuf)")
    pytest.importorskip("google.protobuf", reason="protobuf is not installed (optional; pip install grpcio protobuf)")
    from optuna.storages import GrpcStorageProxy
    from optuna.storages._grpc.server import make_server  # run_grpc_proxy_server without the endless wait

    port = _free_port()
    server = make_server(open_storage(f"sqlite:///{tmp_path}/grpc.db"), "127.0.0.1", port)
    server.start()
    try:
        url = f"grpc://127.0.0.1:{port}"
        proxy = open_storage(url)
        assert isinstance(proxy, GrpcStorageProxy)
        proxy.wait_server_ready(timeout=10)
        _assert_shared(url)
    finally:
        server.stop(0)


# -- two processes on one storage ------------------------------------------------------------------------

_WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import optuna
    from dicelab.study.storage import open_storage

    url, worker, ready_dir = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="race", storage=open_storage(url),
                              sampler=optuna.samplers.RandomSampler(seed=worker))
    # start together: both processes are loaded before either adds a trial
    (ready_dir / f"ready{worker}").touch()
    deadline = time.monotonic() + 60
    while len(list(ready_dir.glob("ready*"))) < 2:
        if time.monotonic() > deadline:
            sys.exit("the other worker never became ready")
        time.sleep(0.01)

    def objective(trial):
        trial.set_user_attr("worker", worker)
        return trial.suggest_float("x", -1.0, 1.0) ** 2

    study.optimize(objective, n_trials=20)
    """
)


@pytest.fixture(params=["journal", "sqlite", "postgres"])
def race_url(request, tmp_path):
    if request.param == "journal":
        return f"journal:{tmp_path}/race.journal"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/race.db"
    return request.getfixturevalue("fresh_postgres_url")


def test_two_processes_add_trials_to_one_study(race_url, tmp_path):
    optuna.create_study(study_name="race", storage=open_storage(race_url))
    ready = tmp_path / "ready"
    ready.mkdir()
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    procs = [
        subprocess.Popen([sys.executable, str(script), race_url, str(w), str(ready)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for w in (0, 1)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs

    trials = optuna.load_study(study_name="race", storage=open_storage(race_url)).trials
    assert len(trials) == 40
    assert sorted(t.number for t in trials) == list(range(40))
    assert len({t._trial_id for t in trials}) == 40
    assert all(t.state == TrialState.COMPLETE for t in trials)
    by_worker = [sum(t.user_attrs["worker"] == w for t in trials) for w in (0, 1)]
    assert by_worker == [20, 20]
    # every tell is visible: the stored value is the objective of the stored param
    assert all(t.value == pytest.approx(t.params["x"] ** 2) for t in trials)
