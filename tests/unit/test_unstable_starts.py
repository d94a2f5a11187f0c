"""Partitions whose committed offset cannot be read stably are held and read again with a
backoff; none starts from the reset policy unless it has genuinely no committed offset."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, OFFSET_INVALID, KafkaError, KafkaException

from pipeline.clock import FakeClock
from pipeline.kafka.starts import StableStarts
from pipeline.unstable import LOG_EVERY_S, StartHolds

A, B = ("t", 0), ("t", 1)
UNSTABLE = KafkaError(KafkaError.UNSTABLE_OFFSET_COMMIT)


def test_a_hold_is_read_again_with_a_doubling_capped_backoff() -> None:
    clock = FakeClock()
    holds = StartHolds("g", clock.monotonic, first_retry_s=0.5, max_retry_s=2.0)
    holds.hold([A], "unstable")
    assert holds.due() == [] and holds.next_due_in() == 0.5
    clock.advance(0.5)
    assert holds.due() == [A]
    waits = []
    for _ in range(4):
        holds.failed(A, "unstable")
        waits.append(holds.next_due_in())
        clock.advance(waits[-1] or 0)
    assert waits == [1.0, 2.0, 2.0, 2.0]
    holds.release(A, 7)
    assert not holds and holds.due() == [] and holds.next_due_in() is None
    assert holds.total == 1


def test_a_hold_warns_then_logs_error_with_coordinates_and_remedy_once_it_lasts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    holds = StartHolds("g", clock.monotonic)
    with caplog.at_level(logging.WARNING, "pipeline.unstable"):
        holds.hold([A, A], "UNSTABLE_OFFSET_COMMIT")  # the same partition twice: one hold
        clock.advance(1)
        holds.failed(A, "UNSTABLE_OFFSET_COMMIT")  # a killed worker's transaction: expected
    assert [r.levelname for r in caplog.records] == ["WARNING"] and holds.total == 1
    assert "t[0]" in caplog.records[0].getMessage()
    clock.advance(LOG_EVERY_S)
    with caplog.at_level(logging.WARNING, "pipeline.unstable"):
        holds.failed(A, "UNSTABLE_OFFSET_COMMIT")
        clock.advance(1)
        holds.failed(A, "UNSTABLE_OFFSET_COMMIT")  # not again until another LOG_EVERY_S
    assert [r.levelname for r in caplog.records] == ["WARNING", "ERROR"]
    line = caplog.records[1].getMessage()
    assert "t[0]" in line and "still held" in line and "find-hanging" in line and "abort" in line


def test_a_revoked_hold_is_forgotten() -> None:
    holds = StartHolds("g", FakeClock().monotonic)
    holds.hold([A, B], "timed out")
    holds.forget([A])
    assert holds.held == [B] and A not in holds and B in holds


class StubConsumer:
    """confluent-kafka's Consumer, as far as StableStarts uses it."""

    def __init__(self) -> None:
        self.answers: list[Any] = []  # per committed() call: offsets by tp, or an exception
        self.assigned: list[tuple[str, int, int]] = []
        self.paused: set[tuple[str, int]] = set()
        self.seeks: list[tuple[str, int, int]] = []

    def committed(self, parts: list[Any], timeout: float) -> list[Any]:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        out = []
        for p in parts:
            value = answer[(p.topic, p.partition)]
            failed = isinstance(value, KafkaError)
            out.append(SimpleNamespace(topic=p.topic, partition=p.partition,
                                       offset=OFFSET_INVALID if failed else value,
                                       error=value if failed else None))  # fmt: skip
        return out

    def incremental_assign(self, parts: list[Any]) -> None:
        self.assigned += [(p.topic, p.partition, p.offset) for p in parts]

    def pause(self, parts: list[Any]) -> None:
        self.paused |= {(p.topic, p.partition) for p in parts}

    def resume(self, parts: list[Any]) -> None:
        self.paused -= {(p.topic, p.partition) for p in parts}

    def seek(self, part: Any) -> None:
        self.seeks.append((part.topic, part.partition, part.offset))


CONFIG = {"group.id": "g", "partition.assignment.strategy": "cooperative-sticky",
          "auto.offset.reset": "earliest"}  # fmt: skip


def test_assign_starts_at_the_stable_offsets_and_holds_the_unstable_one() -> None:
    consumer, clock = StubConsumer(), FakeClock()
    starts = StableStarts(consumer, CONFIG, clock.monotonic)
    consumer.answers = [{A: 42, B: UNSTABLE}]
    starts.assign([A, B])
    # A at its committed offset; B explicit too (librdkafka must not query and reset it).
    assert consumer.assigned == [("t", 0, 42), ("t", 1, OFFSET_BEGINNING)]
    assert consumer.paused == {B} and starts.holds.held == [B]
    consumer.answers = [{B: UNSTABLE}]
    clock.advance(0.5)
    starts.retry()
    assert consumer.paused == {B} and consumer.seeks == []
    consumer.answers = [{B: 17}]
    clock.advance(1.0)
    starts.retry()
    assert consumer.seeks == [("t", 1, 17)] and consumer.paused == set()
    assert not starts.holds


def test_a_failed_read_of_the_whole_assignment_holds_it_all() -> None:
    consumer, clock = StubConsumer(), FakeClock()
    starts = StableStarts(consumer, CONFIG, clock.monotonic)
    consumer.answers = [KafkaException(KafkaError(KafkaError._TIMED_OUT))]
    starts.assign([A, B])
    assert consumer.paused == {A, B} and starts.holds.held == [A, B]


