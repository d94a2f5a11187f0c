"""Partitions held because their committed offset cannot be read stably.

A consumer of a group whose offsets are committed in transactions (exactly-once stages) asks
for them with ``require_stable``: while a transaction that carries offsets for a partition is
open, the broker answers UNSTABLE_OFFSET_COMMIT. librdkafka retries that, except when its
assignment changes while the request is in flight (a cooperative rebalance adds or revokes
other partitions): it then starts the partition from ``auto.offset.reset``, which re-reads an
exactly-once stage's input from the beginning and duplicates its outputs. A transaction that
never ends (a *hanging* transaction, see the README) makes the offsets unstable for good.

So the Kafka adapter reads the committed offsets itself when partitions are assigned and
assigns them with explicit start offsets. A partition it cannot read stably is held (paused,
none of its records delivered) and read again with a growing backoff, never started from the
reset policy: only a partition with genuinely no committed offset is. ``StartHolds`` is the
pure bookkeeping of those holds, on an injected monotonic clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pipeline.ports import TopicPartition

log = logging.getLogger("pipeline.unstable")
FIRST_RETRY_S = 0.5
MAX_RETRY_S = 10.0  # a hold ends at most this long after the transaction does
# A hold is expected while a killed worker's transaction waits for the broker to abort it
# (its timeout: seconds) and is logged at WARNING; one that lasts this long is not, and is
# logged at ERROR with the remedy, again as often.
LOG_EVERY_S = 60.0
REMEDY = (
    "an open or hanging transaction holds the group's offsets; if it does not end within the "
    "transaction timeout, find and abort it: kafka-transactions.sh --bootstrap-server <b> "
    "find-hanging --broker-id <id>, then kafka-transactions.sh --bootstrap-server <b> abort "
    "--topic <topic> --partition <p> --start-offset <o>"
)


@dataclass(slots=True)
class _Hold:
    since: float
    next_try: float
    backoff: float
    logged: float  # when it was last logged at ERROR (its start, at first)


class StartHolds:
    def __init__(
        self,
        group: str,
        clock: Callable[[], float],
        first_retry_s: float | None = None,
        max_retry_s: float | None = None,
    ) -> None:
        self._group, self._clock = group, clock
        self._first = FIRST_RETRY_S if first_retry_s is None else first_retry_s
        self._max = MAX_RETRY_S if max_retry_s is None else max_retry_s
        self._holds: dict[TopicPartition, _Hold] = {}
        self.total = 0  # holds begun since the consumer was created (a counter)

    def __bool__(self) -> bool:
        return bool(self._holds)

    def __contains__(self, tp: object) -> bool:
        return tp in self._holds

    @property
    def held(self) -> list[TopicPartition]:
        return sorted(self._holds)

    def hold(self, partitions: Iterable[TopicPartition], reason: str) -> None:
        now = self._clock()
        for tp in partitions:
            if tp in self._holds:
                continue
            self._holds[tp] = _Hold(now, now + self._first, self._first, now)
            self.total += 1
            log.warning("group %s: %s[%d] held: its committed offset cannot be read stably "
                        "(%s); it is not read from the reset policy, and is asked again",
                        self._group, tp[0], tp[1], reason)  # fmt: skip

    def due(self) -> list[TopicPartition]:
        """Held partitions whose next read is due."""
        now = self._clock()
        return [tp for tp, h in self._holds.items() if h.next_try <= now]

    def next_due_in(self) -> float | None:
        """Seconds until the next read is due (None: nothing is held)."""
        if not self._holds:
            return None
        return max(0.0, min(h.next_try for h in self._holds.values()) - self._clock())

    def failed(self, tp: TopicPartition, reason: str) -> None:
        """The read failed again: back off (doubling, capped); ERROR once it lasts."""
        hold = self._holds.get(tp)
        if hold is None:
            return
        now = self._clock()
        hold.backoff = min(hold.backoff * 2, self._max)
        hold.next_try = now + hold.backoff
        if now - hold.logged >= LOG_EVERY_S:
            hold.logged = now
            log.error("group %s: %s[%d] still held after %.0fs (%s). %s", self._group, tp[0],
                      tp[1], now - hold.since, reason, REMEDY)  # fmt: skip

    def release(self, tp: TopicPartition, offset: int) -> None:
        hold = self._holds.pop(tp, None)
        if hold is not None:
            log.warning("group %s: %s[%d] released after %.1fs: its committed offset %d is "
                        "stable", self._group, tp[0], tp[1], self._clock() - hold.since,
                        offset)  # fmt: skip

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Revoked or lost: no longer ours to hold."""
        for tp in partitions:
            self._holds.pop(tp, None)
