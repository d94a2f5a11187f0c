"""The in-memory broker (``pipeline.testing``) behaves as Kafka and librdkafka do where the
runner depends on it: offsets, groups and rebalances inside ``consume``, pause/resume/seek,
committed offsets, asynchronous delivery reports, transactions, partitioning and faults.
Every test runs on a FakeClock, so nothing sleeps."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from pipeline.errors import KafkaError, ProducerFencedError, TransactionError
from pipeline.ports import TopicPartition
from pipeline.testing import FakeClock, MemoryBroker, MemoryConsumer, murmur2, murmur2_partition
from pipeline.testing.assignors import range_assign, roundrobin_assign, sticky_assign
from pipeline.testing.partitioner import crc32_partition

T = "orders"


class Listener:
    """Records the rebalance callbacks in order, with the thread each ran on."""

    def __init__(self) -> None:
        self.events: list[tuple[str, list[TopicPartition]]] = []
        self.threads: set[int] = set()

    def on_assign(self, partitions: list[TopicPartition]) -> None:
        self._note("assign", partitions)

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        self._note("revoke", partitions)

    def on_lost(self, partitions: list[TopicPartition]) -> None:
        self._note("lost", partitions)

    def _note(self, kind: str, partitions: list[TopicPartition]) -> None:
        self.events.append((kind, list(partitions)))
        self.threads.add(threading.get_ident())


class Reports:
    def __init__(self) -> None:
        self.got: list[tuple[Any, Any]] = []

    def __call__(self, err: Any, msg: Any) -> None:
        self.got.append((err, msg))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def broker(clock: FakeClock) -> MemoryBroker:
    return MemoryBroker(clock)


def member(
    broker: MemoryBroker, group: str = "g", topics: list[str] | None = None, **conf: Any
) -> tuple[MemoryConsumer, Listener]:
    consumer = broker.consumer({"group.id": group, **conf})
    listener = Listener()
    consumer.subscribe(topics or [T], listener)
    return consumer, listener


def produce(broker: MemoryBroker, topic: str, values: list[bytes], key: bytes | None = None,
            **conf: Any) -> Reports:  # fmt: skip
    producer = broker.producer(conf)
    reports = Reports()
    for value in values:
        producer.produce(topic, value, key, [("h", b"1")], reports)
    producer.flush(1)
    return reports


def coords(records: Any) -> list[tuple[str, int, int]]:
    return [(r.topic(), r.partition(), r.offset()) for r in records]


def values(records: Any) -> list[bytes]:
    return [r.value() for r in records]


def test_records_of_a_partition_get_consecutive_offsets_in_produce_order(
    broker: MemoryBroker,
) -> None:
    """Records with one key go to one partition, at offsets 0, 1, 2, and come back in that
    order with their key, headers and create-time timestamp."""
    broker.create_topic(T, 3)
    reports = produce(broker, T, [b"a", b"b", b"c"], key=b"k")
    consumer, _ = member(broker)
    records = consumer.consume(10, 0)
    assert values(records) == [b"a", b"b", b"c"]
    assert [r.offset() for r in records] == [0, 1, 2]
    assert {r.partition() for r in records} == {reports.got[0][1].partition()}
    first = records[0]
    assert (first.key(), first.headers(), first.error()) == (b"k", [("h", b"1")], None)
    assert first.timestamp() == (1, 1_700_000_000_000)


def test_two_members_split_the_partitions_and_a_join_revokes_then_assigns_inside_consume(
    broker: MemoryBroker,
) -> None:
    """Eager protocol: when B joins, A hears nothing until its next consume, where it is
    revoked everything and then assigned its new share; B is assigned the rest; when B
    leaves, A is revoked its share and assigned everything (the sequence librdkafka 2.x gave
    on the real broker with the range assignor)."""
    broker.create_topic(T, 2)
    a, a_events = member(broker, **{"partition.assignment.strategy": "range"})
    assert a_events.events == []  # nothing happens outside consume
    a.consume(10, 0)
    assert a_events.events == [("assign", [(T, 0), (T, 1)])]
    b, b_events = member(broker, **{"partition.assignment.strategy": "range"})
    assert a_events.events == [("assign", [(T, 0), (T, 1)])]
    a.consume(10, 0)
    b.consume(10, 0)
    assert a_events.events[1:] == [("revoke", [(T, 0), (T, 1)]), ("assign", [(T, 0)])]
    assert b_events.events == [("assign", [(T, 1)])]
    assert a_events.threads == b_events.threads == {threading.get_ident()}
    b.close()
    a.consume(10, 0)
    assert a_events.events[3:] == [("revoke", [(T, 0)]), ("assign", [(T, 0), (T, 1)])]


def test_a_cooperative_join_revokes_only_the_partitions_that_move(broker: MemoryBroker) -> None:
    """cooperative-sticky (the adapter's protocol): A keeps half its partitions and gives up
    the other half; B gets them only in the round after A let them go. Every round tells
    each member its incremental assign, empty or not: the sequence librdkafka 2.x gave with
    the adapter's configuration on the real broker."""
    broker.create_topic(T, 4)
    a, a_events = member(broker)
    a.consume(10, 0)
    b, b_events = member(broker)
    b.consume(10, 0)
    assert b_events.events == [("assign", [])]  # A still owns them
    a.consume(10, 0)
    b.consume(10, 0)
    everything = [(T, 0), (T, 1), (T, 2), (T, 3)]
    assert a_events.events == [
        ("assign", everything),
        ("revoke", [(T, 2), (T, 3)]),
        ("assign", []),
        ("assign", []),
    ]
    assert b_events.events == [("assign", []), ("assign", [(T, 2), (T, 3)])]


def test_two_groups_each_get_every_record(broker: MemoryBroker) -> None:
    """Each group reads the whole topic, whatever the other one has read or committed."""
    broker.create_topic(T, 2)
    produce(broker, T, [b"1", b"2", b"3", b"4"])
    first, _ = member(broker, "first")
    second, _ = member(broker, "second")
    got_first = first.consume(10, 0)
    first.commit({(T, 0): 2, (T, 1): 2}, sync=True)
    got_second = second.consume(10, 0)
    assert sorted(values(got_first)) == sorted(values(got_second)) == [b"1", b"2", b"3", b"4"]


def test_pause_stops_delivery_and_resume_restarts_it(broker: MemoryBroker) -> None:
    """A paused partition delivers nothing, even records produced meanwhile; after resume it
    goes on from where it stopped."""
    broker.create_topic(T, 1)
    produce(broker, T, [b"a"])
    consumer, _ = member(broker)
    assert values(consumer.consume(10, 0)) == [b"a"]
    consumer.pause([(T, 0)])
    produce(broker, T, [b"b"])
    assert consumer.consume(10, 0) == []
    consumer.resume([(T, 0)])
    assert values(consumer.consume(10, 0)) == [b"b"]


def test_seek_rereads_from_the_given_offset(broker: MemoryBroker) -> None:
    """After a seek back, the records from that offset come again, in order."""
    broker.create_topic(T, 1)
    produce(broker, T, [b"a", b"b", b"c"])
    consumer, _ = member(broker)
    assert len(consumer.consume(10, 0)) == 3
    consumer.seek((T, 0), 1)
    assert values(consumer.consume(10, 0)) == [b"b", b"c"]


def test_paused_and_position_tell_what_the_next_fetch_reads(broker: MemoryBroker) -> None:
    """``position`` is the next offset a fetch starts at (the committed one before any read,
    the seek's after a seek); ``paused`` lists what pause took and resume gave back."""
    broker.create_topic(T, 2)
    key = next(k for k in (b"k%d" % i for i in range(100)) if crc32_partition(k, 2) == 0)
    produce(broker, T, [b"a", b"b", b"c"], key)  # all three in partition 0
    consumer, _ = member(broker)
    assert consumer.position((T, 0)) is None, "not assigned before the first consume"
    consumer.consume(0, 0)  # the assignment arrives inside consume
    consumer.commit({(T, 0): 1}, sync=True)
    assert (consumer.position((T, 0)), consumer.position((T, 1))) == (1, 0)
    consumer.consume(10, 0)
    assert consumer.position((T, 0)) == 3
    consumer.seek((T, 0), 0)
    consumer.pause([(T, 1), (T, 0), ("not-assigned", 0)])
    assert consumer.position((T, 0)) == 0 and consumer.paused == [(T, 0), (T, 1)]
    consumer.resume([(T, 1)])
    assert consumer.paused == [(T, 0)]


def test_a_new_member_starts_from_the_committed_offset(broker: MemoryBroker) -> None:
    """A commits 'next to read = 2' and closes; B, in the same group, starts at offset 2."""
    broker.create_topic(T, 1)
    produce(broker, T, [b"a", b"b", b"c", b"d"])
    a, _ = member(broker)
    a.consume(2, 0)
    a.commit({(T, 0): 2}, sync=True)
    a.close()
    b, _ = member(broker)
    assert b.committed([(T, 0)]) == {(T, 0): 2}
    assert values(b.consume(10, 0)) == [b"c", b"d"]


def test_a_group_without_a_committed_offset_starts_at_the_earliest_record(
    broker: MemoryBroker,
) -> None:
    """As the framework configures (auto.offset.reset=earliest); committed() says -1001."""
    broker.create_topic(T, 1)
    produce(broker, T, [b"early"])
    consumer, _ = member(broker)
    assert consumer.committed([(T, 0)]) == {(T, 0): -1001}
    assert values(consumer.consume(10, 0)) == [b"early"]


def test_delivery_reports_arrive_only_on_poll_or_flush(broker: MemoryBroker) -> None:
    """produce() only queues the report: the callback runs in poll() or flush()."""
    broker.create_topic(T, 1)
    producer = broker.producer()
    reports = Reports()
    producer.produce(T, b"a", None, None, reports)
    producer.produce(T, b"b", None, None, reports)
    assert (reports.got, len(producer)) == ([], 2)
    assert producer.poll(0) == 2
    assert [(err, msg.offset()) for err, msg in reports.got] == [(None, 0), (None, 1)]
    producer.produce(T, b"c", None, None, reports)
    assert len(reports.got) == 2
    assert producer.flush(1) == 0
    assert len(reports.got) == 3


def test_transactional_records_are_invisible_until_commit_and_never_after_abort(
    broker: MemoryBroker,
) -> None:
    """read_committed sees a committed transaction's records, never an aborted one's; a
    read_uncommitted consumer sees both."""
    broker.create_topic(T, 1)
    producer = broker.producer({"transactional.id": "tx"})
    producer.init_transactions(1)
    reports = Reports()
    producer.begin_transaction()
    producer.produce(T, b"aborted", None, None, reports)
    producer.abort_transaction(1)
    producer.begin_transaction()
    producer.produce(T, b"committed", None, None, reports)
    committed, _ = member(broker, "rc")
    assert committed.consume(10, 0) == []
    producer.commit_transaction(1)
    assert values(committed.consume(10, 0)) == [b"committed"]
    uncommitted, _ = member(broker, "ru", **{"isolation.level": "read_uncommitted"})
    assert values(uncommitted.consume(10, 0)) == [b"aborted", b"committed"]
    assert broker.end_offsets(T) == {0: 4}  # each transaction's marker takes an offset


def test_a_read_committed_consumer_stops_at_an_open_transaction(broker: MemoryBroker) -> None:
    """A plain record written after an open transaction's first record waits until that
    transaction ends (the last stable offset), as on Kafka."""
    broker.create_topic(T, 1)
    txn = broker.producer({"transactional.id": "tx"})
    txn.init_transactions(1)
    txn.begin_transaction()
    txn.produce(T, b"in-txn", None, None, Reports())
    produce(broker, T, [b"plain"])
    consumer, _ = member(broker)
    assert consumer.consume(10, 0) == []
    txn.abort_transaction(1)
    assert values(consumer.consume(10, 0)) == [b"plain"]


def test_offsets_sent_to_a_transaction_commit_with_it(broker: MemoryBroker) -> None:
    """send_offsets_to_transaction takes the consumer's group metadata; the offsets are the
    group's committed offsets once the transaction commits, and never if it aborts."""
    broker.create_topic(T, 1)
    produce(broker, T, [b"a", b"b"])
    consumer, _ = member(broker)
    consumer.consume(10, 0)
    producer = broker.producer({"transactional.id": "tx"})
    producer.init_transactions(1)
    producer.begin_transaction()
    producer.send_offsets_to_transaction({(T, 0): 1}, consumer.group_metadata(), 1)
    producer.abort_transaction(1)
    assert consumer.committed([(T, 0)]) == {(T, 0): -1001}
    producer.begin_transaction()
    producer.send_offsets_to_transaction({(T, 0): 2}, consumer.group_metadata(), 1)
    producer.commit_transaction(1)
    assert consumer.committed([(T, 0)]) == {(T, 0): 2}


def test_a_second_producer_with_the_same_transactional_id_fences_the_first(
    broker: MemoryBroker,
) -> None:
    """The zombie's open transaction is aborted and its next call raises
    ProducerFencedError."""
    broker.create_topic(T, 1)
    zombie = broker.producer({"transactional.id": "tx"})
    zombie.init_transactions(1)
    zombie.begin_transaction()
    zombie.produce(T, b"zombie", None, None, Reports())
    broker.producer({"transactional.id": "tx"}).init_transactions(1)
    with pytest.raises(ProducerFencedError):
        zombie.commit_transaction(1)
    assert broker.records(T) == []


def test_a_transaction_with_an_undelivered_record_cannot_commit(broker: MemoryBroker) -> None:
    """commit_transaction serves the reports first; a failed one makes it abortable."""
    broker.create_topic(T, 1)
    producer = broker.producer({"transactional.id": "tx"})
    producer.init_transactions(1)
    producer.begin_transaction()
    broker.fail_deliveries(T, 1)
    reports = Reports()
    producer.produce(T, b"lost", None, None, reports)
    with pytest.raises(TransactionError) as raised:
        producer.commit_transaction(1)
    assert raised.value.abortable and reports.got[0][0] is not None
    producer.abort_transaction(1)


@pytest.mark.parametrize(
    ("key", "expected"),
    # Kafka 4.4.0's Utils.murmur2, computed with kafka-clients-4.4.0.jar.
    [("", 275646681), ("1", -1993445489), ("12", 126087238), ("123", -267702483),
     ("1234", -1614185708), ("12345", -1188365604), ("21", -973932308),
     ("foobar", -790332482), ("a-little-bit-long-string", -985981536),
     ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971)],
)  # fmt: skip
def test_murmur2_matches_kafkas_utils_murmur2(key: str, expected: int) -> None:
    """Bit for bit, signed as Java's int."""
    assert murmur2(key.encode()) == expected


