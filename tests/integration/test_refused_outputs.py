"""Outputs the broker or the producer refuses: an input whose output can never be produced is
dead-lettered once and its partition goes on; a rewind after a refused output does not emit
again the outputs of later records that were already acknowledged."""

from __future__ import annotations

import os
import uuid
from collections import Counter

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline import Context, Publisher, Stage
from pipeline.config import Settings
from pipeline.kafka import KafkaAdmin, LagMonitor
from tests.integration.app_stages import PINGS, PONGS, SEEN, Ping, Pong, Seen
from tests.integration.kit import (
    raw_records,
    running,
    unique_settings,
    wait_until,
)

OFFSET_BEGINNING = -2


def _incompressible(size: int) -> str:
    # Outputs are lz4-compressed: random hex stays about as large as it is.
    return os.urandom(size // 2).hex()


class BigPongForBig(Stage):
    """Answers every ping; the answer to 'big' is larger than the output topic accepts."""

    consumes = PINGS
    emits = (PONGS,)
    group = "big-pong"

    def handle(self, event: Ping, ctx: Context) -> None:
        body = _incompressible(40_000) if event.ping_id == "big" else "ok"
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by=body))


class BigPongForBigOnce(BigPongForBig):
    group = "big-pong-eos"
    guarantee = "exactly_once"


class SeenForFirst(Stage):
    """Answers every ping on PONGS; ping 'first' is also reported on SEEN."""

    consumes = PINGS
    emits = (PONGS, SEEN)
    group = "seen-first"

    def handle(self, event: Ping, ctx: Context) -> None:
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="seen-first"))
        if event.ping_id == "first":
            ctx.emit(SEEN, Seen(stage="seen-first", ping_id=event.ping_id))


def _create_small_topic(settings: Settings, name: str, max_bytes: int) -> None:
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    topic = NewTopic(
        settings.topic(name), num_partitions=1, replication_factor=1,
        config={"max.message.bytes": str(max_bytes)},
    )  # fmt: skip
    admin.create_topics([topic])[settings.topic(name)].result(30)


def _ids(settings: Settings, topic: str) -> Counter[bytes]:
    """How many committed records of ``topic`` carry each event id, read up to its end as it
    is now (transaction markers and aborted records take offsets but are not records)."""
    consumer = Consumer(
        {"bootstrap.servers": settings.bootstrap_servers, "group.id": f"ids-{uuid.uuid4()}",
         "enable.auto.commit": False, "isolation.level": "read_committed"}
    )  # fmt: skip
    ids: Counter[bytes] = Counter()
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        tps = [TopicPartition(topic, p) for p in partitions]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])

        def at_the_end() -> bool:
            for m in consumer.consume(500, 0.2):
                if m.error() is None:
                    ids[dict(m.headers() or [])["event-id"]] += 1
            at = {tp.partition: tp.offset for tp in consumer.position(tps)}
            return all(ends[p] == 0 or at[p] >= ends[p] for p in ends)

        wait_until(at_the_end, 30, f"the end of {topic}")
    finally:
        consumer.close()
    return ids


@pytest.mark.parametrize(
    "stage", [BigPongForBig, BigPongForBigOnce], ids=["at-least-once", "exactly-once"]
)
def test_an_output_too_large_for_its_topic_dead_letters_the_input_once(
    kafka_bootstrap: str, stage: type[Stage]
) -> None:
    """The broker refuses an output larger than the topic's max.message.bytes: the input is
    dead-lettered once, with the error in its headers, and the events after it are handled."""
    settings = unique_settings(kafka_bootstrap, topic_partitions=1)
    _create_small_topic(settings, PONGS.name, 10_000)
    group, pings = settings.topic(stage.group or ""), settings.topic(PINGS.name)
    monitor = LagMonitor(settings)
    try:
        with running(settings, [stage]) as worker, Publisher(settings) as publisher:
            runner = worker.runners[0]
            publisher.publish(PINGS, Ping(ping_id="big", n=0))
            for i in range(1, 6):
                publisher.publish(PINGS, Ping(ping_id=f"after{i}", n=i))
            [record] = raw_records(settings, runner.plan.dlq_topic, 1, timeout_s=60)
            wait_until(lambda: monitor.lag(group, [pings]) == (6, 0), 60, "lag 0")
            dead_lettered = runner.stats.dead_lettered
            pongs = _ids(settings, settings.topic(PONGS.name))
            dlq_count = sum(_ids(settings, runner.plan.dlq_topic).values())
    finally:
        monitor.close()
    headers = dict(record.headers())
    assert headers["dlq-exception-type"] == b"pipeline.errors.DeliveryError"
    assert b"MSG_SIZE_TOO_LARGE" in headers["dlq-exception-message"]
    assert headers["dlq-original-offset"] == b"0"
    assert dlq_count == 1 and dead_lettered == 1, "dead-lettered more than once"
    assert len(pongs) == 5, "the events after the refused one were not all answered"


