"""Compatible schema changes between writers and readers deployed at different times."""

from __future__ import annotations

from pipeline import Publisher
from pipeline.app import Pipeline
from tests.integration.app_stages import PINGS, PINGS_V2, PONGS, Echo, EchoV2, Ping, PingV2
from tests.integration.kit import ROOT, read_topic, running, unique_settings

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
