"""Keys land where a Java producer puts them: every producer the framework makes (stage
outputs, retry and dead-letter copies, the publisher, replay) uses the Java client's murmur2
partitioner, on Kafka and in memory, unless the user's producer_config names another."""

from __future__ import annotations

from pipeline import Context, DeadLetter, RetryPolicy, Settings, Stage
from pipeline.dlq import ReplayFilter
from pipeline.kafka import config as kconfig
from pipeline.replay import ReplayRequest, replay
from pipeline.testing import MemoryBroker, SystemClock, TestPipeline, murmur2, murmur2_partition
from pipeline.testing.partitioner import crc32_partition
from pipeline.testing.transport import MemoryTransport
from pipeline.transport import JAVA_COMPATIBLE_PARTITIONER
from tests.conftest import TEST_SCHEMAS
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong
from tests.interop import PARTITION_COUNTS, java_keys

KEYS = java_keys()
SETTINGS = Settings(schemas_dir=TEST_SCHEMAS, topic_partitions=6)


def java_partition(key: bytes | None, partitions: int = 6) -> int:
    [found] = [k.partitions[partitions] for k in KEYS if k.raw == key]
    return found


class Answer(Stage):
    """Answers each ping with a pong under the ping's key; dead-letters ping n=-1."""

    consumes = PINGS
    emits = (PONGS,)
    retry = RetryPolicy(tiers=(), in_process_attempts=1)

    def handle(self, event: Ping, ctx: Context) -> None:
        if event.n < 0:
            raise DeadLetter("refused")
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="answer"))


def test_our_murmur2_partitions_are_the_kafka_jars_own_for_100_keys() -> None:
    """For each of 100 keys and 3, 6, 7 and 12 partitions, the partition kafka-clients 4.4.0
    picks (checked-in vectors); librdkafka's default CRC32 agrees on few of them."""
    assert len(KEYS) == 100
    for k in KEYS:
        assert murmur2(k.raw) == k.murmur2, k.key
        assert {n: murmur2_partition(k.raw, n) for n in PARTITION_COUNTS} == k.partitions, k.key
    crc_agrees = sum(crc32_partition(k.raw, 6) == k.partitions[6] for k in KEYS)
    assert crc_agrees < 30, "the vectors would not tell the two partitioners apart"


def test_kafka_producers_default_to_the_java_partitioner_and_the_user_can_override_it() -> None:
    """Every producer config (plain and transactional, built from kconfig.producer) names
    murmur2_random, librdkafka accepts it, and producer_config replaces it."""
    assert JAVA_COMPATIBLE_PARTITIONER == "murmur2_random"
    assert kconfig.producer(SETTINGS, "p")["partitioner"] == "murmur2_random"
    kconfig.check(SETTINGS)  # librdkafka accepts the option
    crc = SETTINGS.model_copy(update={"producer_config": {"partitioner": "consistent_random"}})
    assert kconfig.producer(crc, "p")["partitioner"] == "consistent_random"


def test_in_memory_stage_outputs_and_published_events_land_where_java_puts_them() -> None:
    """On the memory broker: TestPipeline.publish and a stage's outputs under the same key go
    to the partition the Java client picks for that key on a 6-partition topic."""
    with TestPipeline([Answer], SETTINGS) as t:
        for n, k in enumerate(KEYS[:40]):
            stored = t.publish(PINGS, Ping(ping_id=k.key, n=n), key=k.key)
            assert stored.partition == k.partitions[6], k.key
        t.run_until_idle()
        pongs = t.records(PONGS)
        assert len(pongs) == 40
        assert all(r.partition == java_partition(r.key) for r in pongs)


def test_the_in_memory_publisher_uses_the_java_partitioner_unless_configured_otherwise() -> None:
    """Publisher on a MemoryTransport: murmur2 by default; with producer_config
    partitioner=consistent_random, librdkafka's CRC32 (the override reaches the producer)."""
    from pipeline import Publisher

    for settings, choose in (
        (SETTINGS, murmur2_partition),
        (SETTINGS.model_copy(update={"producer_config": {"partitioner": "consistent_random"}}),
         crc32_partition),
    ):  # fmt: skip
        transport = MemoryTransport(MemoryBroker(SystemClock()), settings)
        transport.admin().ensure([settings.topic(PINGS.name)])
        with Publisher(settings, transport=transport) as publisher:
            for k in KEYS[:20]:
                delivered = publisher.publish(PINGS, Ping(ping_id=k.key, n=1), key=k.key)
                assert delivered.partition == choose(k.raw, 6), k.key


def test_in_memory_dead_letters_and_their_replay_land_where_java_puts_them() -> None:
    """Dead letters keep the input's key and so its Java partition in the 6-partition DLQ,
    and `dlq replay` (which produces by key) sends them back to the partition Java picks."""
    with TestPipeline([Answer], SETTINGS) as t:
        for k in KEYS[:20]:
            t.publish(PINGS, Ping(ping_id=k.key, n=-1), key=k.key)
        t.run_until_idle()
        letters = t.dead_letters(Answer)
        assert len(letters) == 20
        assert all(d.record.partition == java_partition(d.record.key) for d in letters)
        dlq = t.pipeline.plans[0].dlq_topic
        failures: list[str] = []
        tally = replay(t.transport, ReplayRequest(dlq, ReplayFilter()), print, failures.append)
        assert (tally.replayed, failures) == (20, [])
        pings = [r for r in t.records(PINGS) if r.headers and "replayed-from" in dict(r.headers)]
        assert len(pings) == 20
        assert all(r.partition == java_partition(r.key) for r in pings)
