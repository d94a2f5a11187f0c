"""Writer schemas shared through a compacted Kafka topic, for the registry-less wire format.

Single-object encoding names the writer schema by its CRC-64-AVRO fingerprint. A consumer can
decode only if it can find that schema: its own ``schemas/`` has the versions it was deployed
with, but a producer deployed later may write a newer version. So every writer publishes the
schemas it writes with (key: fingerprint, value: the full, self-contained schema JSON — not the
canonical form, which drops defaults and logical types) to this topic once at
startup, and a reader that meets an unknown fingerprint reads the topic to find it. This is the
role a schema registry plays in the Confluent format, with nothing to run but Kafka.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka import TopicPartition as CTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from pipeline.config import Settings
from pipeline.errors import KafkaError
from pipeline.kafka import config as kconfig

log = logging.getLogger("pipeline.kafka")

TOPIC = "_pipeline.schemas"
MISS_TTL_S = 30.0


class SchemaTopic:
    def __init__(self, settings: Settings, timeout_s: float = 15.0) -> None:
        self._settings = settings
        self.topic = settings.topic(TOPIC)
        self._timeout = timeout_s
        self._published: set[bytes] = set()
        self._known: dict[bytes, str] = {}
        self._misses: dict[bytes, float] = {}
        self._lock = threading.Lock()
        self._ready = False

    def publish(self, fingerprint: bytes, schema_json: str) -> None:
        """Make a writer schema findable (idempotent; once per fingerprint per process)."""
        with self._lock:
            if fingerprint in self._published:
                return
            self._ensure_topic()
            producer = Producer(kconfig.common(self._settings) | {"enable.idempotence": True})
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

    def lookup(self, fingerprint: bytes) -> str | None:
        """The schema JSON for ``fingerprint``, reading the topic to its end if needed. A miss
        is remembered for ``MISS_TTL_S``: a burst of poison records with a bogus fingerprint
        must not re-read the topic once per record."""
        with self._lock:
            if fingerprint not in self._known:
                missed_at = self._misses.get(fingerprint)
                if missed_at is not None and time.monotonic() - missed_at < MISS_TTL_S:
                    return None
                self._read_all()
                if fingerprint not in self._known:
                    self._misses[fingerprint] = time.monotonic()
            return self._known.get(fingerprint)

    def _read_all(self) -> None:
        consumer = Consumer(
            kconfig.common(self._settings)
            | {"group.id": f"schema-reader-{uuid.uuid4()}", "enable.auto.commit": False}
        )
        try:
            meta = consumer.list_topics(self.topic, timeout=self._timeout).topics.get(self.topic)
            if meta is None or meta.error is not None:
                return
            for partition in meta.partitions:
                self._read_partition(consumer, CTopicPartition(self.topic, partition))
        except KafkaException as exc:
            raise KafkaError(f"cannot read writer schemas from {self.topic}: {exc}") from None
        finally:
            consumer.close()

    def _read_partition(self, consumer: Consumer, tp: CTopicPartition) -> None:
        low, high = consumer.get_watermark_offsets(tp, timeout=self._timeout)
        if high <= low:
            return
        tp.offset = low
        consumer.assign([tp])
        position = low
        deadline = time.monotonic() + self._timeout
        while position < high:
            if time.monotonic() > deadline:
                raise KafkaError(f"reading {self.topic} stalled at offset {position} of {high}")
            # consume() waits for a full batch or its timeout: keep the timeout short.
            for msg in consumer.consume(500, 0.2):
                key, value, offset = msg.key(), msg.value(), msg.offset()
                if msg.error() is None and key and value:
                    self._known[key] = value.decode()
                if offset is not None:
                    position = offset + 1

    def _ensure_topic(self) -> None:
        if self._ready:
            return
        admin = AdminClient(kconfig.admin(self._settings))
        config = {"cleanup.policy": "compact"}
        new = NewTopic(self.topic, 1, self._settings.topic_replication, config=config)
        future = admin.create_topics([new], operation_timeout=self._timeout)[self.topic]
        try:
            future.result(self._timeout)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise KafkaError(f"cannot create {self.topic}: {exc}") from None
        self._ready = True
