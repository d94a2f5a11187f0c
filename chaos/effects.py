"""Where the Effects stage leaves its traces, and how the orchestrator reads them back.

Two records, kept apart on purpose:

- **side effects**: one row per committed handler transaction, in a table of the idempotency
  store's own database (so the row commits atomically with the event's id). The table has *no*
  unique constraint on the event id: if the store let a redelivery's writes through, the
  duplicate row would be there to count. ``rank`` is an autoincrement key, assigned at insert;
  the handler inserts and commits in one short transaction, and with SQLite every write
  transaction holds the file's single write lock (``BEGIN IMMEDIATE``), so rank order is the
  commit order. With PostgreSQL rank is insert order; for two events of one key it is still
  their commit order, because the consumer that inserts n+1 has finished n first (see
  ``chaos.history.order_violations``).
- **deliveries**: one line per handler call (``<event id> <unix time>``), appended to a file
  per worker process *outside* the transaction, before it begins. ``os.write`` on an
  ``O_APPEND`` file: a line survives a ``kill -9`` of its writer the instant the call returns.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from chaos.history import SideEffect

DEFAULT_TABLE = "chaos_effects"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,50}")

INSERT = "INSERT INTO {table} (event_id, key, seq, pid, via_retry, at) VALUES (?, ?, ?, ?, ?, ?)"
_COLUMNS = (
    "event_id TEXT NOT NULL, key TEXT NOT NULL, seq BIGINT NOT NULL, "
    "pid BIGINT NOT NULL, via_retry INTEGER NOT NULL, at DOUBLE PRECISION NOT NULL"
)
_CREATE = {
    "sqlite": "CREATE TABLE IF NOT EXISTS {table} "
    f"(rank INTEGER PRIMARY KEY AUTOINCREMENT, {_COLUMNS})",
    "postgresql": f"CREATE TABLE IF NOT EXISTS {{table}} (rank BIGSERIAL PRIMARY KEY, {_COLUMNS})",
}
_SELECT = "SELECT rank, event_id, key, seq, pid, via_retry, at FROM {table} ORDER BY rank"


def checked_table(table: str) -> str:
    if not _IDENTIFIER.fullmatch(table):
        raise ValueError(f"{table!r} is not a plain SQL identifier")
    return table


def insert_sql(table: str) -> str:
    return INSERT.format(table=checked_table(table))


@contextmanager
def _connect(url: str) -> Iterator[tuple[str, Any]]:
    """A plain connection to the store's database: ("sqlite" | "postgresql", connection)."""
    scheme, _, rest = url.partition("://")
    if scheme == "sqlite":
        path = rest[1:]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn: Any = sqlite3.connect(path, timeout=30.0)
        dialect = "sqlite"
    elif scheme in ("postgresql", "postgres"):
        import psycopg

        conn = psycopg.connect(url)
        dialect = "postgresql"
    else:
        raise ValueError(f"unsupported store URL scheme {scheme!r}")
    try:
        yield dialect, conn
    finally:
        conn.close()


def create_table(url: str, table: str = DEFAULT_TABLE) -> None:
    with _connect(url) as (dialect, conn):
        conn.execute(_CREATE[dialect].format(table=checked_table(table)))
        conn.commit()


def drop_table(url: str, table: str) -> None:
    with _connect(url) as (_, conn):
        conn.execute(f"DROP TABLE IF EXISTS {checked_table(table)}")
        conn.commit()


def count_rows(url: str, table: str = DEFAULT_TABLE) -> int:
    with _connect(url) as (_, conn):
        return int(conn.execute(f"SELECT count(*) FROM {checked_table(table)}").fetchone()[0])


def read_side_effects(url: str, table: str = DEFAULT_TABLE) -> list[SideEffect]:
    with _connect(url) as (_, conn):
        rows = conn.execute(_SELECT.format(table=checked_table(table))).fetchall()
    return [
        SideEffect(int(rank), str(eid), str(key), int(seq), int(pid), bool(via_retry), float(at))
        for rank, eid, key, seq, pid, via_retry, at in rows
    ]


class DeliveryLog:
    """This process's append-only file of handler calls: ``<dir>/<pid>.log``."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{os.getpid()}.log"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def record(self, event_id: str) -> None:
        os.write(self._fd, f"{event_id} {time.time():.3f}\n".encode())

    def close(self) -> None:
        os.close(self._fd)


def read_deliveries(directory: Path) -> list[str]:
    """The event id of every recorded handler call; a torn last line (a kill mid-write) is
    dropped."""
    calls: list[str] = []
    for path in sorted(directory.glob("*.log")):
        lines = path.read_text(errors="replace").split("\n")
        calls.extend(line.split(" ", 1)[0] for line in lines[:-1] if line)  # [-1]: no newline
    return calls
