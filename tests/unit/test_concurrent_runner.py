"""The concurrent consume loop, on the memory broker with a fake clock (no Kafka): handlers wait
on gates the test opens, so completions happen in an order the test chooses."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from pipeline import BreakerPolicy, Context, RetryPolicy, Stage
from pipeline import keyed as cr
from pipeline.breaker import State
from pipeline.keyed import KeyedExecutor
from pipeline.ports import TopicPartition
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong
from tests.unit.memory_rig import AskingConsumer, Rig, key_for

TP = (PINGS.name, 0)


class Gated(Stage):
    consumes = PINGS
    emits = (PONGS,)
    group = "gated"
    concurrency = 3
    retry = RetryPolicy(in_process_attempts=1)
    gates: ClassVar[dict[int, asyncio.Event]] = {}
    started: ClassVar[list[int]] = []
    running: ClassVar[list[int]] = [0, 0]  # now, most
    all_open: ClassVar[bool] = False  # at the end of a test: no gate holds a handler

    async def handle(self, event: Ping, ctx: Context) -> None:
        self.started.append(event.n)
        self.running[0] += 1
        self.running[1] = max(self.running)
        try:
            if not self.all_open:
                await self.gates.setdefault(event.n, asyncio.Event()).wait()
        finally:
            self.running[0] -= 1
        if event.ping_id.startswith("fail"):
            raise ConnectionError("remote down")
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="t"))


class Loop(Rig):
    """``Gated`` (or ``stage``) on the memory broker; ``close`` opens every gate first, so the
    graceful shutdown has nothing to wait for."""

    def __init__(self, stage: type[Stage] | None = None, **kwargs: Any) -> None:
        Gated.gates.clear()
        Gated.started.clear()
        Gated.running[:] = [0, 0]
        Gated.all_open = False
        super().__init__(stage or Gated, batch_timeout_s=0.01, **kwargs)

    def publish_pings(self, *specs: tuple[int, bytes | None]) -> None:
        """``(n, key)``: ping n (a failing one for key b"fail"), at offset n."""
        for n, key in specs:
            self.ping(n, key=key, ping_id=f"fail{n}" if key == b"fail" else f"p{n}")

    def open(self, *ns: int) -> None:
        for n in ns:
            Gated.gates.setdefault(n, asyncio.Event()).set()

    def committed_offset(self) -> int | None:
        return self.committed().get(TP)

    @property
    def executor(self) -> KeyedExecutor:
        executor = self.runner._executor
        assert isinstance(executor, KeyedExecutor)
        return executor

    def close(self) -> None:
        Gated.all_open = True
        self.open(*Gated.gates)
        super().close()


@pytest.fixture
def loop() -> Iterator[Loop]:
    with Loop() as harness:
        yield harness


def test_commits_stop_at_the_first_unfinished_record(loop: Loop) -> None:
    loop.publish_pings((0, b"a"), (1, b"b"), (2, b"c"))
    loop.step()
    assert sorted(Gated.started) == [0, 1, 2]
    loop.open(2, 1)
    loop.step(2)
    assert sorted(p.n for p in loop.pongs()) == [1, 2], "finished records emit at once"
    assert loop.committed_offset() is None, "offset 0 is unfinished: nothing may be committed"
    loop.open(0)
    loop.step(2)
    assert loop.committed_offset() == 3


def test_work_in_flight_is_bounded_by_concurrency(loop: Loop) -> None:
    loop.publish_pings(*((n, bytes([n])) for n in range(7)))
    loop.step(3)
    assert Gated.started == [0, 1, 2]
    assert loop.consumer.asked[0] == 3 and set(loop.consumer.asked[1:]) <= {0}, (
        "a full stage does not fetch"
    )
    loop.open(1)
    loop.step(2)
    assert Gated.started == [0, 1, 2, 3]
    loop.open(*range(7))
    loop.step(6)
    assert sorted(Gated.started) == list(range(7))
    assert Gated.running[1] == 3
    assert loop.committed_offset() == 7


def test_same_key_records_run_in_offset_order(loop: Loop) -> None:
    loop.publish_pings((0, b"k"), (1, b"k"), (2, b"other"))
    loop.step()
    assert Gated.started == [0, 2]
    loop.open(1)
    loop.step(2)
    assert Gated.started == [0, 2], "k@1 waits for k@0 even though its own gate is open"
    loop.open(0, 2)
    loop.step(3)
    assert Gated.started == [0, 2, 1]
    of_k = [r for r in loop.records(PONGS.name) if r.key() == b"k"]
    assert [pong.n for pong in loop.pongs() if pong.n in (0, 1)] == [0, 1]
    assert len(of_k) == 2


def test_a_failure_goes_to_the_retry_topic_through_the_records_token(loop: Loop) -> None:
    loop.publish_pings((0, b"a"), (1, b"fail"), (2, b"c"))
    loop.step()
    loop.open(0, 1, 2)
    loop.step(3)
    assert sorted(p.n for p in loop.pongs()) == [0, 2]
    assert loop.copies(loop.plan.retry_topics[0]) == [1]
    assert loop.copies(loop.plan.retry_topics[1]) == []
    assert loop.committed_offset() == 3, "the retry copy was acknowledged: the input is done"


class Overfilling(AskingConsumer):
    """Returns whole batches whatever max_records says (as a main plus retry consumer can)."""

    def consume(self, max_records: int, timeout_s: float) -> Any:
        return super().consume(100, timeout_s)


def test_records_beyond_the_free_slots_are_handed_back() -> None:
    with Loop(consumer=Overfilling) as h:
        h.publish_pings(*((n, bytes([n])) for n in range(5)))
        h.step()
        assert Gated.started == [0, 1, 2]
        assert h.consumer.position(TP) == 3, "offsets 3 and 4 must be read again"
        h.open(*range(5))
        h.step()
        assert h.committed_offset() == 3, "nothing past the handed-back records is committed"
        h.step(3)
        assert Gated.started == [0, 1, 2, 3, 4], "each record ran once: 3 and 4 after the seek"
        assert h.committed_offset() == 5


def test_a_stage_saturated_for_long_pauses_its_partitions_then_resumes(loop: Loop) -> None:
    loop.publish_pings((0, b"a"), (1, b"b"), (2, b"c"))
    loop.step(2)
    assert loop.consumer.paused == [], "a short saturation only stops fetching"
    loop.clock.advance(cr.SATURATED_PAUSE_S + 0.1)
    loop.step()
    assert TP in loop.consumer.paused
    loop.open(0)
    loop.step(2)
    assert TP not in loop.consumer.paused, "resumed once a slot is free"


def test_a_hold_survives_the_end_of_backpressure(loop: Loop) -> None:
    loop.publish_pings((0, b"a"), (1, b"b"), (2, b"c"))
    loop.step()
    loop.clock.advance(cr.SATURATED_PAUSE_S + 0.1)
    loop.step()
    loop.runner._holds.rewind(TP, 3, 30.0)  # e.g. a retry not due for 30 s
    loop.open(0)
    loop.step(2)
    assert TP in loop.consumer.paused, "the hold is not over: backpressure must not resume it"


def test_revoke_waits_for_handlers_in_flight_and_commits_them() -> None:
    """The handlers are still in flight when a second member takes a partition: the revoke
    (inside consume) lets that partition's handler finish, waits for its output and commits
    it, so the new owner does not redo it."""
    with Loop(partitions=2, commit_interval_s=60) as h:
        a, b = (PINGS.name, 0), (PINGS.name, 1)
        h.ping(0, key=key_for(0, 2))
        h.ping(1, key=key_for(1, 2))
        h.step()  # dispatched; the handlers wait on their gates
        assert sorted(Gated.started) == [0, 1] and h.pongs() == []
        h.open(0, 1)  # they may finish now, but only while the runner drives them
        other = h.broker.consumer({"group.id": h.plan.group})
        other.subscribe(h.plan.subscriptions, Ignoring())
        h.step()  # a slot is free: consume runs, and the revoke with it
        moved = {a, b} - set(h.consumer.assignment)
        assert moved, "the join moved no input partition"
        # Ping n is at offset 0 of partition n.
        assert {p.n for p in h.pongs()} >= {tp[1] for tp in moved}, (
            "the revoked partitions' handlers finished"
        )
        committed = h.committed()
        assert all(committed.get(tp) == 1 for tp in moved), "and were committed before moving"
        other.close()


class Ignoring:
    def on_assign(self, partitions: list[TopicPartition]) -> None: ...
    def on_revoke(self, partitions: list[TopicPartition]) -> None: ...
    def on_lost(self, partitions: list[TopicPartition]) -> None: ...


def test_shutdown_cancels_handlers_past_the_deadline_and_commits_only_finished(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Loop(shutdown_timeout_s=0.05)
    h.publish_pings((0, b"a"), (1, b"b"))
    h.step()
    h.open(0)
    with caplog.at_level(logging.WARNING, logger="pipeline.runner"):
        Rig.close(h)  # the graceful shutdown, with offset 1's gate still closed
    assert h.committed_offset() == 1, "offset 1 never finished: it stays uncommitted"
    assert "1 handlers still running at shutdown" in caplog.text
    assert h.executor.loop.is_closed()
    assert Gated.started == [0, 1] and [p.n for p in h.pongs()] == [0]


class Probed(Gated):
    """Gated, with a breaker that opens on one failure; ``fail…`` pings fail only once."""

    group = "probed"
    breaker = BreakerPolicy(failure_threshold=1, cooldown_s=5)
    failed: ClassVar[set[int]] = set()

    async def handle(self, event: Ping, ctx: Context) -> None:
        if event.ping_id.startswith("fail") and event.n not in self.failed:
            self.failed.add(event.n)
            await self.gates.setdefault(event.n, asyncio.Event()).wait()
            raise ConnectionError("remote down")
        await super().handle(Ping(ping_id=f"p{event.n}", n=event.n), ctx)


def test_the_breaker_probe_runs_alone_and_is_released_when_its_partition_is_lost() -> None:
    """The failure that opened the breaker is held and read again after the cooldown: it is
    the probe, and nothing else is fetched while it runs. The member then crashes out of the
    group: the lost probe is released and its handler cancelled."""
    Probed.failed.clear()
    with Loop(stage=Probed) as h:
        breaker = h.runner._breaker
        assert breaker is not None
        h.publish_pings((0, b"fail"))
        h.step()
        h.open(0)
        h.step(2)
        assert breaker.state is State.OPEN and TP in h.consumer.paused
        assert h.consumer.position(TP) == 0, "held from the failure"
        h.publish_pings((1, b"b"))
        h.clock.advance(6)  # past the cooldown: the next record is the probe
        Gated.gates.clear()
        h.step()
        assert breaker.state is State.HALF_OPEN and Gated.started == [0]
        asked = len(h.consumer.asked)
        h.step(3)
        assert len(h.consumer.asked) == asked, "nothing is fetched while the probe runs"
        h.broker.crash(h.consumer)
        # A stage with no room serves its group (consume) once it has been full that long.
        h.clock.advance(cr.SATURATED_PAUSE_S + 0.1)
        h.step()  # consume reports the partition lost
        assert breaker.allow(), "the lost probe was released: the next record may probe"
        assert h.executor.dispatcher.in_flight == 0, "the lost partition's handler was cancelled"


def test_lost_partitions_handlers_are_cancelled_and_report_nothing(loop: Loop) -> None:
    loop.publish_pings((0, b"a"), (1, b"b"))
    loop.step()
    loop.broker.crash(loop.consumer)
    loop.step()  # consume reports the partition lost
    assert loop.executor.dispatcher.in_flight == 0
    loop.open(0, 1)
    loop.step(2)
    assert loop.pongs() == [] and loop.committed_offset() is None


def test_a_refused_output_rewinds_without_rerunning_later_records_that_finished(
    loop: Loop,
) -> None:
    """Records 1 and 2 (other keys) finish, outputs acknowledged, before record 0's output is
    refused: the partition is re-read from 0 and only record 0 runs again."""
    loop.publish_pings((0, b"a"), (1, b"b"), (2, b"c"))
    loop.step()
    loop.open(1, 2)
    loop.step(2)
    assert sorted(p.n for p in loop.pongs()) == [1, 2]
    loop.broker.fail_deliveries(PONGS.name, 1, retriable=True)
    loop.open(0)
    loop.step(2)
    assert loop.consumer.position(TP) == 0 and TP in loop.consumer.paused
    loop.clock.advance(5)
    loop.step(3)
    assert Gated.started == [0, 1, 2, 0]
    assert sorted(p.n for p in loop.pongs()) == [0, 1, 2]
    assert loop.committed_offset() == 3
