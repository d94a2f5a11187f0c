"""Commit policy of at-least-once stages: when input offsets become durable.

``OffsetCommitter``, on an interval and on revoke/shutdown:
    1. take the contiguous finished watermark of each partition (outputs acknowledged);
    2. record the event ids it covers as done in the idempotency store, if the stage has one;
    3. commit those offsets (asynchronously on the interval, synchronously otherwise).
A failure in 2 skips 3: the events are redelivered rather than marked done too early.
Exactly-once stages commit with their transaction instead (``pipeline.commit``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from pipeline.errors import KafkaError
from pipeline.hookcalls import Hooks
from pipeline.offsets import OffsetTracker
from pipeline.ports import ConsumerPort, TopicPartition, commit_port

log = logging.getLogger("pipeline.commit")


class DoneStore(Protocol):
    def mark_completed(self, group: str, event_ids: list[str]) -> None: ...


class OffsetCommitter:
    def __init__(
        self,
        group: str,
        consumer: ConsumerPort,
        tracker: OffsetTracker,
        hooks: Hooks,
    ) -> None:
        self._group = group
        self._consumer = consumer
        self._tracker = tracker
        self._on_commit, self._on_commit_failed = hooks.on_commit, hooks.on_commit_failed
        self.store: DoneStore | None = None  # the stage's idempotency store, once opened
        self._pending_ids: list[str] = []

    def start(self, stop: threading.Event) -> bool:
        """Nothing to set up: True (go on)."""
        return True

    def uncommitted_fate(self) -> str:
        """What becomes of the records a failed commit left uncommitted (for a log line)."""
        return "records will be redelivered"

    def before_batch(self) -> None:
        pass

    overdue = False  # offsets commit on the interval; nothing times out in between

    def commit(
        self, assigned: set[TopicPartition], *, sync: bool, timeout_s: float | None = None
    ) -> None:
        # Async commits are marked done when sent; one that failed (e.g. ILLEGAL_GENERATION
        # during a rebalance) must be sent again, or the group's offset stays behind.
        failures = self._consumer.take_commit_failures()
        self._tracker.commit_failed(failures)
        if failures and self._on_commit_failed is not None:
            self._on_commit_failed(failures)
        offsets = self._tracker.committable(assigned)
        if self.store is not None:
            self._pending_ids += self._tracker.take_finished_ids()
            if self._pending_ids:
                try:
                    self.store.mark_completed(self._group, self._pending_ids)
                except Exception as exc:  # a store outage delays commits, it does not crash
                    log.warning("%s: idempotency store unavailable (%s); not committing yet",
                                self._group, exc)  # fmt: skip
                    return
                self._pending_ids = []
        if not offsets:
            return
        try:
            # Bounded: a synchronous commit's wait is part of a revoke's or shutdown's budget.
            commit_port(self._consumer, offsets, sync, timeout_s)
        except KafkaError:
            if self._on_commit_failed is not None:
                self._on_commit_failed(list(offsets))
            raise
        self._tracker.mark_committed(offsets)
        if self._on_commit is not None:
            self._on_commit(offsets)

    def delivery_failed(self) -> bool:
        """False: the runner rewinds just the partitions concerned."""
        return False

    def after_commit(self, claim: Callable[[], None]) -> None:
        """Run ``claim`` (count or log an outcome) once it is final: an acknowledged record is."""
        claim()

    def abandon(self) -> None:
        """Partitions were lost: nothing to undo (uncommitted work is simply redone)."""
