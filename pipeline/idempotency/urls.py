"""From a URL to a store.

``sqlite:///relative/path.db`` (relative to the working directory), ``sqlite:////abs/path.db``
(four slashes: an absolute path), ``sqlite:///:memory:`` (private to the store: tests),
``postgresql://user:password@host:port/db?sslmode=require`` (any libpq URI; ``postgres://`` too).
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable

from pipeline.errors import ConfigError
from pipeline.idempotency.base import DEFAULT_TABLE, IdempotencyStore, redact_url
from pipeline.idempotency.postgres import PostgresStore
from pipeline.idempotency.sqlite import SqliteStore

_EXPECTED = "sqlite:///path.db, sqlite:////absolute/path.db or postgresql://user:pw@host:port/db"


def open_store(
    url: str, *, table: str = DEFAULT_TABLE, clock: Callable[[], float] = time.time
) -> IdempotencyStore:
    """The store ``url`` names, not yet connected: call ``open()`` on it.

    Raises ``ConfigError`` for a URL that names no store we have.
    """
    scheme, separator, rest = url.strip().partition("://")
    if not separator:
        raise ConfigError(f"idempotency store URL {redact_url(url)!r} has no scheme: {_EXPECTED}")
    if scheme.lower() == "sqlite":
        return SqliteStore(_sqlite_path(url, rest), table=table, clock=clock)
    if scheme.lower() in ("postgresql", "postgres"):
        _require_psycopg(url)
        return PostgresStore(url.strip(), table=table, clock=clock)
    raise ConfigError(
        f"unknown idempotency store scheme {scheme!r} in {redact_url(url)!r}: expected {_EXPECTED}"
    )


def _require_psycopg(url: str) -> None:
    # psycopg is the [postgres] extra: say so at startup, not at the first event's connect.
    # Looked up, not imported: importing it stays the store's business, at connect time.
    if importlib.util.find_spec("psycopg") is None:
        raise ConfigError(
            f"idempotency store {redact_url(url)!r} needs psycopg, which is not installed: "
            "pip install 'kafka-pipeline[postgres]'"
        )


def _sqlite_path(url: str, rest: str) -> str:
    if not rest.startswith("/") or rest == "/":
        raise ConfigError(
            f"SQLite URL {url!r} names no file (a host is not allowed): expected sqlite:///path.db"
        )
    if "?" in rest:
        raise ConfigError(f"SQLite URL {url!r}: query parameters are not supported")
    return rest[1:]
