"""MemoryTransport: the ports a Pipeline, the Publisher and ``pipeline dlq`` get from a
transport, on a MemoryBroker."""

from __future__ import annotations

import pytest

import pipeline.testing
from pipeline import Settings
from pipeline.errors import PipelineError, TopicNotFoundError
from pipeline.ports import TopicInfo
from pipeline.testing import FakeClock, MemoryBroker, MemoryTransport
from tests.conftest import TEST_SCHEMAS

SETTINGS = Settings(schemas_dir=TEST_SCHEMAS, topic_partitions=2)


class _Listener:
    def on_assign(self, partitions: list[tuple[str, int]]) -> None: ...
    def on_revoke(self, partitions: list[tuple[str, int]]) -> None: ...
    def on_lost(self, partitions: list[tuple[str, int]]) -> None: ...


def transport() -> MemoryTransport:
    return MemoryTransport(MemoryBroker(FakeClock()), SETTINGS)


def _write(t: MemoryTransport, topic: str, *values: bytes) -> None:
    producer = t.producer("writer")
    for n, value in enumerate(values):
        producer.produce(topic, value, str(n).encode(), [("h", b"v")], lambda e, m: None)
    producer.flush(1)


def test_the_public_surface_of_pipeline_testing_is_curated() -> None:
    """What users import from pipeline.testing is exactly this list."""
    assert set(pipeline.testing.__all__) == {
        "BrokerError", "Clock", "DeadLettered", "FakeClock", "GroupMetadata", "HarnessError",
        "MemoryBroker", "MemoryConsumer", "MemoryProducer", "MemoryTransport", "Record",
        "SystemClock", "TestPipeline", "TopicInfo", "murmur2", "murmur2_partition",
    }  # fmt: skip
    for name in pipeline.testing.__all__:
        assert getattr(pipeline.testing, name) is not None


def test_admin_creates_with_the_configured_partitions_and_lists_them() -> None:
    """ensure creates what is missing with Settings.topic_partitions and lists TopicInfo."""
    admin = transport().admin()
    assert admin.ensure(["a", "b"]) == ["a", "b"]
    assert admin.ensure(["a", "c"]) == ["c"]
    assert admin.create(["d"], partitions=5) == ["d"]
    assert admin.topics()["a"] == TopicInfo("a", 2)
    assert admin.topics()["d"] == TopicInfo("d", 5)


def test_admin_with_create_topics_off_names_every_missing_topic() -> None:
    """With create_topics off, ensure raises one TopicNotFoundError naming all missing ones."""
    t = MemoryTransport(MemoryBroker(), SETTINGS.model_copy(update={"create_topics": False}))
    t.broker.create_topic("here")
    with pytest.raises(TopicNotFoundError, match="a, b") as raised:
        t.admin().ensure(["here", "a", "b"])
    assert "here" not in str(raised.value)
    assert t.admin().ensure(["here"]) == []


def test_topic_log_reads_a_snapshot_taken_at_the_call() -> None:
    """read returns the records up to the high watermark when called, headers and all; a
    record appended before the first next() is not among them."""
    t = transport()
    t.admin().create(["log"], partitions=1)
    _write(t, "log", b"a", b"b", b"c")
    log = t.topic_log()
    assert log.watermarks("log") == {0: (0, 3)}
    reading = log.read("log", start_offset=1)
    _write(t, "log", b"d")
    records = list(reading)
    assert [(r.offset, r.value) for r in records] == [(1, b"b"), (2, b"c")]
    assert records[0].headers == (("h", b"v"),)
    assert [r.value for r in log.read("log", partition=0)] == [b"a", b"b", b"c", b"d"]


def test_topic_log_refuses_unknown_topics() -> None:
    """An unknown topic is TopicNotFoundError, for reads and deletes alike."""
    log = transport().topic_log()
    with pytest.raises(TopicNotFoundError):
        log.watermarks("nope")
    with pytest.raises(TopicNotFoundError):
        log.read("nope")
    with pytest.raises(TopicNotFoundError):
        log.delete_up_to("nope", {0: (0, 1)})


def test_deleting_records_moves_the_low_watermark_and_keeps_later_ones() -> None:
    """delete_up_to removes what was below the marks read (not what came after); readers and
    a group whose committed offset was deleted start at the new low watermark."""
    t = transport()
    t.admin().create(["log"], partitions=1)
    _write(t, "log", b"a", b"b")
    log = t.topic_log()
    marks = log.watermarks("log")
    _write(t, "log", b"c")
    assert log.delete_up_to("log", marks) == 2
    assert log.delete_up_to("log", marks) == 0
    assert log.watermarks("log") == {0: (2, 3)}
    assert [(r.offset, r.value) for r in log.read("log")] == [(2, b"c")]
    consumer = t.consumer("g", "c1")
    consumer.commit({("log", 0): 1}, sync=True)  # below the low watermark now
    consumer.subscribe(["log"], _Listener())
    assert [(r.offset(), r.value()) for r in consumer.consume(10, 0)] == [(2, b"c")]


def test_lag_counts_committed_and_uncommitted_records_of_a_group() -> None:
    """lag is (committed since the start, not yet committed) over the topics given."""
    t = transport()
    t.admin().create(["in"], partitions=1)
    _write(t, "in", b"a", b"b", b"c")
    consumer = t.consumer("g", "c1")
    consumer.subscribe(["in"], _Listener())
    assert len(consumer.consume(10, 0)) == 3
    consumer.commit({("in", 0): 2}, sync=True)
    monitor = t.lag_monitor()
    assert monitor.lag("g", ["in"]) == (2, 1)
    monitor.close()


def test_a_schema_published_is_found_by_every_reader_of_the_transport() -> None:
    """The schema store is one per transport: a writer's schema reaches another codec."""
    t = transport()
    reader = t.schema_store().reader()
    assert reader(b"fp") is None
    t.schema_store().publish(b"fp", '{"type": "string"}')
    t.schema_store().publish(b"fp", '{"type": "string"}')  # idempotent
    assert reader(b"fp") == '{"type": "string"}'
    with pytest.raises(PipelineError, match="another schema"):
        t.schema_store().publish(b"fp", '{"type": "int"}')


def test_the_publisher_publishes_through_a_memory_transport() -> None:
    """Publisher gets its producer and topic check from the transport: the event lands in
    the broker, acknowledged, and an unknown topic is refused by name."""
    from pipeline import Publisher
    from tests.integration.app_stages import PINGS, Ping

    t = MemoryTransport(MemoryBroker(), SETTINGS)  # SystemClock: the report thread waits
    t.admin().create([PINGS.name])
    with Publisher(SETTINGS, transport=t) as publisher:
        sent = publisher.publish(PINGS, Ping(ping_id="p1", n=1), key="k")
        assert sent is not None
        [record] = t.broker.records(PINGS.name)
        assert (record.partition(), record.offset(), record.key()) == (
            sent.partition, sent.offset, b"k",
        )  # fmt: skip
    other = MemoryTransport(MemoryBroker(), SETTINGS)
    with Publisher(SETTINGS, transport=other) as publisher, pytest.raises(TopicNotFoundError):
        publisher.publish(PINGS, Ping(ping_id="p1", n=1))
