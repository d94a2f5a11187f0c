"""``MemoryProducer``: ``pipeline.ports.ProducerPort`` and the transactional calls of
``KafkaProducer``, on a ``MemoryBroker``.

A record is written (or refused) when ``produce`` is called, as a broker would accept it
before the acknowledgement travels back; its delivery report waits in this producer until
``poll`` or ``flush`` serves it, on the caller's thread. So a consumer may read a record
whose producer has not yet heard that it was delivered, as on Kafka.

Refusals, as librdkafka makes them: a record over the producer's ``message.max.bytes``
(default 1,000,000) or produced by a transactional producer outside a transaction raises
``KafkaError`` from ``produce``; an unknown topic, a topic's ``max.message.bytes``, and the
broker's injected faults fail the delivery report instead.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pipeline.errors import DeliveryError, KafkaError, ProducerFencedError, TransactionError
from pipeline.ports import DeliveryCallback, RawHeaders, TopicPartition
from pipeline.testing.errors import BrokerError
from pipeline.testing.log import Record, Txn, TxnState, record_size
from pipeline.testing.partitioner import Partitioner

if TYPE_CHECKING:
    from pipeline.testing.broker import MemoryBroker

DEFAULT_MESSAGE_MAX_BYTES = 1_000_000  # librdkafka's message.max.bytes
# Refusals no retry can fix, as the Kafka adapter classifies them (pipeline.kafka.errors).
PERMANENT = frozenset({"MSG_SIZE_TOO_LARGE", "INVALID_RECORD", "TOPIC_AUTHORIZATION_FAILED"})
Report = tuple[DeliveryCallback, BrokerError | None, Record]


class MemoryProducer:
    def __init__(self, broker: MemoryBroker, config: Mapping[str, Any]) -> None:
        self._broker = broker
        self._partitioner = Partitioner(str(config.get("partitioner", broker.default_partitioner)))
        self._max_bytes = int(config.get("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES))
        tid = config.get("transactional.id")
        self._transactional_id = str(tid) if tid is not None else None
        self.transactional_id = self._transactional_id  # as KafkaProducer's
        self._reports: deque[Report] = deque()
        self._serving = threading.Lock()  # one thread serves reports at a time, in order
        self._epoch: int | None = None
        self._txn: Txn | None = None
        self._txn_offsets: dict[str, dict[TopicPartition, int]] = {}
        self._txn_failed: BrokerError | None = None
        self.stop: threading.Event | None = None  # ProducerPort: the stage's stop request
        # As the Kafka producer reports it (the broker here does not time transactions out).
        self.transaction_timeout_s = int(config.get("transaction.timeout.ms", 60_000)) / 1000

    def delivery_error(self, err: Any, topic: str) -> KafkaError:
        """Ours for a delivery report's error (ours already when produce refused the record).
        Never batch-wide: each record is accepted or refused on its own here."""
        if isinstance(err, KafkaError):
            return err
        return DeliveryError(
            f"delivery to {topic} failed: {err.str()} ({err.name()})",
            code=err.name(), retriable=bool(err.retriable()), permanent=err.name() in PERMANENT,
        )  # fmt: skip

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: RawHeaders,
        on_delivery: DeliveryCallback,
    ) -> None:
        if record_size(key, value, headers) > self._max_bytes:
            raise KafkaError(
                f"produce to {topic}: Broker: Message size too large (MSG_SIZE_TOO_LARGE)",
                code="MSG_SIZE_TOO_LARGE",
                permanent=True,  # as the Kafka adapter classifies it: the input is dead-lettered
            )
        with self._broker.condition:
            if self._transactional_id is not None:
                self._check_fenced("produce")
                if self._txn is None:
                    raise KafkaError(f"produce to {topic}: no transaction begun", code="_STATE")
            err, record = self._broker.append(
                topic, key, value, headers, self._partitioner, self._txn
            )
            if err is not None and self._txn is not None and self._txn_failed is None:
                self._txn_failed = err
            self._reports.append((on_delivery, err, record))
            self._broker.condition.notify_all()

    def poll(self, timeout_s: float = 0) -> int:
        """Serve the delivery reports waiting; if there are none, wait up to ``timeout_s``
        on the broker's clock for one (a non-blocking ``FakeClock`` does not wait)."""
        clock = self._broker.clock
        deadline = clock.monotonic() + timeout_s
        with self._broker.condition:
            while not self._reports:
                left = deadline - clock.monotonic()
                if left <= 0 or not clock.wait(self._broker.condition, left):
                    break
        return self._serve()

    def flush(self, timeout_s: float) -> int:
        """Serve every report, also those of records the callbacks produce; returns 0, the
        number still waiting."""
        while self._reports:
            self._serve()
        return len(self._reports)

    def __len__(self) -> int:
        return len(self._reports)

    def _serve(self) -> int:
        served = 0
        with self._serving:
            while self._reports:
                on_delivery, err, record = self._reports.popleft()
                on_delivery(err, record)
                served += 1
        return served

    # -- transactions ---------------------------------------------------------------------

    def init_transactions(self, timeout_s: float) -> None:
        """Take the ``transactional.id``: an older producer with it is fenced from now on,
        and its open transaction is aborted."""
        if self._transactional_id is None:
            raise TransactionError("init_transactions: no transactional.id", code="_NOT_CONFIGURED")
        with self._broker.condition:
            self._epoch = self._broker.register_producer(self._transactional_id)
            self._txn = None

    def begin_transaction(self) -> None:
        with self._broker.condition:
            self._check_fenced("begin_transaction")
            if self._txn is not None:
                raise TransactionError("begin_transaction: a transaction is open", code="_STATE")
            self._txn = self._broker.begin_txn(self._transactional_id or "")
            self._txn_offsets = {}
            self._txn_failed = None

    def send_offsets_to_transaction(
        self, offsets: dict[TopicPartition, int], group_metadata: Any, timeout_s: float
    ) -> None:
        """The offsets commit with the transaction, for the group in ``group_metadata``."""
        with self._broker.condition:
            self._open_txn("send_offsets_to_transaction")
            refusal = self._broker.offsets_error(group_metadata)
            if refusal is not None:
                raise TransactionError(
                    f"send_offsets_to_transaction: {refusal}", code="ILLEGAL_GENERATION",
                    abortable=True,
                )  # fmt: skip
            self._txn_offsets.setdefault(group_metadata.group_id, {}).update(offsets)

    def commit_transaction(self, timeout_s: float) -> None:
        """Serve every delivery report first (as librdkafka flushes); if any record of the
        transaction failed, the transaction cannot commit: an abortable error."""
        with self._broker.condition:
            self._open_txn("commit_transaction")
        self.flush(timeout_s)
        with self._broker.condition:
            txn = self._open_txn("commit_transaction")
            if self._txn_failed is not None:
                failed = self._txn_failed
                raise TransactionError(
                    f"commit_transaction: a record was not delivered: {failed.str()} "
                    f"({failed.name()})", code=failed.name(), abortable=True,
                )  # fmt: skip
            self._broker.end_txn(txn, TxnState.COMMITTED, self._txn_offsets)
            self._txn = None

    def abort_transaction(self, timeout_s: float) -> None:
        """As librdkafka: reports not yet served fail with ``_PURGE_QUEUE``."""
        with self._broker.condition:
            txn = self._open_txn("abort_transaction")
            self._broker.end_txn(txn, TxnState.ABORTED, {})
            self._txn = None
            purged = BrokerError("_PURGE_QUEUE", "Local: Purged in queue", False)
            self._reports = deque((cb, err or purged, msg) for cb, err, msg in self._reports)
        self.flush(timeout_s)

    def renew(self) -> None:
        """As ``KafkaProducer.renew``: go on as a new producer with the same transactional id.
        Reports waiting are served now, as failures (``_PURGE_QUEUE``); ``init_transactions``
        comes next, and aborts the old producer's transaction if the broker has not yet."""
        with self._broker.condition:
            purged = BrokerError("_PURGE_QUEUE", "Local: Purged in queue", False)
            self._reports = deque((cb, err or purged, msg) for cb, err, msg in self._reports)
            self._epoch, self._txn, self._txn_offsets, self._txn_failed = None, None, {}, None
        self.flush(0)

    def _open_txn(self, what: str) -> Txn:
        self._check_fenced(what)
        if self._txn is None:
            raise TransactionError(f"{what}: no transaction is open", code="_STATE")
        return self._txn

    def _check_fenced(self, what: str) -> None:
        if self._transactional_id is None or self._epoch is None:
            raise TransactionError(f"{what}: init_transactions first", code="_STATE")
        if self._broker.epoch(self._transactional_id) != self._epoch:
            raise ProducerFencedError(
                f"{what}: another producer took transactional.id {self._transactional_id}",
                code="PRODUCER_FENCED",
            )
