"""Non-blocking retry topics, timeouts and the dead-letter topic, against the real broker."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import ClassVar

from pipeline import Context, HandlerTimeout, Publisher, RetryPolicy, Stage
from pipeline.kafka import KafkaAdmin, LagMonitor
from tests.integration.app_stages import PINGS, PONGS, SEEN, Ping, Pong, Seen
from tests.integration.kit import (
    end_offsets,
    prepare,
    raw_produce,
    raw_records,
    read_to_end,
    read_topic,
    running,
    unique_settings,
    wait_until,
)

# How late past its due time a retry may be handled: resume and fetch latency, plus what a
# loaded machine adds. Which tier a retry took is checked on the retry topics, not by time.
SLACK_S = 4.0


class FailsTwice(Stage):
    """Ping 'flaky' fails on its first two deliveries; every call is timed."""

    consumes = PINGS
    emits = (PONGS,)
    group = "fails-twice"
    retry = RetryPolicy(in_process_attempts=1, tiers=(1.0, 2.0))
    calls: ClassVar[list[tuple[str, float]]] = []

    def handle(self, event: Ping, ctx: Context) -> None:
        FailsTwice.calls.append((event.ping_id, time.monotonic()))
        flaky_calls = sum(1 for p, _ in FailsTwice.calls if p == "flaky")
        if event.ping_id == "flaky" and flaky_calls <= 2:
            raise ConnectionError("upstream hiccup")
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="fails-twice"))


class NeverWorks(Stage):
    consumes = PINGS
    group = "never-works"
    retry = RetryPolicy(in_process_attempts=2, tiers=(0.2, 0.4))
    calls: ClassVar[int] = 0

    def handle(self, event: Ping, ctx: Context) -> None:
        NeverWorks.calls += 1
        raise ConnectionError("still down")


class Peer(Stage):
    """A fan-out peer on the same topic, in its own group, that never fails."""

    consumes = PINGS
    emits = (SEEN,)
    group = "peer"

    def handle(self, event: Ping, ctx: Context) -> None:
        ctx.emit(SEEN, Seen(stage="peer", ping_id=event.ping_id))


class SlowAsync(Stage):
    consumes = PINGS
    group = "slow-async"
    timeout_s = 0.3
    retry = RetryPolicy(in_process_attempts=1, tiers=(0.2,))

    async def handle(self, event: Ping, ctx: Context) -> None:
        await asyncio.sleep(5)


class SlowSync(Stage):
    consumes = PINGS
    emits = (PONGS,)
    group = "slow-sync"
    timeout_s = 0.3
    retry = RetryPolicy(in_process_attempts=1, tiers=(0.2,))

    def handle(self, event: Ping, ctx: Context) -> None:
        if event.ping_id == "slow":
            time.sleep(1.0)
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="sync"))


def test_an_event_failing_twice_succeeds_on_the_second_retry_tier_without_blocking_others(
    kafka_bootstrap: str,
) -> None:
    """'flaky' is handled three times, about 1 s and then 2 s apart (the tier delays), while
    the events behind it on the same partition are handled at once."""
    FailsTwice.calls.clear()
    settings = unique_settings(kafka_bootstrap, topic_partitions=1)
    # All four are in the partition before the stage starts, so the events behind 'flaky'
    # are there to be handled at once: none can be published after its retry came due.
    prepare(settings, [FailsTwice])
    with Publisher(settings) as publisher:
        publisher.publish(PINGS, Ping(ping_id="flaky", n=0))
        for i in range(1, 4):
            publisher.publish(PINGS, Ping(ping_id=f"next{i}", n=i))
    with running(settings, [FailsTwice]) as worker:
        pongs = read_topic(settings, PONGS, count=4, timeout_s=30)
        retry_topics = worker.runners[0].plan.retry_topics
    assert [p.ping_id for _, p in pongs] == ["next1", "next2", "next3", "flaky"]
    flaky = [t for p, t in FailsTwice.calls if p == "flaky"]
    others = [t for p, t in FailsTwice.calls if p != "flaky"]
    assert len(flaky) == 3 and len(others) == 3
    assert max(others) < flaky[1], "the partition waited for the retry"
    # Each retry went through its own tier's topic and was not handled before it was due; the
    # upper bounds catch a wait far past the due time.
    assert [t.rsplit(".", 1)[-1] for t in retry_topics] == ["1s", "2s"]
    assert [end_offsets(settings, t) for t in retry_topics] == [1, 1]
    assert 1.0 <= flaky[1] - flaky[0] < 1.0 + SLACK_S
    assert 2.0 <= flaky[2] - flaky[1] < 2.0 + SLACK_S


def test_exhausted_retries_reach_the_dlq_with_every_header(kafka_bootstrap: str) -> None:
    """After in-process attempts and both tiers, the event is dead-lettered: original bytes,
    key and headers, plus the full set of dlq-* headers naming the input topic."""
    NeverWorks.calls = 0
    settings = unique_settings(kafka_bootstrap, topic_partitions=1)
    with running(settings, [NeverWorks]) as worker, Publisher(settings) as publisher:
        sent = publisher.publish(
            PINGS, Ping(ping_id="doomed", n=1), key="k1", headers={"tenant": "acme"}
        )
        [record] = raw_records(settings, worker.runners[0].plan.dlq_topic, 1)
        original = raw_records(settings, settings.topic(PINGS.name), 1)[0]
    assert sent is not None
    assert NeverWorks.calls == 6, "2 in-process calls x (first delivery + 2 tiers)"
    assert (record.key(), record.value()) == (original.key(), original.value())
    headers = dict(record.headers())
    assert headers["tenant"] == b"acme" and headers["event-id"] == sent.event_id.encode()
    assert headers["dlq-original-topic"] == settings.topic(PINGS.name).encode()
    assert headers["dlq-original-offset"] == b"0"
    assert headers["dlq-attempts"] == b"3"
    assert headers["dlq-exception-type"] == b"builtins.ConnectionError"
    assert headers["dlq-exception-message"] == b"still down"
    assert headers["dlq-group"] == settings.topic("never-works").encode()
    assert b"ConnectionError" in headers["dlq-traceback"]
    assert int(headers["dlq-first-failure-ms"]) < int(headers["dlq-last-failure-ms"])
    assert not any(k.startswith("retry-") for k in headers)


def test_a_fan_out_peer_is_untouched_by_another_groups_retries(kafka_bootstrap: str) -> None:
    """While one group retries an event through its retry topics, a peer group on the same
    input sees every event exactly once and nothing from those retry topics."""
    FailsTwice.calls.clear()
    settings = unique_settings(kafka_bootstrap, topic_partitions=2)
    with running(settings, [FailsTwice, Peer]), Publisher(settings) as publisher:
        publisher.publish(PINGS, Ping(ping_id="flaky", n=0))
        for i in range(1, 20):
            publisher.publish(PINGS, Ping(ping_id=f"e{i}", n=i), wait=False)
        publisher.flush()
        read_topic(settings, PONGS, count=20, timeout_s=30)  # FailsTwice finished, retries too
        read_topic(settings, SEEN, count=20, timeout_s=30)  # and the peer saw the inputs
    # Stopped: reading SEEN to its end counts everything the peer wrote, extras included.
    seen = read_to_end(settings, SEEN)
    assert Counter(s.ping_id for _, s in seen) == Counter(
        ["flaky", *(f"e{i}" for i in range(1, 20))]
    )


def test_a_timed_out_async_handler_is_retried_then_dead_lettered(kafka_bootstrap: str) -> None:
    """A handler that overruns timeout_s is cancelled; the timeout counts as a retryable
    failure, and after the last tier the event is dead-lettered as a HandlerTimeout."""
    settings = unique_settings(kafka_bootstrap, topic_partitions=1)
    with running(settings, [SlowAsync]) as worker, Publisher(settings) as publisher:
        publisher.publish(PINGS, Ping(ping_id="slow", n=1))
        [record] = raw_records(settings, worker.runners[0].plan.dlq_topic, 1, timeout_s=20)
        assert worker.runners[0].stats.assigned == 2, "input and retry partitions still held"
    headers = dict(record.headers())
    assert headers["dlq-exception-type"] == f"{HandlerTimeout.__module__}.HandlerTimeout".encode()
    assert headers["dlq-attempts"] == b"2"


def test_a_timed_out_sync_handler_does_not_hold_up_the_partition(kafka_bootstrap: str) -> None:
    """A sync handler cannot be interrupted, but the loop stops waiting at the timeout: the
    next event is handled while the slow one goes to the retry topic."""
    settings = unique_settings(kafka_bootstrap, topic_partitions=1)
    with running(settings, [SlowSync]) as worker, Publisher(settings) as publisher:
        publisher.publish(PINGS, Ping(ping_id="slow", n=1))
        publisher.publish(PINGS, Ping(ping_id="quick", n=2))
        [(_, first)] = read_topic(settings, PONGS, count=1, timeout_s=10)
        raw_records(settings, worker.runners[0].plan.dlq_topic, 1, timeout_s=20)
    assert first.ping_id == "quick"


def test_a_dead_letter_that_cannot_be_published_leaves_the_input_uncommitted(
    kafka_bootstrap: str,
) -> None:
    """While the DLQ topic is missing, a poison record stays uncommitted (re-read after a
    backoff); once the topic is back the dead letter lands and then the input is committed."""
    settings = unique_settings(
        kafka_bootstrap, topic_partitions=1, producer_config={"message.timeout.ms": "1500"}
    )
    admin = KafkaAdmin(settings)
    group, pings = settings.topic(NeverWorks.group or ""), settings.topic(PINGS.name)
    monitor = LagMonitor(settings)
    try:
        with running(settings, [NeverWorks]) as worker:
            runner = worker.runners[0]
            dlq = runner.plan.dlq_topic
            wait_until(lambda: runner.stats.assigned, 30, "an assignment")
            admin.delete([dlq])
            wait_until(lambda: dlq not in admin.topics(), 30, "the DLQ topic to go")
            raw_produce(settings, pings, b"\xc3\x01poison")
            wait_until(lambda: runner.stats.retried >= 2, 60, "two failed dead-letter publishes")
            assert monitor.lag(group, [pings]) == (0, 1), "input committed, dead letter lost"
            admin.create([dlq])
            [record] = raw_records(settings, dlq, 1, timeout_s=60)
            wait_until(lambda: monitor.lag(group, [pings]) == (1, 0), 30, "the commit")
    finally:
        monitor.close()
    assert record.value() == b"\xc3\x01poison"
