"""``MemoryTransport``: the ``pipeline.transport.Transport`` of a ``MemoryBroker``.

Pipeline, Publisher, the CLI and replay get their clients from it exactly as from
``KafkaTransport``, so a user's stages run unchanged through the real runner::

    broker = MemoryBroker(FakeClock())
    pipeline = Pipeline.build(settings, [Transcode], transport=MemoryTransport(broker, settings))

Each call returns a new client on the shared broker, configured as ``pipeline.kafka.config``
configures the real one where the broker models it (group, offset reset, read_committed,
the cooperative-sticky assignor).

``Publisher`` serves its delivery reports from a thread that polls with a timeout: on a broker
with a non-blocking ``FakeClock`` that poll returns at once, so that thread spins. Publish
through ``TestPipeline.publish`` there, or give the broker a ``SystemClock``.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING

from pipeline.config import Settings
from pipeline.dlq import StoredRecord
from pipeline.errors import KafkaError, TopicNotFoundError
from pipeline.ports import PartitionOffsets, TopicInfo, TopicPartition, TopicSpec, Watermarks
from pipeline.testing.broker import MemoryBroker
from pipeline.testing.consumer import MemoryConsumer
from pipeline.testing.log import Record
from pipeline.testing.producer import MemoryProducer
from pipeline.transport import JAVA_COMPATIBLE_PARTITIONER

if TYPE_CHECKING:
    from pipeline.serde import SchemaResolver


class MemoryTransport:
    def __init__(self, broker: MemoryBroker, settings: Settings) -> None:
        self.broker = broker
        self.settings = settings
        self._schemas = MemorySchemaStore()

    def check(self) -> None:
        """Nothing to check: the broker reads only the options it models."""

    def consumer(
        self, group: str, client_id: str, *, retry: bool = False, linger: bool = False
    ) -> MemoryConsumer:
        # As pipeline.kafka.config.consumer: no auto-commit (the broker has none), committed
        # transactional records only, incremental rebalances. ``retry`` and ``linger`` change
        # only fetch timing on Kafka, which is not modelled.
        return self.broker.consumer(
            {
                "group.id": group,
                "client.id": client_id,
                "auto.offset.reset": self.settings.auto_offset_reset,
                "isolation.level": "read_committed",
                "partition.assignment.strategy": "cooperative-sticky",
            }
            | self.settings.consumer_config  # user overrides last, as on Kafka
        )

    def producer(self, client_id: str) -> MemoryProducer:
        # As pipeline.kafka.config.producer: the Java client's partitioner, and the user's
        # overrides last (message.max.bytes and partitioner are modelled).
        config = {"client.id": client_id, "partitioner": JAVA_COMPATIBLE_PARTITIONER}
        return self.broker.producer(config | self.settings.producer_config)

    def transactional_producer(
        self, client_id: str, transactional_id: str, transaction_timeout_s: float
    ) -> MemoryProducer:
        # The broker aborts a fenced producer's transaction at once; timeouts are not modelled.
        config = {"client.id": client_id, "partitioner": JAVA_COMPATIBLE_PARTITIONER,
                  "transactional.id": transactional_id,
                  "transaction.timeout.ms": round(transaction_timeout_s * 1000)}  # fmt: skip
        return self.broker.producer(config | self.settings.producer_config)

    def admin(self) -> MemoryAdmin:
        return MemoryAdmin(self.broker, self.settings)

    def lag_monitor(self) -> MemoryLag:
        return MemoryLag(self.broker)

    def topic_log(self) -> MemoryTopicLog:
        return MemoryTopicLog(self.broker)

    def backlog(self, timeout_s: float = 5.0) -> MemoryBacklog:
        return MemoryBacklog(self.broker)

    def schema_store(self) -> MemorySchemaStore:
        """One store per transport: a schema one pipeline publishes, another one reads."""
        return self._schemas


class MemoryAdmin:
    """``AdminPort``: topics on the broker (never unreachable, so never a broker error)."""

    def __init__(self, broker: MemoryBroker, settings: Settings) -> None:
        self._broker = broker
        self._settings = settings

    def topics(self) -> dict[str, TopicInfo]:
        return {n: t for n, t in self._broker.topics().items() if not n.startswith("__")}

    def create(
        self,
        names: Sequence[str | TopicSpec],
        partitions: int | None = None,
        config: dict[str, str] | None = None,
    ) -> list[str]:
        created: list[str] = []
        conf: dict[str, str] | None
        for item in names:
            if isinstance(item, TopicSpec):
                name, count, conf = item.name, item.partitions, dict(item.config)
            else:
                name, count, conf = item, partitions, config
            count = count or self._settings.topic_partitions
            if name not in created and self._broker.create_topic(name, count, conf):
                created.append(name)
        return created

    def ensure(self, names: Sequence[str | TopicSpec]) -> list[str]:
        if self._settings.create_topics:
            return self.create(names)
        existing = self._broker.topics()
        wanted = [n.name if isinstance(n, TopicSpec) else n for n in names]
        missing = [n for n in dict.fromkeys(wanted) if n not in existing]
        if missing:
            raise TopicNotFoundError(f"missing topics (create_topics is off): {', '.join(missing)}")
        return []

    def delete(self, names: list[str]) -> None:
        self._broker.delete(names)


class MemoryLag:
    """``LagPort`` over the broker's committed offsets."""

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker

    def lag(self, group: str, topics: list[str]) -> tuple[int, int]:
        return self._broker.lag(group, topics)

    def partition_lag(self, group: str, topics: list[str]) -> dict[TopicPartition, int]:
        return self._broker.partition_lag(group, topics)

    def close(self) -> None:
        """Nothing to release."""