def test_a_rewind_does_not_emit_again_the_acknowledged_outputs_of_later_records(
    kafka_bootstrap: str,
) -> None:
    """Record 0's second output cannot be delivered (its topic is gone) until the topic comes
    back; the partition is re-read from record 0 several times meanwhile, but records 1-9,
    whose outputs were acknowledged, are not handled again: each of their outputs exists once."""
    settings = unique_settings(
        kafka_bootstrap, topic_partitions=1, producer_config={"message.timeout.ms": "3000"}
    )
    admin = KafkaAdmin(settings)
    seen = settings.topic(SEEN.name)
    group, pings = settings.topic(SeenForFirst.group or ""), settings.topic(PINGS.name)
    pongs_topic = settings.topic(PONGS.name)
    monitor = LagMonitor(settings)
    try:
        with running(settings, [SeenForFirst]) as worker, Publisher(settings) as publisher:
            runner = worker.runners[0]
            wait_until(lambda: runner.stats.assigned, 30, "the partition to be assigned")
            admin.delete([seen])
            wait_until(lambda: seen not in admin.topics(), 30, "the SEEN topic to go")
            publisher.publish(PINGS, Ping(ping_id="first", n=0))
            for i in range(1, 10):
                publisher.publish(PINGS, Ping(ping_id=f"later{i}", n=i), wait=False)
            publisher.flush()
            wait_until(lambda: runner.stats.retried >= 3, 90, "three re-reads of record 0")
            during = _ids(settings, pongs_topic)
            admin.create([seen])
            wait_until(lambda: monitor.lag(group, [pings]) == (10, 0), 60, "lag 0")
            after = _ids(settings, pongs_topic)
    finally:
        monitor.close()
    assert len(during) == 10 and len(after) == 10
    repeated = {i: n for i, n in after.items() if n > 1}
    # Only record 0 itself is handled again (one pong per attempt); it is the one pong that
    # may repeat, and the nine later ones must not.
    assert len(repeated) <= 1, f"outputs of later records emitted again: {repeated}"
    assert sum(after.values()) - 9 == after.most_common(1)[0][1]


class HugePongForHuge(Stage):
    """Answers every ping; the answer to 'huge' is larger than the producer's whole queue."""

    consumes = PINGS
    emits = (PONGS,)
    group = "huge-pong"

    def handle(self, event: Ping, ctx: Context) -> None:
        body = _incompressible(6_000) if event.ping_id == "huge" else "ok"
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by=body))


def test_an_output_larger_than_the_producer_queue_dead_letters_the_input(
    kafka_bootstrap: str,
) -> None:
    """With queue.buffering.max.kbytes smaller than one output, that output can never be
    queued: its input is dead-lettered with a clear error, the partition goes on, and the
    worker still stops when asked (it used to spin in produce for ever)."""
    settings = unique_settings(
        kafka_bootstrap, topic_partitions=1,
        producer_config={"queue.buffering.max.kbytes": "2"},
    )  # fmt: skip
    group, pings = settings.topic(HugePongForHuge.group or ""), settings.topic(PINGS.name)
    monitor = LagMonitor(settings)
    try:
        with running(settings, [HugePongForHuge]) as worker, Publisher(settings) as publisher:
            runner = worker.runners[0]
            publisher.publish(PINGS, Ping(ping_id="huge", n=0))
            for i in range(1, 4):
                publisher.publish(PINGS, Ping(ping_id=f"after{i}", n=i))
            [record] = raw_records(settings, runner.plan.dlq_topic, 1, timeout_s=60)
            wait_until(lambda: monitor.lag(group, [pings]) == (4, 0), 60, "lag 0")
            pongs = _ids(settings, settings.topic(PONGS.name))
    finally:
        monitor.close()
    headers = dict(record.headers())
    assert headers["dlq-original-offset"] == b"0"
    assert b"can never fit the producer's local queue" in headers["dlq-exception-message"]
    assert len(pongs) == 3
