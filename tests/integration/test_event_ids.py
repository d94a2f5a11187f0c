"""Event ids of records from other producers: unreadable ids do not stop a stage, and an event
that came without an id keeps the one its stage gave it across the retry topic, the DLQ and a
replay."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import ClassVar

from confluent_kafka import Producer

from pipeline import Context, Idempotency, Publisher, RetryPolicy, Stage
from pipeline import headers as hdr
from pipeline.app import Pipeline
from pipeline.config import Settings
from pipeline.dlq import ReplayFilter
from pipeline.replay import ReplayRequest, replay
from pipeline.transport import kafka
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong
from tests.integration.kit import (
    end_offsets,
    prepare,
    raw_records,
    read_topic,
    running,
    unique_settings,
    wait_until,
)
from tests.integration.test_idempotent_stage import PINGS_BY_ID, Charge, charges

JAVA_UUID = uuid.UUID("f47ac10b-58cc-4372-a567-0e02b2c3d479")  # its 16 bytes are not UTF-8


def produce_foreign(settings: Settings, pings: list[tuple[Ping, bytes | None]]) -> None:
    """Encode each ping as our publisher would, but write it as another producer does: with
    the given raw ``event-id`` header bytes, or (None) with no headers at all."""
    pipeline = Pipeline.build(settings)
    topic = settings.topic(PINGS.name)
    binding = pipeline.catalog.bind(Ping)
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for ping, event_id in pings:
        value = pipeline.codec.encode(ping, binding, topic)
        headers = None if event_id is None else [("event-id", event_id)]
        producer.produce(topic, value, ping.ping_id.encode(), headers=headers)
    assert producer.flush(10) == 0


def done_ids(db: Path, group: str) -> set[str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT event_id FROM pipeline_idempotency WHERE group_id = ? AND state = 'done'",
            (group,),
        )
        return {event_id for (event_id,) in rows}


def event_ids(record: object) -> list[bytes]:
    return [v for k, v in (record.headers() or ()) if k == "event-id"]  # type: ignore[attr-defined]


def test_an_idempotent_stage_reads_ids_that_are_not_utf8_instead_of_crashing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A non-UTF-8 event-id and a raw 16-byte UUID in the same batch as a normal event: the
    stage keeps running and handles all three, recording the ids as hex and as the UUID; the
    binary id is recognised when the same record comes again."""
    db = tmp_path / "idem.db"
    settings = unique_settings(kafka_bootstrap, idempotency_url=f"sqlite:///{db}",
                               topic_partitions=1)  # fmt: skip
    prepare(settings, [Charge])
    produce_foreign(settings, [(Ping(ping_id="foreign", n=1), b"\xff\xfe-1"),
                               (Ping(ping_id="java", n=2), JAVA_UUID.bytes)])  # fmt: skip
    with running(settings, [Charge]) as worker, Publisher(settings) as publisher:
        publisher.publish(PINGS_BY_ID, Ping(ping_id="plain", n=3))
        pongs = read_topic(settings, PONGS, count=3)
        stats = worker.runners[0].stats
        assert not worker.failed, "the stage crashed on an id header"
        group = worker.runners[0].plan.group
        wait_until(lambda: len(done_ids(db, group)) == 3, 30, "three ids recorded done")
        produce_foreign(settings, [(Ping(ping_id="java", n=2), JAVA_UUID.bytes)])
        wait_until(lambda: stats.duplicates == 1, 30, "the binary id's copy to be a duplicate")
    assert sorted(p.ping_id for _, p in pongs) == ["foreign", "java", "plain"]
    assert done_ids(db, group) == {"fffe2d31", str(JAVA_UUID), "plain"}
    assert charges(db) == [("foreign", 1), ("java", 2), ("plain", 3)]


class FailsOnce(Stage):
    """Fails each event's first delivery (to the retry topic), then emits a pong; remembers the
    id each call saw."""

    consumes = PINGS
    emits = (PONGS,)
    group = "ids-fails-once"
    idempotency = Idempotency()
    retry = RetryPolicy(in_process_attempts=1, tiers=(0.2,))
    seen: ClassVar[list[str]] = []

    def handle(self, event: Ping, ctx: Context) -> None:
        FailsOnce.seen.append(ctx.event_id)
        if len(FailsOnce.seen) == 1:
            raise ConnectionError("first delivery fails")
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="fails-once"))


