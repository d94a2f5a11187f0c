"""A stage's consumers behind one ConsumerPort, taken from in order of priority.

The sources, first to last: the retry topics (due retries come before new input), then the
priority lanes of the inputs, lane 0 first (``pipeline.lanes``); a stage without lanes has one
lane. Each source is a consumer of its own, in a group of its own:

- assignors balance the *total* partition count per member, not each topic: with inputs and
  retry topics (or two lanes) in one subscription, one worker could get every input partition
  and another only retry partitions, and point-to-point scaling would silently stop working;
- each consumer prefetches on its own, so a backlog fetched ahead on a low lane never sits in
  front of a high lane's records in one client queue.

One ``consume`` takes, for the room it is given, in this order: due retries (looked for at
most every ``RETRY_POLL_INTERVAL_S``); what the share book says the lower lanes are owed (each
lane below the top is guaranteed its ``Lanes.min_share`` while it has a backlog); then lane 0,
lane 1, ..., each for the room left. Only when nothing came at all does the last
lane wait up to ``timeout_s`` (so with one lane this is the single call it always was); a
record of a higher lane arriving meanwhile is taken by the next call. The runner sees one
consumer and routes by topic without knowing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.lanes import ShareBook
from pipeline.ports import (
    ConsumerPort,
    RawRecord,
    RebalanceListener,
    TopicPartition,
    close_port,
    commit_port,
)

if TYPE_CHECKING:
    from pipeline.registry import StagePlan
    from pipeline.startup import TopicsJob

# (group, client id suffix, whether it reads retry topics) -> a new consumer
MakeConsumer = Callable[[str, str, bool], ConsumerPort]


@dataclass(frozen=True, slots=True)
class Source:
    """One consumer of the set, the topics it reads, and how it is taken from."""

    consumer: ConsumerPort
    topics: frozenset[str]
    every_s: float = 0.0  # looked at no more often than this (0: at every call)
    share: float = 0.0  # guaranteed share of what is taken while it has a backlog
    # Subscribed only once the stage's topics are ensured (the retry consumer: its topics may
    # not exist before; ``pipeline.startup``).
    deferred: bool = False


class ConsumerSet:
    # Retry delays are a second or more: looking for due retries ten times a second is plenty,
    # and spares a client call on every step of a busy loop.
    RETRY_POLL_INTERVAL_S = 0.1
    # A lower lane that a busy lane 0 leaves no room for (strict priority, or a tiny share) is
    # still asked for one record this often: a consumer not polled for max.poll.interval.ms
    # is evicted from its group, and its uncommitted records come back as duplicates.
    LANE_KEEPALIVE_S = 5.0

    def __init__(
        self,
        sources: Sequence[Source],
        clock: Callable[[], float] = time.monotonic,
        startup: TopicsJob | None = None,
    ) -> None:
        """``sources`` in the order they are taken from; the first that is looked at every
        call owns any topic no source names. ``startup``: the job ensuring the stage's topics,
        if not done: no record is handed out, and no deferred source subscribed, before it is
        (``pipeline.startup``)."""
        self._startup = startup
        self._deferred: list[tuple[ConsumerPort, list[str], RebalanceListener]] = []
        self._sources = tuple(sources)
        self._consumers = tuple(s.consumer for s in self._sources)
        self._clock = clock
        self._next_poll = [0.0] * len(self._sources)
        self._last_asked = [clock()] * len(self._sources)
        shares = [s.share for s in self._sources]
        self._book = ShareBook(shares) if any(shares) else None  # none: strict order only
        # The first source looked at every call: lane 0. Shares are paid just before it.
        self._first_lane = next(i for i, s in enumerate(self._sources) if not s.every_s)
        self._default = self._consumers[self._first_lane]
        self._owner = {t: s.consumer for s in self._sources for t in s.topics}

    @classmethod
    def for_plan(
        cls,
        plan: StagePlan,
        make: MakeConsumer,
        clock: Callable[[], float] = time.monotonic,
        startup: TopicsJob | None = None,
    ) -> ConsumerPort:
        """The consumers ``plan.readers`` names, in their order: one plain consumer when that
        is all the stage needs (made once ``startup``, if any, is done: it may read retry
        topics, and nothing tells it when to hand out its first batch). A job that already
        failed is raised here: the stage must not start as if its topics were there."""
        readers = plan.readers
        if startup is not None and startup.done:
            startup.finish()  # raises what it failed with (stopped short: the runner stops)
            startup = None
        if len(readers) == 1:
            # Told to stop meanwhile: made all the same, its runner stops before it consumes.
            if startup is not None:
                startup.finish()
            return make(readers[0][0], "", False)
        lanes = plan.lane_readers
        shares = plan.stage.lanes.shares(len(lanes)) if len(lanes) > 1 else (0.0,)
        sources = [
            Source(make(group, f"-p{k}" if k else "", False), frozenset(topics), share=share)
            for k, ((group, topics), share) in enumerate(zip(lanes, shares, strict=True))
        ]
        if plan.retry_topics:  # made after the lanes, taken from before them
            retry = make(f"{plan.group}.retry", "-retry", True)
            every = cls.RETRY_POLL_INTERVAL_S
            sources.insert(0, Source(retry, frozenset(plan.retry_topics), every, deferred=True))
        return cls(sources, clock, startup)

    def subscribe(self, topics: list[str], listener: RebalanceListener) -> None:
        for source in self._sources:
            consumer = source.consumer
            mine = [t for t in topics if self._owner.get(t, self._default) is consumer]
            if mine and source.deferred and self._startup is not None:
                self._deferred.append((consumer, mine, listener))
            elif mine:
                consumer.subscribe(mine, listener)

    def consume(self, max_records: int, timeout_s: float) -> Sequence[RawRecord]:
        """Never more than ``max_records`` in all (a concurrent stage asks for its free slots
        only), in source order: retries, then lane 0, lane 1, ..."""
        if self._startup is not None:
            return self._consume_starting(max_records, timeout_s)
        return self._consume(max_records, timeout_s)

    def _consume_starting(self, max_records: int, timeout_s: float) -> Sequence[RawRecord]:
        """While the stage's topics are being ensured the inputs are fetched as usual, but a
        batch is handed out only once they are: the stage produces only from handling one.
        Then the deferred sources subscribe; a failed job is raised here, records or not.
        A stop while waiting returns nothing: the batch in hand was never handed out, nor its
        offsets committed, so it is read again after the restart."""
        startup = self._startup
        assert startup is not None
        records = self._consume(max_records, timeout_s)
        if records or startup.done:
            if not startup.finish():  # bounded; raises what ensuring the topics raised
                return []
            self._startup = None
            for consumer, topics, listener in self._deferred:
                consumer.subscribe(topics, listener)
            self._deferred.clear()
        return records

    def _consume(self, max_records: int, timeout_s: float) -> Sequence[RawRecord]:
        n = len(self._sources)
        parts: list[tuple[int, Sequence[RawRecord]]] = []  # (source, its records)
        asked, taken, room = [0] * n, [0] * n, max_records
        book, now, last = self._book, self._clock(), n - 1
        for i, source in enumerate(self._sources):
            if i == self._first_lane and i < last:  # lower lanes: what they are owed first
                room -= self._pay_lower_lanes(now, room, parts, asked, taken)
            if room <= 0:
                break
            if source.every_s:
                if now < self._next_poll[i]:
                    continue
                self._next_poll[i] = now + source.every_s
            # Only the last source may wait, and only when nothing came: never a stall while
            # records are in hand, and a set of one lane is the single call it always was.
            wait = timeout_s if i == last and room == max_records else 0
            room -= self._take(i, room, wait, parts, asked, taken)
        if book is not None:
            book.record(max_records, asked, taken, max_records - room)
        if len(parts) == 1:
            return parts[0][1]
        parts.sort(key=_source)  # stable: a lane's owed records stay before its others
        return [r for _, batch in parts for r in batch]

    def _take(
        self, i: int, n: int, wait: float, parts: list[tuple[int, Sequence[RawRecord]]],
        asked: list[int], taken: list[int],
    ) -> int:  # fmt: skip
        records = self._consumers[i].consume(n, wait)
        asked[i] += n
        self._last_asked[i] = self._clock()
        if records:
            taken[i] += len(records)
            parts.append((i, records))
        return len(records)

    def _pay_lower_lanes(
        self, now: float, room: int, parts: list[tuple[int, Sequence[RawRecord]]],
        asked: list[int], taken: list[int],
    ) -> int:  # fmt: skip
        """Offer each lower lane what the share book says it is owed, then ask each one not
        asked for ``LANE_KEEPALIVE_S`` for one record; returns how many came."""
        got = 0
        if self._book is not None:
            for lane, owed in enumerate(self._book.owed(room)):
                if owed:
                    got += self._take(lane, owed, 0, parts, asked, taken)
        for j in range(self._first_lane + 1, len(self._sources)):
            if got >= room:
                break
            if now - self._last_asked[j] >= self.LANE_KEEPALIVE_S:
                got += self._take(j, 1, 0, parts, asked, taken)
        return got

    def pause(self, partitions: list[TopicPartition]) -> None:
        for consumer, parts in self._split(partitions):
            consumer.pause(parts)

    def resume(self, partitions: list[TopicPartition]) -> None:
        for consumer, parts in self._split(partitions):
            consumer.resume(parts)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._owner.get(tp[0], self._default).seek(tp, offset)

    def commit(
        self, offsets: dict[TopicPartition, int], *, sync: bool, timeout_s: float | None = None
    ) -> None:
        """``timeout_s`` bounds all the consumers' commits together, not each one."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for consumer, parts in self._split(list(offsets)):
            own = {tp: offsets[tp] for tp in parts}
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            commit_port(consumer, own, sync, left)

    def committed(
        self, partitions: list[TopicPartition], timeout_s: float = 10
    ) -> dict[TopicPartition, int]:
        out: dict[TopicPartition, int] = {}
        for consumer, parts in self._split(partitions):
            out.update(consumer.committed(parts, timeout_s))
        return out

    def hold_until_committed(self, partitions: list[TopicPartition], reason: str) -> None:
        for consumer, parts in self._split(partitions):
            consumer.hold_until_committed(parts, reason)

    def take_commit_failures(self) -> list[TopicPartition]:
        return [tp for c in self._consumers for tp in c.take_commit_failures()]

    def group_metadata(self) -> Any:
        # Several groups cannot share one transaction's offsets: exactly-once stages are given
        # a single consumer (see StagePlan.readers), so this is never needed.
        raise NotImplementedError("exactly-once stages read inputs and retries with one consumer")

    def close(self, timeout_s: float | None = None) -> None:
        """All at once: each close waits for its LeaveGroup answer (up to the request timeout
        on a slow broker), and one after the other would spend the shutdown budget N times."""
        errors: list[BaseException] = []

        def close(consumer: ConsumerPort) -> None:
            try:
                close_port(consumer, timeout_s)
            except BaseException as exc:  # raised below, on the caller's thread
                errors.append(exc)

        first, *others = self._consumers
        threads = [
            threading.Thread(target=close, args=(c,), name="close-consumer", daemon=True)
            for c in others
        ]
        for thread in threads:
            thread.start()
        try:
            close_port(first, timeout_s)
        finally:
            for thread in threads:
                thread.join()  # each close is bounded by timeout_s: so is this, at once
        if errors:
            raise errors[0]

    def _split(
        self, partitions: list[TopicPartition]
    ) -> list[tuple[ConsumerPort, list[TopicPartition]]]:
        by: dict[int, list[TopicPartition]] = {}
        for tp in partitions:
            by.setdefault(id(self._owner.get(tp[0], self._default)), []).append(tp)
        return [(c, by[id(c)]) for c in self._consumers if id(c) in by]


def _source(part: tuple[int, Sequence[RawRecord]]) -> int:
    return part[0]
