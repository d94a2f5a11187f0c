"""The transport: where a pipeline gets its clients.

``Pipeline``, ``Publisher``, the CLI, ``pipeline dlq`` and the demo create no client
themselves; they ask a ``Transport`` for one, by role. ``pipeline.kafka.KafkaTransport`` is the
implementation for a real cluster and the default everywhere (``Pipeline.build(settings,
stages)`` uses ``KafkaTransport(settings)``); an in-memory broker implements the same methods
to run the same stages without Kafka::

    pipeline = Pipeline.build(settings, [Transcode], transport=KafkaTransport(settings))

A transport is a factory: it holds no client. Every call returns a new one, owned by the
caller, who closes it (``close()`` where the port has one). What it returns are the narrow
ports of ``pipeline.ports``, never a client library's types, so nothing outside
``pipeline.kafka`` imports confluent_kafka.

What stays with the callers is what the pipeline decides, whatever the transport: a stage's
group and client ids, reading retry topics with a second consumer behind ``ConsumerSet``,
whether a stage's producer is transactional and its transaction timeout.
"""

from __future__ import annotations

from typing import Protocol

from pipeline.config import Settings
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

# librdkafka's name for the Java client's choice of partition for a keyed record,
# ``toPositive(murmur2(key)) % partitions`` (keyless records: any partition). Every producer a
# transport makes uses it unless the user's ``producer_config`` names another ``partitioner``:
# librdkafka's own default (CRC32) puts most keys elsewhere than a Java service writing the
# same topic, which breaks per-key order between the two.
JAVA_COMPATIBLE_PARTITIONER = "murmur2_random"


class Transport(Protocol):
    def check(self) -> None:
        """Raise ``ConfigError`` now if the settings would make this transport refuse a stage's
        consumer or producer. ``Pipeline.build`` calls it before anything is created or
        connected; it leaves nothing behind."""
        ...

    def consumer(
        self, group: str, client_id: str, *, retry: bool = False, linger: bool = False
    ) -> ConsumerPort:
        """A consumer in ``group``, subscribed by the caller. It commits only the offsets it is
        given (no auto-commit), reads only committed transactional records, and serves
        rebalance callbacks inside ``consume`` on the caller's thread. A new group starts
        where ``Settings.auto_offset_reset`` says.

        ``retry``: it reads a stage's retry topics, whose records wait a second or more by
        design; the transport may poll it less eagerly (Kafka: a longer idle fetch).
        ``linger``: it reads a stage's inputs; after waiting for a first record, the transport
        may hold it a few ms so the records just behind it share its batch (Kafka:
        ``Settings.batch_linger_s``). A reader whose every record has a waiter (replies) asks
        for none."""
        ...

    def producer(self, client_id: str) -> ProducerPort:
        """An idempotent producer: an acknowledged record is durable, never duplicated by the
        producer's own retries, and kept in order within its partition. It reports every
        record once to its ``on_delivery``, from ``poll``/``flush`` on the caller's thread.
        A keyed record goes to the partition the Java client would pick for its key
        (``JAVA_COMPATIBLE_PARTITIONER``) unless ``producer_config`` says otherwise."""
        ...

    def transactional_producer(
        self, client_id: str, transactional_id: str, transaction_timeout_s: float
    ) -> TransactionalProducerPort:
        """A ``producer`` whose records, and the input offsets sent with them, become visible
        to readers together at ``commit_transaction`` or never. A newer producer with the same
        ``transactional_id`` fences this one; a transaction left open (a crash) is aborted by
        the broker after ``transaction_timeout_s``."""
        ...

    def admin(self) -> AdminPort:
        """Topic listing and creation (``ensure`` honours ``Settings.create_topics``)."""
        ...

    def lag_monitor(self) -> LagPort:
        """Committed offsets and lag of groups, for progress views; joins no group."""
        ...

    def topic_log(self) -> TopicLogPort:
        """Snapshot reads and record deletion, outside any group (``pipeline dlq``)."""
        ...

    def backlog(self, timeout_s: float = 5.0) -> BacklogPort:
        """Committed offsets, watermarks and record timestamps, each call bounded by
        ``timeout_s``; joins no group (``pipeline status``, alerts)."""
        ...

    def schema_store(self) -> SchemaStorePort:
        """Where writers publish their Avro schemas so readers on older ones find them (the
        wire format without a schema registry)."""
        ...


def kafka(settings: Settings) -> Transport:
    """The transport of the cluster ``settings`` name: the default wherever none is given.
    Imported here, not at the top, so a pipeline on another transport never loads the Kafka
    client."""
    from pipeline.kafka.transport import KafkaTransport

    return KafkaTransport(settings)