def test_murmur2_partitions_match_kafkas_partition_for_key(broker: MemoryBroker) -> None:
    """BuiltInPartitioner.partitionForKey(key, n) of kafka-clients 4.4.0, and a producer
    configured with partitioner=murmur2_random sends the key there."""
    expected = {  # key -> partition for 3, 7 and 12 partitions
        "1": (0, 2, 3), "12": (1, 4, 10), "123": (2, 3, 5), "1234": (0, 0, 0),
        "12345": (2, 3, 8), "foobar": (0, 0, 6), "order-42": (0, 1, 0),
    }  # fmt: skip
    for key, partitions in expected.items():
        assert tuple(murmur2_partition(key.encode(), n) for n in (3, 7, 12)) == partitions
    broker.create_topic(T, 7)
    reports = produce(broker, T, [b"v"], key=b"order-42", partitioner="murmur2_random")
    assert reports.got[0][1].partition() == 1


def test_the_default_partitioner_is_librdkafkas_crc32(broker: MemoryBroker) -> None:
    """The partitions librdkafka's default (consistent_random) chose for these keys on a
    7-partition topic of the real broker."""
    observed = {"1": 2, "12": 1, "123": 4, "21": 6, "foobar": 6, "order-42": 1,
                "a-little-bit-long-string": 3}  # fmt: skip
    assert {k: crc32_partition(k.encode(), 7) for k in observed} == observed
    broker.create_topic(T, 7)
    assert produce(broker, T, [b"v"], key=b"123").got[0][1].partition() == 4


