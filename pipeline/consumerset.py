"""A stage's inputs and its retry topics, read by two consumers behind one ConsumerPort.

Why two: assignors balance the *total* partition count per member, not each topic. With inputs
and retry topics in one subscription, one worker could get every input partition and another
only retry partitions, and point-to-point scaling would silently stop working. The retry
consumer is in its own group (``<group>.retry``) so each set is balanced on its own; the
runner sees one consumer and routes by topic without knowing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.ports import ConsumerPort, RawRecord, RebalanceListener, TopicPartition


class ConsumerSet:
    # Retry delays are a second or more: looking for due retries ten times a second is plenty,
    # and spares a client call on every step of a busy loop.
    RETRY_POLL_INTERVAL_S = 0.1

    def __init__(
        self,
        main: ConsumerPort,
        retry: ConsumerPort,
        retry_topics: Sequence[str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._main = main
        self._retry = retry
        self._retry_topics = frozenset(retry_topics)
        self._clock = clock
        self._next_retry_poll = 0.0

    def subscribe(self, topics: list[str], listener: RebalanceListener) -> None:
        self._main.subscribe([t for t in topics if t not in self._retry_topics], listener)
        self._retry.subscribe([t for t in topics if t in self._retry_topics], listener)

    def consume(self, max_records: int, timeout_s: float) -> Sequence[RawRecord]:
        """Due retries first, then inputs up to ``max_records`` in all: retries are never
        crowded out by a backlog of inputs (a concurrent stage asks for its free slots only)."""
        retries: Sequence[RawRecord] = ()
        now = self._clock()
        if now >= self._next_retry_poll:
            self._next_retry_poll = now + self.RETRY_POLL_INTERVAL_S
            retries = self._retry.consume(max_records, 0)  # never waits: inputs pace the loop
        room = max_records - len(retries)
        if room <= 0:
            return retries
        records = self._main.consume(room, 0 if retries else timeout_s)
        if not retries:
            return records
        return [*retries, *records]

    def pause(self, partitions: list[TopicPartition]) -> None:
        for consumer, parts in self._split(partitions):
            consumer.pause(parts)

    def resume(self, partitions: list[TopicPartition]) -> None:
        for consumer, parts in self._split(partitions):
            consumer.resume(parts)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        (self._retry if tp[0] in self._retry_topics else self._main).seek(tp, offset)

    def commit(self, offsets: dict[TopicPartition, int], *, sync: bool) -> None:
        main = {tp: o for tp, o in offsets.items() if tp[0] not in self._retry_topics}
        retry = {tp: o for tp, o in offsets.items() if tp[0] in self._retry_topics}
        if main:
            self._main.commit(main, sync=sync)
        if retry:
            self._retry.commit(retry, sync=sync)

    def committed(
        self, partitions: list[TopicPartition], timeout_s: float = 10
    ) -> dict[TopicPartition, int]:
        out: dict[TopicPartition, int] = {}
        for consumer, parts in self._split(partitions):
            out.update(consumer.committed(parts, timeout_s))
        return out

    def take_commit_failures(self) -> list[TopicPartition]:
        return self._main.take_commit_failures() + self._retry.take_commit_failures()

    def group_metadata(self) -> Any:
        # Two groups cannot share one transaction's offsets: exactly-once stages are given a
        # single consumer (see Pipeline.runner), so this is never needed.
        raise NotImplementedError("exactly-once stages read inputs and retries with one consumer")

    def close(self) -> None:
        """Both at once: each close waits for its LeaveGroup answer (up to the request timeout
        on a slow broker), and one after the other would spend the shutdown budget twice."""
        errors: list[BaseException] = []

        def close_retry() -> None:
            try:
                self._retry.close()
            except BaseException as exc:  # raised below, on the caller's thread
                errors.append(exc)

        other = threading.Thread(target=close_retry, name="close-retry-consumer", daemon=True)
        other.start()
        try:
            self._main.close()
        finally:
            other.join()
        if errors:
            raise errors[0]

    def _split(
        self, partitions: list[TopicPartition]
    ) -> list[tuple[ConsumerPort, list[TopicPartition]]]:
        main = [tp for tp in partitions if tp[0] not in self._retry_topics]
        retry = [tp for tp in partitions if tp[0] in self._retry_topics]
        return [(c, p) for c, p in ((self._main, main), (self._retry, retry)) if p]
