"""Topic management and group lag, through confluent-kafka's AdminClient."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException
from confluent_kafka import TopicPartition as CTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from pipeline.config import Settings
from pipeline.errors import BrokerUnavailableError, KafkaError, TopicNotFoundError
from pipeline.kafka import config as kconfig
from pipeline.kafka.errors import wrap

log = logging.getLogger("pipeline.kafka")


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: int


class KafkaAdmin:
    def __init__(self, settings: Settings, timeout_s: float = 15.0) -> None:
        self._settings = settings
        self._timeout = timeout_s
        self._admin = AdminClient(kconfig.admin(settings))

    def topics(self) -> dict[str, TopicInfo]:
        try:
            meta = self._admin.list_topics(timeout=self._timeout)
        except KafkaException as exc:
            raise BrokerUnavailableError(
                f"cannot reach Kafka at {self._settings.bootstrap_servers}: {exc.args[0]}"
            ) from None
        return {
            name: TopicInfo(name, len(t.partitions))
            for name, t in meta.topics.items()
            if not name.startswith("__")
        }

    def create(self, names: list[str], partitions: int | None = None) -> list[str]:
        """Create the topics that do not exist yet; returns the ones created."""
        existing = self.topics()
        missing = [n for n in dict.fromkeys(names) if n not in existing]
        if not missing:
            return []
        count = partitions or self._settings.topic_partitions
        new = [NewTopic(n, count, self._settings.topic_replication) for n in missing]
        futures = self._admin.create_topics(new, operation_timeout=self._timeout)
        for name, future in futures.items():
            try:
                future.result(timeout=self._timeout)
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":  # a racing worker made it
                    raise wrap(exc, f"create topic {name}") from None
        log.info("created topics %s with %d partitions", ", ".join(missing), count)
        return missing

    def ensure(self, names: list[str]) -> list[str]:
        """Create missing topics if allowed, else raise one error naming every missing one."""
        if self._settings.create_topics:
            return self.create(names)
        missing = sorted(set(names) - set(self.topics()))
        if missing:
            raise TopicNotFoundError(
                f"topics do not exist and create_topics is off: {', '.join(missing)} "
                "(create them with `pipeline topics create`)"
            )
        return []

    def delete(self, names: list[str]) -> None:
        futures = self._admin.delete_topics(names, operation_timeout=self._timeout)
        for name, future in futures.items():
            try:
                future.result(timeout=self._timeout)
            except KafkaException as exc:
                raise wrap(exc, f"delete topic {name}") from None


class LagMonitor:
    """Committed offsets and lag of consumer groups, for progress views and tests.

    One long-lived client reads high watermarks; committed offsets come from the group
    coordinator through the AdminClient. Nothing here joins a group.
    """

    def __init__(self, settings: Settings, timeout_s: float = 10.0) -> None:
        self._timeout = timeout_s
        self._admin = AdminClient(kconfig.admin(settings))
        self._consumer = Consumer(
            kconfig.common(settings)
            | {"group.id": "pipeline-lag-monitor", "enable.auto.commit": False}
        )

    def lag(self, group: str, topics: list[str]) -> tuple[int, int]:
        """(records committed since the start of the log, records not yet committed)."""
        try:
            meta = self._consumer.list_topics(timeout=self._timeout)
            parts = [
                CTopicPartition(t, p)
                for t in topics
                if t in meta.topics
                for p in meta.topics[t].partitions
            ]
            request = [ConsumerGroupTopicPartitions(group, parts)]
            result = self._admin.list_consumer_group_offsets(request)[group].result(self._timeout)
            done = lag = 0
            for tp in result.topic_partitions:
                low, high = self._consumer.get_watermark_offsets(
                    CTopicPartition(tp.topic, tp.partition), timeout=self._timeout, cached=False
                )
                position = tp.offset if tp.offset >= 0 else low
                done += max(0, position - low)
                lag += max(0, high - position)
            return done, lag
        except KafkaException as exc:
            raise KafkaError(f"lag of group {group}: {exc}") from None

    def close(self) -> None:
        self._consumer.close()
