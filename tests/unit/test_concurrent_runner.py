"""The concurrent consume loop, driven through fake ports (no Kafka): handlers wait on gates the
test opens, so completions happen in an order the test chooses."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pipeline import BreakerPolicy, Context, RetryPolicy, Settings, Stage
from pipeline import keyed as cr
from pipeline.app import Pipeline
from pipeline.breaker import State
from pipeline.clock import FakeClock
from pipeline.keyed import KeyedExecutor
from pipeline.runner import StageRunner
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong
from tests.unit.fakes import FakeConsumer, FakeProducer, Record

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
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

    async def handle(self, event: Ping, ctx: Context) -> None:
        self.started.append(event.n)
        self.running[0] += 1
        self.running[1] = max(self.running)
        try:
            await self.gates.setdefault(event.n, asyncio.Event()).wait()
        finally:
            self.running[0] -= 1
        if event.ping_id.startswith("fail"):
            raise ConnectionError("remote down")
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="t"))


class Loop:
    def __init__(
        self, consumer: FakeConsumer | None = None, stage: type[Stage] | None = None, **kwargs: Any
    ) -> None:
        Gated.gates.clear()
        Gated.started.clear()
        Gated.running[:] = [0, 0]
        self.pipeline = Pipeline.build(Settings(schemas_dir=SCHEMAS), [stage or Gated])
        self.plan = self.pipeline.plans[0]
        self.consumer = consumer or FakeConsumer()
        self.producer = FakeProducer()
        self.clock = FakeClock()
        self.runner = StageRunner(
            self.plan, self.consumer, self.producer, self.pipeline.codec,  # type: ignore[arg-type]
            commit_interval_s=0, batch_timeout_s=0.01, clock=self.clock, **kwargs,
        )  # fmt: skip
        self.runner.on_assign([TP])

    def records(self, *specs: tuple[int, bytes | None]) -> list[Record]:
        binding = self.plan.inputs[PINGS.name]
        out = []
        for offset, key in specs:
            ping = Ping(ping_id=f"p{offset}", n=offset)
            if key == b"fail":
                ping = Ping(ping_id=f"fail{offset}", n=offset)
            out.append(
                Record(TP[0], 0, offset, self.pipeline.codec.encode(ping, binding, TP[0]), key)
            )
        return out

    def open(self, *ns: int) -> None:
        for n in ns:
            Gated.gates.setdefault(n, asyncio.Event()).set()

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            self.runner.step()

    def committed(self) -> int | None:
        offsets = [c[TP] for c in self.consumer.commits if TP in c]
        return offsets[-1] if offsets else None

    @property
    def executor(self) -> KeyedExecutor:
        executor = self.runner._executor
        assert isinstance(executor, KeyedExecutor)
        return executor

    def close(self) -> None:
        self.executor.loop.run_until_complete(self.executor.dispatcher.cancel_all(1.0))
        self.executor.loop.close()


@pytest.fixture
def loop() -> Iterator[Loop]:
    harness = Loop()
    yield harness
    harness.close()


def test_commits_stop_at_the_first_unfinished_record(loop: Loop) -> None:
    loop.consumer.batches = [loop.records((0, b"a"), (1, b"b"), (2, b"c"))]
    loop.step()
    assert sorted(Gated.started) == [0, 1, 2]
    loop.open(2, 1)
    loop.step(2)
    assert len(loop.producer.produced) == 2, "finished records emit at once"
    assert loop.committed() is None, "offset 0 is unfinished: nothing may be committed"
    loop.open(0)
    loop.step(2)
    assert loop.committed() == 3


def test_work_in_flight_is_bounded_by_concurrency(loop: Loop) -> None:
    loop.consumer.batches = [loop.records(*((n, bytes([n])) for n in range(7)))]
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
    assert loop.committed() == 7


def test_same_key_records_run_in_offset_order(loop: Loop) -> None:
    loop.consumer.batches = [loop.records((0, b"k"), (1, b"k"), (2, b"other"))]
    loop.step()
    assert Gated.started == [0, 2]
    loop.open(1)
    loop.step(2)
    assert Gated.started == [0, 2], "k@1 waits for k@0 even though its own gate is open"
    loop.open(0, 2)
    loop.step(3)
    assert Gated.started == [0, 2, 1]
    keys = [key for _, key in loop.producer.produced]
    assert keys.index(b"k") < len(keys) and keys.count(b"k") == 2


def test_a_failure_goes_to_the_retry_topic_through_the_records_token(loop: Loop) -> None:
    loop.consumer.batches = [loop.records((0, b"a"), (1, b"fail"), (2, b"c"))]
    loop.step()
    loop.open(0, 1, 2)
    loop.step(3)
    topics = [topic for topic, _ in loop.producer.produced]
    assert topics.count(PONGS.name) == 2
    assert [t for t in topics if t != PONGS.name] == [loop.plan.retry_topics[0]]
    assert loop.committed() == 3, "the retry copy was acknowledged: the input is done"


class Overfilling(FakeConsumer):
    """Returns whole batches whatever max_records says (as a main plus retry consumer can)."""

    def consume(self, max_records: int, timeout_s: float) -> Any:
        self.asked.append(max_records)
        return self.batches.pop(0) if self.batches else []


def test_records_beyond_the_free_slots_are_handed_back() -> None:
    h = Loop(Overfilling())
    try:
        h.consumer.batches = [h.records(*((n, bytes([n])) for n in range(5)))]
        h.step()
        assert Gated.started == [0, 1, 2]
        assert h.consumer.seeks == [(TP, 3)], "offsets 3 and 4 must be read again"
        h.open(*range(5))
        h.step(2)
        assert h.committed() == 3, "nothing past the handed-back records is committed"
    finally:
        h.close()


def test_a_stage_saturated_for_long_pauses_its_partitions_then_resumes(loop: Loop) -> None:
    loop.consumer.batches = [loop.records((0, b"a"), (1, b"b"), (2, b"c"))]
    loop.step(2)
    assert loop.consumer.paused == set(), "a short saturation only stops fetching"
    loop.clock.advance(cr.SATURATED_PAUSE_S + 0.1)
    loop.step()
    assert loop.consumer.paused == {TP}
    loop.open(0)
    loop.step(2)
    assert loop.consumer.paused == set(), "resumed once a slot is free"


def test_a_hold_survives_the_end_of_backpressure(loop: Loop) -> None:
    loop.consumer.batches = [loop.records((0, b"a"), (1, b"b"), (2, b"c"))]
    loop.step()
    loop.clock.advance(cr.SATURATED_PAUSE_S + 0.1)
    loop.step()
    loop.runner._holds.rewind(TP, 3, 30.0)  # e.g. a retry not due for 30 s
    loop.open(0)
    loop.step(2)
    assert TP in loop.consumer.paused, "the hold is not over: backpressure must not resume it"


class SlowOnce(Stage):
    """Its handlers wait for ``release``, which the test sets only once the revoke runs."""

    consumes = PINGS
    emits = (PONGS,)
    group = "slow"
    concurrency = 4
    release: ClassVar[asyncio.Event] = asyncio.Event()

    async def handle(self, event: Ping, ctx: Context) -> None:
        await SlowOnce.release.wait()
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="t"))


def test_revoke_waits_for_handlers_in_flight_and_commits_them() -> None:
    SlowOnce.release = asyncio.Event()
    pipeline = Pipeline.build(Settings(schemas_dir=SCHEMAS), [SlowOnce])
    plan = pipeline.plans[0]
    consumer, producer = FakeConsumer(), FakeProducer()
    runner = StageRunner(
        plan, consumer, producer, pipeline.codec, commit_interval_s=60, batch_timeout_s=0.01
    )  # type: ignore[arg-type]
    binding = plan.inputs[PINGS.name]
    runner.on_assign([TP])
    encode = pipeline.codec.encode
    consumer.batches = [
        [Record(TP[0], 0, n, encode(Ping(ping_id=f"p{n}", n=n), binding, TP[0]), bytes([n]))
         for n in range(4)]
    ]  # fmt: skip
    runner.step()  # dispatched; the handlers are waiting
    assert producer.produced == []
    assert isinstance(runner._executor, KeyedExecutor)
    # Released on the executor's next turn of its loop, which only the revoke runs: the
    # handlers are still in flight when it starts, however slow this thread is.
    runner._executor.loop.call_soon(SlowOnce.release.set)
    runner.on_revoke([TP])
    assert len(producer.produced) == 4
    assert consumer.commits == [{TP: 4}]
    runner._executor.loop.close()


def test_shutdown_cancels_handlers_past_the_deadline_and_commits_only_finished(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Loop(shutdown_timeout_s=0.05)
    h.consumer.batches = [h.records((0, b"a"), (1, b"b"))]
    h.step()
    h.open(0)
    h.runner.stop_event.set()
    with caplog.at_level(logging.WARNING, logger="pipeline.runner"):
        h.runner.run()  # stop is set: straight to the graceful shutdown
    assert h.committed() == 1, "offset 1 never finished: it stays uncommitted"
    assert "1 handlers still running at shutdown" in caplog.text
    assert h.executor.loop.is_closed()


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
    Probed.failed.clear()
    h = Loop(stage=Probed)
    breaker = h.runner._breaker
    assert breaker is not None
    try:
        h.consumer.batches = [h.records((0, b"fail"))]
        h.step()
        h.open(0)
        h.step(2)
        assert breaker.state is State.OPEN and TP in h.consumer.paused
        h.clock.advance(6)  # past the cooldown: the next record is the probe
        Gated.gates.clear()
        h.consumer.batches = [h.records((0, b"a")), h.records((1, b"b"))]
        h.step()
        assert breaker.state is State.HALF_OPEN and Gated.started == [0]
        asked = len(h.consumer.asked)
        h.step(3)
        assert len(h.consumer.asked) == asked, "nothing is fetched while the probe runs"
        h.runner.on_lost([TP])
        assert breaker.allow(), "the lost probe was released: the next record may probe"
        assert h.executor.dispatcher.in_flight == 0, "the lost partition's handler was cancelled"
    finally:
        h.close()


def test_lost_partitions_handlers_are_cancelled_and_report_nothing(loop: Loop) -> None:
    loop.consumer.batches = [loop.records((0, b"a"), (1, b"b"))]
    loop.step()
    loop.runner.on_lost([TP])
    assert loop.executor.dispatcher.in_flight == 0
    loop.open(0, 1)
    loop.step(2)
    assert loop.producer.produced == [] and loop.committed() is None


def test_a_refused_output_rewinds_without_rerunning_later_records_that_finished(
    loop: Loop,
) -> None:
    """Records 1 and 2 (other keys) finish, outputs acknowledged, before record 0's output is
    refused: the partition is re-read from 0 and only record 0 runs again."""
    from pipeline.errors import DeliveryError

    produced: list[str] = []

    def produce(topic: str, value: Any, key: Any, headers: Any, on_delivery: Any) -> None:
        produced.append(topic)
        refused = DeliveryError("timed out", code="_MSG_TIMED_OUT", retriable=True)
        on_delivery(refused if len(produced) == 3 else None, None)

    loop.producer.produce = produce  # type: ignore[method-assign]
    loop.consumer.batches = [loop.records((0, b"a"), (1, b"b"), (2, b"c"))]
    loop.step()
    loop.open(1, 2)
    loop.step(2)
    loop.open(0)
    loop.step(2)
    assert loop.consumer.seeks[-1] == (TP, 0)
    loop.clock.advance(5)
    loop.consumer.batches.append(loop.records((0, b"a"), (1, b"b"), (2, b"c")))
    loop.step(3)
    assert Gated.started == [0, 1, 2, 0]
    assert len(produced) == 4
    assert loop.committed() == 3
