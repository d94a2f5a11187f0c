"""The adapter's transaction calls: retrying a retriable error stays within the call's timeout
(a coordinator still loading after a broker restart must not hold a stopping worker)."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError as CKafkaError
from confluent_kafka import KafkaException
from confluent_kafka import TopicPartition as CTopicPartition

from pipeline.config import Settings
from pipeline.errors import (
    BrokerUnavailableError,
    KafkaError,
    ProducerFencedError,
    TransactionError,
)
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


def test_produce_passes_its_arguments_where_librdkafka_expects_them() -> None:
    """produce() calls librdkafka's produce positionally (cheaper than keywords): the callback,
    key and value arrive in the delivery report, and the headers land in the headers slot."""
    producer = clients.KafkaProducer(
        {"bootstrap.servers": "127.0.0.1:1", "log_level": 0, "message.timeout.ms": 50}
    )
    reports: list[Any] = []
    producer.produce("t", b"value", b"key", [("event-id", b"id")], lambda *r: reports.append(r))
    producer.flush(10)
    ((err, msg),) = reports
    assert err.code() == CKafkaError._MSG_TIMED_OUT
    assert (msg.topic(), msg.key(), msg.value()) == ("t", b"key", b"value")
    with pytest.raises(TypeError, match=r"[Hh]eader"):  # checked as headers, so in that slot
        producer.produce("t", b"value", None, [("event-id", 5)], lambda *_: None)  # type: ignore[list-item]


class Trickle:
    """A librdkafka consumer fed one record at a time: ``arrive`` records land while the
    caller sleeps (as they would behind a first one)."""

    def __init__(self, waiting: list[str], arrive: list[str]) -> None:
        self.waiting, self.arrive = waiting, arrive
        self.polls: list[float] = []

    def consume(self, n: int, timeout: float) -> list[str]:
        taken, self.waiting = self.waiting[:n], self.waiting[n:]
        return taken

    def poll(self, timeout: float) -> str | None:
        self.polls.append(timeout)
        return self.arrive.pop(0) if self.arrive else None

    def land(self, _seconds: float) -> None:
        self.waiting += self.arrive
        self.arrive = []


def trickling(
    monkeypatch: pytest.MonkeyPatch, linger_s: float, waiting: list[str], arrive: list[str]
) -> tuple[clients.KafkaConsumer, Trickle, list[float]]:
    consumer = clients.KafkaConsumer(
        {"bootstrap.servers": "127.0.0.1:1", "group.id": "g", "log_level": 0}, linger_s
    )
    consumer.close()
    inner = Trickle(waiting, arrive)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        inner.land(seconds)

    monkeypatch.setattr(clients, "_sleep", sleep)
    consumer._consumer = inner  # type: ignore[assignment]
    return consumer, inner, slept


def test_a_first_record_waited_for_is_held_for_those_just_behind_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After waiting, the first record is held 5 ms; the records that land meanwhile come in
    the same batch instead of one loop step each."""
    consumer, inner, slept = trickling(monkeypatch, 0.005, [], ["r1", "r2", "r3"])
    assert list(consumer.consume(500, 0.1)) == ["r1", "r2", "r3"]
    assert (inner.polls, slept) == ([0.1], [0.005])


def test_records_already_waiting_are_never_held(monkeypatch: pytest.MonkeyPatch) -> None:
    """A consumer that is behind (a drain) takes what is there at once: no wait, no linger."""
    consumer, inner, slept = trickling(monkeypatch, 0.005, ["r1", "r2"], ["r3"])
    assert list(consumer.consume(500, 0.1)) == ["r1", "r2"]
    assert (inner.polls, slept) == ([], [])


@pytest.mark.parametrize(("linger_s", "room"), [(0.0, 500), (0.005, 1)])
def test_no_linger_when_off_or_when_one_record_fills_the_batch(
    monkeypatch: pytest.MonkeyPatch, linger_s: float, room: int
) -> None:
    consumer, _inner, slept = trickling(monkeypatch, linger_s, [], ["r1", "r2"])
    assert list(consumer.consume(room, 0.1)) == ["r1"]
    assert slept == []


