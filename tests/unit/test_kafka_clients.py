"""The adapter's transaction calls: retrying a retriable error stays within the call's timeout
(a coordinator still loading after a broker restart must not hold a stopping worker)."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError as CKafkaError
from confluent_kafka import KafkaException

from pipeline.errors import TransactionError
from pipeline.kafka import clients


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