def test_a_crashed_members_uncommitted_records_are_redelivered_to_the_others(
    broker: MemoryBroker,
) -> None:
    """A dies after committing p0 up to 2 of 4: B, at its next consume, is assigned p0 (A
    heard no revoke) and reads p0 from offset 2."""
    broker.create_topic(T, 2)
    a, a_events = member(broker)
    a.consume(10, 0)
    b, b_events = member(broker)
    a.consume(10, 0)
    b.consume(10, 0)
    assert a.assignment == [(T, 0)] and b.assignment == [(T, 1)]
    produce(broker, T, [b"0", b"1", b"2", b"3"], key=b"21")  # crc32 -> p0 of 2
    assert values(a.consume(10, 0)) == [b"0", b"1", b"2", b"3"]
    a.commit({(T, 0): 2}, sync=True)
    heard_by_a = list(a_events.events)
    broker.crash(a)
    assert values(b.consume(10, 0)) == [b"2", b"3"]
    assert b_events.events[-1] == ("assign", [(T, 0)])
    assert a_events.events == heard_by_a  # no revoke: it is dead


def test_a_crashed_consumer_used_again_hears_its_partitions_lost_and_cannot_commit(
    broker: MemoryBroker,
) -> None:
    """The zombie's next consume calls on_lost; its commits fail with UNKNOWN_MEMBER_ID."""
    broker.create_topic(T, 1)
    consumer, events = member(broker)
    consumer.consume(10, 0)
    broker.crash(consumer)
    assert consumer.consume(10, 0) == []
    assert events.events[-1] == ("lost", [(T, 0)])
    with pytest.raises(KafkaError) as raised:
        consumer.commit({(T, 0): 1}, sync=True)
    assert raised.value.code == "UNKNOWN_MEMBER_ID"


