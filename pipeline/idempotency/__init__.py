"""Idempotency stores: which events a consumer group has already handled.

``open_store(url)`` gives a SQLite store (the default; one file shared by a stage's worker
processes on one machine) or a PostgreSQL one (for production: workers on many machines).
psycopg is imported only when a PostgreSQL store connects.

A store's ``transaction(group, event_id)`` commits a handler's own writes together with the
event's id, so a redelivered event's writes roll back; ``completed``/``mark_completed`` let
the runner skip events already done; ``cleanup`` enforces retention. See ``base.py``.
"""

from pipeline.idempotency.base import (
    DEFAULT_TABLE,
    IdempotencyStore,
    IdempotencyStoreError,
    Transaction,
)
from pipeline.idempotency.postgres import PostgresStore
from pipeline.idempotency.sqlite import SqliteStore
from pipeline.idempotency.urls import open_store

__all__ = [
    "DEFAULT_TABLE",
    "IdempotencyStore",
    "IdempotencyStoreError",
    "PostgresStore",
    "SqliteStore",
    "Transaction",
    "open_store",
]
