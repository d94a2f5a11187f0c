"""Idempotency stores: the contract every store meets (``StoreContract``, run here on SQLite and
in tests/integration/test_idempotency_postgres.py on PostgreSQL), then SQLite and URL specifics."""

from __future__ import annotations

import multiprocessing
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import pipeline.idempotency
from pipeline.errors import ConfigError, PipelineError
from pipeline.idempotency import (
    IdempotencyStore,
    IdempotencyStoreError,
    PostgresStore,
    SqliteStore,
    open_store,
)
from pipeline.idempotency.base import redact_url
from pipeline.idempotency.postgres import qmark_to_pyformat

GROUP = "orders-billing"


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Harness:
    """One store URL and table per test, a table ``effects(event_id, worker)`` for a
    handler's writes, and a side connection to look at both."""

    url: str
    table: str
    effects: str

    def __init__(self) -> None:
        self._stores: list[IdempotencyStore] = []

    def store(self, clock: Callable[[], float] = time.time) -> IdempotencyStore:
        store = open_store(self.url, table=self.table, clock=clock)
        store.open()
        self._stores.append(store)
        return store

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def effect_counts(self) -> dict[str, int]:
        sql = f"SELECT event_id, COUNT(*) FROM {self.effects} GROUP BY event_id"
        return {event_id: count for event_id, count in self.query(sql)}

    def states(self) -> dict[tuple[str, str], str]:
        rows = self.query(f"SELECT group_id, event_id, state FROM {self.table}")
        return {(group, event_id): state for group, event_id, state in rows}

    def close(self) -> None:
        for store in self._stores:
            store.close()


class SqliteHarness(Harness):
    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.path = directory / "ids.db"
        self.url = f"sqlite:///{self.path}"
        self.table = "pipeline_idempotency"
        self.effects = "effects"
        self.query(f"CREATE TABLE {self.effects} (event_id TEXT NOT NULL, worker INTEGER)")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()


def record_effect(
    store: IdempotencyStore, harness: Harness, event_id: str, worker: int = 0
) -> bool:
    """A handler: writes its side effect in the event's transaction; True unless a duplicate."""
    with store.transaction(GROUP, event_id) as tx:
        tx.execute(
            f"INSERT INTO {harness.effects} (event_id, worker) VALUES (?, ?)", (event_id, worker)
        )
        return not tx.duplicate