def test_close_revokes_first_and_the_other_member_takes_over(broker: MemoryBroker) -> None:
    """close() gives the listener its revoke (to commit) before leaving the group."""
    broker.create_topic(T, 1)
    a, a_events = member(broker)
    a.consume(10, 0)
    b, b_events = member(broker)
    b.consume(10, 0)
    a.close()
    b.consume(10, 0)
    assert a_events.events == [("assign", [(T, 0)]), ("revoke", [(T, 0)])]
    assert b_events.events == [("assign", []), ("assign", [(T, 0)])]


def test_a_record_over_the_topics_max_message_bytes_fails_its_delivery(
    broker: MemoryBroker,
) -> None:
    """The broker refuses it: a non-retriable MSG_SIZE_TOO_LARGE in the delivery report,
    and nothing is written."""
    broker.create_topic(T, 1, {"max.message.bytes": "1000"})
    ((err, msg),) = produce(broker, T, [b"x" * 1000]).got
    assert (err.name(), err.code(), err.retriable()) == ("MSG_SIZE_TOO_LARGE", 10, False)
    assert msg.offset() < 0 and broker.records(T) == []


def test_the_runner_sees_a_too_large_record_as_a_permanent_delivery_error(
    broker: MemoryBroker,
) -> None:
    """delivery_error turns the report into ours: permanent (dead-letter the input), not
    batch-wide (each record is refused alone here), and retriable ones stay retriable."""
    broker.create_topic(T, 1, {"max.message.bytes": "1000"})
    producer = broker.producer({})
    ((err, _),) = produce(broker, T, [b"x" * 1000]).got
    ours = producer.delivery_error(err, T)
    assert (ours.code, ours.permanent, ours.batch_wide) == ("MSG_SIZE_TOO_LARGE", True, False)
    broker.fail_deliveries(T, 1)
    ((err, _),) = produce(broker, T, [b"a"]).got
    assert producer.delivery_error(err, T).permanent is False
    assert producer.delivery_error(ours, T) is ours


