"""``KafkaTransport``: the ``pipeline.transport.Transport`` of a real Kafka cluster.

It holds only the settings and creates nothing until asked: every method builds a new
confluent-kafka client from ``pipeline.kafka.config`` (user overrides applied last, as
everywhere), owned and closed by the caller.
"""

from __future__ import annotations

from pipeline.config import Settings
from pipeline.kafka import config as kconfig
from pipeline.kafka.admin import KafkaAdmin, LagMonitor
from pipeline.kafka.clients import KafkaConsumer, KafkaProducer
from pipeline.kafka.schema_topic import SchemaTopic
from pipeline.ports import (
    AdminPort,
    BacklogPort,
    ConsumerPort,
    LagPort,
    ProducerPort,
    SchemaStorePort,
    TopicLogPort,
    TransactionalProducerPort,
)


class KafkaTransport:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def check(self) -> None:
        kconfig.check(self.settings)

    def consumer(
        self, group: str, client_id: str, *, retry: bool = False, linger: bool = False
    ) -> ConsumerPort:
        build = kconfig.retry_consumer if retry else kconfig.consumer
        linger_s = self.settings.batch_linger_s if linger else 0.0
        return KafkaConsumer(build(self.settings, group, client_id), linger_s)

    def producer(self, client_id: str) -> ProducerPort:
        return KafkaProducer(kconfig.producer(self.settings, client_id))

    def transactional_producer(
        self, client_id: str, transactional_id: str, transaction_timeout_s: float
    ) -> TransactionalProducerPort:
        # Ours first, so a user's producer_config can still change them (as before the seam).
        config = {
            "transactional.id": transactional_id,
            "transaction.timeout.ms": round(transaction_timeout_s * 1000),
        } | kconfig.producer(self.settings, client_id)
        return KafkaProducer(config)

    def admin(self) -> AdminPort:
        return KafkaAdmin(self.settings)

    def lag_monitor(self) -> LagPort:
        return LagMonitor(self.settings)

    def topic_log(self) -> TopicLogPort:
        # Loaded on first use, as ``backlog``'s: only delayed topics, schedules and the DLQ
        # tools read topics as logs, and only status and alerts read backlogs.
        from pipeline.kafka.topics_io import KafkaTopicLog

        return KafkaTopicLog(self.settings)

    def backlog(self, timeout_s: float = 5.0) -> BacklogPort:
        from pipeline.kafka.backlog import KafkaBacklog

        return KafkaBacklog(self.settings, timeout_s)

    def schema_store(self) -> SchemaStorePort:
        return SchemaTopic(self.settings)
