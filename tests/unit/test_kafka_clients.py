"""The adapter's transaction calls: retrying a retriable error stays within the call's timeout
(a coordinator still loading after a broker restart must not hold a stopping worker)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from confluent_kafka import KafkaError as CKafkaError
from confluent_kafka import KafkaException
from confluent_kafka import TopicPartition as CTopicPartition

from pipeline.config import Settings
from pipeline.errors import BrokerUnavailableError, TransactionError
from pipeline.kafka import admin, clients


class SlowCoordinator:
    """Each commit attempt takes 3 s and fails with a retriable timeout."""

    def __init__(self, now: list[float]) -> None:
        self.now = now
        self.timeouts: list[float] = []

    def commit_transaction(self, timeout_s: float) -> None:
        self.timeouts.append(timeout_s)
        self.now[0] += 3.0
        raise KafkaException(CKafkaError(CKafkaError._TIMED_OUT, "timed out", retriable=True))


def test_retries_share_the_calls_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(clients, "_clock", lambda: now[0])
    producer = clients.KafkaProducer({"bootstrap.servers": "127.0.0.1:1", "log_level": 0})
    inner: Any = SlowCoordinator(now)
    producer._producer = inner
    with pytest.raises(TransactionError, match="still failing after retries: timed out"):
        producer.commit_transaction(10.0)
    assert inner.timeouts == [10.0, 7.0, 4.0, 1.0]
    assert now[0] == 12.0, "retries went on past the timeout"


class CommitError:
    """What librdkafka hands on_commit: an error with a name."""

    def __init__(self, name: str) -> None:
        self._name = name

    def name(self) -> str:
        return self._name

    def __str__(self) -> str:
        return f"KafkaError{{code={self._name}}}"


def test_a_burst_of_failed_async_commits_is_logged_once_per_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After a peer dies every commit in flight fails with ILLEGAL_GENERATION at once: one
    warning, every failure still kept to be sent again, and one line when commits recover."""
    consumer = clients.KafkaConsumer(
        {"bootstrap.servers": "127.0.0.1:1", "group.id": "g", "log_level": 0}
    )
    parts = [CTopicPartition("in", 0, 5), CTopicPartition("in", 1, 7)]
    try:
        with caplog.at_level(logging.INFO, logger="pipeline.kafka"):
            for _ in range(5):
                consumer._on_commit(CommitError("ILLEGAL_GENERATION"), parts)
            consumer._on_commit(CommitError("REBALANCE_IN_PROGRESS"), parts)
            consumer._on_commit(None, parts)
            consumer._on_commit(None, parts)
            consumer._on_commit(CommitError("ILLEGAL_GENERATION"), parts)
    finally:
        consumer.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.kafka"]
    assert [("ILLEGAL" in m, "REBALANCE" in m, "succeed again" in m) for m in lines] == [
        (True, False, False),
        (False, True, False),
        (False, False, True),
        (True, False, False),
    ], lines
    assert len(consumer.take_commit_failures()) == 7 * 2


def test_the_admin_gives_up_once_every_broker_has_been_down_for_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Refused connections end in a clear error after ALL_DOWN_FOR_S, not the full timeout,
    and the error names the connection failure rather than 'Failed to get metadata'."""
    now = [0.0]
    monkeypatch.setattr(admin, "_clock", lambda: now[0])
    client = admin.KafkaAdmin(Settings(bootstrap_servers="127.0.0.1:1"), timeout_s=15.0)

    class Refusing:
        def list_topics(self, timeout: float) -> None:
            now[0] += timeout
            raise KafkaException(CKafkaError(CKafkaError._TRANSPORT, "Failed to get metadata"))

        def poll(self, _timeout: float) -> None:  # serves the error callback
            client._on_error(CKafkaError(CKafkaError._TRANSPORT, "Connection refused"))
            client._on_error(CKafkaError(CKafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))

    inner: Any = Refusing()
    client._admin = inner
    with pytest.raises(BrokerUnavailableError, match=r"127\.0\.0\.1:1: Connection refused"):
        client.topics()
    assert now[0] == 1.0 + admin.ALL_DOWN_FOR_S
