"""Reading a topic back after a run, completely: a condition, not a quiet spell.

A ``read_committed`` consumer sees a partition up to its *last stable offset* (LSO): the first
offset of the oldest transaction still open there. librdkafka's watermark query answers with
the LSO for such a consumer, not the high watermark. The reader of issue 10's failed run took
those "ends" as the end of the topic, so a transaction left open by a killed worker (the broker
aborts it only after the transaction timeout plus its 10 s check) ended the read early: every
output committed after it on that partition was counted missing, with no quiet spell involved.

``read_topic`` therefore, with nothing producing any more:

1. waits until every partition is *stable*: its LSO (read_committed) equals its high watermark
   (read_uncommitted), i.e. no transaction is open there. Those offsets are the ends;
2. reads every partition from the beginning until librdkafka reports the partition's end
   (``PARTITION_EOF``) at or past that end. Aborted records and transaction markers are
   skipped by the fetcher, so the EOF offset reaches the end even when a partition ends with
   a marker or an aborted transaction.

Each step is bounded (``settle_timeout_s``, ``read_timeout_s``). A read that ran out of time
says which partitions were unstable (LSO below the high watermark: a transaction still open)
or unread, so a run cannot pass on a partial read.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaError, TopicPartition

from pipeline.config import Settings

OFFSET_BEGINNING = -2
# A killed worker's transaction is aborted by the broker after its timeout (10 s) plus up to
# one 10 s check: 20 s on an idle broker (measured), more on a loaded one.
SETTLE_TIMEOUT_S = 120.0
READ_TIMEOUT_S = 120.0  # 100k records take a few seconds; the rest is room for a loaded machine
POLL_S = 0.5  # between two looks at the watermarks while a transaction is open

Isolation = Literal["read_committed", "read_uncommitted"]


@dataclass
class TopicRead:
    """What a read gave: ``values`` (``extract`` of every record, in partition order) and,
    when it ran out of time, what is missing from it."""

    topic: str
    values: list[str] = field(default_factory=list)
    unstable: dict[int, tuple[int, int]] = field(default_factory=dict)  # p -> (LSO, high)
    unread: dict[int, tuple[int, int]] = field(default_factory=dict)  # p -> (reached, end)
    # Partitions with a transaction open at the first look (p -> (LSO, high)): what the read
    # waited for, and for how long (``waited_s``, 0 when nothing was open).
    held: dict[int, tuple[int, int]] = field(default_factory=dict)
    waited_s: float = 0.0

    @property
    def complete(self) -> bool:
        return not self.unstable and not self.unread

    def problems(self) -> list[str]:
        out = [
            f"{self.topic}[{p}]: a transaction is still open (last stable offset {lso}, "
            f"high watermark {high})"
            for p, (lso, high) in sorted(self.unstable.items())
        ]
        out += [
            f"{self.topic}[{p}]: read up to {reached} of {end}"
            for p, (reached, end) in sorted(self.unread.items())
        ]
        return out


def _consumer(settings: Settings, isolation: Isolation, **extra: Any) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"chaos-readback-{uuid.uuid4()}",  # never joined: partitions assigned
            "enable.auto.commit": False,
            "isolation.level": isolation,
            "log_level": 2,
            **extra,
        }
    )


def _ends(consumer: Consumer, topic: str, partitions: list[int]) -> dict[int, int]:
    """The end of each partition as ``consumer``'s isolation level sees it, asked fresh."""
    return {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10, cached=False)[1]
        for p in partitions
    }


def stable_ends(
    settings: Settings,
    topic: str,
    deadline: float,
    on_wait: Callable[[dict[int, tuple[int, int]]], None] | None = None,
    *,
    isolation: Isolation = "read_committed",
) -> tuple[dict[int, int], dict[int, tuple[int, int]]]:
    """``(ends, unstable)``: the high watermark of every partition once no transaction is open
    on any (LSO == high watermark), or at ``deadline`` the ends as ``isolation`` sees them (the
    LSOs for read_committed) and the partitions still unstable (``p -> (LSO, high)``).
    ``on_wait(unstable)`` is called before each wait."""
    committed = _consumer(settings, "read_committed")
    uncommitted = _consumer(settings, "read_uncommitted")
    try:
        partitions = sorted(committed.list_topics(topic, timeout=10).topics[topic].partitions)
        while True:
            lsos = _ends(committed, topic, partitions)
            highs = _ends(uncommitted, topic, partitions)
            unstable = {p: (lsos[p], highs[p]) for p in partitions if lsos[p] < highs[p]}
            if not unstable:
                return highs, {}
            if time.monotonic() >= deadline:
                return (lsos if isolation == "read_committed" else highs), unstable
            if on_wait is not None:
                on_wait(unstable)
            time.sleep(POLL_S)  # an outside observer's polling interval, bounded by deadline
    finally:
        committed.close()
        uncommitted.close()


def read_topic(
    settings: Settings,
    topic: str,
    extract: Callable[[Any], str | None],
    *,
    settle_timeout_s: float = SETTLE_TIMEOUT_S,
    read_timeout_s: float = READ_TIMEOUT_S,
    isolation: Isolation = "read_committed",
    on_wait: Callable[[dict[int, tuple[int, int]]], None] | None = None,
) -> TopicRead:
    """``extract(record)`` for every record of ``topic`` (None: skipped), read completely as
    described in the module docstring. ``read_uncommitted`` reads aborted and open
    transactions' records too (to tell "never written" from "written, not committed")."""
    began = time.monotonic()
    result = TopicRead(topic)

    def waiting(unstable: dict[int, tuple[int, int]]) -> None:
        result.held = result.held or dict(unstable)
        if on_wait is not None:
            on_wait(unstable)

    if isolation == "read_committed":
        ends, result.unstable = stable_ends(settings, topic, began + settle_timeout_s, waiting)
    else:  # everything written counts, open transactions included: no wait for them
        ends, _ = stable_ends(settings, topic, began, None, isolation="read_uncommitted")
    if result.held or result.unstable:
        result.waited_s = time.monotonic() - began
    deadline = time.monotonic() + read_timeout_s
    consumer = _consumer(settings, isolation, **{"enable.partition.eof": True})
    reached = dict.fromkeys(ends, 0)
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        while any(reached[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.2):
                error = msg.error()
                if error is not None:
                    p, at = msg.partition(), msg.offset()
                    if error.code() == KafkaError._PARTITION_EOF and p is not None and at:
                        reached[p] = max(reached[p], at)
                    continue
                value = extract(msg)
                if value is not None:
                    result.values.append(value)
    finally:
        consumer.close()
    result.unread = {p: (reached[p], ends[p]) for p in ends if reached[p] < ends[p]}
    return result


def header(name: str) -> Callable[[Any], str | None]:
    def extract(msg: Any) -> str | None:
        for key, value in msg.headers() or ():
            if key == name and value is not None:
                return str(value.decode())
        return None

    return extract
