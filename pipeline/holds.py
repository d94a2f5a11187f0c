"""Holding partitions without sleeping: pause, seek back, resume at a deadline.

A partition is *held* when its next record must wait: a retry that is not due yet, an in-place
retry's backoff, an output the broker refused, or an open circuit breaker (then every partition
is held). The partition is paused and seeked back to the record that must wait, and its deadline
noted; the consumer keeps polling (and so keeps its group membership) and the partition is
resumed when the deadline passes. Records of a held partition already fetched in the current
batch are skipped (``skip``); the first of them is seeked back to if the seek has not been made.

Pure bookkeeping over the consumer port and the offset tracker, on the runner's clock: due
times are wall time (they travel in headers), deadlines monotonic.
"""

from __future__ import annotations

import logging

from pipeline.backoff import PauseDeadlines
from pipeline.clock import Clock
from pipeline.offsets import OffsetTracker
from pipeline.ports import ConsumerPort, RawRecord, TopicPartition
from pipeline.retrytopics import Origin

log = logging.getLogger("pipeline.runner")
OFFSET_BEGINNING = -2  # librdkafka's logical offset: the start of the partition
# When the group coordinator's broker dies, the first read times out (the call's own timeout);
# by the second the group has a new coordinator. A 3-node chaos run needed the second one.
COMMITTED_READS = 2


class Holds:
    def __init__(
        self,
        consumer: ConsumerPort,
        tracker: OffsetTracker,
        assigned: set[TopicPartition],
        clock: Clock,
    ) -> None:
        self._consumer = consumer
        self._tracker = tracker
        self._assigned = assigned  # the runner's own set: assignment changes show here
        self._clock = clock
        self.pauses = PauseDeadlines(clock.monotonic)
        # Partitions whose remaining records in this batch must not be handled; True means "seek
        # back to the first of them" (they were fetched but the partition is held).
        self.skip: dict[TopicPartition, bool] = {}

    def new_batch(self) -> None:
        self.skip.clear()

    def wait_s(self, origin: Origin) -> float:
        """How long until a retry-topic record is due (0 or less: it is due)."""
        return (origin.due_ms - self._clock.wall_ms()) / 1000

    def rewind(self, tp: TopicPartition, offset: int, delay_s: float) -> None:
        """Re-read ``tp`` from ``offset`` after ``delay_s``."""
        self._tracker.rewind(tp, offset)
        self._consumer.pause([tp])
        self._consumer.seek(tp, offset)
        self.pauses.pause(tp, delay_s)
        self.skip[tp] = False

    def hold_everything(self, tp: TopicPartition, offset: int, delay_s: float) -> None:
        """The breaker is open: pause every partition and come back to the first unprocessed
        record of each after ``delay_s``. Nothing is retried, dead-lettered or dropped."""
        self.rewind(tp, offset, delay_s)
        for other in self._assigned - {tp}:
            self._consumer.pause([other])
            self.pauses.pause(other, delay_s)
            if other in self.skip:
                continue  # already seeked back in this batch (a rewind or a hold): keep that
            next_read = self._tracker.partition(other).next_read
            if next_read is not None:
                self._consumer.seek(other, next_read)
            self.skip[other] = True  # and seek to a later-fetched record, if one comes

    def rewind_to_committed(self) -> None:
        """Every assigned partition back to its committed offset, nothing begun kept (an
        aborted transaction). While the offsets cannot be read (the group coordinator is away:
        a broker restart) the consumer holds the partitions until they can be
        (``ConsumerPort.hold_until_committed``): the stage stays up, and nothing is read again
        from a guessed offset."""
        assigned = list(self._assigned)
        try:
            committed = self._read_committed(assigned) if assigned else {}
        except Exception as exc:  # the client's own error type: the port does not wrap it
            log.warning("committed offsets unreadable after an abort (%s); %d partitions held "
                        "until they can be read", exc, len(assigned))  # fmt: skip
            self._consumer.hold_until_committed(assigned, str(exc))
            committed = None
        for tp in assigned:
            if committed is not None:
                offset = committed.get(tp, -1)
                self._consumer.seek(tp, offset if offset >= 0 else OFFSET_BEGINNING)
            self.skip[tp] = False  # the rest of the batch is handed back
        self._tracker.drop(assigned)

    def _read_committed(self, assigned: list[TopicPartition]) -> dict[TopicPartition, int]:
        for attempt in range(1, COMMITTED_READS + 1):
            try:
                return self._consumer.committed(assigned)
            except Exception as exc:  # the client's own error type: the port does not wrap it
                if attempt == COMMITTED_READS:
                    raise
                log.warning("reading committed offsets after an abort failed (%s); asking "
                            "again", exc)  # fmt: skip
        raise AssertionError("unreachable")

    def skipped(self, record: RawRecord, tp: TopicPartition) -> None:
        """``record`` belongs to a partition skipped in this batch: seek back to it if the
        partition still needs a seek."""
        if self.skip[tp]:
            self._consumer.seek(tp, record.offset())
            self._tracker.rewind(tp, record.offset())
            self.skip[tp] = False

    def due(self) -> list[TopicPartition]:
        """Assigned partitions whose hold is over (forgotten here: the caller resumes them)."""
        return [tp for tp in self.pauses.due() if tp in self._assigned]

    def forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.skip[tp] = False  # records of this poll belong to the next owner now
        self.pauses.forget(partitions)
