"""The PostgreSQL store, for production: many workers on many machines share one table.

psycopg 3 is imported here only, when a store first connects. One connection per store,
``autocommit=False``; every operation ends its transaction. A handler's transaction inserts
the id first, so a concurrent transaction for the same id blocks on that row until the first
ends, then sees the conflict (``duplicate``) or, if the first rolled back, claims it itself.

``completed``, ``mark_completed`` and ``cleanup`` (each safe to repeat) and the id insert that
opens a transaction reconnect once when the connection turns out to be lost; a transaction
whose connection is lost after the handler started fails with ``IdempotencyStoreError``.
"""

from __future__ import annotations

import functools
import logging
import re
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from pipeline.idempotency.base import (
    DEFAULT_TABLE,
    DbTransaction,
    Dialect,
    Exclusive,
    IdempotencyStoreError,
    Statements,
    redact_url,
    unique_ids,
)

if TYPE_CHECKING:
    from psycopg import Connection

log = logging.getLogger("pipeline.idempotency")
T = TypeVar("T")

POSTGRES = Dialect(
    param="%s",
    timestamp_type="TIMESTAMPTZ",
    timestamp="to_timestamp(%s)",
    id_set="SELECT unnest(%s::text[]) AS event_id",
    id_match="= ANY(%s::text[])",
    encode_ids=list,
)

# What may contain a "?" that is not a placeholder: literals, quoted names, comments.
_SQL_TOKENS = re.compile(
    r"'(?:[^']|'')*'"
    r'|"(?:[^"]|"")*"'
    r"|\$(\w*)\$.*?\$\1\$"
    r"|--[^\n]*"
    r"|/\*.*?\*/"
    r"|\?",
    re.DOTALL,
)


@functools.lru_cache(maxsize=512)
def qmark_to_pyformat(sql: str) -> str:
    """``?`` placeholders to psycopg's ``%s``, and a literal ``%`` to ``%%``.

    A ``?`` inside a string literal, a quoted identifier, a dollar-quoted string or a comment
    is left alone. Not understood: backslash-escaped quotes in ``E'...'`` strings, and
    PostgreSQL's jsonb ``?`` operators (use ``jsonb_exists()``, or ``tx.connection`` with
    ``%s`` placeholders).
    """
    escaped = sql.replace("%", "%%")
    return _SQL_TOKENS.sub(lambda m: "%s" if m.group(0) == "?" else m.group(0), escaped)


