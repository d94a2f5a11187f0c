"""``MemoryConsumer``: ``pipeline.ports.ConsumerPort`` on a ``MemoryBroker``.

As with librdkafka, everything the group does to this consumer happens inside ``consume``, on
the caller's thread: rebalance callbacks (revoke, then assign), the report of partitions lost
after a crash, and the results of asynchronous commits. A partition's fetch position starts
at the group's committed offset, else at ``auto.offset.reset``, resolved when it is first read.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pipeline.errors import KafkaError
from pipeline.ports import RawRecord, RebalanceListener, TopicPartition
from pipeline.testing.broker import GroupMetadata
from pipeline.testing.group import Member, Step

if TYPE_CHECKING:
    from pipeline.testing.broker import MemoryBroker
    from pipeline.testing.log import PartitionLog

log = logging.getLogger("pipeline.testing")
OFFSET_BEGINNING, OFFSET_END, OFFSET_STORED, OFFSET_INVALID = -2, -1, -1000, -1001
_EARLIEST = {"earliest", "smallest", "beginning"}
_LATEST = {"latest", "largest", "end"}


class MemoryConsumer:
    def __init__(self, broker: MemoryBroker, config: Mapping[str, Any]) -> None:
        if "group.id" not in config:
            raise KafkaError("a consumer needs a group.id", code="_INVALID_ARG")
        self._broker = broker
        self.group_id = str(config["group.id"])
        # The framework's default (Settings.auto_offset_reset), not librdkafka's "latest".
        reset = str(config.get("auto.offset.reset", "earliest"))
        if reset not in _EARLIEST | _LATEST:
            raise KafkaError(f"auto.offset.reset {reset!r} is not modelled", code="_INVALID_ARG")
        self._from_start = reset in _EARLIEST
        self._read_committed = config.get("isolation.level", "read_committed") != "read_uncommitted"
        strategy = config.get("partition.assignment.strategy")
        self._strategy = str(strategy).split(",")[0].strip() if strategy else None
        self.member: Member | None = None
        self.crashed = False
        self._closed = False
        self._listener: RebalanceListener | None = None
        self._assigned: set[TopicPartition] = set()  # as the listener was told
        self._positions: dict[TopicPartition, int | None] = {}
        self._paused: set[TopicPartition] = set()
        self._commit_results: list[TopicPartition] = []  # failed async commits, not yet served
        self._commit_failures: list[TopicPartition] = []
        self._turn = 0

    @property
    def assignment(self) -> list[TopicPartition]:
        return sorted(self._assigned)

    @property
    def paused(self) -> list[TopicPartition]:
        """The assigned partitions paused now (a revoke or loss unpauses what it takes)."""
        return sorted(self._paused)

    def position(self, tp: TopicPartition) -> int | None:
        """The offset the next fetch of ``tp`` starts at, as Kafka's ``position``: after a seek,
        the seek's; before the first read, the committed offset (else ``auto.offset.reset``).
        None when ``tp`` is not assigned."""
        with self._broker.condition:
            partition_log = self._broker.log(tp)
            if tp not in self._assigned or partition_log is None:
                return None
            return self._position(tp, partition_log)

    def subscribe(self, topics: list[str], listener: RebalanceListener) -> None:
        """Join the group (again, if subscribed before: the old assignment is revoked)."""
        self._check_open()
        if self.member is not None and self.member.alive and self._assigned:
            self._revoke(sorted(self._assigned))
        with self._broker.condition:
            if self.member is not None:
                self._broker.leave(self.member)  # a new subscription: join afresh
            self._listener = listener
            self.member = self._broker.join(self.group_id, self._strategy, list(topics))

    def consume(self, max_records: int, timeout_s: float) -> Sequence[RawRecord]:
        """Up to ``max_records`` ready now; if none, wait up to ``timeout_s`` on the broker's
        clock (a non-blocking ``FakeClock`` does not wait) and return as soon as one arrives."""
        self._check_open()
        clock = self._broker.clock
        deadline = clock.monotonic() + timeout_s
        while True:
            self._serve_events()
            with self._broker.condition:
                records = self._fetch(max_records)
                if records:
                    return records
                if self._has_step():
                    continue  # the group changed meanwhile: serve that first
                left = deadline - clock.monotonic()
                if left <= 0 or not clock.wait(self._broker.condition, left):
                    return records

    def pause(self, partitions: list[TopicPartition]) -> None:
        self._paused.update(tp for tp in partitions if tp in self._assigned)

    def resume(self, partitions: list[TopicPartition]) -> None:
        self._paused.difference_update(partitions)
        with self._broker.condition:
            self._broker.condition.notify_all()

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if tp not in self._assigned:
            # As the Kafka adapter: a partition just revoked is no longer ours to re-read.
            log.warning("seek %s[%d]@%d failed: not assigned", tp[0], tp[1], offset)
            return
        with self._broker.condition:
            self._positions[tp] = None if offset in (OFFSET_STORED, OFFSET_INVALID) else offset
            self._broker.condition.notify_all()

    def commit(
        self, offsets: dict[TopicPartition, int], *, sync: bool, timeout_s: float | None = None
    ) -> None:
        if not offsets:
            return
        with self._broker.condition:
            error = self._broker.commit_error(self.group_id, self.member)
            if error is None:
                self._broker.group(self.group_id).committed.update(offsets)
        if error is None:
            return
        if sync:
            raise KafkaError(
                f"commit in group {self.group_id}: {error.str()} ({error.name()})",
                code=error.name(),
                retriable=error.retriable(),
            )
        self._commit_results.extend(offsets)  # reported at the next consume, as on_commit is

    def committed(
        self, partitions: list[TopicPartition], timeout_s: float = 10
    ) -> dict[TopicPartition, int]:
        with self._broker.condition:
            stored = self._broker.group(self.group_id).committed
            return {tp: stored.get(tp, OFFSET_INVALID) for tp in partitions}

    def hold_until_committed(self, partitions: list[TopicPartition], reason: str) -> None:
        """The memory broker always answers: each starts at its committed offset now."""
        for tp, offset in self.committed(partitions).items():
            self.seek(tp, offset if offset >= 0 else OFFSET_BEGINNING)

    def take_commit_failures(self) -> list[TopicPartition]:
        """Partitions whose asynchronous commits failed since the last call."""
        failed, self._commit_failures = self._commit_failures, []
        return failed

    def group_metadata(self) -> GroupMetadata:
        member = self.member
        return GroupMetadata(
            id(self._broker),
            self.group_id,
            member.member_id if member else None,
            member.generation if member else -1,
        )

    def close(self, timeout_s: float | None = None) -> None:
        """Revoke everything (the listener's last chance to commit), then leave the group, so
        the others take the partitions at their next ``consume``. Nothing here waits on a
        broker: ``timeout_s`` is not needed."""
        if self._closed:
            return
        try:
            if self.member is not None and self.member.alive and self._assigned:
                self._revoke(sorted(self._assigned))
        finally:
            self._closed = True
            with self._broker.condition:
                if self.member is not None:
                    self._broker.leave(self.member)

    # -- inside consume --------------------------------------------------------------------

    def _serve_events(self) -> None:
        failed, self._commit_results = self._commit_results, []
        self._commit_failures.extend(failed)
        while (step := self._next_step()) is not None:
            kind, partitions = step
            if kind == "revoke":
                self._revoke(partitions)
            elif kind == "lost":
                self._forget(partitions)
                self._notify("on_lost", partitions)
            else:
                self._notify("on_assign", partitions)

    def _next_step(self) -> Step | None:
        with self._broker.condition:
            member = self.member
            if member is None:
                return None
            if not member.alive:
                return ("lost", sorted(self._assigned)) if self._assigned else None
            step = self._broker.group(self.group_id).next_step(member)
            if step is not None and step[0] == "assign":
                self._assigned.update(step[1])
                self._positions.update(dict.fromkeys(step[1]))
            return step

    def _has_step(self) -> bool:
        member = self.member
        if member is None:
            return False
        if not member.alive:
            return bool(self._assigned)
        return self._broker.group(self.group_id).has_step(member)

    def _revoke(self, partitions: list[TopicPartition]) -> None:
        try:
            self._notify("on_revoke", partitions)
        finally:
            self._forget(partitions)
            with self._broker.condition:
                if self.member is not None:
                    self._broker.group(self.group_id).revoked(self.member, set(partitions))
                self._broker.condition.notify_all()

    def _forget(self, partitions: list[TopicPartition]) -> None:
        self._assigned.difference_update(partitions)
        self._paused.difference_update(partitions)
        for tp in partitions:
            self._positions.pop(tp, None)

    def _notify(self, callback: str, partitions: list[TopicPartition]) -> None:
        if self._listener is not None:
            getattr(self._listener, callback)(partitions)

    def _fetch(self, max_records: int) -> list[RawRecord]:
        """Ready records of the assigned, unpaused partitions, starting each call at the
        next partition so that one busy partition does not starve the others."""
        if self.member is None or not self.member.alive:
            return []
        live = sorted(tp for tp in self._assigned if tp not in self._paused)
        if not live:
            return []
        self._turn = (self._turn + 1) % len(live)
        out: list[RawRecord] = []
        for tp in live[self._turn :] + live[: self._turn]:
            partition_log = self._broker.log(tp)
            if partition_log is None or len(out) >= max_records:
                continue
            position = self._position(tp, partition_log)
            records, self._positions[tp] = partition_log.read(
                position, max_records - len(out), self._read_committed
            )
            out.extend(records)
        return out

    def _position(self, tp: TopicPartition, partition_log: PartitionLog) -> int:
        position = self._positions.get(tp)
        if position is None:
            position = self._broker.group(self.group_id).committed.get(tp)
        if position == OFFSET_BEGINNING:
            position = partition_log.low
        elif position == OFFSET_END:
            position = self._end(partition_log)
        if position is None or not partition_log.low <= position <= partition_log.end:
            # No committed offset, or out of range: auto.offset.reset decides.
            position = partition_log.low if self._from_start else self._end(partition_log)
        return position

    def _end(self, partition_log: PartitionLog) -> int:
        return partition_log.stable_end() if self._read_committed else partition_log.end

    def _check_open(self) -> None:
        if self._closed:
            raise KafkaError(f"consumer of group {self.group_id} is closed", code="_STATE")
