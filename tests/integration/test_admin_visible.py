"""Topics the admin creates are usable when ``create``/``ensure`` return, on the real broker.

CreateTopics returns once the controller has the topics; the broker's metadata learns of them
a moment later (longer on a loaded machine). A Publisher checking for its topic in between was
told TopicNotFoundError, so tests waited for metadata themselves (``kit.ensure_visible_topics``).
"""

from __future__ import annotations

from confluent_kafka.admin import AdminClient

from pipeline.app import Pipeline
from pipeline.kafka import KafkaAdmin
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
    assert sorted(pipeline.ensure_topics()) == sorted(wanted)
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
