"""Watching the run from outside: waiting for the stages to drain (reading topics back is
``chaos.readback``).

*Drained* means, all at once and for ``stable_s`` in a row: every consumer group has
committed its input topics up to their end (lag 0, via ``pipeline.kafka.LagMonitor``), the
Effects retry group has done the same with the retry topics, and no dead-letter topic grew.
*Stalled* means lag is left but nothing has moved for ``stall_s`` (longer than a session
timeout plus a rebalance): the run then goes on to its checks, which say whether anything was
lost, and reports the partitions whose committed offset stayed behind.

Topics written in Kafka transactions (EosCopy's retry topics) end with a commit marker that
takes an offset but is never delivered, so a group that consumed everything still lags by one
per partition there; for those the allowance is one per non-empty partition. The final check
does not rely on it: it counts the committed outputs themselves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from pipeline.config import Settings
from pipeline.errors import KafkaError
from pipeline.kafka import LagMonitor


@dataclass(frozen=True, slots=True)
class LagCheck:
    name: str
    group: str
    topics: tuple[str, ...]
    transactional: bool = False  # the topics hold commit markers (see the module docstring)


@dataclass
class DrainResult:
    drained: bool  # lag within allowance and DLQs stable for ``stable_s``
    stalled: bool  # gave up: nothing moved for ``stall_s`` while some lag remained
    seconds: float
    lags: dict[str, int] = field(default_factory=dict)
    dlq_records: int = 0


class Watermarks:
    """High watermarks, read fresh each time (no group, no subscription)."""

    def __init__(self, settings: Settings) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.bootstrap_servers,
                "group.id": "chaos-watermarks",
                "enable.auto.commit": False,
                "log_level": 2,
            }
        )

    def highs(self, topics: tuple[str, ...]) -> dict[tuple[str, int], int]:
        meta = self._consumer.list_topics(timeout=10).topics
        out = {}
        for topic in topics:
            for p in meta[topic].partitions if topic in meta else ():
                tp = TopicPartition(topic, p)
                out[(topic, p)] = self._consumer.get_watermark_offsets(tp, 10, cached=False)[1]
        return out

    def close(self) -> None:
        self._consumer.close()


@dataclass
class _Poll:
    ok: bool
    lags: dict[str, int]
    dlq: int
    progress: tuple[object, ...]  # anything that moves while work is being done


def drain(
    settings: Settings,
    checks: list[LagCheck],
    dlq_topics: tuple[str, ...],
    *,
    timeout_s: float,
    stable_s: float,
    stall_s: float,
    tick: Callable[[], None],
    progress: Callable[[], object],
) -> DrainResult:
    """Wait until drained (see the module docstring), or until nothing has moved for
    ``stall_s`` (committed offsets, DLQ sizes and ``progress()``, say the side-effect count)
    although some lag is left: a stuck commit must end in a report, not a hang. ``tick`` runs
    between polls (the orchestrator supervises its workers there)."""
    monitor, marks = LagMonitor(settings), Watermarks(settings)
    began = time.monotonic()
    result = DrainResult(False, False, 0.0)
    stable_since = moved_at = time.monotonic()
    last: _Poll | None = None
    try:
        while time.monotonic() - began < timeout_s:
            tick()
            now = _poll(monitor, marks, checks, dlq_topics, progress)
            result.lags, result.dlq_records = now.lags, now.dlq
            if last is None or now.progress != last.progress:
                moved_at = time.monotonic()
            if not (now.ok and last is not None and now.dlq == last.dlq):
                stable_since = time.monotonic()
            last = now
            result.drained = time.monotonic() - stable_since >= stable_s
            result.stalled = not result.drained and time.monotonic() - moved_at >= stall_s
            if result.drained or result.stalled:
                break
            time.sleep(1.0)  # the polling interval of an outside observer
    finally:
        monitor.close()
        marks.close()
    result.seconds = time.monotonic() - began
    return result


def _poll(
    monitor: LagMonitor,
    marks: Watermarks,
    checks: list[LagCheck],
    dlq_topics: tuple[str, ...],
    progress: Callable[[], object],
) -> _Poll:
    lags: dict[str, int] = {}
    done: list[int] = []
    ok = True
    for check in checks:
        try:
            committed, lag = monitor.lag(check.group, list(check.topics))
        except KafkaError:  # the broker is still coming back: not drained yet
            lags[check.name], ok = -1, False
            continue
        allowed = 0
        if check.transactional:
            allowed = sum(1 for high in marks.highs(check.topics).values() if high > 0)
        lags[check.name] = lag
        done.append(committed)
        ok = ok and lag <= allowed
    dlq = sum(marks.highs(dlq_topics).values())
    return _Poll(ok, lags, dlq, (tuple(done), dlq, progress()))


@dataclass(frozen=True, slots=True)
class Behind:
    """A partition whose committed offset is behind its end."""

    check: str
    topic: str
    partition: int
    committed: int
    high: int

    def __str__(self) -> str:
        where = f"{self.topic}[{self.partition}]"
        return f"{self.check}: {where} committed {self.committed} of {self.high}"


def partitions_behind(settings: Settings, check: LagCheck) -> list[Behind]:
    """Every partition of the check's topics whose group lags there (beyond the
    commit-marker allowance of transactional topics)."""
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers, "log_level": 2})
    marks = Watermarks(settings)
    try:
        highs = marks.highs(check.topics)
        request = [TopicPartition(t, p) for t, p in highs]
        groups = [ConsumerGroupTopicPartitions(check.group, request)]
        result = admin.list_consumer_group_offsets(groups)[check.group].result(10)
    finally:
        marks.close()
    allowed = 1 if check.transactional else 0
    out = []
    for tp in sorted(result.topic_partitions, key=lambda t: (t.topic, t.partition)):
        high = highs[(tp.topic, tp.partition)]
        committed = max(tp.offset, 0)
        if high - committed > (allowed if high else 0):
            out.append(Behind(check.name, tp.topic, tp.partition, committed, high))
    return out


def members_with_partitions(settings: Settings, group: str) -> int:
    """Members of ``group`` holding at least one partition (0 while the group forms)."""
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers, "log_level": 2})
    try:
        desc = admin.describe_consumer_groups([group])[group].result(10)
    except Exception:  # unknown group, coordinator not ready: nobody has joined yet
        return 0
    return sum(1 for m in desc.members if m.assignment and m.assignment.topic_partitions)
