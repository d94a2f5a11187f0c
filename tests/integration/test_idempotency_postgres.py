"""The PostgreSQL idempotency store against a real server: the store contract, then what only
PostgreSQL does (blocking on a concurrently claimed id, reconnecting, racing table creation).

The server comes from ``TEST_POSTGRES_URL`` (``eval "$(bash .ci/postgres.sh)"`` starts one).
Without it these tests are skipped, except in CI, where they fail.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import pytest

from pipeline.idempotency import IdempotencyStoreError, PostgresStore, open_store
from pipeline.idempotency.postgres import qmark_to_pyformat
from tests.brokers import broker_required
from tests.unit.test_idempotency_sqlite import GROUP, Harness, StoreContract, record_effect

ENV_URL = "TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get(ENV_URL, "").strip()
    if url:
        return url
    if broker_required():
        pytest.fail(f"{ENV_URL} is not set: CI must start PostgreSQL with .ci/postgres.sh")
    pytest.skip(f'{ENV_URL} is not set (eval "$(bash .ci/postgres.sh)" starts a server)')


class PostgresHarness(Harness):
    """Tables named per test, dropped afterwards, in the shared test database."""

    def __init__(self, url: str) -> None:
        super().__init__()
        suffix = uuid.uuid4().hex[:12]
        self.url = url
        self.table = f"idempotency_{suffix}"
        self.effects = f"effects_{suffix}"
        self._side = psycopg.connect(url, autocommit=True)
        self.query(f"CREATE TABLE {self.effects} (event_id TEXT NOT NULL, worker INTEGER)")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self._side.execute(qmark_to_pyformat(sql) if params else sql, tuple(params))
        return cursor.fetchall() if cursor.description else []

    def close(self) -> None:
        super().close()
        self.query(f"DROP TABLE IF EXISTS {self.effects}, {self.table}")
        self._side.close()


@pytest.fixture
def harness(postgres_url: str) -> Iterator[PostgresHarness]:
    harness = PostgresHarness(postgres_url)
    yield harness
    harness.close()


class TestPostgresStore(StoreContract):
    """The contract of tests/unit/test_idempotency_sqlite.py, on PostgreSQL."""


def _claim_in_thread(store: Any, event_id: str, results: list[bool]) -> threading.Thread:
    def claim() -> None:
        with store.transaction(GROUP, event_id) as tx:
            results.append(tx.duplicate)

    thread = threading.Thread(target=claim)
    thread.start()
    return thread


def _backend_pid(store: Any) -> int:
    return int(store._connection().info.backend_pid)


def _await_blocked(harness: PostgresHarness, pid: int, thread: threading.Thread) -> None:
    """Until the server backend ``pid`` waits on a lock: the claim in ``thread`` has reached
    the id the other transaction holds (a join with a timeout would pass as well when the
    thread had not started yet, and the test would not see the wait it is about)."""
    sql = "SELECT count(*) FROM pg_stat_activity WHERE pid = ? AND wait_event_type = 'Lock'"
    deadline = time.monotonic() + 30
    while harness.query(sql, (pid,)) != [(1,)]:
        assert thread.is_alive() and time.monotonic() < deadline, "the claim never blocked"
        time.sleep(0.01)


def test_concurrent_claim_waits_then_sees_the_duplicate(harness: PostgresHarness) -> None:
    """A transaction for an id another transaction holds waits for it, then is a duplicate."""
    first, second = harness.store(), harness.store()
    results: list[bool] = []
    with first.transaction(GROUP, "e1") as tx:
        tx.execute(f"INSERT INTO {harness.effects} (event_id) VALUES (?)", ("e1",))
        pid = _backend_pid(second)  # before its thread uses the connection
        waiting = _claim_in_thread(second, "e1", results)
        _await_blocked(harness, pid, waiting)
        assert results == []
    waiting.join(timeout=10)
    assert results == [True]
    assert harness.effect_counts() == {"e1": 1}


def test_concurrent_claim_takes_over_after_a_rollback(harness: PostgresHarness) -> None:
    """When the transaction holding an id rolls back, the waiting one claims the id itself."""
    first, second = harness.store(), harness.store()
    results: list[bool] = []
    with pytest.raises(RuntimeError), first.transaction(GROUP, "e1"):
        pid = _backend_pid(second)  # before its thread uses the connection
        waiting = _claim_in_thread(second, "e1", results)
        _await_blocked(harness, pid, waiting)
        raise RuntimeError("handler failed")
    waiting.join(timeout=10)
    assert results == [False]
    assert harness.states() == {(GROUP, "e1"): "applied"}


def test_lost_connection_is_replaced_once(harness: PostgresHarness) -> None:
    """After the server drops the store's connection, the next call reconnects and succeeds."""
    store = harness.store()
    store.mark_completed(GROUP, ["e1"])
    assert isinstance(store, PostgresStore)
    for operation in (
        lambda: store.completed(GROUP, ["e1"]) == {"e1"},
        lambda: store.mark_completed(GROUP, ["e2"]) is None,
        lambda: record_effect(store, harness, "e3"),
    ):
        pid = store._connection().info.backend_pid
        harness.query("SELECT pg_terminate_backend(?)", (pid,))
        assert operation()
        assert store._connection().info.backend_pid != pid
    assert store.completed(GROUP, ["e1", "e2"]) == {"e1", "e2"}


def test_failed_statement_caught_by_the_handler_commits_nothing(harness: PostgresHarness) -> None:
    """A handler that swallows a failed statement gets a store error; nothing is committed."""
    store = harness.store()
    refused = pytest.raises(IdempotencyStoreError, match="failed or ended inside")
    with refused, store.transaction(GROUP, "e1") as tx:
        tx.execute(f"INSERT INTO {harness.effects} (event_id) VALUES (?)", ("e1",))
        with contextlib.suppress(psycopg.errors.UndefinedTable):
            tx.execute("SELECT * FROM no_such_table WHERE x = ?", (1,))
    assert harness.states() == {} and harness.effect_counts() == {}
    assert record_effect(store, harness, "e1") is True


def test_stores_opening_at_once_create_the_table_once(harness: PostgresHarness) -> None:
    """Many stores opening a missing table at the same moment all succeed."""
    stores = [open_store(harness.url, table=harness.table) for _ in range(8)]
    start, errors = threading.Barrier(len(stores)), []

    def open_one(store: Any) -> None:
        start.wait()
        try:
            store.open()
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for store in stores:
        store.close()
    assert errors == []


def test_unreachable_server_is_a_store_error_without_the_password() -> None:
    """A server that cannot be reached raises IdempotencyStoreError with the password hidden."""
    store = open_store("postgresql://pipeline:s3cret@127.0.0.1:1/nowhere")
    with pytest.raises(IdempotencyStoreError, match=r"connect to postgresql://pipeline:\*\*\*@"):
        store.open()
    with pytest.raises(IdempotencyStoreError) as raised:
        store.open()
    assert "s3cret" not in str(raised.value)
