"""The chaos checker reads a transactional topic back completely, on the real broker.

Issue 10's failed run counted 3,254 exactly-once outputs missing that had been committed: the
read_committed reader took the watermarks it was given as the topic's end, and for such a
consumer librdkafka answers with the last stable offset, which stops at a transaction still
open (a killed worker's, until the broker aborts it). Here the test holds that transaction open
itself and ends it when it chooses, so the order is controlled, not raced.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from chaos import forensics
from chaos.history import History, Published
from chaos.readback import TopicRead, header, read_topic
from pipeline.config import Settings
from tests.integration.kit import unique_settings, wait_until

ID = "chaos-id"


def produce(producer: Producer, topic: str, partition: int, ids: list[str]) -> None:
    for eid in ids:
        producer.produce(topic, b"x", partition=partition, headers=[(ID, eid.encode())])


def transactional(settings: Settings, name: str) -> Producer:
    producer = Producer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "transactional.id": f"{name}-{uuid.uuid4().hex[:8]}",
            "transaction.timeout.ms": 60_000,  # longer than any test here: the test ends it
        }
    )
    producer.init_transactions(30)
    return producer


@pytest.fixture
def topic(kafka_bootstrap: str) -> Iterator[tuple[Settings, str]]:
    settings = unique_settings(kafka_bootstrap)
    name = f"{settings.topic_prefix}copies"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(name, 2, 1)])[name].result(30)
    wait_until(lambda: name in admin.list_topics(timeout=10).topics, what="topic in metadata")
    yield settings, name
    admin.delete_topics([name])


def committed_open_committed(settings: Settings, topic: str) -> tuple[Producer, list[str]]:
    """Partition 0: a committed transaction, one left open (the returned producer's), then a
    committed one after it; partition 1: committed records only. Returns the committed ids."""
    first, zombie = transactional(settings, "first"), transactional(settings, "zombie")
    before = [f"a{i}" for i in range(5)]
    after = [f"c{i}" for i in range(4)]
    elsewhere = [f"d{i}" for i in range(3)]
    first.begin_transaction()
    produce(first, topic, 0, before)
    first.commit_transaction(30)
    zombie.begin_transaction()
    produce(zombie, topic, 0, ["open0", "open1", "open2"])
    assert zombie.flush(30) == 0  # written to the log, in a transaction still open
    first.begin_transaction()
    produce(first, topic, 0, after)
    produce(first, topic, 1, elsewhere)
    first.commit_transaction(30)
    return zombie, before + after + elsewhere


def test_a_read_waits_for_an_open_transaction_and_then_reads_what_was_committed_after_it(
    topic: tuple[Settings, str],
) -> None:
    """With a transaction open on a partition, the read does not stop at its last stable
    offset: it waits, and once the transaction is aborted it returns every committed record,
    those committed after the open transaction included (and none of the aborted ones)."""
    settings, name = topic
    zombie, committed = committed_open_committed(settings, name)
    waiting = threading.Event()
    seen_unstable: list[dict[int, tuple[int, int]]] = []
    result: list[TopicRead] = []

    def on_wait(unstable: dict[int, tuple[int, int]]) -> None:
        seen_unstable.append(dict(unstable))
        waiting.set()

    def read() -> None:
        result.append(read_topic(settings, name, header(ID), on_wait=on_wait))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert waiting.wait(60), "the reader never saw the open transaction"
        assert not result, "the read ended while a transaction was still open"
        lso, high = seen_unstable[0][0]
        assert lso < high
        assert set(seen_unstable[0]) == {0}  # partition 1 holds committed records only
    finally:
        zombie.abort_transaction(30)
    reader.join(90)
    assert not reader.is_alive(), "the read did not end after the transaction was aborted"
    [read_back] = result
    assert read_back.complete, read_back.problems()
    assert sorted(read_back.values) == sorted(committed)
    assert read_back.held == seen_unstable[0] and read_back.waited_s > 0


def test_a_transaction_open_past_the_bound_leaves_the_read_incomplete_and_named(
    topic: tuple[Settings, str],
) -> None:
    """A read is bounded: a transaction still open when the wait runs out makes it incomplete
    (so a chaos run cannot pass on it), names the partition, and what was committed before it
    is read; read_uncommitted sees the open transaction's records too (for forensics)."""
    settings, name = topic
    zombie, _ = committed_open_committed(settings, name)
    try:
        partial = read_topic(settings, name, header(ID), settle_timeout_s=1.0)
        everything = read_topic(settings, name, header(ID), isolation="read_uncommitted")
    finally:
        zombie.abort_transaction(30)
    assert not partial.complete
    assert set(partial.unstable) == {0}
    [problem] = partial.problems()
    assert f"{name}[0]: a transaction is still open" in problem
    # Up to the open transaction on partition 0, everything on partition 1.
    assert sorted(partial.values) == sorted([f"a{i}" for i in range(5)] + ["d0", "d1", "d2"])
    assert {"open0", "open1", "open2", "c0", "d2"} <= set(everything.values)
    assert everything.complete


def test_a_partition_ending_with_an_aborted_transaction_or_empty_is_read_to_its_end(
    topic: tuple[Settings, str],
) -> None:
    """The end is a condition (the fetcher reached the high watermark), not a quiet spell:
    a partition whose last records were aborted, and an empty one, are read to their end."""
    settings, name = topic
    producer = transactional(settings, "tail")
    producer.begin_transaction()
    produce(producer, name, 0, ["kept"])
    producer.commit_transaction(30)
    producer.begin_transaction()
    produce(producer, name, 0, ["gone"])
    assert producer.flush(30) == 0
    producer.abort_transaction(30)
    read_back = read_topic(settings, name, header(ID), read_timeout_s=30.0)
    assert read_back.complete, read_back.problems()
    assert read_back.values == ["kept"]
    assert read_back.held == {} and read_back.waited_s == 0.0


def test_missing_outputs_are_listed_and_told_apart_aborted_from_never_written(
    topic: tuple[Settings, str], tmp_path: Path
) -> None:
    """The forensics of a failed run: every input without a committed output is listed with
    its coordinates, and one whose output sits in an aborted transaction is counted apart
    from one whose output was never written."""
    settings, name = topic
    producer = transactional(settings, "forensics")
    producer.begin_transaction()
    produce(producer, name, 0, ["e0", "e1"])
    producer.commit_transaction(30)
    producer.begin_transaction()
    produce(producer, name, 0, ["e2"])
    assert producer.flush(30) == 0
    producer.abort_transaction(30)  # e2's output: written, never committed; e3's: never written
    published = [Published(f"e{i}", "k", i, 5, 100 + i) for i in range(4)]
    history = History(published, [], [], [], eos_outputs=["e0", "e1"], eos_dlq=[])
    assert forensics.keep_missing(settings, name, header(ID), tmp_path, history) == 1
    lines = (tmp_path / "eos_missing.txt").read_text().splitlines()
    assert lines == ["partition 5 @102..103: 2 event(s) (e2..e3)", "e2 5 102", "e3 5 103"]
