"""The gates before the handler, driven through fake ports on a fake clock (no Kafka, no
sleeping): a retry not yet due holds its partition until the due time, and each stage carries
only the gates for what it enables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline import BreakerPolicy, Context, RetryPolicy, Settings, Stage
from pipeline import gates as g
from pipeline.app import Pipeline
from pipeline.clock import FakeClock
from pipeline.guarantees import Idempotency
from pipeline.retrytopics import Origin, retry_headers
from pipeline.runner import StageRunner
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong
from tests.unit.fakes import FakeConsumer, FakeProducer, Record

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


class Echo(Stage):
    consumes = PINGS
    emits = (PONGS,)
    group = "echo"
    handled: list[int] = []

    def handle(self, event: Ping, ctx: Context) -> None:
        Echo.handled.append(event.n)
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="echo"))


class Plain(Echo):
    group = "plain"
    retry = RetryPolicy(tiers=())


class Everything(Echo):
    group = "everything"
    breaker = BreakerPolicy()
    idempotency = Idempotency()


class RetryCopy(Record):
    """A record of a retry topic, with the headers a retry copy carries."""

    def __init__(self, topic: str, offset: int, value: bytes, headers: Any) -> None:
        super().__init__(topic, 0, offset, value)
        self._headers = headers

    def headers(self) -> Any:
        return self._headers


def runner_for(stage: type[Stage], clock: FakeClock) -> tuple[StageRunner, Pipeline, Any, Any]:
    pipeline = Pipeline.build(Settings(schemas_dir=SCHEMAS), [stage])
    consumer, producer = FakeConsumer(), FakeProducer()
    runner = StageRunner(
        pipeline.plans[0], consumer, producer, pipeline.codec,  # type: ignore[arg-type]
        clock=clock, commit_interval_s=0,
    )  # fmt: skip
    return runner, pipeline, consumer, producer


def test_a_retry_not_yet_due_holds_its_partition_until_its_due_time_on_the_fake_clock() -> None:
    Echo.handled.clear()
    clock = FakeClock()
    runner, pipeline, consumer, producer = runner_for(Echo, clock)
    plan = pipeline.plans[0]
    retry_tp = (plan.retry_topics[0], 0)
    runner.on_assign([retry_tp])
    value = pipeline.codec.encode(Ping(ping_id="p7", n=7), plan.inputs[PINGS.name], PINGS.name)
    original = Record(PINGS.name, 0, 7, value)
    origin = Origin(PINGS.name, 0, 7, 0)
    due_ms = clock.wall_ms() + 5_000
    headers = retry_headers(original, origin, 1, due_ms, clock.wall_ms(), ValueError("x"))
    copy = RetryCopy(retry_tp[0], 3, value, headers)

    consumer.batches = [[copy]]
    runner.step()
    assert Echo.handled == [] and retry_tp in consumer.paused
    assert consumer.seeks == [(retry_tp, 3)], "the partition is re-read from the held record"

    clock.advance(4.9)
    runner.step()
    assert retry_tp in consumer.paused, "not due yet: still held"

    clock.advance(0.2)
    consumer.batches = [[copy]]  # the re-read after the seek
    runner.step()
    assert retry_tp not in consumer.paused
    assert Echo.handled == [7] and [t for t, _ in producer.produced] == [PONGS.name]
    assert consumer.commits[-1] == {retry_tp: 4}


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        (Plain, [g.HeldInBatch, g.Refused]),
        (Echo, [g.HeldInBatch, g.RetryDue, g.Refused]),
        (Everything, [g.HeldInBatch, g.Deduplicate, g.RetryDue, g.Refused, g.Breaker]),
    ],
)
def test_a_stage_carries_only_the_gates_it_enables(
    stage: type[Stage], expected: list[type[g.Gate]]
) -> None:
    runner, *_ = runner_for(stage, FakeClock())
    assert [type(gate) for gate in runner._gates] == expected
    assert [type(check.__self__) for check in runner._input_checks] == [
        kind for kind in expected if kind is not g.RetryDue
    ], "the stage's input records are not asked about retry due times"
    batch = [type(gate) for gate in runner._batch_gates]
    assert batch == ([g.Deduplicate] if stage is Everything else [])


def test_the_fake_clock_moves_both_kinds_of_time_and_never_back() -> None:
    clock = FakeClock(1_000.0, monotonic=5.0)
    clock.advance(1.5)
    assert (clock.monotonic(), clock.time(), clock.wall_ms()) == (6.5, 1_001.5, 1_001_500)
    with pytest.raises(ValueError):
        clock.advance(-1)


class Guarded(Echo):
    group = "guarded"
    retry = RetryPolicy(in_process_attempts=1)
    breaker = BreakerPolicy(failure_threshold=1, cooldown_s=5)

    def handle(self, event: Ping, ctx: Context) -> None:
        if event.n == 1:
            raise ConnectionError("remote down")
        super().handle(event, ctx)


def test_a_probe_that_cannot_be_decoded_is_dead_lettered_and_the_next_record_probes() -> None:
    Echo.handled.clear()
    clock = FakeClock()
    runner, pipeline, consumer, producer = runner_for(Guarded, clock)
    binding = pipeline.plans[0].inputs[PINGS.name]
    tp = (PINGS.name, 0)
    runner.on_assign([tp])

    def rec(offset: int, n: int) -> Record:
        ping = Ping(ping_id=f"p{n}", n=n)
        return Record(PINGS.name, 0, offset, pipeline.codec.encode(ping, binding, PINGS.name))

    consumer.batches = [[rec(0, 1)]]
    runner.step()
    breaker = runner._breaker
    assert breaker is not None and breaker.state.value == "open" and tp in consumer.paused
    clock.advance(6)
    consumer.batches = [[Record(PINGS.name, 0, 0, b"not avro"), rec(1, 2)]]
    runner.step()
    assert breaker.state.value == "closed", "the second record probed, and succeeded"
    assert Echo.handled == [2]
    topics = [t for t, _ in producer.produced]
    assert topics == [pipeline.plans[0].dlq_topic, PONGS.name]
    assert consumer.commits[-1] == {tp: 2}


class Remembering(Echo):
    group = "remembering"
    retry = RetryPolicy(in_process_attempts=1)
    idempotency = Idempotency()

    def handle(self, event: Ping, ctx: Context) -> None:
        if event.n == 1:
            raise ConnectionError("first delivery fails")
        super().handle(event, ctx)


def test_only_a_success_marks_an_event_done_not_its_retry_copy(tmp_path: Path) -> None:
    """The token is begun (with the event id) before the handler: a failure sent to a retry
    topic must not record the id as done, or the retry copy would be dropped as a duplicate."""
    settings = Settings(schemas_dir=SCHEMAS, idempotency_url=f"sqlite:///{tmp_path}/ids.db")
    pipeline = Pipeline.build(settings, [Remembering])
    plan = pipeline.plans[0]
    consumer, producer = FakeConsumer(), FakeProducer()
    runner = StageRunner(
        plan, consumer, producer, pipeline.codec,  # type: ignore[arg-type]
        clock=FakeClock(), store_url=settings.idempotency_url, commit_interval_s=60,
    )  # fmt: skip
    runner._open_store()
    try:
        tp = (PINGS.name, 0)
        runner.on_assign([tp])
        binding = plan.inputs[PINGS.name]
        encode = pipeline.codec.encode
        consumer.batches = [
            [Record(PINGS.name, 0, o, encode(Ping(ping_id=f"p{o}", n=o), binding, PINGS.name))
             for o in (1, 2)]
        ]  # fmt: skip
        runner.step()
        assert [t for t, _ in producer.produced] == [plan.retry_topics[0], PONGS.name]
        runner._tracker.committable()
        assert runner._tracker.take_finished_ids() == ["id-0-2"]
    finally:
        assert runner._dedupe is not None
        runner._dedupe.close()
