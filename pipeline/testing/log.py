"""Topics, partitions and their append-only logs.

A transaction's records are in the log as soon as they are produced, like Kafka's; whether a
``read_committed`` consumer may see them depends on the transaction's outcome, and no such
consumer reads past the last stable offset (the first record of a transaction still open).
Committing or aborting writes a control marker that takes an offset, as Kafka's does, so
offsets after a transaction have a gap; consumers skip markers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from pipeline.ports import RawHeaders, TopicPartition

TIMESTAMP_CREATE_TIME = 1  # confluent_kafka.TIMESTAMP_CREATE_TIME
DEFAULT_MAX_MESSAGE_BYTES = 1_048_588  # Kafka's default max.message.bytes
RECORD_OVERHEAD = 70  # about what one record costs in a batch beyond its key, value and headers


class TxnState(enum.Enum):
    OPEN = "open"
    COMMITTED = "committed"
    ABORTED = "aborted"


@dataclass(eq=False)
class Txn:
    """One transaction of one producer: the partitions it wrote to and its outcome."""

    transactional_id: str
    state: TxnState = TxnState.OPEN
    partitions: set[TopicPartition] = field(default_factory=set)


class Record:
    """A stored record, handed to consumers as is (it implements ``RawRecord``)."""

    __slots__ = ("_headers", "_key", "_offset", "_partition", "_timestamp", "_topic", "_value")

    def __init__(
        self,
        tp: TopicPartition,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes | None]] | None,
        timestamp_ms: int,
    ) -> None:
        self._topic, self._partition = tp
        self._offset = offset
        self._key = key
        self._value = value
        self._headers = headers
        self._timestamp = timestamp_ms

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        # A copy, as confluent-kafka builds a new list on every call.
        return list(self._headers) if self._headers is not None else None

    def timestamp(self) -> tuple[int, int]:
        return (TIMESTAMP_CREATE_TIME, self._timestamp)

    def error(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"Record({self._topic}[{self._partition}]@{self._offset})"


def record_size(key: bytes | None, value: bytes | None, headers: RawHeaders) -> int:
    """Roughly the bytes a record takes in a batch, for ``max.message.bytes``."""
    size = RECORD_OVERHEAD + len(key or b"") + len(value or b"")
    for name, header in headers or ():
        size += len(name.encode()) + len(header or b"")
    return size


@dataclass(eq=False, slots=True)
class Entry:
    record: Record | None  # None: a control marker
    txn: Txn | None = None

    def visible(self, read_committed: bool) -> bool:
        if self.record is None:
            return False
        if self.txn is None or not read_committed:
            return True
        return self.txn.state is TxnState.COMMITTED


class PartitionLog:
    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.entries: list[Entry] = []
        self._open: dict[Txn, int] = {}  # open transaction -> its first offset here
        self.low = 0  # the low watermark: records below it were deleted

    @property
    def end(self) -> int:
        """The high watermark: the offset the next record will get."""
        return len(self.entries)

    def stable_end(self) -> int:
        """The last stable offset: ``read_committed`` consumers read below it only."""
        return min(self._open.values(), default=self.end)

    def append(self, record: Record, txn: Txn | None) -> None:
        if txn is not None and txn not in self._open:
            self._open[txn] = self.end
        self.entries.append(Entry(record, txn))

    def close_txn(self, txn: Txn) -> None:
        """Write the commit or abort marker of ``txn`` (its state is already set)."""
        if self._open.pop(txn, None) is not None:
            self.entries.append(Entry(None, txn))

    def delete_below(self, offset: int) -> int:
        """Delete the records below ``offset`` (at most the high watermark), as Kafka's
        ``DeleteRecords``: the low watermark moves up, offsets stay. Returns how far it moved."""
        new_low = min(max(self.low, offset), self.end)
        for o in range(self.low, new_low):
            self.entries[o] = Entry(None)  # the offset stays taken; the record is gone
        moved, self.low = new_low - self.low, new_low
        return moved

    def read(self, position: int, limit: int, read_committed: bool) -> tuple[list[Record], int]:
        """Up to ``limit`` visible records from ``position`` (or the low watermark, if later),
        and the position after them (past any markers and aborted records skipped)."""
        bound = self.stable_end() if read_committed else self.end
        position = max(position, self.low)
        out: list[Record] = []
        while position < bound and len(out) < limit:
            entry = self.entries[position]
            if entry.visible(read_committed):
                assert entry.record is not None
                out.append(entry.record)
            position += 1
        return out, position

    def ready(self, position: int, read_committed: bool) -> bool:
        bound = self.stable_end() if read_committed else self.end
        return any(self.entries[o].visible(read_committed) for o in range(position, bound))


@dataclass
class Topic:
    name: str
    logs: list[PartitionLog]
    config: dict[str, str] = field(default_factory=dict)
    refuse_writes: bool = False
    refuse_code: str = "TOPIC_AUTHORIZATION_FAILED"
    fail_next: int = 0  # deliveries still to fail (broker.fail_deliveries)
    fail_code: str = "_MSG_TIMED_OUT"
    fail_retriable: bool = True

    @property
    def max_message_bytes(self) -> int:
        return int(self.config.get("max.message.bytes", DEFAULT_MAX_MESSAGE_BYTES))
