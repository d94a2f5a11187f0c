"""KeyedDispatcher: per-key order, a bound on work in flight, and cancelled records not started.
Handlers wait on gates the test opens, so every interleaving is chosen, not timed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.dispatch import KeyedDispatcher
from pipeline.failures import HandlerCancelled
from pipeline.offsets import Token
from tests.unit.records import record

TP = ("t", 0)


class Harness:
    def __init__(self, limit: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.gates: dict[int, asyncio.Event] = {}
        self.started: list[int] = []
        self.running = 0
        self.most_running = 0
        self.d = KeyedDispatcher(limit, self.call, self.loop)

    async def call(self, event: Any, record: Any) -> Any:
        offset = record.offset()
        self.started.append(offset)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.gates.setdefault(offset, asyncio.Event()).wait()
            if event == "boom":
                raise ValueError("boom")
            return f"ctx-{offset}"
        finally:
            self.running -= 1

    def submit(self, offset: int, key: bytes | None, event: Any = None) -> Token:
        token = Token(offset, 1)
        self.d.submit(record("t", 0, offset, key=key), TP, event, None, token)
        return token

    def open(self, *offsets: int) -> None:
        for offset in offsets:
            self.gates.setdefault(offset, asyncio.Event()).set()
        self.turns()

    def turns(self, n: int = 6) -> None:
        for _ in range(n):
            self.loop.run_until_complete(asyncio.sleep(0))

    def completed(self) -> list[int]:
        return [c.record.offset() for c in self.d.take()]


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness(limit=4)
    yield harness
    harness.loop.run_until_complete(harness.d.cancel_all(1.0))
    harness.loop.close()


def test_same_key_waits_for_its_predecessor_other_keys_do_not(h: Harness) -> None:
    h.submit(0, b"a")
    h.submit(1, b"b")
    h.submit(2, b"a")
    h.turns()
    assert h.started == [0, 1], "a@2 must wait for a@0; b@1 runs beside a@0"
    h.open(2)  # a@2's own gate is open, but a@0 is still running
    assert h.started == [0, 1]
    h.open(0)
    assert h.started == [0, 1, 2]
    h.open(1)
    assert sorted(h.completed()) == [0, 1, 2]
    assert h.d.in_flight == 0


def test_keyless_records_run_concurrently(h: Harness) -> None:
    for offset in range(3):
        h.submit(offset, None)
    h.turns()
    assert h.started == [0, 1, 2]
    assert h.most_running == 3


def test_completion_order_follows_the_handlers_not_the_offsets(h: Harness) -> None:
    h.submit(0, b"a")
    h.submit(1, b"b", event="boom")
    h.turns()
    h.open(1)
    done = h.d.take()
    assert [(c.record.offset(), type(c.error)) for c in done] == [(1, ValueError)]
    h.open(0)
    (c,) = h.d.take()
    assert (c.record.offset(), c.ctx, c.error) == (0, "ctx-0", None)


def test_room_counts_waiting_and_running_records(h: Harness) -> None:
    h.submit(0, b"a")
    h.submit(1, b"a")  # waits for a@0, but takes a slot
    h.submit(2, None)
    assert (h.d.in_flight, h.d.room) == (3, 1)
    h.open(0, 1, 2)
    assert (h.d.in_flight, h.d.room) == (0, 4)


def test_a_cancelled_record_waiting_for_its_key_is_never_started(h: Harness) -> None:
    h.submit(0, b"a")
    later = h.submit(1, b"a")
    h.turns()
    later.cancelled = True  # its partition was rewound
    h.open(0, 1)
    assert h.started == [0]
    assert [(c.record.offset(), c.started) for c in h.d.take()] == [(0, True), (1, False)]
    assert h.d.in_flight == 0


def test_drain_of_some_partitions_and_its_deadline(h: Harness) -> None:
    h.submit(0, None)
    other = Token(5, 1)
    h.d.submit(record("u", 0, 5), ("u", 0), None, None, other)
    h.turns()
    assert h.d.in_flight_for({TP}) == 1
    h.gates[0].set()
    finished = h.loop.run_until_complete(h.d.drain(5.0, {TP}))
    assert finished and h.completed() == [0]
    assert h.loop.run_until_complete(h.d.drain(0.0)) is False, "u@5 is still running"
    h.loop.run_until_complete(h.d.cancel_all(1.0))
    assert h.d.in_flight == 0 and h.completed() == []


def test_settle_returns_as_soon_as_one_handler_completes(h: Harness) -> None:
    h.submit(0, None)
    h.submit(1, None)
    h.turns()
    h.gates[1].set()
    # A long timeout: returning depends on the completion, not on the clock.
    h.loop.run_until_complete(asyncio.wait_for(h.d.settle(60.0), 5.0))
    assert h.completed() == [1]


def test_limit_must_be_positive() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="limit"):
            KeyedDispatcher(0, Harness.call, loop)  # type: ignore[arg-type]
    finally:
        loop.close()


def test_a_handler_raising_cancelled_error_itself_completes_as_a_failure(h: Harness) -> None:
    """Not our cancellation (the task is not being cancelled): a retryable failure, not a
    silent end that would leave the record's offset unfinished forever."""

    async def cancelled_inside(event: Any, record: Any) -> Any:
        raise asyncio.CancelledError()

    d = KeyedDispatcher(2, cancelled_inside, h.loop)
    d.submit(record("t", 0, 0), TP, None, None, Token(0, 1))
    h.loop.run_until_complete(d.drain(5.0))
    (c,) = d.take()
    assert isinstance(c.error, HandlerCancelled) and c.started


def test_cancel_stops_the_tasks_of_some_partitions_only(h: Harness) -> None:
    h.submit(0, None)
    h.d.submit(record("u", 0, 5), ("u", 0), None, None, Token(5, 1))
    h.turns()
    h.loop.run_until_complete(h.d.cancel({("u", 0)}, 1.0))
    assert h.d.in_flight == 1 and h.d.in_flight_for({TP}) == 1
    assert h.d.take() == [], "a task we cancelled reports nothing: its token stays open"