class StoreContract:
    """What every IdempotencyStore does; a subclass provides the ``harness`` fixture."""

    def test_open_is_idempotent(self, harness: Harness) -> None:
        """Opening a store twice, and a second store on the same table, is harmless."""
        store = harness.store()
        store.open()
        harness.store().mark_completed(GROUP, ["e1"])
        assert store.completed(GROUP, ["e1"]) == {"e1"}

    def test_completed_round_trip(self, harness: Harness) -> None:
        """completed() returns exactly the ids marked completed, and only for their group."""
        store = harness.store()
        store.mark_completed(GROUP, ["e1", "e2"])
        store.mark_completed("other-group", ["e3"])
        assert store.completed(GROUP, ["e1", "e2", "e3", "e4"]) == {"e1", "e2"}
        assert store.completed("other-group", ["e1", "e3"]) == {"e3"}
        assert store.completed(GROUP, []) == set()

    def test_mark_completed_takes_repeats(self, harness: Harness) -> None:
        """mark_completed takes ids already done, and the same id twice in one call."""
        store = harness.store()
        store.mark_completed(GROUP, ["e1"])
        store.mark_completed(GROUP, ["e1", "e2", "e2"])
        store.mark_completed(GROUP, [])
        assert harness.states() == {(GROUP, "e1"): "done", (GROUP, "e2"): "done"}

    def test_applied_is_not_completed(self, harness: Harness) -> None:
        """An id committed by a transaction counts as completed only after mark_completed."""
        store = harness.store()
        record_effect(store, harness, "e1")
        assert store.completed(GROUP, ["e1"]) == set()
        store.mark_completed(GROUP, ["e1"])
        assert store.completed(GROUP, ["e1"]) == {"e1"}

    def test_transaction_commits_writes_with_the_id(self, harness: Harness) -> None:
        """A transaction commits the handler's writes together with the id, as applied."""
        assert record_effect(harness.store(), harness, "e1") is True
        assert harness.effect_counts() == {"e1": 1}
        assert harness.states() == {(GROUP, "e1"): "applied"}

    def test_second_transaction_is_a_duplicate(self, harness: Harness) -> None:
        """A second transaction for the same id is a duplicate and its writes are rolled back."""
        store = harness.store()
        record_effect(store, harness, "e1")
        assert record_effect(store, harness, "e1") is False
        assert record_effect(harness.store(), harness, "e1") is False
        assert harness.effect_counts() == {"e1": 1}

    def test_done_id_is_a_duplicate(self, harness: Harness) -> None:
        """A transaction for an id already marked done is a duplicate, and the id stays done."""
        store = harness.store()
        store.mark_completed(GROUP, ["e1"])
        assert record_effect(store, harness, "e1") is False
        assert harness.effect_counts() == {}
        assert harness.states() == {(GROUP, "e1"): "done"}

    def test_same_id_in_another_group_is_not_a_duplicate(self, harness: Harness) -> None:
        """The same event id handled by another group is that group's first time."""
        store = harness.store()
        record_effect(store, harness, "e1")
        with store.transaction("other-group", "e1") as tx:
            assert tx.duplicate is False

    def test_exception_rolls_back_writes_and_id(self, harness: Harness) -> None:
        """An exception in the block rolls back the writes and the id, and propagates."""
        store = harness.store()
        failure = pytest.raises(RuntimeError, match="handler failed")
        with failure, store.transaction(GROUP, "e1") as tx:
            tx.execute(f"INSERT INTO {harness.effects} (event_id) VALUES (?)", ("e1",))
            raise RuntimeError("handler failed")
        assert harness.effect_counts() == {}
        assert harness.states() == {}
        assert record_effect(store, harness, "e1") is True

    def test_handler_sql_error_is_the_drivers(self, harness: Harness) -> None:
        """A failing handler statement propagates the driver's own error, not a store error."""
        store = harness.store()
        with pytest.raises(Exception) as raised, store.transaction(GROUP, "e1") as tx:
            tx.execute("INSERT INTO no_such_table (x) VALUES (?)", (1,))
        assert not isinstance(raised.value, IdempotencyStoreError)
        assert harness.states() == {}

    def test_handler_ending_the_transaction_is_an_error(self, harness: Harness) -> None:
        """A handler that commits the store's connection itself gets IdempotencyStoreError."""
        store = harness.store()
        refused = pytest.raises(IdempotencyStoreError, match="ended inside its with block")
        with refused, store.transaction(GROUP, "e1") as tx:
            tx.connection.commit()
        assert record_effect(store, harness, "e2") is True

    def test_placeholders_and_percent_signs(self, harness: Harness) -> None:
        """Handler SQL takes ? placeholders, and % or ? inside literals, on every store."""
        store = harness.store()
        with store.transaction(GROUP, "e1") as tx:
            sql = f"INSERT INTO {harness.effects} (event_id, worker) VALUES (? || '%?', ?)"
            tx.execute(sql, ("e1", 7))
            rows = tx.execute(
                f"SELECT event_id FROM {harness.effects} WHERE event_id LIKE 'e%' AND worker = ?",
                (7,),
            ).fetchall()
        assert rows == [("e1%?",)]

    def test_cleanup_removes_only_old_rows(self, harness: Harness) -> None:
        """cleanup deletes the rows recorded before now - older_than_s and returns how many."""
        clock = FakeClock()
        store = harness.store(clock)
        store.mark_completed(GROUP, ["old-done"])
        record_effect(store, harness, "old-applied")
        clock.now += 1000
        store.mark_completed(GROUP, ["new"])
        clock.now += 100
        assert store.cleanup(older_than_s=500) == 2
        assert set(harness.states()) == {(GROUP, "new")}
        assert store.cleanup(older_than_s=500) == 0

    def test_concurrent_stores_apply_each_effect_once(self, harness: Harness) -> None:
        """Threads with their own stores, racing over the same ids, apply each effect once."""
        ids = [f"e{i}" for i in range(40)]
        stores = [harness.store() for _ in range(4)]
        start = threading.Barrier(len(stores))
        applied: list[int] = [0] * len(stores)

        def work(worker: int) -> None:
            order = random.Random(worker).sample(ids, len(ids))
            start.wait()
            applied[worker] = sum(record_effect(stores[worker], harness, i, worker) for i in order)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(len(stores))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert harness.effect_counts() == dict.fromkeys(ids, 1)
        assert sum(applied) == len(ids)

    def test_a_shared_store_serialises_threads(self, harness: Harness) -> None:
        """A store shared by threads makes one wait while another's transaction is open."""
        store = harness.store()
        seen: list[set[str]] = []
        with store.transaction(GROUP, "e1"):
            reader = threading.Thread(target=lambda: seen.append(store.completed(GROUP, ["e1"])))
            reader.start()
            reader.join(timeout=0.3)
            assert seen == []  # still waiting for this transaction
        reader.join(timeout=10)
        assert seen == [set()]

    def test_use_inside_own_transaction_raises(self, harness: Harness) -> None:
        """Using a store inside its own transaction on the same thread raises, not deadlocks."""
        store = harness.store()
        refused = pytest.raises(IdempotencyStoreError, match="inside a transaction")
        with store.transaction(GROUP, "e1"), refused:
            store.completed(GROUP, ["e1"])

    def test_unopened_store_raises(self, harness: Harness) -> None:
        """A store used before open() raises IdempotencyStoreError."""
        store = open_store(harness.url, table=harness.table)
        with pytest.raises(IdempotencyStoreError, match="not open"):
            store.completed(GROUP, ["e1"])

    def test_closed_store_reopens(self, harness: Harness) -> None:
        """A closed store can be opened again and sees what it recorded before."""
        store = harness.store()
        store.mark_completed(GROUP, ["e1"])
        store.close()
        store.open()
        assert store.completed(GROUP, ["e1"]) == {"e1"}


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> Iterator[Harness]:
        harness = SqliteHarness(tmp_path)
        yield harness
        harness.close()


