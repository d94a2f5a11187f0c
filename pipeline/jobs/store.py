"""``JobStore``: the local materialised view of the jobs topic (SQLite, one file).

One table of jobs (the latest accepted entry of each, as JSON, plus the columns lookups
filter on) and one of read positions (the next offset of each partition of the jobs topic).
A batch of records is applied in one transaction together with the positions it reaches, so
after a crash the view resumes exactly where its rows are. The file is in WAL mode: lookups
from other processes (the CLI, a web app's workers) read while the view writes, and a lookup
is one primary-key read.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.jobs.state import Job, decode, merge

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    stage TEXT,
    state TEXT NOT NULL,
    updated_at REAL,
    expires_at REAL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_stage_state ON jobs (stage, state, updated_at);
CREATE INDEX IF NOT EXISTS jobs_by_expiry ON jobs (expires_at);
CREATE TABLE IF NOT EXISTS positions (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
"""
BUSY_TIMEOUT_S = 5.0  # a lookup waits this long at most for the view's write to end
# (key, value or None for a tombstone, topic, partition, offset) of one jobs-topic record
Entry = tuple[bytes | None, bytes | None, str, int, int]


class JobStoreError(PipelineError):
    """The job view's store cannot be opened or read."""


class NoJobView(JobStoreError):
    """No store where lookups look: no view has run with these settings."""


class JobStore:
    """Thread-safe: one connection, used under a lock (lookups are a few microseconds)."""

    def __init__(self, path: Path | str, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise NoJobView(
                f"no job view at {self.path}: start one (`pipeline job-view`, or a JobView in "
                "your process) or set PIPELINE_JOBS_STORE to where it keeps its store"
            )
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S,
                                       check_same_thread=False, isolation_level=None)  # fmt: skip
            if create:  # the view's own: readers find the file in WAL mode already
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise JobStoreError(f"cannot open the job store {self.path}: {exc}") from None
        self._lock = threading.Lock()
        self.rejected = 0  # entries dropped as behind the held one, or unreadable

    # -- reads -------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        rows = self._query("SELECT body FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0][0]) if rows else None

    def find(
        self, stage: str | None = None, state: str | None = None, limit: int = 20
    ) -> list[Job]:
        """The most recently updated jobs, newest first, of ``stage`` and in ``state``."""
        where, params = _where(stage, state)
        sql = f"SELECT body FROM jobs{where}"
        sql += " ORDER BY updated_at DESC LIMIT ?"
        return [_job(body) for (body,) in self._query(sql, (*params, limit))]

    def count(self, stage: str | None = None, state: str | None = None) -> int:
        where, params = _where(stage, state)
        return int(self._query(f"SELECT COUNT(*) FROM jobs{where}", params)[0][0])

    def positions(self, topic: str) -> dict[int, int]:
        rows = self._query("SELECT partition, next_offset FROM positions WHERE topic = ?", (topic,))
        return {int(p): int(o) for p, o in rows}

    def expired(self, now: float, limit: int = 1000) -> list[str]:
        rows = self._query(
            "SELECT id FROM jobs WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?",
            (now, limit),
        )
        return [job_id for (job_id,) in rows]

    # -- writes (the view) -------------------------------------------------------------------
    def apply(self, entries: Iterable[Entry]) -> int:
        """Apply jobs-topic records in order, and move the positions past them, in one
        transaction; returns how many changed a job."""
        changed = 0
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                marks: dict[tuple[str, int], int] = {}
                for key, value, topic, partition, offset in entries:
                    marks[(topic, partition)] = offset + 1
                    changed += self._apply_one(key, value)
                db.executemany(
                    "INSERT INTO positions (topic, partition, next_offset) VALUES (?, ?, ?) ON "
                    "CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
                    [(t, p, o) for (t, p), o in marks.items()],
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        return changed

    def delete(self, job_ids: Sequence[str]) -> None:
        with self._lock:
            self._db.executemany("DELETE FROM jobs WHERE id = ?", [(i,) for i in job_ids])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _apply_one(self, key: bytes | None, value: bytes | None) -> int:
        if key is None:
            self.rejected += 1
            return 0
        job_id = key.decode(errors="replace")
        if value is None:  # a tombstone: retention removed the job
            return self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount
        try:
            new = decode(value)
        except (ValueError, TypeError):
            self.rejected += 1
            return 0
        row = self._db.execute("SELECT body FROM jobs WHERE id = ?", (job_id,)).fetchone()
        merged = merge(_job(row[0]) if row else None, new)
        if merged is None:
            self.rejected += 1
            return 0
        self._db.execute(
            "INSERT OR REPLACE INTO jobs (id, stage, state, updated_at, expires_at, body) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (job_id, merged.stage, merged.state, merged.updated_at, merged.expires_at,
             json.dumps(merged.to_dict(), separators=(",", ":"))),
        )  # fmt: skip
        return 1

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise JobStoreError(f"cannot read the job store {self.path}: {exc}") from None


def _where(stage: str | None, state: str | None) -> tuple[str, tuple[str, ...]]:
    clauses = [f"{name} = ?" for name, v in (("stage", stage), ("state", state)) if v is not None]
    params = tuple(v for v in (stage, state) if v is not None)
    return (f" WHERE {' AND '.join(clauses)}" if clauses else ""), params


def _job(body: str) -> Job:
    return decode(body.encode())
