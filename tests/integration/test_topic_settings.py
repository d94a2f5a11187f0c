"""Topics the framework creates carry the configured replication factor and min ISR."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource

from pipeline.kafka import KafkaAdmin
from tests.integration.kit import unique_settings


def test_created_topics_carry_min_insync_replicas(kafka_bootstrap: str) -> None:
    """Set on the topic itself (a dynamic topic config), not left to the broker's default, so
    that a cluster with another default still gets what the settings say."""
    settings = unique_settings(kafka_bootstrap, topic_replication=1, topic_min_insync_replicas=1)
    name = settings.topic("replicated")
    assert KafkaAdmin(settings).create([name]) == [name]
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    configs = admin.describe_configs([resource])[resource].result(15)
    entry = configs["min.insync.replicas"]
    assert entry.value == "1"
    assert entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    meta = admin.list_topics(name, timeout=15).topics[name]
    assert {len(p.replicas) for p in meta.partitions.values()} == {1}
