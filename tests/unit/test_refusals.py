"""Refused outputs, on the memory broker with a fake clock: a permanent refusal dead-letters
the input once, without redoing the records after it; retriable refusals back off longer each
time on their partition and start again from the first delay once it recovers."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from pipeline import Context, RetryPolicy, Stage
from pipeline.backoff import Backoff, Streaks
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong
from tests.unit.memory_rig import Rig

TP = (PINGS.name, 0)
TOO_LARGE = "MSG_SIZE_TOO_LARGE"  # permanent; batch-wide as the Kafka adapter reports it
TIMED_OUT = "_MSG_TIMED_OUT"  # retriable


class Answers(Stage):
    consumes = PINGS
    emits = (PONGS,)
    group = "answers"
    retry = RetryPolicy(ordered_backoff=Backoff(0.5, 4.0, jitter=0))
    calls: list[int] = []

    def handle(self, event: Ping, ctx: Context) -> None:
        Answers.calls.append(event.n)
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="answers"))


class Refusals(Rig):
    """``Answers`` on the memory broker; ``refuse`` makes the broker fail the next outputs."""

    def __init__(self, stage: type[Stage] = Answers) -> None:
        super().__init__(stage)

    def refuse(self, n: int = 1, *, code: str = TOO_LARGE, topic: str = PONGS.name) -> None:
        self.broker.fail_deliveries(topic, n, retriable=code == TIMED_OUT, code=code)

    def hold_s(self) -> float:
        return self.runner._holds.pauses._until[TP] - self.clock.monotonic()

    def reread(self) -> None:
        """Let the partition's hold run out, then step: the broker hands it over again."""
        assert TP in self.consumer.paused, "the partition is not held"
        self.clock.advance(self.hold_s())
        self.step()


@pytest.fixture
def rig() -> Iterator[Refusals]:
    Answers.calls.clear()
    with Refusals() as r:
        yield r


def test_a_permanent_refusal_dead_letters_the_input_once_without_redoing_later_records(
    rig: Refusals,
) -> None:
    """Record 0's output can never be delivered: when the partition is read again record 0 is
    dead-lettered (not handled again) and records 1-2, whose outputs were acknowledged, are
    neither handled nor emitted again. The dead letter counts once the broker has it."""
    rig.refuse()
    for n in range(3):
        rig.ping(n)
    rig.step()
    assert rig.consumer.position(TP) == 0
    assert rig.runner.stats.undeliverable == 1 and rig.runner.stats.retried == 0
    rig.producer.hold = True
    rig.reread()
    assert Answers.calls == [0, 1, 2], "a record was handled again"
    assert [p.n for p in rig.pongs()] == [1, 2]
    assert rig.copies(rig.plan.dlq_topic) == [0]
    assert rig.runner.stats.dead_lettered == 0, "counted before the broker had it"
    assert rig.committed() == {}, "committed before the dead letter was acknowledged"
    rig.producer.hold = False
    rig.step()
    assert rig.runner.stats.dead_lettered == 1
    assert rig.committed() == {TP: 3}
    rig.step()
    assert not rig.runner._refusals.active, "the verdict outlived the commit past it"


def test_a_refusal_for_a_whole_batch_is_checked_with_the_outputs_produced_alone(
    rig: Refusals,
) -> None:
    """MSG_SIZE_TOO_LARGE from the broker may belong to a neighbour in the produce batch:
    the input is handled once more with its outputs flushed alone, and dead-lettered only if
    they are refused again."""
    rig.producer.kafka_batch_wide = True
    rig.refuse(2)
    rig.ping(0)
    rig.ping(1)
    rig.step()  # both refused: the whole produce batch failed
    assert rig.consumer.position(TP) == 0 and rig.runner.stats.undeliverable == 0
    rig.refuse(1)
    rig.reread()  # 0 handled again, its output alone (refused again); 1 after it (delivered)
    assert Answers.calls == [0, 1, 0, 1]
    assert rig.producer.flushes == [5.0, 5.0], "the output was not produced alone"
    assert rig.runner.stats.undeliverable == 1
    assert [p.n for p in rig.pongs()] == [1]
    rig.reread()  # 0 is dead-lettered; 1 was delivered before the rewind: not redone
    assert Answers.calls == [0, 1, 0, 1]
    assert rig.copies(rig.plan.dlq_topic) == [0]
    assert [p.n for p in rig.pongs()] == [1]
    assert rig.committed() == {TP: 2}


