"""Refused outputs, driven through fake ports on a fake clock: a permanent refusal dead-letters
the input once, without redoing the records after it; retriable refusals back off longer each
time on their partition and start again from the first delay once it recovers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from pipeline import Context, RetryPolicy, Settings, Stage
from pipeline.app import Pipeline
from pipeline.backoff import Backoff, Streaks
from pipeline.clock import FakeClock
from pipeline.errors import DeliveryError, KafkaError
from pipeline.runner import StageRunner
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong
from tests.unit.fakes import FakeConsumer, FakeProducer, Record

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
TP = (PINGS.name, 0)


class Answers(Stage):
    consumes = PINGS
    emits = (PONGS,)
    group = "answers"
    retry = RetryPolicy(ordered_backoff=Backoff(0.5, 4.0, jitter=0))
    calls: list[int] = []

    def handle(self, event: Ping, ctx: Context) -> None:
        Answers.calls.append(event.n)
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="answers"))


class Refusing(FakeProducer):
    """Acknowledges on poll (not at once); the outputs to PONGS get the errors queued in
    ``verdicts`` (None: delivered), in order, then are delivered."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[tuple[str, Any]] = []
        self.verdicts: list[KafkaError | None] = []
        self.hold = False  # while True, nothing is acknowledged

    def produce(self, topic: str, value: Any, key: Any, headers: Any, on_delivery: Any) -> None:
        self.produced.append((topic, key))
        self.pending.append((topic, on_delivery))

    def poll(self, timeout_s: float = 0) -> int:
        if self.hold:
            return 0
        pending, self.pending = self.pending, []
        for topic, on_delivery in pending:
            err = self.verdicts.pop(0) if topic == PONGS.name and self.verdicts else None
            on_delivery(err, None)
        return len(pending)

    def flush(self, timeout_s: float) -> int:
        self.flushes.append(timeout_s)
        self.poll()
        return 0


class Rig:
    def __init__(self) -> None:
        Answers.calls.clear()
        self.pipeline = Pipeline.build(Settings(schemas_dir=SCHEMAS), [Answers])
        self.plan = self.pipeline.plans[0]
        self.clock = FakeClock()
        self.consumer, self.producer = FakeConsumer(), Refusing()
        self.runner = StageRunner(
            self.plan, self.consumer, self.producer, self.pipeline.codec,  # type: ignore[arg-type]
            clock=self.clock, commit_interval_s=0,
        )  # fmt: skip
        self.runner.on_assign([TP])

    def records(self, *offsets: int) -> list[Record]:
        binding = self.plan.inputs[PINGS.name]
        encode = self.pipeline.codec.encode
        return [
            Record(PINGS.name, 0, o, encode(Ping(ping_id=f"p{o}", n=o), binding, PINGS.name))
            for o in offsets
        ]

    def step(self, *offsets: int) -> None:
        if offsets:
            self.consumer.batches.append(self.records(*offsets))
        self.runner.step()

    def hold_s(self) -> float:
        return self.runner._holds.pauses._until[TP] - self.clock.monotonic()

    def topics(self) -> list[str]:
        return [t for t, _ in self.producer.produced]

    def close(self) -> None:
        self.runner._invoke.close()


@pytest.fixture
def rig() -> Any:
    r = Rig()
    yield r
    r.close()


def too_large() -> DeliveryError:
    return DeliveryError("delivery to pongs failed: Broker: Message size too large",
                         code="MSG_SIZE_TOO_LARGE", permanent=True)  # fmt: skip


def unavailable() -> DeliveryError:
    return DeliveryError("delivery to pongs failed: timed out", code="_MSG_TIMED_OUT",
                         retriable=True)  # fmt: skip


def test_a_permanent_refusal_dead_letters_the_input_once_without_redoing_later_records(
    rig: Rig,
) -> None:
    """Record 0's output can never be delivered: when the partition is read again record 0 is
    dead-lettered (not handled again) and records 1-2, whose outputs were acknowledged, are
    neither handled nor emitted again. The dead letter counts once the broker has it."""
    rig.producer.verdicts = [too_large()]
    rig.step(0, 1, 2)
    assert rig.consumer.seeks[-1] == (TP, 0)
    assert rig.runner.stats.undeliverable == 1 and rig.runner.stats.retried == 0
    rig.producer.hold = True
    rig.step(0, 1, 2)
    assert Answers.calls == [0, 1, 2], "a record was handled again"
    assert rig.topics() == [PONGS.name] * 3 + [rig.plan.dlq_topic]
    assert rig.runner.stats.dead_lettered == 0, "counted before the broker had it"
    rig.producer.hold = False
    rig.step()
    assert rig.runner.stats.dead_lettered == 1
    assert rig.consumer.commits[-1] == {TP: 3}
    rig.step()
    assert not rig.runner._refusals.active, "the verdict outlived the commit past it"


def test_a_refusal_for_a_whole_batch_is_checked_with_the_outputs_produced_alone(
    rig: Rig,
) -> None:
    """MSG_SIZE_TOO_LARGE from the broker may belong to a neighbour in the produce batch:
    the input is handled once more with its outputs flushed alone, and dead-lettered only if
    they are refused again."""
    rig.producer.verdicts = [_batch_wide(), _batch_wide()]
    rig.step(0, 1)  # both refused: the whole produce batch failed
    assert rig.consumer.seeks[-1] == (TP, 0) and rig.runner.stats.undeliverable == 0
    rig.producer.verdicts = [_batch_wide()]
    rig.step(0, 1)  # 0 handled again, its output alone (refused again); 1 after it (delivered)
    assert Answers.calls == [0, 1, 0, 1]
    assert rig.producer.flushes == [5.0, 5.0], "the output was not produced alone"
    assert rig.runner.stats.undeliverable == 1
    rig.step(0, 1)  # 0 is dead-lettered; 1 was delivered before the rewind: not redone
    assert Answers.calls == [0, 1, 0, 1]
    assert rig.topics().count(rig.plan.dlq_topic) == 1
    assert rig.consumer.commits[-1] == {TP: 2}