def test_a_record_over_the_producers_message_max_bytes_is_refused_by_produce(
    broker: MemoryBroker,
) -> None:
    """librdkafka checks message.max.bytes itself and raises from produce()."""
    broker.create_topic(T, 1)
    producer = broker.producer({"message.max.bytes": 100})
    with pytest.raises(KafkaError) as raised:
        producer.produce(T, b"x" * 200, None, None, Reports())
    assert raised.value.code == "MSG_SIZE_TOO_LARGE" and len(producer) == 0
    assert raised.value.permanent, "a retry cannot fix it: the runner must dead-letter the input"


def test_a_record_to_an_unknown_topic_fails_its_delivery(broker: MemoryBroker) -> None:
    ((err, msg),) = produce(broker, "nowhere", [b"x"]).got
    assert err.name() == "_UNKNOWN_TOPIC" and msg.partition() == -1


def test_injected_delivery_failures_fail_the_next_n_records_retriably(
    broker: MemoryBroker,
) -> None:
    """fail_deliveries(topic, 2): two reports fail (retriable), the third record is written."""
    broker.create_topic(T, 1)
    broker.fail_deliveries(T, 2)
    got = produce(broker, T, [b"a", b"b", b"c"]).got
    assert [err.retriable() if err else None for err, _ in got] == [True, True, None]
    assert values(broker.records(T)) == [b"c"]