class AlwaysFails(Stage):
    consumes = PINGS
    emits = (PONGS,)
    group = "always-fails"
    retry = RetryPolicy(in_process_attempts=1, tiers=(1.0,))
    calls: list[int] = []

    def handle(self, event: Ping, ctx: Context) -> None:
        AlwaysFails.calls.append(event.n)
        raise ConnectionError("the dependency is down")


def test_a_retry_copy_the_broker_always_refuses_ends_in_the_dlq_not_an_endless_loop() -> None:
    """The input fails, its retry copy is refused for the whole batch: it is handled once more
    (the refusal may have been a neighbour's), then dead-lettered, and committed."""
    AlwaysFails.calls.clear()
    with Refusals(AlwaysFails) as rig:
        rig.producer.kafka_batch_wide = True
        rig.broker.refuse_writes(rig.plan.retry_topics[0], code=TOO_LARGE)
        rig.ping(0)
        for _ in range(20):  # far more than it takes: time enough for an endless loop to show
            rig.step()
            rig.clock.advance(1)
        assert AlwaysFails.calls == [0, 0], "handled again without end"
        assert rig.copies(rig.plan.dlq_topic) == [0]
        assert rig.records(rig.plan.retry_topics[0]) == []
        assert rig.committed() == {TP: 1}


def test_retriable_refusals_back_off_longer_each_time_and_reset_on_success(
    rig: Refusals, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "pipeline.runner")
    rig.refuse(3, code=TIMED_OUT)
    rig.ping(0)
    delays = []
    for _ in range(3):
        rig.step()
        delays.append(rig.hold_s())
        rig.clock.advance(delays[-1])
    assert delays == [0.5, 1.0, 2.0]
    assert Answers.calls == [0, 0, 0]
    rig.step()  # delivered now; the partition gets past record 0
    assert [p.n for p in rig.pongs()] == [0]
    assert rig.runner.stats.stalls == 1 and rig.runner.stats.retried == 3
    rig.step()
    assert not rig.runner._refusals.active, "the streak outlived the recovery"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, "logged once per attempt, not once per state change"
    rig.refuse(1, code=TIMED_OUT)
    rig.ping(1)
    rig.step()
    assert rig.hold_s() == 0.5, "the backoff did not start over after the recovery"


def test_a_dead_letter_that_is_refused_leaves_the_input_uncommitted_and_backs_off(
    rig: Refusals,
) -> None:
    """Even a permanent error on the dead letter itself cannot dead-letter it: the input stays
    uncommitted and is retried with a growing backoff."""
    rig.refuse()
    rig.ping(0)
    rig.step()
    rig.broker.refuse_writes(rig.plan.dlq_topic, code=TOO_LARGE)
    rig.reread()  # 0 is dead-lettered: refused
    first = rig.hold_s()
    rig.reread()
    assert rig.hold_s() == 2 * first
    assert rig.runner.stats.dead_lettered == 0 and rig.committed() == {}
    assert Answers.calls == [0], "never handled again, only its dead letter retried"
    rig.broker.refuse_writes(rig.plan.dlq_topic, False)
    rig.clock.advance(10)
    rig.step()
    rig.step()
    assert rig.runner.stats.dead_lettered == 1 and rig.committed() == {TP: 1}
    assert rig.copies(rig.plan.dlq_topic) == [0]


def test_streaks_grow_per_partition_cap_and_end_when_the_partition_gets_past() -> None:
    streaks = Streaks(Backoff(1.0, 4.0, jitter=0))
    a, b = ("t", 0), ("t", 1)
    assert [streaks.failed(a, 5)[1] for _ in range(4)] == [1.0, 2.0, 4.0, 4.0]
    assert streaks.failed(b, 9) == (1, 1.0)
    progress = {a: 5, b: 10}
    assert streaks.recovered(progress.get) == [(b, 1)]
    progress[a] = 6
    assert streaks.recovered(progress.get) == [(a, 4)] and not streaks
