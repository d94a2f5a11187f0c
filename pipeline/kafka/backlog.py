"""``KafkaBacklog``: the ``BacklogPort`` of a real cluster, for ``pipeline status`` and alerts.

It joins no group and commits nothing: committed offsets come from the group coordinator
(``ListConsumerGroupOffsets``), watermarks from ``ListOffsets`` (one request for every partition,
not one per partition), and record timestamps from a throwaway consumer assigned at the
committed offsets. Each call is bounded by ``timeout_s``; a cluster that does not answer in
time is a ``BrokerUnavailableError`` naming the servers (a refused login or handshake, an
``AuthenticationError`` / ``TLSError``).
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException
from confluent_kafka import KafkaError as CKafkaError
from confluent_kafka import TopicPartition as CTopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from pipeline.config import Settings
from pipeline.errors import BrokerUnavailableError, KafkaError
from pipeline.kafka import config as kconfig
from pipeline.kafka.security import refusal
from pipeline.ports import PartitionOffsets, TopicPartition

_CONSUME_S = 0.2


class KafkaBacklog:
    def __init__(self, settings: Settings, timeout_s: float = 5.0) -> None:
        self._settings = settings
        self._timeout = timeout_s
        self._refused: BrokerUnavailableError | None = None
        self._last_error: str | None = None
        errors = {"error_cb": self._on_error}
        self._admin = kconfig.create(AdminClient, kconfig.admin(settings) | errors, "admin")
        reader = kconfig.common(settings) | settings.consumer_config | errors | {
            "group.id": f"pipeline-status-{uuid.uuid4()}",  # never commits: never shows up
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": 50,
        }  # fmt: skip
        self._consumer = kconfig.create(Consumer, reader, "status reader")

    def offsets(
        self, group: str | None, topics: list[str]
    ) -> dict[TopicPartition, PartitionOffsets]:
        parts = self._partitions(topics)
        if not parts:
            return {}
        try:
            committed = self._committed(group, parts) if group is not None else {}
            low = self._list_offsets(parts, OffsetSpec.earliest())  # type: ignore[no-untyped-call]
            high = self._list_offsets(parts, OffsetSpec.latest())  # type: ignore[no-untyped-call]
        except KafkaException as exc:
            raise self._failure(exc.args[0].str() if exc.args else str(exc)) from None
        except FutureTimeout:
            raise self._failure(f"no answer within {self._timeout:g}s") from None
        return {tp: PartitionOffsets(low[tp], high[tp], committed.get(tp)) for tp in parts}

    def timestamps(self, positions: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        if not positions:
            return {}
        self._consumer.assign([CTopicPartition(t, p, o) for (t, p), o in positions.items()])
        found: dict[TopicPartition, int] = {}
        deadline = time.monotonic() + self._timeout
        try:
            while len(found) < len(positions) and time.monotonic() < deadline:
                for msg in self._consumer.consume(len(positions), _CONSUME_S):
                    tp = (msg.topic(), msg.partition())
                    if msg.error() is None and tp in positions and tp not in found:
                        found[tp] = msg.timestamp()[1]
        except KafkaException as exc:
            raise KafkaError(f"reading record timestamps: {exc}") from None
        finally:
            self._consumer.unassign()
        return found

    def close(self) -> None:
        self._consumer.close()

    # -- internals -------------------------------------------------------------------------

    def _partitions(self, topics: list[str]) -> list[TopicPartition]:
        try:
            meta = self._consumer.list_topics(timeout=self._timeout)
        except KafkaException as exc:
            raise self._failure(exc.args[0].str() if exc.args else str(exc)) from None
        finally:
            self._admin.poll(0)  # serve the clients' error callbacks
        return [
            (t, p) for t in topics if t in meta.topics for p in sorted(meta.topics[t].partitions)
        ]

    def _committed(self, group: str, parts: list[TopicPartition]) -> dict[TopicPartition, int]:
        request = [ConsumerGroupTopicPartitions(group, [CTopicPartition(t, p) for t, p in parts])]
        result = self._admin.list_consumer_group_offsets(request, request_timeout=self._timeout)
        answer = result[group].result(self._timeout)
        return {(tp.topic, tp.partition): tp.offset for tp in answer.topic_partitions
                if tp.offset >= 0}  # fmt: skip

    def _list_offsets(self, parts: list[TopicPartition], spec: Any) -> dict[TopicPartition, int]:
        request = {CTopicPartition(t, p): spec for t, p in parts}
        futures = self._admin.list_offsets(request, request_timeout=self._timeout)
        return {(tp.topic, tp.partition): f.result(self._timeout).offset
                for tp, f in futures.items()}  # fmt: skip

    def _failure(self, reason: str) -> BrokerUnavailableError:
        self._consumer.poll(0)  # serves the error callback: was a login or handshake refused?
        if self._refused is not None:
            return self._refused
        why = self._last_error or reason
        return BrokerUnavailableError(
            f"cannot reach Kafka at {self._settings.bootstrap_servers}: {why}"
        )

    def _on_error(self, err: Any) -> None:
        self._refused = refusal(err, self._settings) or self._refused
        if err.code() != CKafkaError._ALL_BROKERS_DOWN:  # says less than the connection's error
            self._last_error = err.str()
