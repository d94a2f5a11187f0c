"""The store protocol, its error, and the SQL both databases share.

One row per (group, event id)::

    pipeline_idempotency(group_id, event_id, state, recorded_at)   PRIMARY KEY (group_id, event_id)

``state`` is ``'applied'`` once a handler's transaction committed the id with its writes, and
``'done'`` once the event's outputs were acknowledged (just before its offset is committed).
Only *done* ids make the runner skip an event; an *applied* id makes a redelivered handler's
writes roll back (``tx.duplicate``) while it still emits its outputs again.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from pipeline.errors import ConfigError, PipelineError

DEFAULT_TABLE = "pipeline_idempotency"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,50}")
_PASSWORD_PARAMETER = re.compile(r"(?i)([?&]password=)[^&#]*")


class IdempotencyStoreError(PipelineError):
    """The idempotency database failed (connect, SQL, commit); the message names the URL
    without its password."""


class Transaction(Protocol):
    """One database transaction holding an event's id and the handler's writes.

    ``execute`` takes ``?`` placeholders on every store (translated to ``%s`` for PostgreSQL)
    and returns the driver's cursor. Driver errors from it propagate unwrapped: they are the
    handler's. After a failed statement PostgreSQL refuses the rest of the transaction (the
    store then raises at the end of the block); SQLite undoes just that statement.

    ``connection`` is the driver's own (sqlite3, or psycopg with ``%s`` placeholders), for
    ``executemany`` or an ORM. Never commit or roll it back: the store ends the transaction
    when the ``with`` block ends.
    """

    duplicate: bool
    connection: Any

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...


class IdempotencyStore(Protocol):
    """Event ids per consumer group, and transactions that record one with a handler's writes.

    A store holds one connection. Its operations are serialised across threads, and a
    transaction holds the store until it ends, so give each thread that runs transactions
    concurrently its own store (``open_store`` per stage runner).
    """

    def open(self) -> None:
        """Connect and create the table if missing; idempotent, safe from many processes."""

    def close(self) -> None: ...

    def completed(self, group: str, event_ids: Sequence[str]) -> set[str]:
        """The subset of ``event_ids`` recorded *done*, in one query."""

    def mark_completed(self, group: str, event_ids: Sequence[str]) -> None:
        """Record every id *done* (insert or upgrade), in one transaction."""

    def transaction(self, group: str, event_id: str) -> AbstractContextManager[Transaction]:
        """Begin, insert the id as *applied* unless present (``tx.duplicate`` if it was).

        A clean exit commits, or rolls back if ``tx.duplicate``; an exception rolls back and
        propagates. A concurrent transaction for the same id waits for this one to end.
        """

    def cleanup(self, older_than_s: float) -> int:
        """Delete the ids recorded more than ``older_than_s`` ago; return how many."""


@dataclass
class DbTransaction:
    """What ``IdempotencyStore.transaction`` yields."""

    connection: Any
    duplicate: bool
    translate: Callable[[str], str] = str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if not params:
            return self.connection.execute(sql)
        return self.connection.execute(self.translate(sql), tuple(params))


@dataclass(frozen=True)
class Dialect:
    """The few SQL fragments where SQLite and PostgreSQL differ."""

    param: str  # a placeholder
    timestamp_type: str  # the type of recorded_at
    timestamp: str  # a float epoch-seconds parameter as a recorded_at value
    id_set: str  # a one-parameter subquery yielding a set of ids as column event_id
    id_match: str  # a one-parameter condition: event_id is one of a set of ids
    encode_ids: Callable[[list[str]], Any]  # the Python value for that parameter


class Statements:
    """The store's SQL for one table in one dialect.

    Parameters, in order: claim (group, id, now); completed and mark_done (group, [now,] ids);
    cleanup (cutoff).
    """

    def __init__(self, table: str, dialect: Dialect) -> None:
        t, p, ts = check_table_name(table), dialect.param, dialect.timestamp
        self.create = (
            f"CREATE TABLE IF NOT EXISTS {t} (group_id TEXT NOT NULL, event_id TEXT NOT NULL, "
            f"state TEXT NOT NULL, recorded_at {dialect.timestamp_type} NOT NULL, "
            "PRIMARY KEY (group_id, event_id))",
            f"CREATE INDEX IF NOT EXISTS {t}_recorded_at ON {t} (recorded_at)",
        )
        self.claim = (
            f"INSERT INTO {t} (group_id, event_id, state, recorded_at) "
            f"VALUES ({p}, {p}, 'applied', {ts}) ON CONFLICT DO NOTHING"
        )
        self.completed = (
            f"SELECT event_id FROM {t} WHERE group_id = {p} AND state = 'done' "
            f"AND event_id {dialect.id_match}"
        )
        # WHERE true: SQLite needs it to parse INSERT ... SELECT ... ON CONFLICT.
        self.mark_done = (
            f"INSERT INTO {t} (group_id, event_id, state, recorded_at) "
            f"SELECT {p}, ids.event_id, 'done', {ts} FROM ({dialect.id_set}) AS ids WHERE true "
            "ON CONFLICT (group_id, event_id) "
            "DO UPDATE SET state = 'done', recorded_at = excluded.recorded_at"
        )
        self.cleanup = f"DELETE FROM {t} WHERE recorded_at < {ts}"


def check_table_name(table: str) -> str:
    if not _IDENTIFIER.fullmatch(table):
        raise ConfigError(
            f"idempotency table name {table!r} is not a plain SQL identifier "
            "(letters, digits and _, at most 51 characters, not starting with a digit)"
        )
    return table


def unique_ids(event_ids: Sequence[str]) -> list[str]:
    """The ids once each, in order (an upsert may not touch one row twice)."""
    return list(dict.fromkeys(event_ids))


def redact_url(url: str) -> str:
    """The URL with its password, in the userinfo or a ``password=`` parameter, as ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # an unparsable port, say: keep the scheme only
        return url.partition(":")[0] + "://…"
    if password is not None:
        user, _, host = parts.netloc.rpartition("@")
        url = url.replace(parts.netloc, f"{user.partition(':')[0]}:***@{host}", 1)
    return _PASSWORD_PARAMETER.sub(r"\1***", url)


class Exclusive:
    """Serialises a store's operations across threads; a transaction holds it until it ends.

    Using the store again from inside its own transaction, on the same thread, is an error
    rather than a deadlock or a silent commit of the open transaction.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holder: int | None = None

    @contextmanager
    def hold(self, operation: str) -> Iterator[None]:
        me = threading.get_ident()
        if self._holder == me:
            raise IdempotencyStoreError(
                f"{operation} called inside a transaction of the same store on the same thread"
            )
        with self._lock:
            self._holder = me
            try:
                yield
            finally:
                self._holder = None
