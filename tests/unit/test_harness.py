"""TestPipeline, the harness users test their stages with: the real runner on the in-memory
broker, stepped in the test, fast and bounded."""

from __future__ import annotations

import pytest

from pipeline import Context, DeadLetter, Settings, Stage
from pipeline.errors import TopicNotFoundError
from pipeline.failures import RetryPolicy
from pipeline.testing import HarnessError, MemoryBroker, MemoryTransport, TestPipeline
from tests.conftest import TEST_SCHEMAS
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong

SETTINGS = Settings(schemas_dir=TEST_SCHEMAS, topic_partitions=3)
NO_RETRIES = RetryPolicy(in_process_attempts=1, tiers=())


class Answer(Stage):
    consumes = PINGS
    emits = (PONGS,)
    retry = NO_RETRIES

    def handle(self, event: Ping, ctx: Context) -> None:
        if event.ping_id == "poison":
            raise ValueError("cannot answer poison")
        if event.ping_id == "unwanted":
            raise DeadLetter("not for us")
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="answer"))


class AsyncAnswer(Stage):
    consumes = PINGS
    emits = (PONGS,)
    retry = NO_RETRIES

    async def handle(self, event: Ping, ctx: Context) -> None:
        if event.ping_id == "poison":
            raise ValueError("cannot answer poison")
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="async"))


def test_a_simple_stage_runs_to_idle_in_two_steps_without_time_passing() -> None:
    """Ten pings published in memory come out as ten pongs, all committed, in two steps of the
    runner (join and handle, then idle), with no time passing on the broker's clock."""
    with TestPipeline([Answer], SETTINGS) as t:
        for n in range(10):
            t.publish(PINGS, Ping(ping_id=f"p{n}", n=n), key=f"k{n % 3}")
        before = t.clock.monotonic()
        t.run_until_idle(max_steps=2)
        assert t.clock.monotonic() == before
        pongs = t.outputs(PONGS)
        assert t.lag(Answer) == (10, 0)
    assert sorted(p.ping_id for p in pongs) == [f"p{n}" for n in range(10)]


def test_a_poison_event_is_dead_lettered_with_its_error_headers() -> None:
    """A handler's error sends the event to the DLQ with its original bytes and dlq-* headers,
    and the other events still come out."""
    with TestPipeline([Answer], SETTINGS) as t:
        sent = t.publish(PINGS, Ping(ping_id="poison", n=1))
        t.publish(PINGS, Ping(ping_id="fine", n=2))
        t.run_until_idle()
        [dead] = t.dead_letters(Answer)
        assert [p.ping_id for p in t.outputs(PONGS)] == ["fine"]
        assert t.errors and isinstance(t.errors[0], ValueError)
    assert dead.record.value == sent.value
    assert dead.failure.exception_type == "builtins.ValueError"
    assert dead.failure.exception_message == "cannot answer poison"
    assert dead.failure.original_topic == PINGS.name
    assert dead.headers["dlq-stage"] == b"answer"


def test_fail_fast_re_raises_the_handlers_error_in_the_test() -> None:
    """With fail_fast, the handler's own exception comes out of run_until_idle (sync and async
    handlers alike); a handler's DeadLetter request is not an error."""
    for stage in (Answer, AsyncAnswer):
        with TestPipeline([stage], SETTINGS, fail_fast=True) as t:
            t.publish(PINGS, Ping(ping_id="poison", n=1))
            with pytest.raises(ValueError, match="cannot answer poison"):
                t.run_until_idle()
    with TestPipeline([Answer], SETTINGS, fail_fast=True) as t:
        t.publish(PINGS, Ping(ping_id="unwanted", n=1))
        t.run_until_idle()
        assert len(t.dead_letters(Answer)) == 1


