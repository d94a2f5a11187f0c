"""The SQLite store: the default, one file shared by a stage's worker processes.

The file is in WAL mode (readers never wait for the writer) with a busy timeout, so several
processes can share it: every write, a handler's transaction included, begins with
``BEGIN IMMEDIATE`` and so takes the file's single write lock up front, waiting up to the busy
timeout for it. Transactions therefore run one at a time per file, across all processes:
keep them short. ``synchronous=FULL``: a commit survives a power loss.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.idempotency.base import (
    DEFAULT_TABLE,
    DbTransaction,
    Dialect,
    Exclusive,
    IdempotencyStoreError,
    Statements,
    unique_ids,
)

log = logging.getLogger("pipeline.idempotency")

SQLITE = Dialect(
    param="?",
    timestamp_type="REAL",  # seconds since the epoch
    timestamp="?",
    id_set="SELECT value AS event_id FROM json_each(?)",
    id_match="IN (SELECT value FROM json_each(?))",
    encode_ids=json.dumps,
)


class SqliteStore:
    """``IdempotencyStore`` on a SQLite file (or ``":memory:"``, private to this store)."""

    def __init__(
        self,
        path: str | Path,
        *,
        table: str = DEFAULT_TABLE,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = 30.0,
    ) -> None:
        self.path = str(path)
        self.url = f"sqlite:///{self.path}"
        self._sql = Statements(table, SQLITE)
        self._clock = clock
        self._busy_timeout_s = busy_timeout_s
        self._conn: sqlite3.Connection | None = None
        self._exclusive = Exclusive()

    def open(self) -> None:
        with self._exclusive.hold("open"), self._errors("open"):
            if self._conn is not None:
                return
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout_s,
                isolation_level=None,  # no implicit transactions: ours are explicit
                check_same_thread=False,  # Exclusive serialises threads instead
            )
            try:
                self._prepare(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
        self._enable_wal(conn)
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("BEGIN IMMEDIATE")
        for statement in self._sql.create:
            conn.execute(statement)
        conn.execute("COMMIT")

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        # Switching a new file to WAL while other processes open it can fail with SQLITE_BUSY
        # at once, without the busy handler waiting: retry until the busy timeout.
        deadline = time.monotonic() + self._busy_timeout_s
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")  # ":memory:" stays "memory"
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def close(self) -> None:
        with self._exclusive.hold("close"):
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    def completed(self, group: str, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()
        with self._exclusive.hold("completed"), self._errors("completed"):
            params = (group, SQLITE.encode_ids(list(event_ids)))
            return {row[0] for row in self._connection().execute(self._sql.completed, params)}

    def mark_completed(self, group: str, event_ids: Sequence[str]) -> None:
        ids = unique_ids(event_ids)
        if ids:
            with self._exclusive.hold("mark_completed"):
                params = (group, self._clock(), SQLITE.encode_ids(ids))
                self._write("mark_completed", self._sql.mark_done, params)

    def cleanup(self, older_than_s: float) -> int:
        with self._exclusive.hold("cleanup"):
            return self._write("cleanup", self._sql.cleanup, (self._clock() - older_than_s,))

    @contextmanager
    def transaction(self, group: str, event_id: str) -> Iterator[DbTransaction]:
        with self._exclusive.hold("transaction"):
            conn = self._connection()
            with self._errors("transaction"):
                conn.execute("BEGIN IMMEDIATE")
                try:
                    claim = conn.execute(self._sql.claim, (group, event_id, self._clock()))
                except BaseException:
                    self._rollback_quietly(conn)
                    raise
            tx = DbTransaction(conn, duplicate=claim.rowcount == 0)
            try:
                yield tx
            except BaseException:
                self._rollback_quietly(conn)
                raise
            self._finish(conn, tx.duplicate)

    def _finish(self, conn: sqlite3.Connection, duplicate: bool) -> None:
        if not conn.in_transaction:
            raise IdempotencyStoreError(
                f"{self.url}: the transaction ended inside its with block (a commit or rollback "
                "of tx.connection, or a statement that rolled it back); the handler's writes and "
                "the event's id were not committed together"
            )
        try:
            conn.execute("ROLLBACK" if duplicate else "COMMIT")
        except sqlite3.Error as exc:
            self._rollback_quietly(conn)
            raise IdempotencyStoreError(f"commit on {self.url}: {exc}") from exc

    def _write(self, operation: str, sql: str, params: Sequence[Any]) -> int:
        """One statement in its own write transaction; its row count."""
        conn = self._connection()
        with self._errors(operation):
            conn.execute("BEGIN IMMEDIATE")
            try:
                count = conn.execute(sql, params).rowcount
                conn.execute("COMMIT")
            except BaseException:
                self._rollback_quietly(conn)
                raise
        return count

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise IdempotencyStoreError(f"{self.url}: the store is not open (call open() first)")
        return self._conn

    def _rollback_quietly(self, conn: sqlite3.Connection) -> None:
        # Called while another exception propagates: that one is the error to report.
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.warning("rollback failed on %s", self.url, exc_info=True)

    @contextmanager
    def _errors(self, operation: str) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise IdempotencyStoreError(f"{operation} on {self.url}: {exc}") from exc
