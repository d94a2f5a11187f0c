"""The run's topics and groups: created up front, all under one ``bench-<uuid>.`` prefix, and
deleted at the end so reruns never collide and nothing is left on the shared broker."""

from __future__ import annotations

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

PARTITIONS = 6  # = Settings.topic_partitions


class RunTopics:
    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.prefix = prefix
        self._admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 5})

    def name(self, *parts: object) -> str:
        return self.prefix + ".".join(str(p) for p in parts)

    def create(self, names: list[str], config: dict[str, str] | None = None) -> None:
        new = [NewTopic(n, PARTITIONS, 1, config=config or {}) for n in names]
        for future in self._admin.create_topics(new, operation_timeout=30).values():
            future.result(30)

    def delete_all(self) -> tuple[list[str], list[str]]:
        """Delete every topic and consumer group of this run. Returns the topics deleted and
        the groups that could not be (a member still leaving; the broker expires them)."""
        topics = [
            t for t in self._admin.list_topics(timeout=15).topics if t.startswith(self.prefix)
        ]
        if topics:
            for future in self._admin.delete_topics(topics, operation_timeout=30).values():
                future.result(30)
        listed = self._admin.list_consumer_groups().result(15)
        groups = [g.group_id for g in listed.valid if g.group_id.startswith(self.prefix)]
        left = []
        if groups:
            for group, future in self._admin.delete_consumer_groups(groups).items():
                try:
                    future.result(15)
                except KafkaException:
                    left.append(group)
        return topics, left
