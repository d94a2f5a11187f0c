"""A record made by hand, for unit tests of a part that only reads one (a dispatcher, an
invoker): the memory broker's own ``Record``, as a consumer would hand it out, never stored."""

from __future__ import annotations

from pipeline.testing import Record

WALL_MS = 1_700_000_000_000  # pipeline.testing.FakeClock's start


def record(
    topic: str,
    partition: int,
    offset: int,
    value: bytes | None = b"",
    key: bytes | None = None,
    headers: list[tuple[str, bytes | None]] | None = None,
) -> Record:
    return Record((topic, partition), offset, key, value, headers, WALL_MS)
