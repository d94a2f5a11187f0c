"""A ``Transport`` that remembers the clients it hands out, for the test harness: which
consumers a worker has (to crash them), and whether any producer still waits for a delivery
report (to know when a pipeline is idle)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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
from pipeline.transport import Transport


class RecordingTransport:
    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self._owner = ""
        self._consumers: dict[str, list[ConsumerPort]] = {}
        self._producers: list[ProducerPort] = []

    @contextmanager
    def owner(self, name: str) -> Iterator[None]:
        """Consumers created inside belong to ``name`` (see ``consumers_of``)."""
        self._owner = name
        try:
            yield
        finally:
            self._owner = ""

    def consumers_of(self, owner: str) -> list[ConsumerPort]:
        return list(self._consumers.get(owner, ()))

    def outstanding(self) -> int:
        """Delivery reports not yet served, over every producer handed out."""
        return sum(len(p) for p in self._producers)

    def check(self) -> None:
        self.inner.check()

    def consumer(
        self, group: str, client_id: str, *, retry: bool = False, linger: bool = False
    ) -> ConsumerPort:
        consumer = self.inner.consumer(group, client_id, retry=retry, linger=linger)
        self._consumers.setdefault(self._owner, []).append(consumer)
        return consumer

    def producer(self, client_id: str) -> ProducerPort:
        producer = self.inner.producer(client_id)
        self._producers.append(producer)
        return producer

    def transactional_producer(
        self, client_id: str, transactional_id: str, transaction_timeout_s: float
    ) -> TransactionalProducerPort:
        producer = self.inner.transactional_producer(
            client_id, transactional_id, transaction_timeout_s
        )
        self._producers.append(producer)
        return producer

    def admin(self) -> AdminPort:
        return self.inner.admin()

    def lag_monitor(self) -> LagPort:
        return self.inner.lag_monitor()

    def topic_log(self) -> TopicLogPort:
        return self.inner.topic_log()

    def backlog(self, timeout_s: float = 5.0) -> BacklogPort:
        return self.inner.backlog(timeout_s)

    def schema_store(self) -> SchemaStorePort:
        return self.inner.schema_store()
