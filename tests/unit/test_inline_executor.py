"""The inline executor treats a CancelledError that an async handler raises itself as the
keyed executor does: a failure routed like any other, not the end of the stage."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pipeline import Context, RetryPolicy, Settings, Stage
from pipeline.app import Pipeline
from pipeline.clock import FakeClock
from pipeline.runner import StageRunner
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong
from tests.unit.fakes import FakeConsumer, FakeProducer, Record

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
TP = (PINGS.name, 0)


class CancelsItself(Stage):
    consumes = PINGS
    emits = (PONGS,)
    group = "cancels-itself"
    retry = RetryPolicy(in_process_attempts=1, tiers=(1.0,))

    async def handle(self, event: Ping, ctx: Context) -> None:
        if event.n == 0:
            raise asyncio.CancelledError()  # e.g. a client library's own cancelled call
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="inline"))


def test_a_handler_raising_cancelled_error_fails_its_event_and_the_stage_goes_on() -> None:
    pipeline = Pipeline.build(Settings(schemas_dir=SCHEMAS), [CancelsItself])
    plan = pipeline.plans[0]
    consumer, producer = FakeConsumer(), FakeProducer()
    runner = StageRunner(plan, consumer, producer, pipeline.codec,  # type: ignore[arg-type]
                         clock=FakeClock(), commit_interval_s=0)  # fmt: skip
    runner.on_assign([TP])
    binding = plan.inputs[PINGS.name]
    consumer.batches.append([
        Record(PINGS.name, 0, n, pipeline.codec.encode(Ping(ping_id=f"p{n}", n=n), binding,
                                                       PINGS.name))
        for n in (0, 1)
    ])  # fmt: skip
    try:
        runner.step()
        runner.step()
    finally:
        runner._invoke.close()
        runner._executor.loop.close()  # type: ignore[attr-defined]
    topics = [t for t, _ in producer.produced]
    assert topics == [plan.retry_topics[0], PONGS.name]
    assert consumer.commits[-1] == {TP: 2}
