"""A partition whose committed offset is unstable (an open transaction carries offsets for it)
is held, not started from ``auto.offset.reset``, even when a rebalance happens meanwhile.

librdkafka 2.x restarts such a partition from the reset policy when its assignment changes
while the committed-offset fetch is in flight (chaos run b2: an exactly-once stage re-read its
input from offset 0 and duplicated 31,347 outputs). Here the transaction's end is controlled by
the test, so the order is fixed: assign while unstable → rebalance while unstable → end it.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as CTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline import unstable
from pipeline.kafka import KafkaTransport, starts
from pipeline.kafka.clients import KafkaConsumer
from pipeline.ports import TopicPartition
from tests.integration.kit import unique_settings, wait_until

PARTITIONS, PER_PARTITION = 3, 10
COMMITTED, PENDING = 5, 8  # the group's stable offset, and the one its open transaction sends


class Recorder:
    def __init__(self) -> None:
        self.assigned: set[TopicPartition] = set()
        self.rebalances = 0

    def on_assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned.update(partitions)
        self.rebalances += 1

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        self.assigned.difference_update(partitions)
        self.rebalances += 1

    def on_lost(self, partitions: list[TopicPartition]) -> None:
        self.on_revoke(partitions)


def _topic_with_records(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap})
    wait_until(lambda: topic in producer.list_topics(topic, 5).topics, what="topic metadata")
    for i in range(PARTITIONS * PER_PARTITION):
        producer.produce(topic, str(i).encode(), partition=i % PARTITIONS)
    assert producer.flush(30) == 0


def _open_transaction(bootstrap: str, topic: str, group: str) -> Any:
    """Commit COMMITTED plainly, then leave a transaction open that sends PENDING."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    consumer.commit(
        offsets=[CTopicPartition(topic, p, COMMITTED) for p in range(PARTITIONS)],
        asynchronous=False,
    )
    metadata = consumer.consumer_group_metadata()
    consumer.close()
    txn = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": f"unstable-{uuid.uuid4().hex}",
            "transaction.timeout.ms": 120_000,
        }
    )
    txn.init_transactions(30)
    txn.begin_transaction()
    offsets = [CTopicPartition(topic, p, PENDING) for p in range(PARTITIONS)]
    txn.send_offsets_to_transaction(offsets, metadata, 30)
    return txn


@pytest.mark.parametrize("end", ["commit", "abort"])
def test_unstable_offsets_hold_partitions_through_a_rebalance(
    kafka_bootstrap: str, end: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(unstable, "MAX_RETRY_S", 1.0)  # released soon after the end
    monkeypatch.setattr(starts, "ASSIGN_READ_S", 0.5)  # the callback's read fails sooner
    settings = unique_settings(kafka_bootstrap)
    topic = settings.topic("unstable")
    group = f"{topic}.group"
    _topic_with_records(kafka_bootstrap, topic)
    txn = _open_transaction(kafka_bootstrap, topic, group)
    transport = KafkaTransport(settings)
    first, second = Recorder(), Recorder()
    a = transport.consumer(group, "a")
    b = transport.consumer(group, "b")
    assert isinstance(a, KafkaConsumer) and isinstance(b, KafkaConsumer)
    read: list[tuple[int, int]] = []

    def consume(*consumers: Any) -> None:
        for c in consumers:
            read.extend((r.partition(), r.offset()) for r in c.consume(100, 0.1) if not r.error())

    try:
        a.subscribe([topic], first)
        wait_until(lambda: consume(a) or len(a.starts.holds.held) == PARTITIONS,
                   what="every partition held by the first consumer")  # fmt: skip
        # The second member joins while the offsets are unstable: the first one's assignment
        # changes (cooperative revoke) while its committed-offset reads are still failing.
        b.subscribe([topic], second)
        wait_until(lambda: consume(a, b) or (second.assigned and first.rebalances >= 2),
                   what="the rebalance")  # fmt: skip
        held = set(a.starts.holds.held) | set(b.starts.holds.held)
        assert held == first.assigned | second.assigned
        for _ in range(10):  # consume calls on both while held: nothing is delivered
            consume(a, b)
        assert read == []
        if end == "commit":
            txn.commit_transaction(30)
        else:
            txn.abort_transaction(30)
        start = PENDING if end == "commit" else COMMITTED
        expected = {(p, o) for p in range(PARTITIONS) for o in range(start, PER_PARTITION)}
        wait_until(lambda: consume(a, b) or set(read) >= expected, what="the records after "
                   "the committed offset")  # fmt: skip
        assert sorted(read) == sorted(expected)  # none before it, none twice
        assert not a.starts.holds and not b.starts.holds
        assert a.starts.holds.total + b.starts.holds.total >= PARTITIONS
    finally:
        a.close()
        b.close()