def test_a_topic_refusing_writes_fails_every_delivery_until_lifted(
    broker: MemoryBroker,
) -> None:
    """As a dead-letter topic nobody may write to: non-retriable, until refuse_writes(False)."""
    broker.create_topic(T, 1)
    broker.refuse_writes(T)
    ((err, _),) = produce(broker, T, [b"a"]).got
    assert (err.name(), err.retriable()) == ("TOPIC_AUTHORIZATION_FAILED", False)
    broker.refuse_writes(T, False)
    assert produce(broker, T, [b"b"]).got[0][0] is None


def test_a_failed_async_commit_is_reported_after_the_next_consume(broker: MemoryBroker) -> None:
    """Like librdkafka's on_commit, the failure is known only once consume has run; a
    failed sync commit raises at once."""
    broker.create_topic(T, 1)
    consumer, _ = member(broker)
    consumer.consume(10, 0)
    broker.fail_commits("g", 2)
    consumer.commit({(T, 0): 1}, sync=False)
    assert consumer.take_commit_failures() == []
    consumer.consume(10, 0)
    assert consumer.take_commit_failures() == [(T, 0)]
    with pytest.raises(KafkaError):
        consumer.commit({(T, 0): 1}, sync=True)
    consumer.commit({(T, 0): 1}, sync=True)
    assert broker.committed_offsets("g") == {(T, 0): 1}


def test_consume_on_a_fake_clock_returns_at_once_when_nothing_is_ready(
    broker: MemoryBroker,
) -> None:
    """A 60 s timeout does not block: the fake clock never waits for real."""
    broker.create_topic(T, 1)
    consumer, _ = member(broker)
    producer = broker.producer()
    started = time.monotonic()
    assert consumer.consume(10, 60) == []
    assert producer.poll(60) == 0
    assert time.monotonic() - started < 5


def test_consume_on_the_system_clock_wakes_when_a_record_arrives() -> None:
    """With real time, a waiting consume returns the record another thread produces, long
    before its timeout (whether it was already waiting or not)."""
    broker = MemoryBroker()
    broker.create_topic(T, 1)
    consumer, _ = member(broker)
    consumer.consume(10, 0)  # joined and assigned
    thread = threading.Thread(target=produce, args=(broker, T, [b"late"]))
    started = time.monotonic()
    thread.start()
    records = consumer.consume(10, 60)
    thread.join()
    assert values(records) == [b"late"] and time.monotonic() - started < 30


def test_the_assignors_share_partitions_as_kafkas_do() -> None:
    """range: contiguous per topic, the first members one more; roundrobin: dealt in turn;
    cooperative-sticky: owned partitions kept where the balance allows."""
    members = {"m1": ["a"], "m2": ["a"]}
    assert range_assign(members, {"a": 3}, {}) == {"m1": {("a", 0), ("a", 1)}, "m2": {("a", 2)}}
    assert roundrobin_assign(members, {"a": 3}, {}) == {
        "m1": {("a", 0), ("a", 2)}, "m2": {("a", 1)}}  # fmt: skip
    three = {"m1": ["a"], "m2": ["a"], "m3": ["a"]}
    owned = {"m1": {("a", 0), ("a", 1)}, "m2": {("a", 2), ("a", 3)}}
    sticky = sticky_assign(three, {"a": 4}, owned)
    assert sorted(len(s) for s in sticky.values()) == [1, 1, 2]
    assert sticky["m1"] <= owned["m1"] and sticky["m2"] <= owned["m2"]


