"""One stage's real ``StageRunner`` on a ``MemoryBroker`` with a ``FakeClock``, stepped by the test.

The runner lives its whole life as in a worker (setup, subscribe, the loop, the graceful
shutdown), in lockstep with the test (``pipeline.testing.lockstep``): each ``step()`` is one
step of its loop, and nothing runs while the test looks. So the group assigns partitions inside
``consume``, pause and seek are the broker's, and a delivery report arrives only when the runner
polls or flushes: what the runner is built around is never faked here.

The two client subclasses only *record* (consume sizes, flush timeouts) or withhold delivery
reports on demand; what reaches the broker and what it answers is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from pipeline import Settings, Stage
from pipeline.app import Pipeline
from pipeline.errors import DeliveryError, KafkaError
from pipeline.ports import RawHeaders, RawRecord, TopicPartition
from pipeline.runner import StageRunner
from pipeline.testing import FakeClock, MemoryBroker, MemoryConsumer, MemoryProducer, Record
from pipeline.testing.lockstep import Lockstep
from pipeline.testing.partitioner import crc32_partition
from pipeline.testing.transport import MemoryTransport
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
STEP_TIMEOUT_S = 30.0  # real time; a step takes milliseconds unless a handler blocks
# The Kafka adapter's batch-wide delivery errors (pipeline.kafka.errors.BATCH_WIDE).
KAFKA_BATCH_WIDE = frozenset({"MSG_SIZE_TOO_LARGE", "RECORD_LIST_TOO_LARGE", "INVALID_RECORD"})


class AskingConsumer(MemoryConsumer):
    """A ``MemoryConsumer`` that remembers ``max_records`` of every ``consume`` call."""

    def __init__(self, broker: MemoryBroker, config: Any) -> None:
        super().__init__(broker, config)
        self.asked: list[int] = []

    def consume(self, max_records: int, timeout_s: float) -> Sequence[RawRecord]:
        self.asked.append(max_records)
        return super().consume(max_records, timeout_s)


class RecordingProducer(MemoryProducer):
    """A ``MemoryProducer`` that remembers the timeout of every ``flush``. While ``hold`` is
    set it serves no delivery report (they wait, as behind a slow broker). With
    ``kafka_batch_wide`` its errors are classified as the Kafka adapter classifies a broker's
    (``MSG_SIZE_TOO_LARGE`` may be a neighbour's in the produce batch); the memory broker
    refuses each record on its own, so it never says batch-wide by itself."""

    def __init__(self, broker: MemoryBroker, config: Any) -> None:
        super().__init__(broker, config)
        self.flushes: list[float] = []
        self.hold = False
        self.kafka_batch_wide = False

    def poll(self, timeout_s: float = 0) -> int:
        return 0 if self.hold else super().poll(timeout_s)

    def flush(self, timeout_s: float) -> int:
        self.flushes.append(timeout_s)
        return len(self) if self.hold else super().flush(timeout_s)

    def delivery_error(self, err: Any, topic: str) -> KafkaError:
        ours = super().delivery_error(err, topic)
        if not self.kafka_batch_wide or ours.code not in KAFKA_BATCH_WIDE:
            return ours
        return DeliveryError(str(ours), code=ours.code, retriable=ours.retriable,
                             permanent=ours.permanent, batch_wide=True)  # fmt: skip


def key_for(partition: int, partitions: int, nth: int = 0) -> bytes:
    """The ``nth`` key the default partitioner (librdkafka's CRC32) sends to ``partition``."""
    keys = (b"k%d" % i for i in range(10_000))
    return [key for key in keys if crc32_partition(key, partitions) == partition][nth]


class Rig:
    """``stage`` alone on a fresh broker whose topics have ``partitions`` each; ``runner``
    keyword arguments go to ``StageRunner`` (``commit_interval_s`` 0 unless given: every step
    commits). The runner starts at the first ``step()``; ``close()`` stops it gracefully."""

    def __init__(
        self,
        stage: type[Stage],
        settings: Settings | None = None,
        *,
        partitions: int = 1,
        consumer: type[MemoryConsumer] = AskingConsumer,
        **runner: Any,
    ) -> None:
        self.clock = FakeClock()
        self.broker = MemoryBroker(self.clock, default_partitions=partitions)
        self.settings = settings or Settings(schemas_dir=SCHEMAS)
        transport = MemoryTransport(self.broker, self.settings)
        self.pipeline = Pipeline.build(self.settings, [stage], transport=transport)
        self.plan = self.pipeline.plans[0]
        self.broker.create(self.plan.topics)
        self.consumer = consumer(self.broker, {"group.id": self.plan.group})
        self.producer = RecordingProducer(self.broker, {})
        options: dict[str, Any] = {"clock": self.clock, "commit_interval_s": 0.0} | runner
        self.runner = StageRunner(
            self.plan, self.consumer, self.producer, self.pipeline.codec, **options
        )
        self._publisher = self.broker.producer()
        self._lockstep: Lockstep | None = None

    # -- input ---------------------------------------------------------------------------

    def publish(
        self, topic: str, value: bytes | None, key: bytes | None = None, headers: RawHeaders = None
    ) -> Record:
        """Write one record and wait for its acknowledgement; the record as stored."""
        reports: list[tuple[Any, Any]] = []
        self._publisher.produce(topic, value, key, headers, lambda e, m: reports.append((e, m)))
        self._publisher.flush(1)
        [(err, record)] = reports
        assert err is None, f"publishing to {topic} failed: {err}"
        assert isinstance(record, Record)
        return record

    def encode(self, n: int, ping_id: str | None = None) -> bytes:
        ping = Ping(ping_id=ping_id or f"p{n}", n=n)
        return self.pipeline.codec.encode(ping, self.plan.inputs[PINGS.name], PINGS.name)

    def ping(self, n: int, *, key: bytes | None = None, ping_id: str | None = None) -> Record:
        """Publish ``Ping(n)`` to the stage's input, with an ``event-id`` of its ping id."""
        ping_id = ping_id or f"p{n}"
        value = self.encode(n, ping_id)
        return self.publish(PINGS.name, value, key, [("event-id", ping_id.encode())])

    # -- running -------------------------------------------------------------------------

    def step(self, n: int = 1) -> None:
        if self._lockstep is None:
            self._lockstep = Lockstep(self.runner, self.plan.group, STEP_TIMEOUT_S)
        for _ in range(n):
            self._lockstep.step()

    def close(self) -> None:
        """Stop as a worker does: settle, flush, commit, leave the group. Re-raises what the
        runner raised, if it did not raise it from a step already."""
        if self._lockstep is not None:
            lockstep, self._lockstep = self._lockstep, None
            lockstep.stop(STEP_TIMEOUT_S)

    def __enter__(self) -> Rig:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    # -- what came out -------------------------------------------------------------------

    def committed(self) -> dict[TopicPartition, int]:
        """The group's committed offsets, as the broker has them."""
        return self.broker.committed_offsets(self.plan.group)

    def records(self, topic: str) -> list[Record]:
        return self.broker.records(topic)

    def pongs(self) -> list[Pong]:
        """The stage's outputs to PONGS, decoded, in offset order."""
        binding = self.plan.outputs[PONGS.name][1]
        return [
            self.pipeline.codec.decode(r.value() or b"", binding) for r in self.records(PONGS.name)
        ]

    def copies(self, topic: str) -> list[int]:
        """The ``n`` of each ping in ``topic`` (a retry or dead-letter topic: the copies)."""
        binding = self.plan.inputs[PINGS.name]
        return [
            self.pipeline.codec.decode(r.value() or b"", binding).n for r in self.records(topic)
        ]
