"""The requester's side of request-reply: one reply topic per publisher process, read by a
background thread that settles the waiting requests (``pipeline.reply.PendingRequests``).

Why a topic per process, not a partition of a shared one: a process reading "its" partition
would have to claim it from the others (a group would move it at every rebalance, replies in
flight landing with another process), and the number of partitions would cap the number of
requesters. A topic of its own needs no coordination: the process reads it with a consumer
group of its own (never committing), from the beginning, so a reply produced before the
consumer is assigned is not missed.

Cleanup: a publisher deletes the topic it created when it closes. A process killed before
that leaves its topic behind, empty within ``REPLY_RETENTION_MS`` (replies are useless once
their request timed out). To leave nothing at all behind, give the publisher a fixed
``reply_topic`` (one per process, e.g. per pod): it is reused across restarts and never
deleted, and replies meant for the previous run are dropped as late.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from pipeline import headers as hdr
from pipeline.clock import Clock, SystemClock
from pipeline.errors import DecodeError, KafkaError, RequestCancelled, RequestFailed
from pipeline.ports import ConsumerPort, RawRecord, TopicPartition
from pipeline.reply import PendingRequests, ReplyCounts, Settle
from pipeline.serde import Binding, Codec
from pipeline.transport import Transport

log = logging.getLogger("pipeline.reply")

REPLY_RETENTION_MS = 600_000  # 10 min: a reply nobody read by then is for a timed-out request
_BATCH = 500
_POLL_S = 0.1  # also the granularity of timeouts


class _Listener:
    def on_assign(self, partitions: list[TopicPartition]) -> None:
        pass

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        pass

    def on_lost(self, partitions: list[TopicPartition]) -> None:
        pass


def default_reply_topic(prefixed: str) -> str:
    """``<prefix>replies.<random>``: unique to this publisher."""
    return f"{prefixed}.{uuid.uuid4().hex[:16]}"


class ReplyInbox:
    """Reads ``topic`` and hands each reply to the request waiting for it.

    ``owned``: the topic was made for this inbox alone, so ``close`` deletes it."""

    def __init__(
        self,
        transport: Transport,
        codec: Codec,
        topic: str,
        *,
        owned: bool,
        clock: Clock | None = None,
    ) -> None:
        self.topic = topic
        self._transport = transport
        self._codec = codec
        self._owned = owned
        self._lock = threading.Lock()
        self._pending = PendingRequests(clock or SystemClock())
        self._failure: str | None = None
        self._closed = threading.Event()
        transport.admin().create([topic], partitions=1,
                                 config={"retention.ms": str(REPLY_RETENTION_MS)})  # fmt: skip
        # A group of its own (never committing): several inboxes on one fixed topic would each
        # read every reply, not split them.
        self._consumer: ConsumerPort = transport.consumer(
            f"{topic}.{uuid.uuid4().hex[:8]}", f"replies-{topic}"
        )
        self._consumer.subscribe([topic], _Listener())
        self._thread = threading.Thread(target=self._run, name=f"replies-{topic}", daemon=True)
        self._thread.start()
        log.info("reading replies from %s", topic)

    @property
    def counts(self) -> ReplyCounts:
        """Replies answered, dropped as duplicate or late; requests timed out or cancelled."""
        return self._pending.counts

    def expect(
        self, request_id: str, binding: Binding[Any], timeout_s: float, settle: Settle
    ) -> None:
        """Register the request before it is sent, so its reply cannot arrive first."""
        with self._lock:
            if self._failure is not None:
                raise RequestCancelled(
                    f"request {request_id} not sent: {self._failure}", request_id
                )
            self._pending.add(request_id, timeout_s, settle, binding)

    def forget(self, request_id: str) -> None:
        with self._lock:
            self._pending.forget(request_id)

    def close(self) -> None:
        """Stop reading, cancel every waiting request, delete the topic if it is ours."""
        self._closed.set()
        self._thread.join(10)
        self._stop("the publisher closed")
        if self._owned:
            try:
                self._transport.admin().delete([self.topic])
            except KafkaError as exc:  # left behind, emptied by its retention
                log.warning("could not delete reply topic %s: %s", self.topic, exc)

    # -- the reader thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._closed.is_set():
                started = time.monotonic()
                records = self._consumer.consume(_BATCH, _POLL_S)
                with self._lock:
                    for record in records:
                        self._take(record)
                    self._pending.expire()
                if not records and time.monotonic() - started < _POLL_S / 2:
                    # A consumer that does not block (the in-memory broker on a fake clock)
                    # must not make this a busy loop.
                    self._closed.wait(0.005)
        except Exception as exc:  # the reader is gone: no request may wait for it
            log.exception("reply reader of %s failed", self.topic)
            self._stop(f"the reply reader failed ({type(exc).__name__}: {exc})")
        finally:
            self._consumer.close()

    def _stop(self, why: str) -> None:
        with self._lock:
            self._failure = self._failure or why
            self._pending.cancel_all(why)

    def _take(self, record: RawRecord) -> None:
        coordinates = f"{record.topic()}[{record.partition()}]@{record.offset()}"
        raw = hdr.to_dict(record.headers()).get(hdr.IN_REPLY_TO)
        if not raw:
            log.warning("dropped %s: no %s header", coordinates, hdr.IN_REPLY_TO)
            self._pending.counts.late += 1
            return
        request_id = hdr.id_text(raw)
        outcome, settle, binding = self._pending.answer(request_id)
        if settle is None:
            log.info("dropped %s reply %s to request %s", outcome, coordinates, request_id)
            return
        error = hdr.to_dict(record.headers()).get(hdr.REPLY_ERROR)
        if error is not None:  # dead-lettered or skipped by the stage (pipeline.replyfailures)
            why = error.decode(errors="replace")
            settle(RequestFailed(f"request {request_id} failed: {why}", request_id))
            return
        value = record.value()
        try:
            if value is None:
                raise DecodeError(f"reply {coordinates} has no value")
            settle(self._codec.decode(value, binding))
        except DecodeError as exc:  # the request fails with it rather than wait
            settle(exc)
