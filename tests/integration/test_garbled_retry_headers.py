"""Retry-topic records whose ``retry-*`` headers another producer garbled: each bad value
degrades (attempts unknown, due now, coordinates unknown) and the stage goes on."""

from __future__ import annotations

import time
from typing import ClassVar

from confluent_kafka import Producer

from pipeline import Context, RetryPolicy, Stage
from pipeline.app import Pipeline
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong
from tests.integration.kit import prepare, read_topic, running, unique_settings


class FailsFirst(Stage):
    """Fails each event's first call (so it is routed with whatever its headers say), then
    emits a pong."""

    consumes = PINGS
    emits = (PONGS,)
    group = "garbled-retry"
    retry = RetryPolicy(in_process_attempts=1, tiers=(0.2,))
    calls: ClassVar[list[str]] = []

    def handle(self, event: Ping, ctx: Context) -> None:
        FailsFirst.calls.append(event.ping_id)
        if FailsFirst.calls.count(event.ping_id) == 1:
            raise ConnectionError("first call fails")
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="fails-first"))


def test_garbled_retry_headers_neither_crash_the_stage_nor_hold_its_partition(
    kafka_bootstrap: str,
) -> None:
    """In the stage's retry topic, from another producer: a record with a negative attempt
    count (which used to pick a tier that does not exist and crash the stage), one with
    unreadable coordinates and times (which used to be dead-lettered as of unknown schema) and
    one due in the year 2286 (which used to hold the partition for good). All three are
    handled, fail once, go round the retry topic with clean headers and come out as pongs."""
    FailsFirst.calls = []
    settings = unique_settings(kafka_bootstrap, topic_partitions=1)
    prepare(settings, [FailsFirst])
    pipeline = Pipeline.build(settings, [FailsFirst])
    [plan] = pipeline.plans
    now = str(int(time.time() * 1000)).encode()
    valid = {
        "retry-original-topic": settings.topic(PINGS.name).encode(),
        "retry-attempt": b"0",
        "retry-due-ms": now,
        "retry-original-partition": b"0",
        "retry-original-offset": b"0",
        "retry-first-failure-ms": now,
        "retry-original-timestamp": now,
    }
    garbled = {
        "negative": {"retry-attempt": b"-5"},
        "unreadable": {"retry-original-partition": b"\xff", "retry-original-offset": b"",
                       "retry-first-failure-ms": b"x", "retry-original-timestamp": b"9" * 5000},
        "far-future": {"retry-due-ms": b"9999999999999"},
    }  # fmt: skip
    binding = pipeline.catalog.bind(Ping)
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for n, (ping_id, changed) in enumerate(garbled.items()):
        value = pipeline.codec.encode(Ping(ping_id=ping_id, n=n), binding, plan.retry_topics[0])
        headers = list({**valid, **changed}.items())
        producer.produce(plan.retry_topics[0], value, ping_id.encode(), headers=headers)
    assert producer.flush(10) == 0
    with running(settings, [FailsFirst]) as worker:
        pongs = read_topic(settings, PONGS, count=3)
        assert not worker.failed, "the stage crashed on a retry header"
    assert sorted(p.ping_id for _, p in pongs) == ["far-future", "negative", "unreadable"]
    assert sorted(FailsFirst.calls) == sorted(list(garbled) * 2)
