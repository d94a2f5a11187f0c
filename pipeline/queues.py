"""Queue counts per stage, read from the broker: ``pipeline status`` and ``pipeline.status()``.

Everything but the live columns comes from the broker, so it works with no worker running:

- **waiting**: records of the stage's input topics past its group's committed offset (a group
  that has committed nothing starts where ``auto_offset_reset`` says): exact.
- **oldest_waiting_s**: now minus the timestamp of the record at the committed offset, the
  oldest waiting event of each partition (None when nothing waits).
- **delayed**: records in the stage's retry topics not yet committed by the group that reads
  them (``<group>.retry``; the group itself for exactly-once stages), plus the delayed events
  of its ``delayed=True`` inputs waiting in their delay tiers (``pipeline.delays``): exact.
- **dead_lettered**: records in ``<group>.dlq`` now (high minus low watermark): exact for what
  the topic holds (a purge or retention removes them), an upper bound for exactly-once stages,
  whose transaction markers take offsets too.
- **lanes**: for a stage whose inputs have priority lanes (``pipeline.lanes``), waiting per
  lane, lane 0 first (each lane is read in its own group, ``<group>.p<k>``).
- **committed**: input records the group has settled since the log's start (completed,
  retried, dead-lettered or skipped alike), while retention keeps them.

The **live** columns (``active``, ``completed``, ``failed``, ``breaker``) are what only
running workers know, from a ``pipeline.livemetrics.LiveSource`` when one is given and
answers; otherwise None ("n/a"), never a guess. A stage without a breaker shows ``"none"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pipeline import delaymover
from pipeline.clock import SYSTEM, Clock
from pipeline.config import Settings
from pipeline.livemetrics import LiveCounts, LiveSource
from pipeline.ports import BacklogPort, PartitionOffsets, TopicPartition
from pipeline.registry import StagePlan
from pipeline.stage import Stage
from pipeline.transport import Transport, kafka

DEFAULT_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    topic: str
    partition: int
    waiting: int
    oldest_waiting_s: float | None


@dataclass(frozen=True, slots=True)
class StageStatus:
    stage: str
    group: str
    waiting: int
    oldest_waiting_s: float | None
    delayed: int
    dead_lettered: int
    committed: int
    active: int | None
    completed: int | None
    failed: int | None
    breaker: str | None  # "closed", "open", "half-open"; "none" without one; None: unknown
    partitions: tuple[PartitionStatus, ...]
    missing_topics: tuple[str, ...] = ()  # declared topics the cluster does not have
    lanes: tuple[int, ...] = ()  # waiting per priority lane, lane 0 first; () without lanes


@dataclass(frozen=True, slots=True)
class PipelineStatus:
    stages: tuple[StageStatus, ...]
    taken_at: float  # wall-clock seconds
    live: str | None = None  # where the live columns came from, when they did
    live_error: str | None = None  # why they are unknown, when a source was given

    def stage(self, name: str) -> StageStatus:
        for s in self.stages:
            if s.stage == name or s.group == name:
                return s
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Backlog:
    waiting: int
    oldest_waiting_s: float | None
    committed: int
    partitions: tuple[PartitionStatus, ...]


class StatusReader:
    """Keeps one broker client for repeated reads (a health endpoint, ``--watch``, alerts);
    close it when done (or use it as a context manager)."""

    def __init__(
        self,
        settings: Settings,
        plans: Sequence[StagePlan],
        *,
        transport: Transport | None = None,
        live: LiveSource | None = None,
        clock: Clock = SYSTEM,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.plans = tuple(plans)
        self._earliest = settings.auto_offset_reset == "earliest"
        self._live, self._clock = live, clock
        self._port: BacklogPort = (transport or kafka(settings)).backlog(timeout_s)

    def __enter__(self) -> StatusReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._port.close()

    def read(self) -> PipelineStatus:
        live, live_error = self._read_live()
        stages = tuple(self._stage(plan, live) for plan in self.plans)
        where = self._live.describe() if self._live is not None and live_error is None else None
        return PipelineStatus(stages, self._clock.time(), where, live_error)

    def backlog(self, plan: StagePlan) -> Backlog:
        """Waiting events of ``plan``'s inputs and the age of the oldest (what alerts need)."""
        marks: dict[TopicPartition, PartitionOffsets] = {}
        for group, topics in plan.lane_readers:  # each priority lane in its own group
            marks.update(self._port.offsets(group, topics))
        positions = {tp: self._position(o) for tp, o in marks.items()}
        behind = {tp: pos for tp, pos in positions.items() if marks[tp].high > pos}
        stamps = self._port.timestamps(behind)
        now_ms = self._clock.wall_ms()
        partitions = tuple(
            PartitionStatus(
                tp[0],
                tp[1],
                max(0, marks[tp].high - pos),
                _age(now_ms, stamps.get(tp)) if tp in behind else None,
            )
            for tp, pos in positions.items()
        )
        ages = [p.oldest_waiting_s for p in partitions if p.oldest_waiting_s is not None]
        return Backlog(
            waiting=sum(p.waiting for p in partitions),
            oldest_waiting_s=max(ages) if ages else None,
            committed=sum(max(0, pos - marks[tp].low) for tp, pos in positions.items()),
            partitions=partitions,
        )

    def _stage(
        self, plan: StagePlan, live: dict[tuple[str, str], LiveCounts] | None
    ) -> StageStatus:
        backlog = self.backlog(plan)
        retry_group = (
            plan.group if plan.stage.guarantee == "exactly_once" else f"{plan.group}.retry"
        )
        delayed = (
            self._port.offsets(retry_group, list(plan.retry_topics)) if plan.retry_topics else {}
        )
        for group, tiers in delaymover.tiers_read(plan):  # delayed events of its inputs
            delayed = {**delayed, **self._port.offsets(group, tiers)}
        dead = self._port.offsets(None, [plan.dlq_topic])
        present = {t for t, _ in (*_tps(backlog), *delayed, *dead)}
        missing = tuple(t for t in (*plan.inputs, *plan.retry_topics, plan.dlq_topic)
                        if t not in present)  # fmt: skip
        counts = live.get((plan.name, plan.group)) if live is not None else None
        breaker = "none" if plan.stage.breaker is None else (counts.breaker if counts else None)
        if breaker is None and counts is not None:
            breaker = "closed"  # reported by workers, no move yet: a breaker starts closed
        return StageStatus(
            stage=plan.name,
            group=plan.group,
            waiting=backlog.waiting,
            oldest_waiting_s=backlog.oldest_waiting_s,
            delayed=sum(max(0, o.high - self._position(o)) for o in delayed.values()),
            dead_lettered=sum(o.high - o.low for o in dead.values()),
            committed=backlog.committed,
            active=counts.active if counts else None,
            completed=counts.completed if counts else None,
            failed=counts.failed if counts else None,
            breaker=breaker,
            partitions=backlog.partitions,
            missing_topics=missing,
            lanes=_lanes(plan, backlog),
        )

    def _position(self, o: PartitionOffsets) -> int:
        """Where the group reads next: its committed offset (not below what retention kept),
        else where a new member would start."""
        if o.committed is None:
            return o.low if self._earliest else o.high
        return min(max(o.committed, o.low), o.high)

    def _read_live(self) -> tuple[dict[tuple[str, str], LiveCounts] | None, str | None]:
        if self._live is None:
            return None, None
        try:
            return self._live.read(), None
        except OSError as exc:
            return None, str(exc)


