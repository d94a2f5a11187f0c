"""Which offsets are safe to commit.

An input record is *begun* when it is handed to the stage and *finished* when its handler
succeeded and every output (or dead letter) it produced was acknowledged by the broker. Records
finish out of order (delivery reports arrive when they arrive), so the offset to commit for a
partition is the first one not yet finished: the contiguous low watermark. It only moves forward.

``rewind`` forgets everything from an offset on (the partition was seeked back there, so those
records will be read again); tokens handed out before are cancelled, so a late delivery report
for the old attempt cannot finish the new one. Records past the offset that had already
finished (handled, every output acknowledged) are *kept* instead: when the re-read reaches them
``resume_kept`` puts them back as finished, so their outputs are not emitted a second time.

Pure data structures: no Kafka, no clock.
"""

from __future__ import annotations

from collections import deque
from typing import Any

_new = object.__new__


class Token:
    """One begun record: how many acknowledgements it still waits for.

    A token is also the delivery report handler of its record's outputs (``__call__``, given
    to the producer as ``on_delivery``): one object per record in flight rather than a closure
    (five GC-tracked objects, each walked by every young collection while the record waits for
    the broker). ``refused`` and ``tp`` are set by whoever hands it to the producer."""

    __slots__ = ("cancelled", "event_id", "failed", "offset", "outstanding", "refused", "tp")

    def __init__(self, offset: int, outstanding: int, event_id: str | None = None) -> None:
        self.offset = offset
        self.outstanding = outstanding
        self.event_id = event_id  # set when the stage records finished ids (idempotency)
        self.cancelled = False
        self.failed = False
        # Where the first refused delivery is queued, as (tp, token, error, message, False).
        self.refused: list[Any] | None = None
        self.tp: tuple[str, int] | None = None

    def finish_one(self) -> None:
        if self.outstanding > 0:
            self.outstanding -= 1

    def __call__(self, err: Any, msg: Any) -> None:
        """A delivery report for one output: acknowledged, one unit less to wait for; the first
        refusal marks the token failed and is queued in ``refused`` (once)."""
        if err is None:
            if self.outstanding > 0:
                self.outstanding -= 1
        elif not self.failed:
            self.failed = True
            if self.refused is not None:
                self.refused.append((self.tp, self, err, msg, False))

    def settle(self, acknowledgements: int) -> None:
        """The handler's own unit is done; wait for ``acknowledgements`` more instead (its
        outputs, or the retry / dead-letter copy). For records begun before their handler ran
        (concurrent stages), with ``outstanding=1`` standing for the handler."""
        self.outstanding += acknowledgements - 1

    @property
    def done(self) -> bool:
        return self.outstanding == 0 and not self.failed


