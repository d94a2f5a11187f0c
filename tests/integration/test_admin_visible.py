"""Topics the admin creates are usable when ``create``/``ensure`` return, on the real broker.

CreateTopics returns once the controller has the topics; the broker's metadata learns of them
a moment later (longer on a loaded machine). A Publisher checking for its topic in between was
told TopicNotFoundError, so tests waited for metadata themselves (``kit.ensure_visible_topics``).
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from pipeline.app import Pipeline
from pipeline.kafka import KafkaAdmin, schema_topic
from pipeline.kafka import admin as kadmin
from pipeline.kafka.schema_topic import TOPIC as SCHEMAS
from pipeline.publisher import Publisher
from tests.integration.app_stages import PINGS, Echo, Ping
from tests.integration.kit import unique_settings


def test_topics_are_in_metadata_when_ensure_returns_so_a_publisher_publishes_at_once(
    kafka_bootstrap: str,
) -> None:
    """Right after ``ensure_topics()`` (no wait of our own), another admin client lists every
    topic with a leader for each partition, and a new Publisher publishes to the input."""
    settings = unique_settings(kafka_bootstrap)
    pipeline = Pipeline.build(settings, [Echo])
    wanted = pipeline.topics()
    # The writer schemas' topic is new to this prefix too: created with the stage's topics.
    assert sorted(pipeline.ensure_topics()) == sorted([*wanted, settings.topic(SCHEMAS)])
    listed = KafkaAdmin(settings).topics()
    assert set(wanted) <= set(listed)
    assert {listed[name].partitions for name in wanted} == {settings.topic_partitions}
    with Publisher(settings) as publisher:
        delivered = publisher.publish(PINGS, Ping(ping_id="p0", n=0), key="p0")
    assert delivered is not None and delivered.offset == 0


def test_creating_many_topics_at_once_returns_with_all_of_them_led(kafka_bootstrap: str) -> None:
    """Twelve topics in one call: each is in the metadata, every partition with a leader, when
    ``create`` returns; a second ``create`` finds them and creates nothing."""
    settings = unique_settings(kafka_bootstrap)
    names = [settings.topic(f"many.{i}") for i in range(12)]
    admin = KafkaAdmin(settings)
    assert admin.create(names, partitions=3) == names
    other = AdminClient({"bootstrap.servers": kafka_bootstrap})
    meta = other.list_topics(timeout=15).topics
    for name in names:
        assert name in meta and meta[name].error is None
        leaders = [p.leader for p in meta[name].partitions.values()]
        assert len(leaders) == 3 and min(leaders) >= 0, (name, leaders)
    assert admin.create(names) == []


def test_a_first_start_creates_every_topic_in_one_request_and_announces_without_another(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a cluster where none of them exist, ``ensure_topics`` sends one CreateTopics request
    for the stage's topics (retry tiers and DLQ included) and the writer schemas' topic (one
    partition, compacted), and announcing the stage's output schema creates nothing more;
    a reader then finds that schema."""
    requests: list[list[str]] = []

    class Counting(AdminClient):  # type: ignore[misc]
        def create_topics(self, new: list[Any], **kwargs: Any) -> Any:
            requests.append([t.topic for t in new])
            return super().create_topics(new, **kwargs)

    monkeypatch.setattr(kadmin, "AdminClient", Counting)
    monkeypatch.setattr(schema_topic, "AdminClient", Counting)
    settings = unique_settings(kafka_bootstrap)
    pipeline = Pipeline.build(settings, [Echo])
    created = pipeline.ensure_topics()
    schemas = settings.topic(SCHEMAS)
    assert requests == [created] and sorted(created) == sorted([*pipeline.topics(), schemas])
    assert any(".retry." in t for t in created) and any(t.endswith(".dlq") for t in created)
    other = AdminClient({"bootstrap.servers": kafka_bootstrap})
    assert len(other.list_topics(schemas, timeout=15).topics[schemas].partitions) == 1
    resource = ConfigResource(ResourceType.TOPIC, schemas)
    configs = other.describe_configs([resource])[resource].result(15)
    assert configs["cleanup.policy"].value == "compact"
    _, binding = next(iter(pipeline.plans[0].outputs.values()))
    reader = pipeline.transport.schema_store().reader()
    try:
        assert reader(binding.fingerprint) == binding.schema.json
    finally:
        reader.close()
