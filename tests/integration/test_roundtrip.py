"""Avro events published with the producer API flow through a stage with key and headers."""

from __future__ import annotations

import asyncio

from pipeline import Publisher, headers
from tests.integration.app_stages import PINGS, PONGS, AsyncEcho, Echo, Ping
from tests.integration.kit import read_topic, running, unique_settings


def test_event_round_trips_through_a_stage_with_key_and_headers(kafka_bootstrap: str) -> None:
    """A published Ping comes out of Echo as a Pong with the same key, a derived event id,
    the input's id as correlation id, and the trace context carried over."""
    settings = unique_settings(kafka_bootstrap)
    with running(settings, [Echo]), Publisher(settings) as publisher:
        sent = publisher.publish(
            PINGS,
            Ping(ping_id="a1", n=7),
            key="user-42",
            headers={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
        )
        assert sent is not None
        [(record, pong)] = read_topic(settings, PONGS, count=1)
    assert (pong.ping_id, pong.n) == ("a1", 7)
    assert record.key() == b"user-42"
    hdrs = dict(record.headers())
    assert hdrs["correlation-id"].decode() == sent.event_id
    assert hdrs["event-id"].decode() == headers.derived_event_id(sent.event_id, "echo", 0)
    assert hdrs["traceparent"].startswith(b"00-4bf92f3577b34da6a3ce929d0e0e4736")


def test_async_handler_and_async_publisher(kafka_bootstrap: str) -> None:
    """An async stage handles events published with ``await publish_async``."""
    settings = unique_settings(kafka_bootstrap)

    async def send() -> list[str]:
        with Publisher(settings) as publisher:
            results = await asyncio.gather(
                *(publisher.publish_async(PINGS, Ping(ping_id=f"x{i}", n=i)) for i in range(20))
            )
        return [r.event_id for r in results]

    with running(settings, [AsyncEcho]):
        ids = asyncio.run(send())
        pongs = read_topic(settings, PONGS, count=20)
    assert len(set(ids)) == 20
    assert sorted(p.n for _, p in pongs) == list(range(20))
    assert {p.handled_by for _, p in pongs} == {"async"}


def test_a_declared_id_field_becomes_the_event_id(kafka_bootstrap: str) -> None:
    """Publishing to a topic with ``id_field`` uses that field as the event-id header, so the
    same business event published twice carries the same id."""
    from pipeline import Topic

    by_id = Topic(PINGS.name, Ping, id_field="ping_id")
    settings = unique_settings(kafka_bootstrap)
    with running(settings, [Echo]), Publisher(settings) as publisher:
        first = publisher.publish(by_id, Ping(ping_id="order-7", n=1))
        second = publisher.publish(by_id, Ping(ping_id="order-7", n=1))
        pongs = read_topic(settings, PONGS, count=2)
    assert first is not None and second is not None
    assert first.event_id == second.event_id == "order-7"
    assert {dict(r.headers())["correlation-id"] for r, _ in pongs} == {b"order-7"}