def test_stage_input_consumers_linger_and_others_do_not() -> None:
    """Settings.batch_linger_s reaches the consumers that ask for it (a stage's inputs); a
    reader whose records each have a waiter (replies) does not."""
    from pipeline.kafka.transport import KafkaTransport

    transport = KafkaTransport(Settings(bootstrap_servers="127.0.0.1:1", batch_linger_s=0.002))
    made = [transport.consumer("g", "c", linger=True), transport.consumer("replies", "r")]
    try:
        assert [c._linger_s for c in made] == [0.002, 0.0]  # type: ignore[attr-defined]
    finally:
        for consumer in made:
            consumer.close()
    assert Settings().batch_linger_s == 0.005


class FencedFlush:
    def flush(self, timeout_s: float) -> int:
        raise KafkaException(CKafkaError(CKafkaError._FENCED, "fenced by a newer instance",
                                         fatal=True))  # fmt: skip


def test_a_fenced_flush_is_ours_so_the_shutdown_reports_it_and_goes_on() -> None:
    """CI: the shutdown's flush of a producer fenced meanwhile raised librdkafka's own
    exception, past the runner's ``except KafkaError``: a traceback, and no close."""
    producer = clients.KafkaProducer({"bootstrap.servers": "127.0.0.1:1", "log_level": 0})
    inner: Any = FencedFlush()
    producer._producer = inner
    with pytest.raises(ProducerFencedError, match=r"flush: fenced by a newer instance"):
        producer.flush(1.0)


def test_a_renewed_producer_serves_the_old_ones_reports_as_failures_and_keeps_its_config() -> None:
    """renew() after a fence: every record the old librdkafka producer still held is purged
    and its report served once, as a failure; the new one has the same config (and so the
    same transactional.id)."""
    producer = clients.KafkaProducer({"bootstrap.servers": "127.0.0.1:1", "log_level": 0})
    old = producer._producer
    reports: list[Any] = []
    for i in range(3):  # no broker: they wait in the queue
        producer.produce("out", b"v%d" % i, None, None, lambda err, msg: reports.append(err))
    producer.renew()
    assert [err.name() for err in reports] == ["_PURGE_QUEUE"] * 3
    assert producer._producer is not old
    transactional = clients.KafkaProducer({"bootstrap.servers": "127.0.0.1:1", "log_level": 0,
                                           "transactional.id": "renew-t1"})  # fmt: skip
    config = dict(transactional._config)
    transactional.renew()
    assert transactional._config == config and transactional.transactional_id == "renew-t1"


class FencedPoll:
    """librdkafka's poll of a fenced transactional producer: the delivery reports are served,
    then the fatal error is raised once (seen on the real broker)."""

    def poll(self, timeout_s: float) -> int:
        raise KafkaException(CKafkaError(CKafkaError._FENCED, "fenced by a newer instance",
                                         fatal=True))  # fmt: skip


def test_a_fenced_poll_does_not_escape_the_loop_so_the_next_transaction_call_renews() -> None:
    """A fence met by the loop's poll (an output refused with an old epoch) raised librdkafka's
    own exception out of the step: the stage stopped, never renewed. The fatal error stays on
    the producer: its next transaction call raises it as ours, and the committer renews."""
    producer = clients.KafkaProducer({"bootstrap.servers": "127.0.0.1:1", "log_level": 0,
                                      "transactional.id": "poll-t1"})  # fmt: skip
    inner: Any = FencedPoll()
    producer._producer = inner
    assert producer.poll(0) == 0


def test_a_fatal_poll_of_a_producer_without_transactions_is_ours() -> None:
    """No committer renews an idempotent producer: its fatal error is raised, as ours."""
    producer = clients.KafkaProducer({"bootstrap.servers": "127.0.0.1:1", "log_level": 0})
    inner: Any = FencedPoll()
    producer._producer = inner
    with pytest.raises(KafkaError, match=r"poll: .*fenced by a newer instance"):
        producer.poll(0)


class FencedFlushWithQueue(FencedFlush):
    def __len__(self) -> int:
        return 2


def test_a_fenced_flush_of_a_transactional_producer_leaves_the_fence_to_the_commit() -> None:
    """The revoke's flush, the shutdown's and those around outputs produced alone: raised, a
    fence skipped the revoke's commit (the committer, never told, kept its transaction open)
    and stopped the stage from a handler's outcome. The commit right after meets the fence and
    renews; what the flush could not deliver is counted, as a flush that timed out."""
    producer = clients.KafkaProducer({"bootstrap.servers": "127.0.0.1:1", "log_level": 0,
                                      "transactional.id": "flush-t1"})  # fmt: skip
    inner: Any = FencedFlushWithQueue()
    producer._producer = inner
    assert producer.flush(1.0) == 2
