"""Compatible schema changes between writers and readers deployed at different times."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Producer

from pipeline import Publisher
from pipeline.app import Pipeline
from pipeline.config import Settings
from pipeline.kafka import schema_topic
from tests.integration.app_stages import PINGS, PINGS_V2, PONGS, Echo, EchoV2, Ping, PingV2
from tests.integration.kit import (
    ROOT,
    end_offsets,
    prepare,
    raw_records,
    read_topic,
    running,
    unique_settings,
)

V2 = ROOT / "tests" / "schemas_v2"


def test_reader_on_old_schema_reads_events_with_an_added_defaulted_field(
    kafka_bootstrap: str,
) -> None:
    """Echo (deployed with Ping v1) decodes Pings written with v2, which it has never seen:
    the writer schema is found by fingerprint in the schema topic, and the new field dropped."""
    old = unique_settings(kafka_bootstrap)
    new = old.model_copy(update={"schemas_dir": V2})
    assert (
        Pipeline.build(old).catalog.get("test.Ping").fingerprint
        != Pipeline.build(new).catalog.get("test.Ping").fingerprint
    )
    with running(old, [Echo]), Publisher(new) as publisher:
        publisher.publish(PINGS_V2, PingV2(ping_id="new-writer", n=3, priority=9))
        [(_, pong)] = read_topic(old, PONGS, count=1)
    assert (pong.ping_id, pong.n) == ("new-writer", 3)


def test_reader_on_new_schema_fills_the_default_for_old_events(kafka_bootstrap: str) -> None:
    """EchoV2 (deployed with Ping v2) reads Pings written with v1 and sees priority=0."""
    old = unique_settings(kafka_bootstrap)
    new = old.model_copy(update={"schemas_dir": V2})
    with Publisher(old) as publisher, running(new, [EchoV2]):
        publisher.publish(PINGS, Ping(ping_id="old-writer", n=1))
        [(_, pong)] = read_topic(new, PONGS, count=1)
    assert (pong.ping_id, pong.n, pong.handled_by) == ("old-writer", 0, "v2")


def count_schema_readers(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The configs of every consumer the schema topic module creates from now on."""
    opened: list[dict[str, Any]] = []
    real = schema_topic.Consumer

    def counting(config: dict[str, Any]) -> Any:
        opened.append(config)
        return real(config)

    monkeypatch.setattr(schema_topic, "Consumer", counting)
    return opened


def produce_raw(settings: Settings, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for value in values:
        producer.produce(settings.topic(PINGS.name), value)
    assert producer.flush(30) == 0


def test_a_batch_of_unknown_fingerprints_is_dead_lettered_with_one_schema_reader(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 records naming 200 different unknown writer schemas all reach the DLQ, and the
    worker reads the schema topic with one long-lived consumer, not one per record."""
    settings = unique_settings(kafka_bootstrap)
    prepare(settings, [Echo])
    pipeline = Pipeline.build(settings)
    good = pipeline.codec.encode(Ping(ping_id="p", n=1), pipeline.catalog.bind(Ping), "pings")
    bogus = [good[:2] + (0xF00D0000 + i).to_bytes(8, "little") + good[10:] for i in range(200)]
    produce_raw(settings, bogus)
    opened = count_schema_readers(monkeypatch)
    with running(settings, [Echo]) as worker:
        dlq = worker.runners[0].plan.dlq_topic
        records = raw_records(settings, dlq, 200, timeout_s=60)
    types = {dict(r.headers())["dlq-exception-type"] for r in records}
    assert types == {b"pipeline.errors.UnknownSchemaError"}
    assert len(opened) == 1


def test_a_schema_published_right_after_a_miss_is_found(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stage has already missed a writer schema once (a record written before its schema
    was published); the writer then publishes it and produces: that record is decoded."""
    old = unique_settings(kafka_bootstrap)
    new = old.model_copy(update={"schemas_dir": V2})
    v2 = Pipeline.build(new)
    early = v2.codec.encode(
        PingV2(ping_id="early", n=1, priority=1), v2.catalog.bind(PingV2), "pings"
    )
    opened = count_schema_readers(monkeypatch)
    with running(old, [Echo]) as worker:
        dlq = worker.runners[0].plan.dlq_topic
        produce_raw(old, [early])
        [missed] = raw_records(old, dlq, 1)
        assert dict(missed.headers())["dlq-exception-type"] == b"pipeline.errors.UnknownSchemaError"
        with Publisher(new) as publisher:  # publishes the v2 schema, then the event
            publisher.publish(PINGS_V2, PingV2(ping_id="after-publish", n=2, priority=9))
        [(_, pong)] = read_topic(old, PONGS, count=1)
        assert end_offsets(old, dlq) == 1
    assert (pong.ping_id, pong.n) == ("after-publish", 2)
    assert len(opened) == 1