class MemoryBacklog:
    """``BacklogPort`` over the broker's logs and committed offsets (never unreachable)."""

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker

    def offsets(
        self, group: str | None, topics: list[str]
    ) -> dict[TopicPartition, PartitionOffsets]:
        committed = self._broker.committed_offsets(group) if group is not None else {}
        existing = self._broker.topics()
        return {
            (t, p): PartitionOffsets(low, high, committed.get((t, p)))
            for t in topics
            if t in existing
            for p, (low, high) in self._broker.watermarks(t).items()
        }

    def timestamps(self, positions: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        found: dict[TopicPartition, int] = {}
        for (topic, partition), offset in positions.items():
            later = (r for r in self._broker.records(topic, partition) if r.offset() >= offset)
            first = next(later, None)
            if first is not None:
                found[(topic, partition)] = first.timestamp()[1]
        return found

    def close(self) -> None:
        """Nothing to release."""


class MemoryTopicLog:
    """``TopicLogPort``: snapshot reads of the broker's logs, and ``DeleteRecords``."""

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker

    def watermarks(self, topic: str) -> Watermarks:
        if topic not in self._broker.topics():
            raise TopicNotFoundError(f"topic {topic!r} does not exist")
        return self._broker.watermarks(topic)

    def read(
        self, topic: str, *, partition: int | None = None, start_offset: int = 0
    ) -> Generator[StoredRecord, None, None]:
        # The snapshot is taken now, not at the first next(): records appended meanwhile are
        # not returned, as the port promises.
        marks = self.watermarks(topic)
        records = self._broker.records(topic, partition)
        return _snapshot(records, marks, start_offset)

    def delete_up_to(self, topic: str, marks: Watermarks) -> int:
        if topic not in self._broker.topics():
            raise TopicNotFoundError(f"topic {topic!r} does not exist")
        return self._broker.delete_records(topic, {p: high for p, (_, high) in marks.items()})


def _snapshot(
    records: list[Record], marks: Watermarks, start_offset: int
) -> Generator[StoredRecord, None, None]:
    for r in records:
        if start_offset <= r.offset() < marks[r.partition()][1]:
            yield StoredRecord(
                topic=r.topic(),
                partition=r.partition(),
                offset=r.offset(),
                key=r.key(),
                value=r.value(),
                headers=tuple(r.headers() or ()),
                timestamp_ms=r.timestamp()[1],
            )


class MemorySchemaStore:
    """``SchemaStorePort``: writer schemas in a dict, found at once by every reader."""

    def __init__(self) -> None:
        self._schemas: dict[bytes, str] = {}

    def topics(self) -> list[TopicSpec]:
        return []

    def topics_ensured(self) -> None:
        pass

    def publish(self, fingerprint: bytes, schema_json: str) -> None:
        known = self._schemas.setdefault(fingerprint, schema_json)
        if known != schema_json:
            raise KafkaError(f"fingerprint {fingerprint.hex()} already names another schema")

    def reader(self) -> SchemaResolver:
        return self._schemas.get