class PostgresStore:
    """``IdempotencyStore`` on a PostgreSQL table; ``url`` is a libpq URI."""

    def __init__(
        self,
        url: str,
        *,
        table: str = DEFAULT_TABLE,
        clock: Callable[[], float] = time.time,
        connect_timeout_s: int = 10,
    ) -> None:
        self._dsn = url
        self.url = redact_url(url)
        self._table = table
        self._sql = Statements(table, POSTGRES)
        self._clock = clock
        self._connect_timeout_s = connect_timeout_s
        self._conn: Connection[tuple[Any, ...]] | None = None
        self._opened = False
        self._exclusive = Exclusive()

    def open(self) -> None:
        with self._exclusive.hold("open"):
            if self._opened:
                return
            self._opened = True
            try:
                self._run("open", self._create_table)
            except BaseException:
                self._opened = False
                raise

    def _create_table(self, conn: Connection[tuple[Any, ...]]) -> None:
        # CREATE ... IF NOT EXISTS races with itself across sessions, and needs the CREATE
        # privilege even when the table exists: check first, then create under a lock.
        exists = "SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL"
        row = conn.execute(exists, (self._table, f"{self._table}_recorded_at")).fetchone()
        if row is not None and row[0]:
            return
        lock_key = zlib.crc32(f"pipeline.idempotency:{self._table}".encode())
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key,))
        for statement in self._sql.create:
            conn.execute(statement)

    def close(self) -> None:
        with self._exclusive.hold("close"):
            conn, self._conn, self._opened = self._conn, None, False
            if conn is not None:
                conn.close()

    def completed(self, group: str, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()
        params = (group, list(event_ids))
        with self._exclusive.hold("completed"):
            rows = self._run(
                "completed", lambda c: c.execute(self._sql.completed, params).fetchall()
            )
        return {row[0] for row in rows}

    def mark_completed(self, group: str, event_ids: Sequence[str]) -> None:
        ids = unique_ids(event_ids)
        if ids:
            params = (group, self._clock(), ids)
            with self._exclusive.hold("mark_completed"):
                self._run("mark_completed", lambda c: c.execute(self._sql.mark_done, params))

    def cleanup(self, older_than_s: float) -> int:
        params = (self._clock() - older_than_s,)
        with self._exclusive.hold("cleanup"):
            return self._run("cleanup", lambda c: c.execute(self._sql.cleanup, params).rowcount)

    @contextmanager
    def transaction(self, group: str, event_id: str) -> Iterator[DbTransaction]:
        params = (group, event_id, self._clock())
        with self._exclusive.hold("transaction"):
            claimed = self._run(
                "transaction",
                lambda c: c.execute(self._sql.claim, params).rowcount == 1,
                commit=False,
            )
            conn = self._connection()
            tx = DbTransaction(conn, duplicate=not claimed, translate=qmark_to_pyformat)
            try:
                yield tx
            except BaseException:
                self._rollback_quietly(conn)
                raise
            self._finish(conn, tx.duplicate)

    def _finish(self, conn: Connection[tuple[Any, ...]], duplicate: bool) -> None:
        import psycopg
        from psycopg.pq import TransactionStatus

        if conn.info.transaction_status != TransactionStatus.INTRANS:
            self._rollback_quietly(conn)
            raise IdempotencyStoreError(
                f"{self.url}: the transaction failed or ended inside its with block (a failed "
                "statement, or a commit or rollback of tx.connection); the handler's writes and "
                "the event's id were not committed together"
            )
        try:
            if duplicate:
                conn.rollback()
            else:
                conn.commit()
        except psycopg.Error as exc:
            self._rollback_quietly(conn)
            raise IdempotencyStoreError(f"commit on {self.url}: {exc}") from exc

    def _run(
        self,
        operation: str,
        work: Callable[[Connection[tuple[Any, ...]]], T],
        *,
        commit: bool = True,
    ) -> T:
        """``work`` on a live connection, then commit (or leave the transaction open).

        A lost connection is replaced and ``work`` tried once more; any other error rolls
        back and is raised as ``IdempotencyStoreError``.
        """
        import psycopg

        if not self._opened:
            raise IdempotencyStoreError(f"{self.url}: the store is not open (call open() first)")
        for attempt in (1, 2):
            conn = self._connection()
            try:
                result = work(conn)
                if commit:
                    conn.commit()
                return result
            except psycopg.Error as exc:
                lost = conn.closed or conn.broken
                self._rollback_quietly(conn)
                if not (lost and attempt == 1):
                    raise IdempotencyStoreError(f"{operation} on {self.url}: {exc}") from exc
                log.warning("connection to %s lost during %s; reconnecting", self.url, operation)
        raise AssertionError("unreachable")

    def _connection(self) -> Connection[tuple[Any, ...]]:
        """The store's connection, replaced first if it is closed or broken."""
        import psycopg
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        conn = self._conn
        if conn is not None and not (conn.closed or conn.broken):
            return conn
        if conn is not None:
            conn.close()
        defaults = {
            "connect_timeout": str(self._connect_timeout_s),
            "application_name": "pipeline-idempotency",
        }
        try:
            given = conninfo_to_dict(self._dsn)
            options = {key: value for key, value in defaults.items() if key not in given}
            self._conn = psycopg.connect(make_conninfo(self._dsn, **options), autocommit=False)
        except psycopg.Error as exc:
            self._conn = None
            raise IdempotencyStoreError(f"connect to {self.url}: {exc}") from exc
        return self._conn

    def _rollback_quietly(self, conn: Connection[tuple[Any, ...]]) -> None:
        # Called while another exception propagates: that one is the error to report.
        import psycopg

        if conn.closed or conn.broken:
            return
        try:
            conn.rollback()
        except psycopg.Error:
            log.warning("rollback failed on %s", self.url, exc_info=True)