def test_a_blocking_fake_clock_makes_a_threaded_consume_wait_for_fake_time_or_a_record() -> None:
    """A consume in another thread neither returns early nor waits for real time: it ends
    when a record arrives, or when the test advances the clock past its timeout."""
    clock = FakeClock(blocking=True)
    broker = MemoryBroker(clock)
    broker.create_topic(T, 1)
    consumer, _ = member(broker)
    result: list[Any] = []

    def consume_once() -> None:
        result.append(values(consumer.consume(10, 5)))

    first = threading.Thread(target=consume_once)
    first.start()
    assert clock.await_waiters(1, begun=1)
    clock.advance(4)  # not yet past the deadline
    assert clock.await_waiters(1, begun=2)  # woken, and waiting again
    assert result == []
    produce(broker, T, [b"a"])
    first.join(10)
    second = threading.Thread(target=consume_once)
    second.start()
    assert clock.await_waiters(1, begun=3)
    clock.advance(5)
    second.join(10)
    assert result == [[b"a"], []]


def test_aborting_a_transaction_fails_its_reports_not_yet_served(broker: MemoryBroker) -> None:
    """As librdkafka purges them: the callback hears _PURGE_QUEUE, not success."""
    broker.create_topic(T, 1)
    producer = broker.producer({"transactional.id": "tx"})
    producer.init_transactions(1)
    producer.begin_transaction()
    reports = Reports()
    producer.produce(T, b"a", None, None, reports)
    producer.abort_transaction(1)
    assert [err.name() for err, _ in reports.got] == ["_PURGE_QUEUE"]


def test_subscribing_again_revokes_the_old_assignment_first(broker: MemoryBroker) -> None:
    broker.create_topic(T, 1)
    broker.create_topic("other", 1)
    consumer, events = member(broker)
    consumer.consume(10, 0)
    consumer.subscribe(["other"], events)
    consumer.consume(10, 0)
    assert events.events == [("assign", [(T, 0)]), ("revoke", [(T, 0)]), ("assign", [("other", 0)])]


def test_pending_counts_what_the_group_would_still_read_and_lag_counts_offsets(
    broker: MemoryBroker,
) -> None:
    """After a committed transaction of 2 records, a group that committed past them has
    nothing pending, while Kafka's lag still counts the commit marker."""
    broker.create_topic(T, 1)
    producer = broker.producer({"transactional.id": "tx"})
    producer.init_transactions(1)
    producer.begin_transaction()
    for value in (b"a", b"b"):
        producer.produce(T, value, None, None, Reports())
    producer.commit_transaction(1)
    assert (broker.pending("g", T), broker.lag("g", [T])) == (2, (0, 3))
    consumer, _ = member(broker)
    consumer.commit({(T, 0): 2}, sync=True)
    assert (broker.pending("g", T), broker.lag("g", [T])) == (0, (2, 1))


def test_headers_come_back_as_librdkafka_returns_them(broker: MemoryBroker) -> None:
    """Observed on the real broker: an empty header list reads as None; None and empty
    header values stay distinct; a tombstone has value None."""
    broker.create_topic(T, 1)
    producer = broker.producer()
    producer.produce(T, b"a", None, [], Reports())
    producer.produce(T, b"b", None, [("x", None), ("y", b"")], Reports())
    producer.produce(T, None, b"k", None, Reports())
    got = [(r.value(), r.key(), r.headers()) for r in broker.records(T)]
    assert got == [(b"a", None, None), (b"b", None, [("x", None), ("y", b"")]), (None, b"k", None)]


def test_a_blocking_fake_clock_makes_a_threaded_poll_wait_for_its_deadline() -> None:
    """A publisher-style poll loop in a thread sleeps until the test advances the clock
    past its timeout, instead of spinning."""
    clock = FakeClock(blocking=True)
    broker = MemoryBroker(clock)
    producer = broker.producer()
    served: list[int] = []
    thread = threading.Thread(target=lambda: served.append(producer.poll(2)))
    thread.start()
    assert clock.await_waiters(1, begun=1)
    clock.advance(1)
    assert clock.await_waiters(1, begun=2)  # woken, deadline not reached: waiting again
    assert served == []
    clock.advance(1)
    thread.join(10)
    assert served == [0]
