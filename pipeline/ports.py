"""The narrow interfaces the runner, publisher and tools depend on.

A ``pipeline.transport.Transport`` hands them out; the Kafka adapter (``pipeline.kafka``)
implements them with confluent-kafka, and an in-memory transport can implement the same ones.
Records are passed through as the client's own message objects (no per-record copy); the
runner touches them only through ``RawRecord``.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.errors import KafkaError

if TYPE_CHECKING:  # pipeline.dlq imports this module (through pipeline.deadletter)
    from pipeline.dlq import StoredRecord
    from pipeline.serde import SchemaResolver

TopicPartition = tuple[str, int]
RawHeaders = Sequence[tuple[str, bytes | None]] | None
# Called once per produced record with (error or None, record). The error, if any, has
# ``str()``, ``code()`` and ``retriable()``.
DeliveryCallback = Callable[[Any, Any], None]


class RawRecord(Protocol):
    def topic(self) -> str: ...
    def partition(self) -> int: ...
    def offset(self) -> int: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> RawHeaders: ...
    def timestamp(self) -> tuple[int, int]: ...
    def error(self) -> Any: ...


class RebalanceListener(Protocol):
    def on_assign(self, partitions: list[TopicPartition]) -> None: ...
    def on_revoke(self, partitions: list[TopicPartition]) -> None: ...
    def on_lost(self, partitions: list[TopicPartition]) -> None: ...


class ConsumerPort(Protocol):
    def subscribe(self, topics: list[str], listener: RebalanceListener) -> None: ...
    def consume(self, max_records: int, timeout_s: float) -> Sequence[RawRecord]: ...
    def pause(self, partitions: list[TopicPartition]) -> None: ...
    def resume(self, partitions: list[TopicPartition]) -> None: ...
    def seek(self, tp: TopicPartition, offset: int) -> None: ...
    def commit(
        self, offsets: dict[TopicPartition, int], *, sync: bool, timeout_s: float | None = None
    ) -> None:
        """``timeout_s``: how long a synchronous commit may wait for its answer (None: as long
        as it takes); past it, ``KafkaError``, as for a failed commit."""
        ...

    def committed(
        self, partitions: list[TopicPartition], timeout_s: float = 10
    ) -> dict[TopicPartition, int]: ...
    def hold_until_committed(self, partitions: list[TopicPartition], reason: str) -> None:
        """Pause ``partitions`` and start each again at its committed offset once that can be
        read (asked again with a backoff, ``pipeline.unstable``); none of their records is
        delivered meanwhile, and a seek of one is ignored."""
        ...

    def group_metadata(self) -> Any: ...
    def take_commit_failures(self) -> list[TopicPartition]: ...
    def close(self, timeout_s: float | None = None) -> None:
        """Revoke (the listener is called) and leave the group; ``timeout_s``: how long to wait
        for that (None: as long as it takes), after which the close goes on unwaited for."""
        ...


class ProducerPort(Protocol):
    # The stage's stop request: a produce waiting for room in a full local queue gives up on it.
    stop: threading.Event | None

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: RawHeaders,
        on_delivery: DeliveryCallback,
    ) -> None: ...
    def poll(self, timeout_s: float = 0) -> int: ...
    def flush(self, timeout_s: float) -> int: ...
    def __len__(self) -> int: ...
    def delivery_error(self, err: Any, topic: str) -> KafkaError:
        """Ours for a ``DeliveryCallback`` error: ``permanent`` when no retry can fix it."""
        ...


class TransactionalProducerPort(ProducerPort, Protocol):
    """A producer whose outputs and input offsets commit together (exactly-once stages).

    Every call raises ``TransactionError`` on failure (``abortable``: abort and carry on),
    ``ProducerFencedError`` when another instance took over the transactional id. A timeout
    bounds all the attempts of one call together. ``poll`` and ``flush`` never raise a fence:
    it stays on the producer, and the next transaction call raises it (the committer renews)."""

    def init_transactions(self, timeout_s: float) -> None: ...
    def begin_transaction(self) -> None: ...
    def send_offsets_to_transaction(
        self, offsets: dict[TopicPartition, int], group_metadata: Any, timeout_s: float
    ) -> None: ...
    def commit_transaction(self, timeout_s: float) -> None: ...
    def abort_transaction(self, timeout_s: float) -> None: ...
    def renew(self) -> None:
        """After a fence: go on as a new producer with the same config and transactional id
        (references to this one stay valid). Reports of records not yet served are served now,
        as failures; no transaction is open, and ``init_transactions`` must be called next."""
        ...


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: int


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic with its own partition count (None: ``Settings.topic_partitions``) and configs
    (on top of ``Settings.topic_config()``), so that topics of different shapes are created in
    one ``AdminPort.create`` call and waited for together."""

    name: str
    partitions: int | None = None
    config: tuple[tuple[str, str], ...] = ()