def test_run_until_idle_is_bounded() -> None:
    """A condition that never holds ends in a HarnessError naming the bound, not a hang."""
    with TestPipeline([Answer], SETTINGS) as t:
        with pytest.raises(HarnessError, match="after 5 rounds"):
            t.run_until(lambda: False, max_steps=5, what="never")
        with pytest.raises(HarnessError, match="not never after 1s"):
            t.run_until(lambda: False, timeout_s=1, what="never")


def test_a_crashed_worker_s_uncommitted_events_are_handled_again() -> None:
    """After a crash before any commit, the new worker gets the events again."""
    seen: list[str] = []

    class Count(Stage):
        consumes = PINGS

        def handle(self, event: Ping, ctx: Context) -> None:
            seen.append(event.ping_id)

    with TestPipeline([Count], SETTINGS.model_copy(update={"topic_partitions": 1})) as t:
        t.broker.fail_commits(t.pipeline.plans[0].group, 100)
        t.publish(PINGS, Ping(ping_id="a", n=1))
        t.run_until(lambda: seen == ["a"])
        t.crash(Count)
        t.run_until(lambda: seen == ["a", "a"])


def test_memory_transport_admin_honours_create_topics() -> None:
    """With create_topics off, ensure names every missing topic at once."""
    settings = SETTINGS.model_copy(update={"create_topics": False})
    admin = MemoryTransport(MemoryBroker(), settings).admin()
    with pytest.raises(TopicNotFoundError, match="a, b"):
        admin.ensure(["a", "b"])
    assert MemoryTransport(MemoryBroker(), SETTINGS).admin().ensure(["a"]) == ["a"]


def test_a_concurrent_stage_runs_to_idle_through_its_keyed_executor() -> None:
    """A stage with concurrency > 1 is stepped the same way; every event comes out."""

    class Parallel(Stage):
        consumes = PINGS
        emits = (PONGS,)
        concurrency = 4
        retry = NO_RETRIES

        async def handle(self, event: Ping, ctx: Context) -> None:
            ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="parallel"))

    with TestPipeline([Parallel], SETTINGS) as t:
        for n in range(12):
            t.publish(PINGS, Ping(ping_id=f"p{n}", n=n), key=f"k{n % 5}")
        t.run_until_idle()
        assert sorted(p.n for p in t.outputs(PONGS)) == list(range(12))
        assert t.lag(Parallel) == (12, 0)


def test_an_exactly_once_stage_commits_its_outputs_and_offsets_together() -> None:
    """An exactly-once stage runs to idle on the memory broker's transactions: its outputs are
    visible to read_committed readers and its offsets committed with them."""
    from tests.integration.app_stages import EosEcho

    with TestPipeline([EosEcho], SETTINGS) as t:
        for n in range(5):
            t.publish(PINGS, Ping(ping_id=f"p{n}", n=n), key=f"k{n}")
        t.run_until_idle()
        assert sorted(p.n for p in t.outputs(PONGS)) == list(range(5))
        assert t.lag(EosEcho) == (5, 0)


class Oversized(Stage):
    consumes = PINGS
    emits = (PONGS,)
    retry = NO_RETRIES

    def handle(self, event: Ping, ctx: Context) -> None:
        big = "x" * (5000 if event.ping_id == "big" else 1)
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by=big))


def test_an_output_over_the_producers_message_max_bytes_dead_letters_its_input() -> None:
    """As on Kafka (tests/integration/test_refused_outputs.py): produce refuses the output at
    once, no retry can fix it, so the input is dead-lettered and the partition goes on."""
    settings = SETTINGS.model_copy(update={"producer_config": {"message.max.bytes": 2000}})
    with TestPipeline([Oversized], settings) as t:
        t.publish(PINGS, Ping(ping_id="big", n=0), key="k")
        t.publish(PINGS, Ping(ping_id="small", n=1), key="k")
        t.run_until_idle()
        [dead] = t.dead_letters(Oversized)
        assert [p.ping_id for p in t.outputs(PONGS)] == ["small"]
    assert dead.failure.exception_type.endswith("KafkaError")