class PartitionOffsets:
    """Offsets of one partition, begun in increasing order."""

    __slots__ = ("_committed", "_next", "_open", "finished_ids", "kept", "next_read")

    def __init__(self) -> None:
        self._open: deque[Token] = deque()
        # Event ids of records the watermark has passed, for the idempotency store: they are
        # recorded as done before the offsets that cover them are committed.
        self.finished_ids: list[str] = []
        self._next: int | None = None  # offset after the last finished-and-contiguous one
        self._committed: int | None = None
        # The next offset the stage should see: after the last begun one, or a rewind target.
        self.next_read: int | None = None
        # Finished tokens past a rewind, in offset order (all after every open one).
        self.kept: deque[Token] = deque()

    def begin(self, offset: int, outstanding: int = 1, event_id: str | None = None) -> Token:
        opened = self._open
        if opened:
            if offset <= opened[-1].offset:
                raise ValueError(f"offset {offset} begun after {opened[-1].offset}")
            # Finished records leave the queue now rather than at the next commit: tokens kept
            # for a whole commit interval outlive the young GC generations and make every full
            # collection walk them (one per record), which cost more than the rest of this.
            head = opened[0]
            if head.outstanding == 0 and not head.failed:
                self._pop_finished()
        self.next_read = offset + 1
        # Token(offset, outstanding, event_id) inline: calling the class costs about as much
        # again as allocating the object and these stores (once per record).
        token = _new(Token)
        token.offset = offset
        token.outstanding = outstanding
        token.event_id = event_id
        token.cancelled = False
        token.failed = False
        token.refused = None
        token.tp = None
        if outstanding == 0 and not opened:  # (the same deque: _pop_finished pops in place)
            self._next = offset + 1  # fast path: nothing pending, nothing to queue
            if event_id is not None:
                self.finished_ids.append(event_id)
        else:
            opened.append(token)
        return token

    def committable(self) -> int | None:
        """The offset to commit (the next one to read), or None if nothing new is safe."""
        self._pop_finished()
        if self._next is None or (self._committed is not None and self._next <= self._committed):
            return None
        return self._next

    def _pop_finished(self) -> None:
        """Move the watermark past the finished records at the head of the queue."""
        opened, finished = self._open, self.finished_ids
        token = None
        while opened:
            head = opened[0]
            if head.outstanding or head.failed:  # not done (``Token.done``, inline)
                break
            token = opened.popleft()
            if token.event_id is not None:
                finished.append(token.event_id)
        if token is not None:
            self._next = token.offset + 1

    def commit_failed(self) -> None:
        """An asynchronous commit did not land: offer the watermark again next time."""
        self._committed = None

    def committed(self, offset: int) -> None:
        if self._committed is None or offset > self._committed:
            self._committed = offset

    def rewind(self, offset: int) -> None:
        kept = self.kept
        while self._open and self._open[-1].offset >= offset:
            token = self._open.pop()
            if token.done:
                kept.appendleft(token)
            else:
                token.cancelled = True
        self.next_read = offset

    def resume_kept(self, offset: int) -> bool:
        """True if the record at ``offset`` (read again after a rewind) had finished before it:
        it is finished again now, without being handled."""
        kept = self.kept
        while kept and kept[0].offset < offset:
            kept.popleft()  # not read again (gone from the log): nothing left to skip there
        if not kept or kept[0].offset != offset:
            return False
        if self._open and offset <= self._open[-1].offset:
            raise ValueError(f"kept offset {offset} resumed after {self._open[-1].offset}")
        self._open.append(kept.popleft())
        self.next_read = offset + 1
        return True

    def cancel_all(self) -> None:
        self.kept.clear()
        while self._open:
            self._open.pop().cancelled = True

    @property
    def committed_to(self) -> int | None:
        """The offset last committed (or sent to a transaction that committed)."""
        return self._committed

    @property
    def in_flight(self) -> int:
        return len(self._open)


TopicPartition = tuple[str, int]


class OffsetTracker:
    """PartitionOffsets for every assigned partition."""

    def __init__(self) -> None:
        self._parts: dict[TopicPartition, PartitionOffsets] = {}
        # The same dict, read only: the runner looks a partition up without a call per record
        # (``partition`` when it is not there yet). Never replaced, only added to and popped.
        self.partitions = self._parts
        self.keeping: set[TopicPartition] = set()  # partitions with kept tokens (see rewind)

    def partition(self, tp: TopicPartition) -> PartitionOffsets:
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = PartitionOffsets()
        return part

    def rewind(self, tp: TopicPartition, offset: int) -> None:
        part = self.partition(tp)
        part.rewind(offset)
        if part.kept:
            self.keeping.add(tp)

    def resume_kept(self, tp: TopicPartition, offset: int) -> bool:
        """See ``PartitionOffsets.resume_kept``; for partitions in ``keeping`` only."""
        part = self._parts.get(tp)
        resumed = part is not None and part.resume_kept(offset)
        if part is None or not part.kept:
            self.keeping.discard(tp)
        return resumed

    def committed_to(self, tp: TopicPartition) -> int | None:
        part = self._parts.get(tp)
        return None if part is None else part.committed_to

    def committable(self, only: set[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        out = {}
        for tp, part in self._parts.items():
            if only is not None and tp not in only:
                continue
            offset = part.committable()
            if offset is not None:
                out[tp] = offset
        return out

    def take_finished_ids(self) -> list[str]:
        """Ids of records covered by the offsets ``committable`` last returned; cleared here."""
        ids: list[str] = []
        for part in self._parts.values():
            if part.finished_ids:
                ids.extend(part.finished_ids)
                part.finished_ids = []
        return ids

    def commit_failed(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            if tp in self._parts:
                self._parts[tp].commit_failed()

    def mark_committed(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            if tp in self._parts:
                self._parts[tp].committed(offset)

    def drop(self, tps: list[TopicPartition]) -> None:
        """Forget partitions we no longer own (revoked or lost); their tokens are cancelled."""
        for tp in tps:
            self.keeping.discard(tp)
            part = self._parts.pop(tp, None)
            if part is not None:
                part.cancel_all()

    @property
    def in_flight(self) -> int:
        return sum(p.in_flight for p in self._parts.values())