def test_partitions_held_after_an_abort_start_again_at_their_committed_offsets() -> None:
    """After an aborted transaction whose committed offsets could not be read (the broker
    restarting): paused, read again with the backoff, and sought there once readable."""
    consumer, clock = StubConsumer(), FakeClock()
    starts = StableStarts(consumer, CONFIG, clock.monotonic)
    consumer.answers = [{A: 5, B: 9}]
    starts.assign([A, B])
    starts.hold([A, B], "Failed to get committed offsets: Local: Timed out")
    assert consumer.paused == {A, B} and starts.holds.held == [A, B]
    consumer.answers = [KafkaException(KafkaError(KafkaError._TIMED_OUT))]
    clock.advance(0.5)
    starts.retry()
    assert consumer.seeks == [] and consumer.paused == {A, B}
    consumer.answers = [{A: 6, B: 9}]
    clock.advance(1.0)
    starts.retry()
    assert sorted(consumer.seeks) == [("t", 0, 6), ("t", 1, 9)] and consumer.paused == set()


def test_no_committed_offset_at_all_starts_from_the_reset_policy() -> None:
    consumer, clock = StubConsumer(), FakeClock()
    starts = StableStarts(consumer, CONFIG, clock.monotonic)
    consumer.answers = [{A: OFFSET_INVALID}]
    starts.assign([A])
    assert consumer.assigned == [("t", 0, OFFSET_INVALID)] and not starts.holds
    # ... and a held partition found to have none once read starts there too
    consumer.answers = [{B: UNSTABLE}, {B: OFFSET_INVALID}]
    starts.assign([B])
    clock.advance(0.5)
    starts.retry()
    assert consumer.seeks == [("t", 1, OFFSET_BEGINNING)]


def test_a_released_partition_the_caller_paused_stays_paused() -> None:
    consumer, clock = StubConsumer(), FakeClock()
    starts = StableStarts(consumer, CONFIG, clock.monotonic)
    consumer.answers = [{A: UNSTABLE}, {A: 3}]
    starts.assign([A])
    starts.caller_paused.add(A)  # the breaker opened meanwhile
    clock.advance(0.5)
    starts.retry()
    assert consumer.seeks == [("t", 0, 3)] and consumer.paused == {A}


def test_records_of_held_partitions_are_not_delivered() -> None:
    consumer, clock = StubConsumer(), FakeClock()
    starts = StableStarts(consumer, CONFIG, clock.monotonic)
    consumer.answers = [{A: 1, B: UNSTABLE}]
    starts.assign([A, B])

    class Record:
        def __init__(self, tp: tuple[str, int]) -> None:
            self.tp = tp

        def topic(self) -> str:
            return self.tp[0]

        def partition(self) -> int:
            return self.tp[1]

    records = [Record(A), Record(B), Record(A)]
    assert [r.tp for r in starts.deliverable(records)] == [A, A]


def test_committed_raises_for_an_unreadable_partition_and_leaves_held_ones_out() -> None:
    """Taking an unstable partition's OFFSET_INVALID for "no offset" would rewind it to the
    beginning after an abort (``holds.rewind_to_committed``)."""
    from pipeline.errors import KafkaError as OurKafkaError
    from pipeline.kafka.clients import KafkaConsumer

    consumer = KafkaConsumer({"group.id": "g", "bootstrap.servers": ""})
    real = consumer._consumer
    stub = StubConsumer()
    consumer._consumer = stub  # type: ignore[assignment]
    consumer.starts = StableStarts(stub, CONFIG, FakeClock().monotonic)
    try:
        stub.answers = [{A: 4, B: UNSTABLE}]
        with pytest.raises(OurKafkaError, match=r"t\[1\]"):
            consumer.committed([A, B])
        consumer.starts.holds.hold([B], "unstable")
        stub.answers = [{A: 4}]
        assert consumer.committed([A, B]) == {A: 4}  # B not asked: its seek is ignored
        consumer.seek(B, 0)
        consumer.resume([B])
        assert stub.seeks == [] and B not in consumer.starts.caller_paused
    finally:
        real.close()


def test_many_held_partitions_are_read_again_in_one_call_per_step() -> None:
    """Twenty partitions held by one hanging transaction: each step makes one bounded read of
    them all, not one per partition (that blocked the loop 1.2 s a step, healthy ones too)."""
    consumer, clock = StubConsumer(), FakeClock()
    starts = StableStarts(consumer, CONFIG, clock.monotonic)
    held = [("t", p) for p in range(20)]
    consumer.answers = [dict.fromkeys(held, UNSTABLE)]
    starts.assign(held)
    calls: list[int] = []
    committed = consumer.committed

    def counted(parts: list[Any], timeout: float) -> list[Any]:
        calls.append(len(parts))
        return committed(parts, timeout)

    consumer.committed = counted  # type: ignore[method-assign]
    consumer.answers = [dict.fromkeys(held, UNSTABLE)]
    clock.advance(0.5)
    starts.retry()
    assert calls == [20] and len(starts.holds.held) == 20
    starts.retry()  # none due again yet: no read at all
    assert calls == [20]
    consumer.answers = [dict.fromkeys(held, 5)]
    clock.advance(1.0)
    starts.retry()
    assert calls == [20, 20] and not starts.holds and consumer.paused == set()