def _process_worker(url: str, effects: str, worker: int, ids: list[str], start: Any) -> None:
    store = open_store(url)
    store.open()
    start.wait()
    for event_id in random.Random(worker).sample(ids, len(ids)):
        with store.transaction(GROUP, event_id) as tx:
            tx.execute(
                f"INSERT INTO {effects} (event_id, worker) VALUES (?, ?)", (event_id, worker)
            )
        time.sleep(0.002)  # a worker does other things between events
    store.close()


def test_processes_sharing_a_file_apply_each_effect_once(tmp_path: Path) -> None:
    """Worker processes sharing one SQLite file, racing over the same ids, apply each once."""
    harness = SqliteHarness(tmp_path)
    ids = [f"e{i}" for i in range(60)]
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(3, timeout=30)
    workers = [
        context.Process(target=_process_worker, args=(harness.url, harness.effects, n, ids, start))
        for n in range(3)
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=60)
    assert [process.exitcode for process in workers] == [0, 0, 0]
    assert harness.effect_counts() == dict.fromkeys(ids, 1)
    assert len({worker for (worker,) in harness.query("SELECT DISTINCT worker FROM effects")}) > 1


def _open_new_files(directory: str, rounds: int, start: Any) -> None:
    for round_ in range(rounds):
        store = open_store(f"sqlite:///{directory}/{round_}/ids.db")
        start.wait()
        store.open()
        store.mark_completed(GROUP, ["e1"])
        store.close()


def test_processes_opening_a_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    """Worker processes that open the same new file at the same moment all succeed."""
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(4, timeout=30)
    workers = [
        context.Process(target=_open_new_files, args=(str(tmp_path), 10, start)) for _ in range(4)
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=60)
    assert [process.exitcode for process in workers] == [0, 0, 0, 0]


def test_open_creates_parent_directories_and_wal(tmp_path: Path) -> None:
    """open() creates the file's missing parent directories and puts the file in WAL mode."""
    path = tmp_path / "a" / "b" / "ids.db"
    store = SqliteStore(path)
    store.open()
    store.close()
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()
    assert mode == ("wal",)


