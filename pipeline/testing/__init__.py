"""An in-memory Kafka for tests: ``MemoryBroker`` and its clients, which implement the same
ports (``pipeline.ports``) as the Kafka adapter, on an injectable clock.

What it models:

- topics of N partitions, each an append-only log of records (key, value, headers,
  create-time timestamp in wall milliseconds, offset), with topic configs such as
  ``max.message.bytes``;
- consumer groups: members joining and leaving, the ``range``, ``roundrobin`` (eager) and
  ``cooperative-sticky`` (incremental, the adapter's) assignors, committed offsets, and
  ``auto.offset.reset`` for a group with none; rebalance callbacks run inside ``consume`` on
  the caller's thread, as librdkafka's do, and a partition has one owner at a time;
- pause, resume and seek; asynchronous commits whose failures are reported at the next
  ``consume`` (``take_commit_failures``);
- producers whose delivery reports are asynchronous (served by ``poll``/``flush`` only),
  partitioning by key as the Java client (``murmur2_random``, what ``MemoryTransport`` gives
  every producer unless ``producer_config`` names another ``partitioner``, as on Kafka) or
  librdkafka's own default (``consistent_random``, CRC32: a bare ``broker.producer()``);
- transactions: records of an open or aborted transaction are invisible to
  ``read_committed`` consumers (which stop at the last stable offset), commit markers take
  an offset, offsets sent to a transaction commit with it, and a second producer with the
  same ``transactional.id`` fences the first;
- faults on demand: ``fail_deliveries``, ``refuse_writes``, ``fail_commits`` and ``crash``
  (a member gone without a revoke: its partitions and uncommitted records go to the others).

What it does not: replication, ISR and ``acks``; brokers going down, network delays, and
timeouts (``message.timeout.ms``, session and poll-interval timeouts: a member leaves only
when closed or crashed); quotas; retention and compaction (records go only by
``delete_records``, Kafka's DeleteRecords); idempotent producer sequence numbers (records
are never duplicated here, which Kafka's idempotence also ensures); log-append-time
timestamps; consumer prefetch and fetch sizes; static membership; the admin client beyond
creating, listing and deleting topics. Record sizes for ``max.message.bytes`` are an
estimate (key, value, headers and a fixed overhead).

``MemoryTransport`` hands these clients to ``Pipeline.build(..., transport=...)``, and
``TestPipeline`` runs a user's stages on it in a unit test (see ``pipeline.testing.harness``).

With a ``FakeClock`` nothing blocks: a ``consume`` or ``poll`` with nothing ready returns at
once, and time moves only when the test advances it.
"""

from typing import TYPE_CHECKING

from pipeline.ports import TopicInfo
from pipeline.testing.broker import GroupMetadata, MemoryBroker
from pipeline.testing.clock import Clock, FakeClock, SystemClock
from pipeline.testing.consumer import MemoryConsumer
from pipeline.testing.errors import BrokerError
from pipeline.testing.harness import DeadLettered, TestPipeline
from pipeline.testing.lockstep import HarnessError
from pipeline.testing.log import Record
from pipeline.testing.partitioner import murmur2, murmur2_partition
from pipeline.testing.producer import MemoryProducer
from pipeline.testing.transport import MemoryTransport

__all__ = [
    "BrokerError",
    "Clock",
    "DeadLettered",
    "FakeClock",
    "GroupMetadata",
    "HarnessError",
    "MemoryBroker",
    "MemoryConsumer",
    "MemoryProducer",
    "MemoryTransport",
    "Record",
    "SystemClock",
    "TestPipeline",
    "TopicInfo",
    "murmur2",
    "murmur2_partition",
]

if TYPE_CHECKING:
    from pipeline.commit import Producerish
    from pipeline.ports import ConsumerPort, ProducerPort, RawRecord
    from pipeline.transport import Transport

    def _implements(
        consumer: MemoryConsumer, producer: MemoryProducer, record: Record, t: MemoryTransport
    ) -> tuple[ConsumerPort, ProducerPort, Producerish, RawRecord, Transport]:
        """mypy proves here that the clients implement the ports the runner uses."""
        return consumer, producer, producer, record, t