class AdminPort(Protocol):
    """Topic management. Every method raises ``BrokerUnavailableError`` when the cluster cannot
    be reached within the client's timeout, ``KafkaError`` for what the cluster refuses.

    Optionally (``KafkaAdmin`` does): ``ensure_bound_s``, the longest a ``create`` or
    ``ensure`` takes, which bounds how long stages wait for the startup topics job
    (``pipeline.startup.job_bound_s``); and ``stopping``, a ``Callable[[], bool]`` the caller
    sets, looked at while a request is awaited: once True, ``pipeline.startup.TopicsStopped``."""

    def topics(self) -> dict[str, TopicInfo]:
        """Every topic but internal ones (names starting with ``__``), by name."""
        ...

    def create(
        self,
        names: Sequence[str | TopicSpec],
        partitions: int | None = None,
        config: dict[str, str] | None = None,
    ) -> list[str]:
        """Create those of ``names`` that do not exist (``partitions`` each, default
        ``Settings.topic_partitions``), in one request, and return once all are usable;
        returns the ones created. A topic a racing client created meanwhile counts as
        existing, not as an error. ``config``: topic configs on top of
        ``Settings.topic_config()`` (``cleanup.policy=compact`` for a state topic, say). A
        ``TopicSpec`` brings its own partitions and configs instead of these two."""
        ...

    def ensure(self, names: Sequence[str | TopicSpec]) -> list[str]:
        """``create(names)`` if ``Settings.create_topics``; otherwise raise one
        ``TopicNotFoundError`` naming every missing topic. Returns the ones created."""
        ...

    def delete(self, names: list[str]) -> None:
        """Delete ``names`` (a publisher's own reply topic when it closes)."""
        ...


class LagPort(Protocol):
    """Progress of consumer groups, read without joining them."""

    def lag(self, group: str, topics: list[str]) -> tuple[int, int]:
        """(records committed since the start of the log, records not yet committed) of
        ``group`` over ``topics``; ``KafkaError`` while the cluster cannot tell."""
        ...

    def partition_lag(self, group: str, topics: list[str]) -> dict[TopicPartition, int]:
        """Records not yet committed by ``group``, per partition of ``topics`` (from the log's
        start when the group has committed nothing there); ``KafkaError`` while the cluster
        cannot tell."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    """Where a group stands on one partition: the log's watermarks, and the group's committed
    offset (the next to read), None where it has committed nothing."""

    low: int
    high: int
    committed: int | None = None


class BacklogPort(Protocol):
    """What waits in topics, read from the broker without joining any group (``pipeline
    status``, alerts). Every call is bounded by the client's timeout; ``BrokerUnavailableError``
    when the cluster did not answer in it."""

    def offsets(
        self, group: str | None, topics: list[str]
    ) -> dict[TopicPartition, PartitionOffsets]:
        """Every partition of those of ``topics`` that exist; ``group`` None: watermarks only."""
        ...

    def timestamps(self, positions: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """The timestamp (ms) of the first committed record at or after each partition's
        offset; a partition with none readable within the timeout is left out."""
        ...

    def close(self) -> None: ...


Watermarks = dict[int, tuple[int, int]]  # partition -> (low, high)


class TopicLogPort(Protocol):
    """Topics read and trimmed as stored logs, outside any consumer group: nothing is joined or
    committed (what ``pipeline dlq`` needs)."""

    def watermarks(self, topic: str) -> Watermarks:
        """(low, high) offsets of every partition; ``TopicNotFoundError`` if there is no such
        topic."""
        ...

    def read(
        self, topic: str, *, partition: int | None = None, start_offset: int = 0
    ) -> Generator[StoredRecord, None, None]:
        """Every record from ``start_offset`` (or the low watermark, if later) up to the high
        watermark *at call time*, partition by partition: records appended meanwhile are not
        returned, so a replay writing back to the topic it reads cannot loop. Only committed
        records of transactions. ``KafkaError`` if a partition stalls before its end. Close the
        generator when stopping early: that releases the client."""
        ...

    def delete_up_to(self, topic: str, marks: Watermarks) -> int:
        """Delete every record below each partition's high mark in ``marks`` (records written
        after ``marks`` were read are kept); returns how many went."""
        ...


class SchemaStorePort(Protocol):
    """Where single-object writers make their schemas findable by readers that were deployed
    with older ones (Kafka: a compacted topic, see ``pipeline.kafka.schema_topic``).

    Optionally (``SchemaTopic`` does; a store without them creates its own topics in
    ``publish``): ``topics() -> list[TopicSpec]``, the topics it writes to, which
    ``Pipeline.ensure_topics`` then creates with the stages' topics in one admin call, and
    ``topics_ensured()``, called once they exist, so that ``publish`` does not look them up;
    ``publish_bound_s``, the longest a ``publish`` takes (``pipeline.startup.job_bound_s``)."""

    def publish(self, fingerprint: bytes, schema_json: str) -> None:
        """Store a writer schema durably before returning (``KafkaError`` if it could not be);
        idempotent, and cheap when repeated."""
        ...

    def reader(self) -> SchemaResolver:
        """A resolver for one codec (fingerprint to schema JSON, None if unknown), which owns
        its client until its ``close()``; a schema published before the lookup is found."""
        ...


def _takes_timeout(method: Callable[..., Any]) -> bool:
    """Whether a consumer port's ``commit`` / ``close`` takes ``timeout_s`` (ours do; a custom
    transport written before it was added does not, and keeps its unbounded call)."""
    try:
        return "timeout_s" in inspect.signature(method).parameters
    except (TypeError, ValueError):  # no signature to read: the older call
        return False


def commit_port(
    consumer: ConsumerPort, offsets: dict[TopicPartition, int], sync: bool, timeout_s: float | None
) -> None:
    """``consumer.commit``, bounded by ``timeout_s`` when given and the port takes it."""
    if timeout_s is not None and _takes_timeout(consumer.commit):
        consumer.commit(offsets, sync=sync, timeout_s=timeout_s)
    else:
        consumer.commit(offsets, sync=sync)


def close_port(consumer: ConsumerPort, timeout_s: float | None) -> None:
    """``consumer.close``, bounded by ``timeout_s`` when given and the port takes it."""
    if timeout_s is not None and _takes_timeout(consumer.close):
        consumer.close(timeout_s)
    else:
        consumer.close()
