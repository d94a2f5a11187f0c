"""Reading a topic as it stands and deleting its records: the Kafka side of ``pipeline dlq``,
offered as a ``TopicLogPort`` by ``KafkaTopicLog``.

``read_snapshot`` reads every partition from its low to its high watermark *as they were when it
was called*: records appended meanwhile are not returned, so a replay that writes back to a topic
it reads can never loop. It joins no group and commits nothing.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Generator, Iterator
from typing import Any

from confluent_kafka import Consumer, KafkaException
from confluent_kafka import TopicPartition as CTopicPartition
from confluent_kafka.admin import AdminClient

from pipeline.config import Settings
from pipeline.dlq import StoredRecord
from pipeline.errors import KafkaError, TopicNotFoundError
from pipeline.kafka import config as kconfig
from pipeline.kafka.errors import is_partition_eof, is_unknown_topic, wrap
from pipeline.ports import Watermarks

_BATCH = 500
_POLL_S = 0.2  # consume() waits for a full batch or this long: keep it short


class KafkaTopicLog:
    """``TopicLogPort``: each call opens its own client and closes it when done."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def watermarks(self, topic: str) -> Watermarks:
        return watermarks(self._settings, topic)

    def read(
        self, topic: str, *, partition: int | None = None, start_offset: int = 0
    ) -> Generator[StoredRecord, None, None]:
        return read_snapshot(self._settings, topic, partition=partition, start_offset=start_offset)

    def delete_up_to(self, topic: str, marks: Watermarks) -> int:
        return delete_up_to(self._settings, topic, marks)


def watermarks(settings: Settings, topic: str, timeout_s: float = 10.0) -> Watermarks:
    """(low, high) offsets of every partition; TopicNotFoundError if the topic does not exist."""
    consumer = Consumer(_reader_config(settings))
    try:
        return _watermarks(consumer, topic, timeout_s)
    finally:
        consumer.close()


def read_snapshot(
    settings: Settings,
    topic: str,
    *,
    partition: int | None = None,
    start_offset: int = 0,
    stall_timeout_s: float = 15.0,
) -> Generator[StoredRecord, None, None]:
    """Every record of ``topic`` (or of one partition) from ``start_offset`` (or the low
    watermark, if later) up to the high watermark at call time, partition by partition.

    Raises KafkaError if a partition yields nothing for ``stall_timeout_s`` before its end.
    Close the iterator (``contextlib.closing``) when stopping early: that closes the consumer.
    """
    consumer = Consumer(_reader_config(settings))
    try:
        marks = _watermarks(consumer, topic, stall_timeout_s)
        for p, (low, high) in sorted(marks.items()):
            if partition is None or p == partition:
                start = max(low, start_offset)
                yield from _read_partition(consumer, topic, p, start, high, stall_timeout_s)
    finally:
        consumer.close()


def delete_up_to(settings: Settings, topic: str, marks: Watermarks, timeout_s: float = 30.0) -> int:
    """Delete every record below each partition's high mark in ``marks``; returns how many went
    (by how far each low watermark moved). Records written after ``marks`` was read are kept."""
    admin = AdminClient(kconfig.admin(settings))
    request = [CTopicPartition(topic, p, high) for p, (low, high) in marks.items() if high > low]
    if not request:
        return 0
    futures = admin.delete_records(request, request_timeout=timeout_s, operation_timeout=timeout_s)
    removed = 0
    for tp, future in futures.items():
        try:
            deleted = future.result(timeout=timeout_s)
        except KafkaException as exc:
            raise wrap(exc, f"delete records of {topic}[{tp.partition}]") from None
        removed += max(0, deleted.low_watermark - marks[tp.partition][0])
    return removed


def delete_all_records(settings: Settings, topic: str) -> int:
    """Delete every record currently in ``topic``; returns how many were removed."""
    return delete_up_to(settings, topic, watermarks(settings, topic))


# -- internals ---------------------------------------------------------------------------------


def _reader_config(settings: Settings) -> dict[str, Any]:
    # The user's consumer options (e.g. security) apply; ours win where reading a snapshot
    # depends on them. Nothing is committed, so the throwaway group id never shows up anywhere.
    return (
        kconfig.common(settings)
        | settings.consumer_config
        | {
            "group.id": f"pipeline-snapshot-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )


def _watermarks(consumer: Consumer, topic: str, timeout_s: float) -> Watermarks:
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or is_unknown_topic(meta.error):
            raise TopicNotFoundError(f"topic {topic!r} does not exist")
        if meta.error is not None:
            raise wrap(meta.error, f"metadata of {topic}")
        return {
            p: consumer.get_watermark_offsets(
                CTopicPartition(topic, p), timeout=timeout_s, cached=False
            )
            for p in meta.partitions
        }
    except KafkaException as exc:
        raise wrap(exc, f"watermarks of {topic}") from None


def _read_partition(
    consumer: Consumer, topic: str, partition: int, start: int, high: int, stall_s: float
) -> Iterator[StoredRecord]:
    if start >= high:
        return
    consumer.assign([CTopicPartition(topic, partition, start)])
    position, deadline = start, time.monotonic() + stall_s
    while position < high:
        batch = _consume(consumer, topic)
        if not batch and time.monotonic() > deadline:
            raise KafkaError(f"reading {topic}[{partition}] stalled at offset {position} of {high}")
        for msg in batch:
            if msg.partition() != partition:  # a straggler from the previous assignment
                continue
            err = msg.error()
            if err is not None:
                if is_partition_eof(err):  # the end, e.g. before an open transaction
                    return
                raise wrap(err, f"read {topic}[{partition}]")
            if msg.offset() >= high:
                return
            position, deadline = msg.offset() + 1, time.monotonic() + stall_s
            yield _stored(msg)


def _consume(consumer: Consumer, topic: str) -> list[Any]:
    try:
        return list(consumer.consume(_BATCH, _POLL_S))
    except KafkaException as exc:
        raise wrap(exc, f"read {topic}") from None


def _stored(msg: Any) -> StoredRecord:
    return StoredRecord(
        topic=msg.topic(),
        partition=msg.partition(),
        offset=msg.offset(),
        key=msg.key(),
        value=msg.value(),
        headers=tuple(msg.headers() or ()),
        timestamp_ms=msg.timestamp()[1],
    )
