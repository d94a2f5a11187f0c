"""confluent-kafka Consumer and Producer behind the ports in ``pipeline.ports``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka import KafkaError as CKafkaError
from confluent_kafka import TopicPartition as CTopicPartition

from pipeline.bounded import within
from pipeline.errors import KafkaError, ProducerFencedError, TransactionError
from pipeline.kafka.config import CLIENT_ERRORS_LOG, create
from pipeline.kafka.errors import delivery_error, wrap
from pipeline.kafka.starts import StableStarts
from pipeline.ports import (
    DeliveryCallback,
    RawHeaders,
    RawRecord,
    RebalanceListener,
    TopicPartition,
)

log = logging.getLogger("pipeline.kafka")
MIN_TXN_CALL_S = 0.5  # a transaction call past its deadline still gets one short try
_clock = time.monotonic  # a module attribute, so a test can stand in for it
_sleep = time.sleep  # the same, for the consumer's linger
QUEUE_FULL = "_QUEUE_FULL"
QUEUE_WAIT_S = 30.0  # how long produce waits for room in a full local queue
QUEUE_POLL_S = 0.05
DEFAULT_QUEUE_KBYTES = 1_048_576  # librdkafka's queue.buffering.max.kbytes
RENEW_SERVE_S = 2.0  # how long a renewal serves the fenced producer's purged reports
# Producer.produce's positional parameters are (topic, value, key, partition, callback,
# on_delivery, timestamp, headers): no partition (the partitioner picks), no timestamp (now).
UNASSIGNED = -1


def _tps(partitions: list[CTopicPartition]) -> list[TopicPartition]:
    return [(p.topic, p.partition) for p in partitions]


class KafkaConsumer:
    """A consumer in one group. Rebalance callbacks run inside ``consume`` on the caller's
    thread, or inside ``close`` while the caller waits for it, so the listener never races the
    consume loop (a close given up on at its bound stops calling the listener). Assigned
    partitions start at their stable committed offsets, read by us; one that cannot be read is
    held, never started from the reset policy (``pipeline.kafka.starts``)."""

    def __init__(self, config: dict[str, Any], linger_s: float = 0.0) -> None:
        """``linger_s``: see ``consume`` (``Settings.batch_linger_s``)."""
        self._group = config.get("group.id")
        self._linger_s = linger_s
        self.commit_failures: list[tuple[TopicPartition, str]] = []
        self._commit_error: str | None = None  # what async commits last failed with
        self._consumer = create(
            Consumer,
            config | {"error_cb": self._on_error, "on_commit": self._on_commit},
            "consumer",
        )
        self.starts = StableStarts(self._consumer, config, lambda: _clock())
        self._deaf = False  # set when a close is given up on: its callbacks reach no one

    def subscribe(self, topics: list[str], listener: RebalanceListener) -> None:
        def on_assign(_c: Any, parts: list[CTopicPartition]) -> None:
            if self._deaf:
                return
            self.starts.assign(_tps(parts))  # before the listener, who may pause or seek
            listener.on_assign(_tps(parts))

        def on_revoke(_c: Any, parts: list[CTopicPartition]) -> None:
            if self._deaf:
                return
            listener.on_revoke(_tps(parts))
            self.starts.forget(_tps(parts))

        def on_lost(_c: Any, parts: list[CTopicPartition]) -> None:
            if self._deaf:
                return
            listener.on_lost(_tps(parts))
            self.starts.forget(_tps(parts))

        self._consumer.subscribe(topics, on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)

    def consume(self, max_records: int, timeout_s: float) -> Sequence[RawRecord]:
        """Up to ``max_records`` that are ready now; if none are, wait up to ``timeout_s`` for
        the first and return as soon as it arrives (with whatever came with it).

        ``Consumer.consume(n, timeout)`` alone would hold early records until ``n`` arrived or
        the timeout ran out, adding up to ``timeout_s`` of latency at every stage of a chain.

        Only when it had to wait, the first record is held for ``linger_s`` so that those
        arriving just behind it come in the same batch: while records trickle in, returning
        each one alone costs a whole loop step per record (consume, poll, delivery reports,
        their wakeups), 2 to 4 times the record's own work. Records already waiting are
        never held, so a consumer that is behind (a drain) takes full batches at once.
        """
        held = self.starts.holds
        try:
            if held:
                self.starts.retry()
            records = self._consumer.consume(max_records, 0)
            if not records and timeout_s > 0:
                first = self._consumer.poll(timeout_s)
                if first is not None:
                    if self._linger_s and max_records > 1:
                        _sleep(self._linger_s)
                    records = [first, *self._consumer.consume(max_records - 1, 0)]
        except KafkaException as exc:
            raise wrap(exc, f"consume in group {self._group}") from exc
        if held:  # checked again: a rebalance inside this call may have begun a hold
            return cast(Sequence[RawRecord], self.starts.deliverable(records))
        return cast(Sequence[RawRecord], records)

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.starts.caller_paused.update(partitions)
        self._consumer.pause([CTopicPartition(t, p) for t, p in partitions])

    def resume(self, partitions: list[TopicPartition]) -> None:
        """A held partition stays paused until its committed offset is read."""
        self.starts.caller_paused.difference_update(partitions)
        held = self.starts.holds
        parts = [CTopicPartition(t, p) for t, p in partitions if (t, p) not in held]
        if parts:
            self._consumer.resume(parts)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if tp in self.starts.holds:
            return  # it starts where its committed offset says, once read
        try:
            self._consumer.seek(CTopicPartition(tp[0], tp[1], offset))
        except KafkaException as exc:
            # Seeking a partition that was just revoked fails; it is no longer ours to re-read.
            log.warning("seek %s[%d]@%d failed: %s", tp[0], tp[1], offset, exc)

    def commit(
        self, offsets: dict[TopicPartition, int], *, sync: bool, timeout_s: float | None = None
    ) -> None:
        """``timeout_s`` bounds a synchronous commit (librdkafka's has no bound of its own:
        ``pipeline.bounded``); past it, ``KafkaError``."""
        if not offsets:
            return
        parts = [CTopicPartition(t, p, o) for (t, p), o in offsets.items()]
        what = f"commit in group {self._group}"
        try:
            if not sync:
                self._consumer.commit(offsets=parts, asynchronous=True)
                return
            if timeout_s is None:
                result = self._consumer.commit(offsets=parts, asynchronous=False)
            else:
                commit = self._consumer.commit
                result = within(lambda: commit(offsets=parts, asynchronous=False), timeout_s, what)
        except KafkaException as exc:
            raise wrap(exc, what) from exc
        if result:
            bad = [f"{p.topic}[{p.partition}]: {p.error}" for p in result if p.error]
            if bad:
                raise KafkaError(f"commit in group {self._group} failed for " + ", ".join(bad))

    def committed(
        self, partitions: list[TopicPartition], timeout_s: float = 10
    ) -> dict[TopicPartition, int]:
        """Raises ``KafkaError`` if any partition's offset cannot be read (unstable, say):
        taking its ``OFFSET_INVALID`` for "none" would start it from the beginning. A held
        partition (``starts``) is not asked and is left out: its seek is ignored until read."""
        held = self.starts.holds
        asked = [CTopicPartition(t, p) for t, p in partitions if (t, p) not in held]
        if not asked:
            return {}
        try:
            parts = self._consumer.committed(asked, timeout_s)
        except KafkaException as exc:
            raise wrap(exc, f"committed offsets of group {self._group}") from exc
        bad = [f"{p.topic}[{p.partition}]: {p.error}" for p in parts if p.error is not None]
        if bad:
            raise KafkaError(f"committed offsets of group {self._group}: " + ", ".join(bad))
        return {(p.topic, p.partition): p.offset for p in parts}

    def hold_until_committed(self, partitions: list[TopicPartition], reason: str) -> None:
        self.starts.hold(partitions, reason)

    def take_commit_failures(self) -> list[TopicPartition]:
        """Partitions whose asynchronous commits failed since the last call."""
        failed, self.commit_failures = self.commit_failures, []
        return [tp for tp, _ in failed]

    def group_metadata(self) -> Any:
        return self._consumer.consumer_group_metadata()

    def close(self, timeout_s: float | None = None) -> None:
        """Leaves the group at once, so the partitions move to the remaining workers now rather
        than after the session timeout. librdkafka's close has no bound (it waits for the
        LeaveGroup answer and for commits still in flight): ``timeout_s`` gives it one; past
        it, the close finishes on its own thread, and its rebalance callbacks reach no one (the
        stage has moved on: the partitions are not ours any more)."""
        if timeout_s is None:
            self._consumer.close()
            return
        try:
            within(self._consumer.close, timeout_s, f"close of the consumer in group {self._group}")
        except KafkaError as exc:
            self._deaf = True
            log.error("%s; its partitions move at the session timeout at the latest", exc)

    def _on_error(self, err: Any) -> None:
        CLIENT_ERRORS_LOG.warning("consumer %s: %s", self._group, err)

    def _on_commit(self, err: Any, partitions: list[CTopicPartition]) -> None:
        """Failures are kept for ``take_commit_failures`` (they are sent again) and logged once
        per change of state: after a peer leaves, every commit in flight fails with the same
        ILLEGAL_GENERATION at once, which says nothing new after the first."""
        if err is None:
            if self._commit_error is not None:
                log.info("async commits in group %s succeed again", self._group)
                self._commit_error = None
            return
        self.commit_failures.extend(((p.topic, p.partition), str(err)) for p in partitions)
        name = err.name() if hasattr(err, "name") else str(err)
        if name != self._commit_error:
            log.warning("async commit in group %s failed: %s; the offsets are sent again "
                        "with the next commit", self._group, err)  # fmt: skip
            self._commit_error = name


class KafkaProducer:
    """An idempotent producer. ``produce`` never drops a record silently: while the local queue
    is full it serves delivery reports (which frees room) and tries again, for up to
    ``queue_wait_s`` or until ``stop`` is set; then, or for a record that can never fit the
    queue, it raises ``KafkaError`` (code ``_QUEUE_FULL``; ``permanent`` for the latter)."""

    def __init__(self, config: dict[str, Any], queue_wait_s: float = QUEUE_WAIT_S) -> None:
        self._config = config | {"error_cb": self._on_error}  # kept: ``renew`` makes another
        self._producer = create(Producer, self._config, "producer")
        self.transactional_id: str | None = config.get("transactional.id")
        kbytes = config.get("queue.buffering.max.kbytes", DEFAULT_QUEUE_KBYTES)
        self._queue_bytes = int(kbytes) * 1024
        self._queue_wait_s = queue_wait_s
        self.stop: threading.Event | None = None  # the stage's stop request, set by its runner
        # A transaction open longer is aborted by the broker (librdkafka's default: 60 s).
        self.transaction_timeout_s = int(config.get("transaction.timeout.ms", 60_000)) / 1000

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: RawHeaders,
        on_delivery: DeliveryCallback,
    ) -> None:
        # Positional: keyword arguments cost more to parse than the rest of the call (about 4k
        # instructions a record); test_kafka_clients pins this order of librdkafka's produce.
        try:
            self._producer.produce(
                topic, value, key, UNASSIGNED, on_delivery, None, 0, headers  # type: ignore[arg-type]
            )
        except BufferError:
            self._produce_when_room(topic, value, key, headers, on_delivery)
        except KafkaException as exc:
            raise wrap(exc, f"produce to {topic}") from exc

    def _produce_when_room(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: RawHeaders,
        on_delivery: DeliveryCallback,
    ) -> None:
        deadline = None
        while True:
            # librdkafka counts the value alone against the queue's size (not key, headers)
            deadline = self._queue_full(topic, len(value or b""), deadline)
            try:
                self._producer.produce(
                    topic, value, key, UNASSIGNED, on_delivery, None, 0, headers  # type: ignore[arg-type]
                )
                return
            except BufferError:
                continue
            except KafkaException as exc:
                raise wrap(exc, f"produce to {topic}") from exc

    def _queue_full(self, topic: str, size: int, deadline: float | None) -> float:
        """Wait a little for room in the local queue; the deadline of the wait, or raise."""
        now = _clock()
        if size > self._queue_bytes or (deadline is not None and len(self._producer) == 0):
            # Bigger than the whole queue (librdkafka refuses it even when the queue is empty).
            raise KafkaError(
                f"produce to {topic}: a {size}-byte record can never fit the producer's local "
                f"queue (queue.buffering.max.kbytes={self._queue_bytes // 1024})",
                code=QUEUE_FULL, permanent=True,
            )  # fmt: skip
        if deadline is None:
            deadline = now + self._queue_wait_s
        elif now >= deadline or (self.stop is not None and self.stop.is_set()):
            why = "stopping" if now < deadline else f"still full after {self._queue_wait_s:g}s"
            raise KafkaError(
                f"produce to {topic}: the producer's local queue is full ({why})",
                code=QUEUE_FULL, retriable=True,
            )  # fmt: skip
        self.poll(QUEUE_POLL_S)
        return deadline

    def delivery_error(self, err: Any, topic: str) -> KafkaError:
        """Ours for a delivery report's error (ours already when produce refused the record)."""
        return err if isinstance(err, KafkaError) else delivery_error(err, topic)

    def poll(self, timeout_s: float = 0) -> int:
        """Serve delivery reports. librdkafka's poll raises a fatal error (a fence) once, after
        the callbacks: for a transactional producer it is logged, not raised, since it stays on
        the producer and its next transaction call raises it as ``ProducerFencedError``, which
        the stage's committer renews (``pipeline.renewal``); raised from the loop's poll, it
        stopped the stage instead. Without transactions nothing renews: raised, as ours."""
        try:
            return int(self._producer.poll(timeout_s))
        except KafkaException as exc:
            if self.transactional_id is None:
                raise wrap(exc, "poll") from exc
            log.warning("producer: %s; the next transaction call meets it", exc)
            return 0

    def flush(self, timeout_s: float) -> int:
        try:
            return int(self._producer.flush(timeout_s))
        except KafkaException as exc:  # a fenced transactional producer raises from flush too
            if self.transactional_id is None:
                raise _flush_error(exc) from exc
            # As in ``poll``: the commit that follows each flush meets the fence and renews.
            log.warning("producer: %s; the next transaction call meets it", exc)
            return len(self._producer)

    def __len__(self) -> int:
        return len(self._producer)

    def renew(self) -> None:
        """A new librdkafka producer in place of this one, with the same config (the same
        ``transactional.id``): after a fence the old one is unusable for good (a fatal error).
        References to this object stay valid. The old one's records not yet reported are
        purged (in its queue and in flight) and their reports served now, as failures
        (``_PURGE_QUEUE`` / ``_PURGE_INFLIGHT``), each callback once: none is left to a producer
        that is gone, none is counted as delivered. ``init_transactions`` comes next."""
        old = self._producer
        try:
            old.purge(in_queue=True, in_flight=True, blocking=True)  # waits on its own threads
        except KafkaException as exc:
            log.warning("purging the fenced producer's records failed: %s", exc)
        deadline = _clock() + RENEW_SERVE_S
        while len(old) and _clock() < deadline:
            try:
                old.poll(QUEUE_POLL_S)
            except KafkaException:  # its fatal error (the fence), raised after the callbacks
                continue
        if len(old):
            log.warning("the fenced producer still had %d reports after %.0fs; dropped with it",
                        len(old), RENEW_SERVE_S)  # fmt: skip
        self._producer = create(Producer, self._config, "producer")

    # -- transactions (exactly-once stages; config has transactional.id) ------------------

    def init_transactions(self, timeout_s: float) -> None:
        self._txn("init_transactions", self._producer.init_transactions, timeout_s)

    def begin_transaction(self) -> None:
        self._txn("begin_transaction", lambda _t: self._producer.begin_transaction(), 1.0)

    def send_offsets_to_transaction(
        self, offsets: dict[TopicPartition, int], group_metadata: Any, timeout_s: float
    ) -> None:
        parts = [CTopicPartition(t, p, o) for (t, p), o in offsets.items()]
        self._txn(
            "send_offsets_to_transaction",
            lambda t: self._producer.send_offsets_to_transaction(parts, group_metadata, t),
            timeout_s,
        )

    def commit_transaction(self, timeout_s: float) -> None:
        self._txn("commit_transaction", self._producer.commit_transaction, timeout_s)

    def abort_transaction(self, timeout_s: float) -> None:
        self._txn("abort_transaction", self._producer.abort_transaction, timeout_s)

    def _txn(self, what: str, call: Callable[[float], Any], timeout_s: float) -> None:
        """Retry retriable errors (a coordinator still loading, say) while ``timeout_s`` lasts:
        the timeout bounds all the attempts together, not each one. Classify the rest."""
        deadline = _clock() + timeout_s
        last = None
        for _ in range(5):
            try:
                call(max(deadline - _clock(), MIN_TXN_CALL_S))
                return
            except KafkaException as exc:
                last = exc.args[0]
                if not (last.retriable() and not last.txn_requires_abort() and not last.fatal()):
                    raise _transaction_error(what, last) from None
                if _clock() >= deadline:
                    break
        cause = f"{last.str()} ({last.name()})" if last is not None else "no answer"
        raise TransactionError(
            f"{what}: still failing after retries: {cause}", code=last.name() if last else None,
            retriable=True,
        )  # fmt: skip

    def _on_error(self, err: Any) -> None:
        CLIENT_ERRORS_LOG.warning("producer: %s", err)


def _flush_error(exc: KafkaException) -> KafkaError:
    err = exc.args[0] if exc.args else None
    if isinstance(err, CKafkaError) and (err.fatal() or err.code() in _FENCED):
        return ProducerFencedError(f"flush: {err.str()} ({err.name()})", code=err.name())
    return wrap(exc, "flush")


def _transaction_error(what: str, err: Any) -> TransactionError:
    message = f"{what}: {err.str()} ({err.name()})"
    if err.fatal() or err.code() in _FENCED:
        return ProducerFencedError(message, code=err.name())
    return TransactionError(
        message, code=err.name(), abortable=bool(err.txn_requires_abort()), retriable=False
    )


_FENCED = {CKafkaError._FENCED, CKafkaError.PRODUCER_FENCED, CKafkaError.INVALID_PRODUCER_EPOCH}