class AlwaysFails(Stage):
    consumes = PINGS
    emits = (PONGS,)
    group = "always-fails"
    retry = RetryPolicy(in_process_attempts=1, tiers=(1.0,))
    calls: list[int] = []

    def handle(self, event: Ping, ctx: Context) -> None:
        AlwaysFails.calls.append(event.n)
        raise ConnectionError("the dependency is down")


class RefusingRetryCopies(Refusing):
    """Every copy to a retry topic is refused as too large for its produce batch."""

    def poll(self, timeout_s: float = 0) -> int:
        pending, self.pending = self.pending, []
        for topic, on_delivery in pending:
            on_delivery(_batch_wide() if ".retry." in topic else None, None)
        return len(pending)


def test_a_retry_copy_the_broker_always_refuses_ends_in_the_dlq_not_an_endless_loop() -> None:
    """The input fails, its retry copy is refused for the whole batch: it is handled once more
    (the refusal may have been a neighbour's), then dead-lettered, and committed."""
    AlwaysFails.calls.clear()
    pipeline = Pipeline.build(Settings(schemas_dir=SCHEMAS), [AlwaysFails])
    plan = pipeline.plans[0]
    consumer, producer = FakeConsumer(), RefusingRetryCopies()
    runner = StageRunner(plan, consumer, producer, pipeline.codec,  # type: ignore[arg-type]
                         clock=FakeClock(), commit_interval_s=0)  # fmt: skip
    runner.on_assign([TP])
    record = Record(PINGS.name, 0, 0, pipeline.codec.encode(
        Ping(ping_id="p0", n=0), plan.inputs[PINGS.name], PINGS.name))  # fmt: skip
    seeks = -1  # the fake consumer ignores seeks: feed the record again after each one
    try:
        for _ in range(8):
            if len(consumer.seeks) != seeks:
                seeks = len(consumer.seeks)
                consumer.batches.append([record])
            runner.step()
    finally:
        runner._invoke.close()
    assert AlwaysFails.calls == [0, 0], "handled again without end"
    assert [t for t, _ in producer.produced].count(plan.dlq_topic) == 1
    assert consumer.commits[-1] == {TP: 1}


def _batch_wide() -> DeliveryError:
    return DeliveryError("Broker: Message size too large", code="MSG_SIZE_TOO_LARGE",
                         permanent=True, batch_wide=True)  # fmt: skip


def test_retriable_refusals_back_off_longer_each_time_and_reset_on_success(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "pipeline.runner")
    rig.producer.verdicts = [unavailable(), unavailable(), unavailable(), None]
    delays = []
    for _ in range(3):
        rig.step(0)
        delays.append(rig.hold_s())
        rig.clock.advance(delays[-1])
    assert delays == [0.5, 1.0, 2.0]
    rig.step(0)  # delivered now; the partition gets past record 0
    assert rig.runner.stats.stalls == 1 and rig.runner.stats.retried == 3
    rig.step()
    assert not rig.runner._refusals.active, "the streak outlived the recovery"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, "logged once per attempt, not once per state change"
    rig.producer.verdicts = [unavailable()]
    rig.step(1)
    assert rig.hold_s() == 0.5, "the backoff did not start over after the recovery"


def test_a_dead_letter_that_is_refused_leaves_the_input_uncommitted_and_backs_off(
    rig: Rig,
) -> None:
    """Even a permanent error on the dead letter itself cannot dead-letter it: the input stays
    uncommitted and is retried with a growing backoff."""
    rig.producer.verdicts = [too_large()]
    rig.step(0)
    original = rig.producer.poll

    def dlq_refused(timeout_s: float = 0) -> int:
        pending, rig.producer.pending = rig.producer.pending, []
        for _topic, on_delivery in pending:
            on_delivery(too_large(), None)
        return len(pending)

    rig.producer.poll = dlq_refused  # type: ignore[method-assign]
    rig.step(0)
    first = rig.hold_s()
    rig.clock.advance(first)
    rig.step(0)
    assert rig.hold_s() == 2 * first
    assert rig.runner.stats.dead_lettered == 0 and {TP: 1} not in rig.consumer.commits
    rig.producer.poll = original  # type: ignore[method-assign]
    rig.clock.advance(10)
    rig.step(0)
    rig.step()
    assert rig.runner.stats.dead_lettered == 1 and rig.consumer.commits[-1] == {TP: 1}


def test_streaks_grow_per_partition_cap_and_end_when_the_partition_gets_past() -> None:
    streaks = Streaks(Backoff(1.0, 4.0, jitter=0))
    a, b = ("t", 0), ("t", 1)
    assert [streaks.failed(a, 5)[1] for _ in range(4)] == [1.0, 2.0, 4.0, 4.0]
    assert streaks.failed(b, 9) == (1, 1.0)
    progress = {a: 5, b: 10}
    assert streaks.recovered(progress.get) == [(b, 1)]
    progress[a] = 6
    assert streaks.recovered(progress.get) == [(a, 4)] and not streaks
