"""Where an assigned partition starts: its stable committed offset, read by us (see
``pipeline.unstable`` for why librdkafka's own read is not trusted).

On assign, the committed offsets are read (``require_stable``: the consumer reads
``read_committed``) and the partitions assigned with them as explicit start offsets, so
librdkafka does not query them again. A partition with no committed offset at all gets
``OFFSET_INVALID``: the reset policy applies, as for any new group. A partition whose offset
cannot be read (unstable, or the coordinator does not answer in time) is assigned but paused,
its records are never delivered, and it is read again (with a backoff) before each consume;
once read, it is sought there and resumed, unless the caller paused it meanwhile (a breaker).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, OFFSET_INVALID, KafkaException
from confluent_kafka import TopicPartition as CTopicPartition

from pipeline.ports import TopicPartition
from pipeline.unstable import StartHolds

log = logging.getLogger("pipeline.kafka")
ASSIGN_READ_S = 2.0  # one read for the whole assignment, inside the rebalance callback
RETRY_READ_S = 0.3  # one read of every due held partition: an unstable one takes all of it


def _ctps(partitions: Sequence[TopicPartition], offset: int = OFFSET_INVALID) -> list[Any]:
    return [CTopicPartition(t, p, offset) for t, p in partitions]


class StableStarts:
    def __init__(self, consumer: Any, config: dict[str, Any], clock: Callable[[], float]) -> None:
        self._consumer, self._clock = consumer, clock
        self.holds = StartHolds(str(config.get("group.id")), clock)
        strategy = str(config.get("partition.assignment.strategy", ""))
        self._incremental = "cooperative" in strategy or config.get("group.protocol") == "consumer"
        latest = str(config.get("auto.offset.reset", "latest")) in ("latest", "end", "largest")
        self._reset = OFFSET_END if latest else OFFSET_BEGINNING
        self.caller_paused: set[TopicPartition] = set()

    def assign(self, partitions: list[TopicPartition]) -> None:
        """In the rebalance callback: assign ``partitions`` at their stable committed offsets;
        hold those that cannot be read."""
        if not partitions:
            self._assign([])
            return
        why = ""
        try:
            parts = self._consumer.committed(_ctps(partitions), ASSIGN_READ_S)
        except KafkaException as exc:
            parts, why = None, str(exc.args[0] if exc.args else exc)
        starts, unreadable = [], []
        for tp, part in zip(partitions, parts or [None] * len(partitions), strict=True):
            if part is None or part.error is not None:
                why = why if part is None else str(part.error)
                unreadable.append(tp)
                # Explicit, so librdkafka does not query (and reset) it; paused before use.
                starts.append(CTopicPartition(tp[0], tp[1], OFFSET_BEGINNING))
            else:
                starts.append(CTopicPartition(tp[0], tp[1], part.offset))  # INVALID: none yet
        self._assign(starts)
        self.hold(unreadable, why)

    def _assign(self, parts: list[Any]) -> None:
        if self._incremental:
            self._consumer.incremental_assign(parts)
        else:
            self._consumer.assign(parts)

    def hold(self, partitions: list[TopicPartition], reason: str) -> None:
        """Assigned partitions whose committed offset could not be read after an aborted
        transaction: paused, and read again like those of an assignment (``retry``)."""
        if partitions:
            self._consumer.pause(_ctps(partitions))
            self.holds.hold(partitions, reason)

    def forget(self, partitions: list[TopicPartition]) -> None:
        self.holds.forget(partitions)
        self.caller_paused.difference_update(partitions)

    def retry(self) -> None:
        """Read the held partitions that are due again, all in one call of at most
        ``RETRY_READ_S`` (an unstable read takes all of it: one call per step, not one per
        partition, so the healthy partitions keep flowing); start each one that reads stably
        where it says."""
        due = list(self.holds.due())
        if not due:
            return
        try:
            parts = self._consumer.committed(_ctps(due), RETRY_READ_S)
        except KafkaException as exc:
            why = str(exc.args[0] if exc.args else exc)
            for tp in due:
                self.holds.failed(tp, why)
            return
        for tp, part in zip(due, parts, strict=True):
            if part.error is not None:
                self.holds.failed(tp, str(part.error))
                continue
            self.holds.release(tp, part.offset)
            offset = part.offset if part.offset >= 0 else self._reset  # none: the reset policy
            self._consumer.seek(CTopicPartition(tp[0], tp[1], offset))
            if tp not in self.caller_paused:
                self._consumer.resume(_ctps([tp]))

    def deliverable(self, records: Sequence[Any]) -> Sequence[Any]:
        """Drop records of held partitions (fetched before the pause took effect): they are
        read again from the committed offset once it is known."""
        held = self.holds
        return [r for r in records if (r.topic(), r.partition()) not in held]
