"""The adapter's transaction calls: retrying a retriable error stays within the call's timeout
(a coordinator still loading after a broker restart must not hold a stopping worker)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError as CKafkaError
from confluent_kafka import KafkaException

from pipeline.errors import KafkaError, TransactionError
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


class FullQueue:
    """A librdkafka producer whose local queue stays full: produce raises BufferError."""

    def __init__(self, now: list[float], queued: int = 1) -> None:
        self.now, self.queued, self.polls = now, queued, 0

    def produce(self, *_args: Any, **_kwargs: Any) -> None:
        raise BufferError("Local: Queue full")

    def poll(self, timeout_s: float) -> int:
        self.polls += 1
        self.now[0] += timeout_s
        return 0

    def __len__(self) -> int:
        return self.queued


def _producer(monkeypatch: pytest.MonkeyPatch, inner: Any, **config: Any) -> Any:
    monkeypatch.setattr(clients, "_clock", lambda: inner.now[0])
    producer = clients.KafkaProducer(
        {"bootstrap.servers": "127.0.0.1:1", "log_level": 0} | config, queue_wait_s=2.0
    )
    producer._producer = inner
    return producer


def test_a_record_bigger_than_the_whole_local_queue_fails_at_once_as_permanent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inner = FullQueue([0.0])
    producer = _producer(monkeypatch, inner, **{"queue.buffering.max.kbytes": 1})
    with pytest.raises(KafkaError, match="can never fit") as caught:
        producer.produce("t", b"x" * 2000, None, None, lambda *_: None)
    assert caught.value.permanent and inner.polls == 0


def test_a_full_queue_is_waited_on_within_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    inner = FullQueue([0.0])
    producer = _producer(monkeypatch, inner)
    with pytest.raises(KafkaError, match="still full after 2s") as caught:
        producer.produce("t", b"x", None, None, lambda *_: None)
    assert caught.value.retriable and not caught.value.permanent
    assert inner.now[0] == pytest.approx(2.0, abs=0.1)


def test_a_full_queue_wait_ends_when_the_stage_is_asked_to_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inner = FullQueue([0.0])
    producer = _producer(monkeypatch, inner)
    producer.stop = threading.Event()
    producer.stop.set()
    with pytest.raises(KafkaError, match="stopping"):
        producer.produce("t", b"x", None, None, lambda *_: None)
    assert inner.polls == 1


def test_a_record_still_refused_by_an_empty_queue_is_permanent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inner = FullQueue([0.0], queued=0)
    producer = _producer(monkeypatch, inner)
    with pytest.raises(KafkaError, match="can never fit") as caught:
        producer.produce("t", b"x", None, None, lambda *_: None)
    assert caught.value.permanent


def test_delivery_errors_are_classified_at_the_boundary() -> None:
    from pipeline.kafka.errors import delivery_error

    too_large = delivery_error(CKafkaError(CKafkaError.MSG_SIZE_TOO_LARGE), "t")
    assert too_large.permanent and too_large.batch_wide
    denied = delivery_error(CKafkaError(CKafkaError.TOPIC_AUTHORIZATION_FAILED), "t")
    assert denied.permanent and not denied.batch_wide
    timed_out = delivery_error(CKafkaError(CKafkaError._MSG_TIMED_OUT), "t")
    assert not timed_out.permanent


def test_a_record_over_message_max_bytes_is_refused_locally_as_permanent() -> None:
    """librdkafka refuses it in produce() itself: the error concerns this record alone."""
    producer = clients.KafkaProducer(
        {"bootstrap.servers": "127.0.0.1:1", "log_level": 0, "message.max.bytes": 1000}
    )
    with pytest.raises(KafkaError, match="MSG_SIZE_TOO_LARGE") as caught:
        producer.produce("t", b"x" * 5000, None, None, lambda *_: None)
    assert caught.value.permanent and not caught.value.batch_wide
