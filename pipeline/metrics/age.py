"""The age of each partition's oldest unfinished event, from what the hooks tell: the records a
batch fetched and the offsets each commit covers. Pure: no clock, no Kafka.

Each fetched run of consecutive records of one partition is kept as (first offset, its record
timestamp, last offset), and dropped once a commit covers its last offset. The oldest run left
gives the age: the first record of a run is at least as old as the rest, so the age is exact
for the run's first record and overstates the others by at most one batch's span. Events done
but not yet committed count as unfinished until the next commit (about a second).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from pipeline.ports import RawRecord, TopicPartition

NO_TIMESTAMP = 0  # librdkafka's TIMESTAMP_NOT_AVAILABLE


def runs(
    records: Sequence[RawRecord],
) -> Iterator[tuple[TopicPartition, RawRecord, RawRecord, int]]:
    """A batch as runs of one partition's consecutive records: (partition, first, last, count),
    in one pass (a batch usually holds a few long runs)."""
    if not records:
        return
    first = last = records[0]
    topic, partition, n = first.topic(), first.partition(), 0
    for record in records:
        if record.partition() != partition or record.topic() != topic:
            yield (topic, partition), first, last, n
            first, topic, partition, n = record, record.topic(), record.partition(), 0
        last = record
        n += 1
    yield (topic, partition), first, last, n


class OldestUnfinished:
    def __init__(self) -> None:
        # Per partition: first offset of a fetched run -> (its timestamp ms, the run's last).
        self._runs: dict[TopicPartition, dict[int, tuple[int, int]]] = {}
        self._shown: set[TopicPartition] = set()

    def fetched(self, records: Sequence[RawRecord]) -> None:
        for tp, first, last, _ in runs(records):
            self.note(tp, first, last)

    def note(self, tp: TopicPartition, first: RawRecord, last: RawRecord) -> None:
        """A fetched run of ``tp``'s consecutive records, from ``first`` to ``last``."""
        kind, ts = first.timestamp()
        if kind != NO_TIMESTAMP and ts > 0:
            kept = self._runs.setdefault(tp, {})
            kept[first.offset()] = (ts, last.offset())  # a re-read run replaces its old self

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        """``offsets`` are the next to read: every run ending below is done."""
        for tp, next_read in offsets.items():
            runs = self._runs.get(tp)
            if runs:
                for first in [f for f, (_, last) in runs.items() if last < next_read]:
                    del runs[first]

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._runs.pop(tp, None)

    def ages(self, now_ms: int) -> dict[TopicPartition, int]:
        """Milliseconds, per partition seen since the last call or holding runs (0: none left,
        so a gauge falls back to 0 rather than keeping its last value)."""
        out = {tp: max(0, now_ms - min(ts for ts, _ in runs.values()))
               for tp, runs in self._runs.items() if runs}  # fmt: skip
        for tp in self._shown - out.keys():
            out[tp] = 0
        self._shown = {tp for tp, runs in self._runs.items() if runs}
        for tp in [tp for tp, runs in self._runs.items() if not runs]:
            del self._runs[tp]
        return out
