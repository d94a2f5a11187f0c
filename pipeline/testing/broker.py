"""``MemoryBroker``: the topics, groups and transactions every in-memory client shares.

One lock guards all of it, and its condition wakes a waiting ``consume`` when a record
arrives or a group changes. Clients call into the broker with the lock held (the methods
marked "lock held"); rebalance callbacks and delivery reports run outside it, on the client
caller's thread, so a callback may use any client without deadlocking another thread.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.ports import RawHeaders, TopicInfo, TopicPartition
from pipeline.testing.clock import Clock, SystemClock
from pipeline.testing.errors import BrokerError
from pipeline.testing.group import Group, Member
from pipeline.testing.log import (
    PartitionLog,
    Record,
    Topic,
    Txn,
    TxnState,
    record_size,
)
from pipeline.testing.partitioner import Partitioner

if TYPE_CHECKING:
    from pipeline.testing.consumer import MemoryConsumer
    from pipeline.testing.producer import MemoryProducer

OFFSET_INVALID = -1001  # confluent_kafka.OFFSET_INVALID: no committed offset


@dataclass(frozen=True, slots=True)
class GroupMetadata:
    """What ``MemoryConsumer.group_metadata`` returns, for ``send_offsets_to_transaction``."""

    broker_id: int
    group_id: str
    member_id: str | None
    generation: int


class MemoryBroker:
    """An in-memory Kafka cluster of one broker (see ``pipeline.testing`` for what it models).

    ``default_partitions`` is what ``create`` uses when not told. ``partitioner`` is what a
    producer uses when its config names none (librdkafka's default; ``MemoryTransport`` names
    the Java client's). ``assignor`` is the group protocol when a consumer's config names none
    (``partition.assignment.strategy``).
    """

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        default_partitions: int = 1,
        partitioner: str = "consistent_random",
        assignor: str = "cooperative-sticky",
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.condition = threading.Condition(threading.RLock())
        self.default_partitions = default_partitions
        self.default_partitioner = partitioner
        self.default_assignor = assignor
        self._topics: dict[str, Topic] = {}
        self._groups: dict[str, Group] = {}
        self._epochs: dict[str, int] = {}  # transactional.id -> current producer epoch
        self._open_txns: dict[str, Txn] = {}
        self._commit_faults: dict[str, int] = {}

    # -- topics (the admin client's part) -------------------------------------------------

    def create_topic(
        self, name: str, partitions: int | None = None, config: Mapping[str, str] | None = None
    ) -> bool:
        """Create ``name`` unless it exists; True if it was created. ``config`` holds topic
        configs such as ``max.message.bytes``."""
        count = partitions or self.default_partitions
        if count < 1:
            raise ValueError(f"topic {name!r}: partitions must be at least 1, not {count}")
        with self.condition:
            if name in self._topics:
                return False
            logs = [PartitionLog((name, p)) for p in range(count)]
            self._topics[name] = Topic(name, logs, dict(config or {}))
            self._rebalance_subscribers(name)
            return True

    def create(
        self, names: list[str], partitions: int | None = None, config: dict[str, str] | None = None
    ) -> list[str]:
        """As ``KafkaAdmin.create``: create the missing topics, return the ones created."""
        return [n for n in dict.fromkeys(names) if self.create_topic(n, partitions, config)]

    def ensure(self, names: list[str]) -> list[str]:
        """As ``KafkaAdmin.ensure`` with ``create_topics`` on (there is no off here)."""
        return self.create(names)

    def topics(self) -> dict[str, TopicInfo]:
        with self.condition:
            return {n: TopicInfo(n, len(t.logs)) for n, t in self._topics.items()}

    def delete(self, names: list[str]) -> None:
        with self.condition:
            for name in names:
                if self._topics.pop(name, None) is not None:
                    self._rebalance_subscribers(name)

    def delete_records(self, name: str, below: Mapping[int, int]) -> int:
        """Delete the records of each partition below its offset in ``below`` (Kafka's
        ``DeleteRecords``); returns how many offsets the low watermarks moved by."""
        with self.condition:
            logs = self._topic(name).logs
            return sum(logs[p].delete_below(o) for p, o in below.items() if 0 <= p < len(logs))

    def watermarks(self, name: str) -> dict[int, tuple[int, int]]:
        """(low, high) offsets of every partition of ``name``."""
        with self.condition:
            return {p: (log.low, log.end) for p, log in enumerate(self._topic(name).logs)}

    def set_topic_config(self, name: str, **config: str) -> None:
        """Change topic configs; keyword names use ``_`` for ``.``: ``max_message_bytes``."""
        with self.condition:
            self._topic(name).config.update({k.replace("_", "."): v for k, v in config.items()})

    # -- clients -----------------------------------------------------------------------

    def consumer(self, config: Mapping[str, Any]) -> MemoryConsumer:
        """A consumer from the librdkafka options the Kafka adapter would get: ``group.id``,
        ``auto.offset.reset``, ``isolation.level``, ``partition.assignment.strategy`` are
        read; the rest is ignored."""
        from pipeline.testing.consumer import MemoryConsumer

        return MemoryConsumer(self, config)

    def producer(self, config: Mapping[str, Any] | None = None) -> MemoryProducer:
        """A producer; ``transactional.id``, ``partitioner`` and ``message.max.bytes`` are
        read from ``config``, the rest is ignored."""
        from pipeline.testing.producer import MemoryProducer

        return MemoryProducer(self, config or {})

    # -- faults ------------------------------------------------------------------------

    def fail_deliveries(
        self, topic: str, n: int = 1, *, retriable: bool = True, code: str | None = None
    ) -> None:
        """The next ``n`` records produced to ``topic`` are not written; their delivery
        reports carry ``code`` (by default ``_MSG_TIMED_OUT`` if retriable, else
        ``INVALID_RECORD``) and answer ``retriable()`` as asked. Beware: confluent-kafka's
        own delivery-report errors answer ``retriable()`` False whatever the code (measured
        with 2.x: a ``_MSG_TIMED_OUT`` report), so code that must also work on Kafka should
        not rely on it."""
        with self.condition:
            t = self._topic(topic)
            t.fail_next = n
            t.fail_code = code or ("_MSG_TIMED_OUT" if retriable else "INVALID_RECORD")
            t.fail_retriable = retriable

    def refuse_writes(
        self, topic: str, refuse: bool = True, code: str = "TOPIC_AUTHORIZATION_FAILED"
    ) -> None:
        """Until called again with ``refuse=False``, every record produced to ``topic`` fails
        with the non-retriable ``code`` (a dead-letter topic nobody may write to, say)."""
        with self.condition:
            t = self._topic(topic)
            t.refuse_writes = refuse
            t.refuse_code = code

    def fail_commits(self, group_id: str, n: int = 1) -> None:
        """The next ``n`` offset commits of ``group_id`` fail with ``REBALANCE_IN_PROGRESS``."""
        with self.condition:
            self._commit_faults[group_id] = n

    def crash(self, consumer: MemoryConsumer) -> None:
        """``consumer``'s process dies: it leaves its group without a revoke, its partitions
        go to the others at their next ``consume``, and what it had not committed is read
        again there. If it is used again, its next ``consume`` reports them lost."""
        with self.condition:
            consumer.crashed = True
            member = consumer.member
            if member is not None and member.alive:
                self._groups[member.group_id].leave(member, self._counts())
            self.condition.notify_all()

    # -- inspection (for assertions) ---------------------------------------------------

    def records(
        self, topic: str, partition: int | None = None, *, read_committed: bool = True
    ) -> list[Record]:
        """What a consumer reading from the start would see, partition by partition."""
        with self.condition:
            logs = self._topic(topic).logs
            chosen = logs if partition is None else [logs[partition]]
            return [r for log in chosen for r in log.read(0, log.end, read_committed)[0]]

    def end_offsets(self, topic: str) -> dict[int, int]:
        with self.condition:
            return {p: log.end for p, log in enumerate(self._topic(topic).logs)}

    def committed_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        with self.condition:
            group = self._groups.get(group_id)
            return dict(group.committed) if group is not None else {}

    def lag(self, group_id: str, topics: list[str]) -> tuple[int, int]:
        """As ``LagMonitor.lag``: (offsets committed since the start of the log, offsets not
        yet committed), commit markers counted as Kafka counts them."""
        with self.condition:
            committed = self.committed_offsets(group_id)
            done = lag = 0
            for topic in (t for t in topics if t in self._topics):
                for p, end in self.end_offsets(topic).items():
                    position = committed.get((topic, p), 0)
                    done, lag = done + position, lag + max(0, end - position)
            return done, lag

    def partition_lag(self, group_id: str, topics: list[str]) -> dict[TopicPartition, int]:
        """As ``LagMonitor.partition_lag``: offsets not yet committed, per partition."""
        with self.condition:
            committed = self.committed_offsets(group_id)
            return {
                (topic, p): max(0, end - committed.get((topic, p), 0))
                for topic in topics
                if topic in self._topics
                for p, end in self.end_offsets(topic).items()
            }

    def pending(self, group_id: str, topic: str) -> int:
        """Records of ``topic`` a read_committed member of ``group_id`` would still be given
        from the committed offsets (markers and aborted records not counted): 0 when the
        group has finished what is there."""
        with self.condition:
            committed = self.committed_offsets(group_id)
            logs = self._topic(topic).logs
            return sum(len(log.read(committed.get(log.tp, 0), log.end, True)[0]) for log in logs)

    # -- for the clients (lock held) ----------------------------------------------------

    def log(self, tp: TopicPartition) -> PartitionLog | None:
        topic = self._topics.get(tp[0])
        if topic is None or not 0 <= tp[1] < len(topic.logs):
            return None
        return topic.logs[tp[1]]

    def group(self, group_id: str, strategy: str | None = None) -> Group:
        group = self._groups.get(group_id)
        if group is None:
            group = Group(group_id, strategy or self.default_assignor)
            self._groups[group_id] = group
        return group

    def join(self, group_id: str, strategy: str | None, topics: list[str]) -> Member:
        member = self.group(group_id, strategy).join(topics, self._counts())
        self.condition.notify_all()
        return member

    def leave(self, member: Member) -> None:
        if member.alive:
            self._groups[member.group_id].leave(member, self._counts())
            self.condition.notify_all()

    def commit_error(self, group_id: str, member: Member | None) -> BrokerError | None:
        """Why a commit by ``member`` (None: no subscription) is refused, if it is."""
        if member is not None and not member.alive:
            return BrokerError("UNKNOWN_MEMBER_ID", "Broker: Unknown member")
        left = self._commit_faults.get(group_id, 0)
        if left > 0:
            self._commit_faults[group_id] = left - 1
            return BrokerError("REBALANCE_IN_PROGRESS", "Broker: Group rebalance in progress")
        return None

    def append(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: RawHeaders,
        partitioner: Partitioner,
        txn: Txn | None,
    ) -> tuple[BrokerError | None, Record]:
        """Write one record, or say why not; the record (offset -1001 if not written) is
        what its delivery report carries."""
        t = self._topics.get(topic)
        hdrs = list(headers) if headers else None  # as librdkafka: no headers reads as None
        if t is None:
            failed = Record((topic, -1), OFFSET_INVALID, key, value, hdrs, self.clock.wall_ms())
            return BrokerError("_UNKNOWN_TOPIC", f"Local: Unknown topic: {topic}"), failed
        tp = (topic, partitioner(key, len(t.logs)))
        error = self._write_error(t, record_size(key, value, headers))
        if error is not None:
            return error, Record(tp, OFFSET_INVALID, key, value, hdrs, self.clock.wall_ms())
        log = t.logs[tp[1]]
        record = Record(tp, log.end, key, value, hdrs, self.clock.wall_ms())
        log.append(record, txn)
        if txn is not None:
            txn.partitions.add(tp)
        self.condition.notify_all()
        return None, record

    def _write_error(self, t: Topic, size: int) -> BrokerError | None:
        if t.refuse_writes:
            return BrokerError(t.refuse_code, f"Broker: writes to {t.name} refused", False)
        if t.fail_next > 0:
            t.fail_next -= 1
            return BrokerError(t.fail_code, "injected delivery failure", t.fail_retriable)
        if size > t.max_message_bytes:
            return BrokerError("MSG_SIZE_TOO_LARGE", "Broker: Message size too large", False)
        return None

    # -- transactions (lock held) ------------------------------------------------------

    def register_producer(self, transactional_id: str) -> int:
        """A new epoch for ``transactional_id``: the previous producer with that id is
        fenced, and its open transaction aborted."""
        epoch = self._epochs.get(transactional_id, -1) + 1
        self._epochs[transactional_id] = epoch
        stale = self._open_txns.pop(transactional_id, None)
        if stale is not None:
            self.end_txn(stale, TxnState.ABORTED, {})
        return epoch

    def epoch(self, transactional_id: str) -> int:
        return self._epochs.get(transactional_id, -1)

    def begin_txn(self, transactional_id: str) -> Txn:
        txn = Txn(transactional_id)
        self._open_txns[transactional_id] = txn
        return txn

    def end_txn(
        self, txn: Txn, state: TxnState, offsets: Mapping[str, dict[TopicPartition, int]]
    ) -> None:
        """Commit or abort ``txn``: markers on its partitions, and its consumer offsets
        committed with it (commit only)."""
        txn.state = state
        if self._open_txns.get(txn.transactional_id) is txn:
            del self._open_txns[txn.transactional_id]
        for tp in txn.partitions:
            log = self.log(tp)
            if log is not None:
                log.close_txn(txn)
        if state is TxnState.COMMITTED:
            for group_id, group_offsets in offsets.items():
                self.group(group_id).committed.update(group_offsets)
        self.condition.notify_all()

    def offsets_error(self, metadata: Any) -> str | None:
        """Why ``send_offsets_to_transaction`` refuses ``metadata``, if it does."""
        if not isinstance(metadata, GroupMetadata) or metadata.broker_id != id(self):
            return "group metadata is not from this broker's consumer"
        group = self._groups.get(metadata.group_id)
        member = group.members.get(metadata.member_id or "") if group else None
        if metadata.member_id is not None and member is None:
            return "the consumer is no longer a member of its group (UNKNOWN_MEMBER_ID)"
        if group is not None and member is not None and metadata.generation < member.generation:
            return "the consumer's generation is stale (ILLEGAL_GENERATION)"
        return None

    # -- internals ---------------------------------------------------------------------

    def _topic(self, name: str) -> Topic:
        topic = self._topics.get(name)
        if topic is None:
            raise KeyError(f"no topic {name!r} (create it first)")
        return topic

    def _counts(self) -> dict[str, int]:
        return {n: len(t.logs) for n, t in self._topics.items()}

    def _rebalance_subscribers(self, topic: str) -> None:
        counts = self._counts()
        for group in self._groups.values():
            if group.subscribes(topic):
                group.rebalance(counts)
        self.condition.notify_all()