def _lanes(plan: StagePlan, backlog: Backlog) -> tuple[int, ...]:
    if not plan.lanes:
        return ()
    lane_of = {t: k for k, (_, topics) in enumerate(plan.lane_readers) for t in topics}
    waiting = [0] * (len(plan.lanes) + 1)
    for p in backlog.partitions:
        waiting[lane_of[p.topic]] += p.waiting
    return tuple(waiting)


def _tps(backlog: Backlog) -> list[TopicPartition]:
    return [(p.topic, p.partition) for p in backlog.partitions]


def _age(now_ms: int, stamp_ms: int | None) -> float | None:
    if stamp_ms is None or stamp_ms <= 0:
        return None
    return max(0.0, (now_ms - stamp_ms) / 1000)


def status(
    stages: Iterable[type[Stage]] | str,
    settings: Settings | None = None,
    *,
    transport: Transport | None = None,
    live: LiveSource | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> PipelineStatus:
    """The queue counts of ``stages`` (classes, or a ``pipeline run`` spec such as
    ``"stages.video"``), read once from the broker; see the module docstring for each field.
    Raises ``BrokerUnavailableError`` when the cluster does not answer within ``timeout_s``."""
    from pipeline.app import load_catalog
    from pipeline.config import load_settings
    from pipeline.registry import load, plan

    settings = settings or load_settings()
    classes = load(stages) if isinstance(stages, str) else list(stages)
    plans = plan(classes, load_catalog(settings), settings)
    with StatusReader(settings, plans, transport=transport, live=live, timeout_s=timeout_s) as r:
        return r.read()
