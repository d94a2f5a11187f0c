"""Writer schemas shared through a compacted Kafka topic, for the registry-less wire format.

Single-object encoding names the writer schema by its CRC-64-AVRO fingerprint. A consumer can
decode only if it can find that schema: its own ``schemas/`` has the versions it was deployed
with, but a producer deployed later may write a newer version. So every writer publishes the
schemas it writes with (key: fingerprint, value: the full, self-contained schema JSON — not the
canonical form, which drops defaults and logical types) to this topic once at
startup, and a reader that meets an unknown fingerprint reads the topic to find it. This is the
role a schema registry plays in the Confluent format, with nothing to run but Kafka.

A reader keeps one consumer per codec (so one per process), opened at its first miss and kept
until the codec is closed. A miss then costs one query of the end offsets, plus reading what
was published since the last read (see ``pipeline.serde.catalog.WriterSchemas``).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer
from confluent_kafka import TopicPartition as CTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from pipeline.config import Settings
from pipeline.errors import KafkaError
from pipeline.kafka import config as kconfig
from pipeline.kafka.admin import FIRST_REQUEST, VISIBLE_POLL_S, usable
from pipeline.kafka.errors import is_partition_eof, wrap
from pipeline.ports import TopicSpec
from pipeline.serde.catalog import WriterSchemas
from pipeline.transport import JAVA_COMPATIBLE_PARTITIONER

log = logging.getLogger("pipeline.kafka")

TOPIC = "_pipeline.schemas"
# A reader's metadata and end-offset queries happen while a stage decodes a batch: bounded well
# below max.poll.interval.ms even when a few in a row time out.
QUERY_TIMEOUT_S = 5.0


class SchemaTopic:
    CONFIG = (("cleanup.policy", "compact"),)  # on top of Settings.topic_config()

    def __init__(self, settings: Settings, timeout_s: float = 15.0) -> None:
        self._settings = settings
        self.topic = settings.topic(TOPIC)
        self._timeout = timeout_s
        self._published: set[bytes] = set()
        self._lock = threading.Lock()
        self._ready = False

    @property
    def publish_bound_s(self) -> float:
        """The longest ``publish`` takes: the topic looked up and made if need be (a look, the
        request, the wait for it with its last look), then the flush, each within the
        timeout."""
        return 5 * self._timeout

    def publish(self, fingerprint: bytes, schema_json: str) -> None:
        """Make a writer schema findable (idempotent; once per fingerprint per process)."""
        with self._lock:
            if fingerprint in self._published:
                return
            producer = Producer(self._producer_config())
            self._ensure_topic(producer)
            errors: list[str] = []
            producer.produce(
                self.topic,
                schema_json.encode(),
                fingerprint,
                on_delivery=lambda err, _m: errors.append(str(err)) if err else None,
            )
            left = producer.flush(self._timeout)
            if left or errors:
                raise KafkaError(
                    f"cannot publish writer schema to {self.topic}: {errors or 'timeout'}"
                )
            self._published.add(fingerprint)

    def _producer_config(self) -> dict[str, Any]:
        """Acknowledged by every in-sync replica, but not idempotent: a schema record is keyed
        by its fingerprint in a compacted topic and never changes, so a duplicate of a retried
        send is harmless, while an idempotent producer's first send waits for its producer id
        (about 0.5 s on a fresh client: librdkafka asks again on a 500 ms timer when no broker
        connection is up yet), on every worker's way to its first output. Never creates the
        topic through a metadata request either (it would have the broker's defaults, not
        ``compact``)."""
        return FIRST_REQUEST | kconfig.common(self._settings) | {
            "enable.idempotence": False,
            "acks": "all",
            "allow.auto.create.topics": False,
            "partitioner": JAVA_COMPATIBLE_PARTITIONER,
        }

    def topics(self) -> list[TopicSpec]:
        return [TopicSpec(self.topic, 1, self.CONFIG)]

    def topics_ensured(self) -> None:
        self._ready = True

    def reader(self) -> WriterSchemas:
        """The resolver of writer schemas for one codec: it owns one consumer of the topic,
        opened at its first miss and kept until ``close()``."""
        log_ = _TopicLog(self._settings, self.topic, min(self._timeout, QUERY_TIMEOUT_S))
        return WriterSchemas(log_, catch_up_s=self._timeout)

    def _ensure_topic(self, producer: Producer) -> None:
        """Create the topic unless the producer's metadata shows it usable (every start but
        the first on a cluster, or ``Pipeline.ensure_topics`` made it with the stages' topics):
        that look costs no client of its own. A topic created here is waited for until it is
        usable, as ``KafkaAdmin.create`` does: the producer, told a moment ago that it did not
        exist, would otherwise wait for its next metadata refresh."""
        if self._ready or self._usable(producer):  # one metadata request
            self._ready = True
            return
        admin = AdminClient(kconfig.admin(self._settings))
        config = self._settings.topic_config() | dict(self.CONFIG)
        new = NewTopic(self.topic, 1, self._settings.topic_replication, config=config)
        future = admin.create_topics([new], operation_timeout=self._timeout)[self.topic]
        try:
            future.result(self._timeout)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise KafkaError(f"cannot create {self.topic}: {exc}") from None
        deadline = time.monotonic() + self._timeout
        while not self._usable(producer):
            if time.monotonic() >= deadline:
                raise KafkaError(f"{self.topic} created but not usable after {self._timeout:g}s")
            time.sleep(VISIBLE_POLL_S)
        self._ready = True

    def _usable(self, producer: Producer) -> bool:
        try:
            meta = producer.list_topics(self.topic, timeout=self._timeout)
        except KafkaException as exc:
            raise wrap(exc, f"cannot look up {self.topic}") from None
        return usable(meta.topics.get(self.topic))


class _TopicLog:
    """The schema topic as a ``SchemaLog``: one consumer, opened on first use and kept, that
    assigns itself (no group membership, so no rebalances and no poll deadline) to the topic's
    partitions while catching up, and unassigns when asked for the end offsets.

    Why not stay assigned: the broker answers one request per connection at a time, so an
    end-offsets query would wait behind a fetch long-polling an idle partition (0.5 s with
    librdkafka's defaults). Pausing instead of unassigning costs about 1 s at each resume, and
    assigning at ``OFFSET_BEGINNING`` 0.5 s, so partitions are assigned at explicit offsets.
    """

    def __init__(self, settings: Settings, topic: str, timeout_s: float) -> None:
        self._settings = settings
        self._topic = topic
        self._timeout = timeout_s
        self._consumer: Consumer | None = None
        self._positions: dict[int, int | None] = {}  # next offset to read; None: not known yet
        self._assigned = False
        self._closed = False

    def discover(self) -> bool:
        consumer = self._open()
        try:
            meta = consumer.list_topics(self._topic, timeout=self._timeout).topics.get(self._topic)
        except KafkaException as exc:
            raise wrap(exc, f"cannot read writer schemas from {self._topic}") from None
        if meta is None or meta.error is not None:
            return False
        for partition in meta.partitions:
            self._positions.setdefault(partition, None)
        return True

    def ends(self) -> dict[int, int]:
        consumer = self._open()
        self._assign(False)
        ends = {}
        for partition, position in sorted(self._positions.items()):
            tp = CTopicPartition(self._topic, partition)
            try:
                # cached=False: the broker's high watermark now, not the last fetch's.
                low, high = consumer.get_watermark_offsets(tp, self._timeout, cached=False)
            except KafkaException as exc:
                raise wrap(exc, f"cannot read the end offsets of {self._topic}") from None
            if position is None:
                self._positions[partition] = low
            ends[partition] = high
        return ends

    def read(self, timeout_s: float) -> tuple[dict[bytes, str], dict[int, int]]:
        schemas: dict[bytes, str] = {}
        positions: dict[int, int] = {}
        for msg in self._take(timeout_s):
            partition, offset, err = msg.partition(), msg.offset(), msg.error()
            if partition is None or offset is None:
                continue
            if err is not None:
                if is_partition_eof(err):  # the end, even if compaction left a gap before it
                    positions[partition] = offset
                else:
                    log.warning("reading %s[%d]: %s", self._topic, partition, err)
                continue
            key, value = msg.key(), msg.value()
            if key and value:  # a tombstone removes nothing: schemas are immutable
                # A foreign value that is not UTF-8 stays findable, and is refused by the
                # codec's fingerprint check like any schema that does not hash to its key.
                schemas[bytes(key)] = value.decode(errors="replace")
            positions[partition] = offset + 1
        self._positions.update(positions)
        return schemas, positions

    def close(self) -> None:
        self._closed = True
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            consumer.close()

    def _take(self, timeout_s: float) -> list[Message]:
        """What has arrived; else, with a timeout, fetch and wait for the first message (or end
        of partition) and take what came with it. consume() alone would wait out its timeout
        for a full batch."""
        consumer = self._open()
        msgs = consumer.consume(500, 0)
        if msgs or timeout_s <= 0:
            return msgs
        self._assign(True)
        first = consumer.poll(timeout_s)
        return [] if first is None else [first, *consumer.consume(500, 0)]

    def _assign(self, on: bool) -> None:
        consumer = self._consumer
        if on == self._assigned or consumer is None:
            return
        known = {p: o for p, o in sorted(self._positions.items()) if o is not None}
        try:
            if on:
                consumer.assign([CTopicPartition(self._topic, p, o) for p, o in known.items()])
            else:
                consumer.unassign()  # drops what was fetched and not taken: read again later
        except KafkaException as exc:
            raise wrap(exc, f"cannot {'assign' if on else 'unassign'} {self._topic}") from None
        self._assigned = on

    def _open(self) -> Consumer:
        if self._closed:
            raise KafkaError(f"the reader of {self._topic} is closed")
        if self._consumer is None:
            self._consumer = Consumer(self._config())
        return self._consumer

    def _config(self) -> dict[str, Any]:
        return kconfig.common(self._settings) | {
            "group.id": f"schema-reader-{uuid.uuid4()}",  # required, but never joined
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            # The fetch at the end of a catch-up holds the connection for at most this long.
            "fetch.wait.max.ms": 20,
            # Schemas are small and few: a small prefetch buffer is plenty.
            "queued.max.messages.kbytes": 1024,
        }