def test_unusable_path_raises_a_store_error(tmp_path: Path) -> None:
    """A file that cannot be created raises IdempotencyStoreError naming the URL."""
    (tmp_path / "file").write_text("")
    store = open_store(f"sqlite:///{tmp_path}/file/ids.db")
    with pytest.raises(IdempotencyStoreError, match=r"open on sqlite:////.*file/ids\.db"):
        store.open()


def test_memory_url_gives_a_private_store() -> None:
    """sqlite:///:memory: gives a working store that shares nothing with another."""
    first, second = open_store("sqlite:///:memory:"), open_store("sqlite:///:memory:")
    first.open()
    second.open()
    first.mark_completed(GROUP, ["e1"])
    assert (first.completed(GROUP, ["e1"]), second.completed(GROUP, ["e1"])) == ({"e1"}, set())


def test_relative_and_absolute_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sqlite:///x is relative to the working directory, sqlite:////x absolute."""
    monkeypatch.chdir(tmp_path)
    relative, absolute = open_store("sqlite:///d/ids.db"), open_store("sqlite:////tmp/ids.db")
    assert isinstance(relative, SqliteStore) and isinstance(absolute, SqliteStore)
    assert (relative.path, absolute.path) == ("d/ids.db", "/tmp/ids.db")
    relative.open()
    relative.close()
    assert (tmp_path / "d" / "ids.db").exists()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u:secret@h/db", "unknown idempotency store scheme 'mysql'.*u:\\*\\*\\*@h"),
        ("ids.db", "has no scheme"),
        ("", "has no scheme"),
        ("sqlite://host/ids.db", "names no file"),
        ("sqlite:///ids.db?mode=ro", "query parameters"),
    ],
)
def test_bad_urls_are_config_errors(url: str, message: str) -> None:
    """A URL that names no store we have is a ConfigError that says what was expected."""
    with pytest.raises(ConfigError, match=message) as raised:
        open_store(url)
    assert "secret" not in str(raised.value)


def test_bad_table_name_is_a_config_error() -> None:
    """A table name that is not a plain identifier is refused before any SQL runs."""
    with pytest.raises(ConfigError, match="not a plain SQL identifier"):
        open_store("sqlite:///:memory:", table="ids; DROP TABLE users")


def test_postgres_url_does_not_import_psycopg() -> None:
    """open_store for a postgresql:// URL does not import psycopg until the store connects."""
    code = (
        "import sys; from pipeline.idempotency import open_store; "
        "s = open_store('postgresql://u:p@127.0.0.1:1/db'); "
        "print(type(s).__name__, 'psycopg' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [PostgresStore.__name__, "False"]


def test_redact_url_hides_passwords() -> None:
    """Passwords in the userinfo or a password= parameter are masked; the rest is kept."""
    assert redact_url("postgresql://u:p@ss@h:5/db") == "postgresql://u:***@h:5/db"
    assert redact_url("postgresql://h/db?password=x&sslmode=require") == (
        "postgresql://h/db?password=***&sslmode=require"
    )
    assert redact_url("sqlite:///ids.db") == "sqlite:///ids.db"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT ? , ?", "SELECT %s , %s"),
        ("SELECT 'a?b', \"c?\", ? -- ?\n", "SELECT 'a?b', \"c?\", %s -- ?\n"),
        ("SELECT 'it''s ?' LIKE '5%', ? /* ? */", "SELECT 'it''s ?' LIKE '5%%', %s /* ? */"),
        ("SELECT $q$ ? $q$, ?", "SELECT $q$ ? $q$, %s"),
    ],
)
def test_qmark_to_pyformat(sql: str, expected: str) -> None:
    """? placeholders become %s outside literals and comments, and every % becomes %%."""
    assert qmark_to_pyformat(sql) == expected


def test_public_names() -> None:
    """The package's public surface is curated."""
    assert set(pipeline.idempotency.__all__) == {
        "DEFAULT_TABLE", "IdempotencyStore", "IdempotencyStoreError", "PostgresStore",
        "SqliteStore", "Transaction", "open_store",
    }  # fmt: skip
    assert issubclass(IdempotencyStoreError, PipelineError)
