"""RAW+ (``bench.contenders.raw_guarded``) commits only what its outputs' acknowledgements
cover: the offset after each partition's contiguous acknowledged inputs, nothing past a gap."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest

from bench.contenders.raw_guarded import GuardedLoop, Pending, _uuid_text


class Consumer:
    def __init__(self) -> None:
        self.commits: list[list[tuple[str, int, int]]] = []

    def commit(self, offsets: Any, asynchronous: bool) -> None:
        self.commits.append([(o.topic, o.partition, o.offset) for o in offsets])


def _loop(pending: dict[tuple[str, int], deque[Pending]]) -> tuple[GuardedLoop, Consumer]:
    loop = object.__new__(GuardedLoop)
    loop.pending, loop.consumer, loop.acked = pending, Consumer(), {}  # type: ignore[assignment]
    return loop, loop.consumer  # type: ignore[return-value]


def test_only_the_contiguous_acknowledged_offsets_are_committed() -> None:
    a = [Pending(o) for o in (10, 11, 12, 13)]
    b = [Pending(o) for o in (5, 6)]
    for p in (a[0], a[1], a[3], b[1]):  # a[2] and b[0] still wait
        p(None, None)
    loop, consumer = _loop({("t", 0): deque(a), ("t", 1): deque(b)})
    loop.commit()
    assert consumer.commits == [[("t", 0, 12)]]
    a[2](None, None)
    b[0](None, None)
    loop.commit()
    assert consumer.commits[-1] == [("t", 0, 14), ("t", 1, 7)]
    loop.commit()  # nothing new: no commit call
    assert len(consumer.commits) == 2


def test_a_refused_delivery_is_not_taken_for_an_acknowledgement() -> None:
    with pytest.raises(RuntimeError, match="delivery failed"):
        Pending(1)("broker down", None)


def test_ids_are_uuid_text() -> None:
    text = _uuid_text(bytes(range(16))).decode()
    assert [len(g) for g in text.split("-")] == [8, 4, 4, 4, 12]