def test_a_header_less_event_keeps_its_id_through_the_retry_topic(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A record with no headers fails once: its retry copy carries the id the stage gave it on
    first sight (from its coordinates), so the second call, the store and the pong's derived
    id all see that one id."""
    FailsOnce.seen = []
    db = tmp_path / "idem.db"
    settings = unique_settings(kafka_bootstrap, idempotency_url=f"sqlite:///{db}",
                               topic_partitions=1)  # fmt: skip
    prepare(settings, [FailsOnce])
    produce_foreign(settings, [(Ping(ping_id="headless", n=1), None)])
    given = hdr.id_from_coordinates(f"{settings.topic(PINGS.name)}[0]@0")
    with running(settings, [FailsOnce]) as worker:
        plan = worker.runners[0].plan
        [(pong_record, pong)] = read_topic(settings, PONGS, count=1)
        wait_until(lambda: done_ids(db, plan.group), 30, "the id recorded done")
        [retry_copy] = raw_records(settings, plan.retry_topics[0], 1)
    assert len(FailsOnce.seen) >= 2 and set(FailsOnce.seen) == {given}
    assert event_ids(retry_copy) == [given.encode()]
    assert done_ids(db, plan.group) == {given}
    assert pong.ping_id == "headless"
    assert event_ids(pong_record) == [hdr.derived_event_id(given, plan.name, 0).encode()]


class BrokenUntilFixed(Stage):
    """Dead-letters every event (fatal error) until ``fixed``; then emits a pong."""

    consumes = PINGS
    emits = (PONGS,)
    group = "ids-broken"
    idempotency = Idempotency()
    retry = RetryPolicy(in_process_attempts=1, tiers=(0.2,), fatal=(ValueError,))
    fixed = False
    seen: ClassVar[list[str]] = []

    def handle(self, event: Ping, ctx: Context) -> None:
        BrokenUntilFixed.seen.append(ctx.event_id)
        if not BrokenUntilFixed.fixed:
            raise ValueError("bug")
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="broken"))


def test_a_header_less_event_keeps_its_id_through_the_dlq_and_a_replay(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A record with no headers is dead-lettered: the dead letter carries the id the stage
    gave it, so the replayed event (through the retry topic) is handled, recorded and emitted
    under that same id."""
    BrokenUntilFixed.fixed, BrokenUntilFixed.seen = False, []
    db = tmp_path / "idem.db"
    settings = unique_settings(kafka_bootstrap, idempotency_url=f"sqlite:///{db}",
                               topic_partitions=1)  # fmt: skip
    prepare(settings, [BrokenUntilFixed])
    produce_foreign(settings, [(Ping(ping_id="headless", n=1), None)])
    given = hdr.id_from_coordinates(f"{settings.topic(PINGS.name)}[0]@0")
    with running(settings, [BrokenUntilFixed]) as worker:
        plan = worker.runners[0].plan
        [dead_letter] = raw_records(settings, plan.dlq_topic, 1)
        BrokenUntilFixed.fixed = True
        request = ReplayRequest(plan.dlq_topic, ReplayFilter())
        tally = replay(kafka(settings), request, print, print)
        [(pong_record, _)] = read_topic(settings, PONGS, count=1)
        wait_until(lambda: done_ids(db, plan.group), 30, "the id recorded done")
    assert (tally.replayed, tally.failed) == (1, 0)
    assert event_ids(dead_letter) == [given.encode()]
    assert len(BrokenUntilFixed.seen) >= 2 and set(BrokenUntilFixed.seen) == {given}
    assert done_ids(db, plan.group) == {given}
    assert event_ids(pong_record) == [hdr.derived_event_id(given, plan.name, 0).encode()]
    assert end_offsets(settings, plan.retry_topics[0]) == 1, "replayed via the retry topic"
