"""The consume loop's seek-back bookkeeping, driven through fake ports (no Kafka): a record is
never skipped when several holds and rewinds happen in one batch."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline import BreakerPolicy, Context, RetryPolicy, Settings, Stage
from pipeline.app import Pipeline
from pipeline.backoff import Backoff
from pipeline.clock import FakeClock
from pipeline.guarantees import Idempotency
from pipeline.idempotency.base import IdempotencyStoreError
from pipeline.stop import StopEvent
from tests.integration.app_stages import PINGS, Ping
from tests.unit.fakes import FakeConsumer, FakeProducer, Record

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


class FailsOnN10AndN5(Stage):
    """Ordered, with a breaker that opens on the second failure."""

    consumes = PINGS
    group = "holds"
    retry = RetryPolicy(ordered=True, in_process_attempts=1, ordered_backoff=Backoff(5, jitter=0))
    breaker = BreakerPolicy(failure_threshold=2, cooldown_s=5)

    def handle(self, event: Ping, ctx: Context) -> None:
        if event.n in (10, 5):
            raise ConnectionError("down")


def test_a_breaker_hold_keeps_an_earlier_rewind_in_the_same_batch() -> None:
    """A@10 fails (rewound to 10), then B@5 fails and opens the breaker (everything held),
    then A@11 comes up in the same batch: A must still be re-read from 10, not from 11."""
    pipeline = Pipeline.build(Settings(schemas_dir=SCHEMAS), [FailsOnN10AndN5])
    plan = pipeline.plans[0]
    binding = plan.inputs[PINGS.name]
    topic = PINGS.name

    def rec(partition: int, offset: int) -> Record:
        value = pipeline.codec.encode(
            Ping(ping_id=f"{partition}/{offset}", n=offset), binding, topic
        )
        return Record(topic, partition, offset, value)

    consumer = FakeConsumer()
    from pipeline.runner import StageRunner

    runner = StageRunner(plan, consumer, FakeProducer(), pipeline.codec)  # type: ignore[arg-type]
    a, b = (topic, 0), (topic, 1)
    runner.on_assign([a, b])
    consumer.batches = [[rec(0, 10), rec(1, 5), rec(0, 11)]]
    runner.step()
    seeks_of_a = [offset for tp, offset in consumer.seeks if tp == a]
    assert seeks_of_a[-1] == 10, f"A was last seeked to {seeks_of_a[-1]}: offset 10 would be lost"
    assert {a, b} <= consumer.paused


class Remembers(Stage):
    consumes = PINGS
    group = "remembers"
    idempotency = Idempotency(cleanup_interval_s=1)

    def handle(self, event: Ping, ctx: Context) -> None: ...


def test_an_idempotency_cleanup_failure_is_logged_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.runner import StageRunner

    settings = Settings(schemas_dir=SCHEMAS, idempotency_url=f"sqlite:///{tmp_path}/ids.db")
    pipeline = Pipeline.build(settings, [Remembers])
    clock = FakeClock()
    runner = StageRunner(
        pipeline.plans[0], FakeConsumer(), FakeProducer(), pipeline.codec,  # type: ignore[arg-type]
        clock=clock, store_url=settings.idempotency_url, commit_interval_s=0,
    )  # fmt: skip
    runner._open_store()
    try:

        def down(_older_than_s: float) -> int:
            raise IdempotencyStoreError("database is locked")

        assert runner._dedupe is not None
        monkeypatch.setattr(runner._dedupe.store, "cleanup", down)
        clock.advance(5)
        runner.step()  # commits on the interval, then tries the cleanup: must not raise
        assert runner._dedupe.last_cleanup == clock.monotonic()
    finally:
        assert runner._dedupe is not None
        runner._dedupe.close()
        runner._invoke.close()


def test_shutdown_gets_what_is_left_of_its_timeout_since_the_stop_request() -> None:
    """A step blocked in a client call when the stop came (25 s of a 30 s timeout): flushing
    and committing get the 5 s left, so the worker still exits within its timeout."""
    from pipeline.runner import StageRunner

    pipeline = Pipeline.build(Settings(schemas_dir=SCHEMAS), [FailsOnN10AndN5])
    producer = FakeProducer()
    runner = StageRunner(
        pipeline.plans[0], FakeConsumer(), producer, pipeline.codec,  # type: ignore[arg-type]
        shutdown_timeout_s=30.0,
    )  # fmt: skip
    stop = runner.stop_event
    assert isinstance(stop, StopEvent)
    stop.set()
    assert stop.set_at is not None
    stopped = stop.set_at
    stop.set_at -= 25.0
    runner.run()
    took = time.monotonic() - stopped  # whatever this thread lost meanwhile, a loaded machine
    assert len(producer.flushes) == 1 and 5.0 - took <= producer.flushes[0] <= 5.0


def test_a_revoke_flushes_and_commits_within_half_the_shutdown_timeout() -> None:
    from pipeline.runner import StageRunner

    pipeline = Pipeline.build(Settings(schemas_dir=SCHEMAS), [FailsOnN10AndN5])
    producer = FakeProducer()
    runner = StageRunner(
        pipeline.plans[0], FakeConsumer(), producer, pipeline.codec,  # type: ignore[arg-type]
        shutdown_timeout_s=30.0,
    )  # fmt: skip
    runner.on_assign([(PINGS.name, 0)])
    runner.on_revoke([(PINGS.name, 0)])
    assert producer.flushes == [15.0]
