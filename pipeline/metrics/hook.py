"""``Metrics``: the Prometheus subscriber of the stage hooks.

The hot path only adds to plain ints kept per stage (a few tens of nanoseconds an event); they
are written to the prometheus-client metrics on every tick (about once a second, busy or idle)
and when the stage stops, never per batch: with small batches that would cost more than the
counting. So a scrape sees values at most about a second old, and a
worker killed with -9 loses at most that second of counts (never a total from before: in
multiprocess mode those are in the run's directory already).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry

from pipeline.clock import SYSTEM, Clock
from pipeline.hooks import Hook, StageInfo, Trusted
from pipeline.metrics.age import OldestUnfinished, runs
from pipeline.metrics.families import BREAKER_STATES, DURATION_BUCKETS, Families
from pipeline.ports import RawRecord, TopicPartition

if TYPE_CHECKING:
    from pipeline.alerts import Alert
    from pipeline.context import Context
    from pipeline.scheduler import Fired

# Distinct error types labelled per stage; later ones are counted as "other" (bounded labels).
MAX_ERROR_TYPES = 20
OTHER = "other"


Key = tuple[Any, ...]  # a child's labels after (stage, group)
K = TypeVar("K")


class _Tally:
    """One stage's counts since the last flush, and its prometheus children.

    Per-event counts are kept in dicts keyed by the record's partition (its labels), and
    written to prebound children at a flush: the children of an assigned partition are bound
    when it is assigned (so its series exist from 0) and let go when it is revoked, after its
    last counts are written; a count for a partition not assigned (an outcome after a revoke)
    binds its child then."""

    def __init__(self, families: Families, stage: StageInfo) -> None:
        self.f, self.labels = families, (stage.name, stage.group)
        self.commits = self.commit_failures = self.aborts = 0
        self.consumed: dict[TopicPartition, int] = {}
        self.completed: dict[TopicPartition, int] = {}
        self.skipped: dict[TopicPartition, int] = {}
        self.duplicates: dict[TopicPartition, int] = {}
        self.rate_limited: dict[Key, int] = {}  # (topic,)
        self.retried: dict[Key, int] = {}  # (topic, partition, tier)
        self.produce_errors: dict[Key, int] = {}  # (topic, partition, kind)
        self.failed: dict[Key, int] = {}  # (topic, error)
        self.dead: dict[Key, int] = {}  # (topic, error)
        self.errors: dict[type, str] = {}  # error type -> its label (capped)
        self._children: dict[TopicPartition | None, dict[Key, Any]] = {None: {}}
        # Written by handler threads too (see _Timed).
        self.running: set[object] = set()  # a _Timed, or the call's Context (wrap_handler)
        self.durations: deque[float] = deque()
        self.stalled: deque[TopicPartition] = deque()  # from the stall-watch thread
        self.age = OldestUnfinished()
        self.assigned: set[TopicPartition] = set()

    def error(self, exc: Exception) -> str:
        kind = type(exc)
        label = self.errors.get(kind)
        if label is None:
            label = kind.__name__ if len(self.errors) < MAX_ERROR_TYPES else OTHER
            self.errors[kind] = label
        return label

    def bind(self, partitions: list[TopicPartition]) -> None:
        f = self.f
        for tp in partitions:
            for family in (f.consumed, f.completed, f.skipped, f.duplicates, f.stalled):
                self._child(family, tp)

    def unbind(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._children.pop(tp, None)

    def _child(self, family: Any, tp: TopicPartition | None, *extra: str) -> Any:
        children = self._children.get(tp)
        if children is None:
            children = self._children[tp] = {}
        key = (family, *extra)
        child = children.get(key)
        if child is None:
            where = () if tp is None else (tp[0], str(tp[1]))
            child = children[key] = family.labels(*self.labels, *where, *extra)
        return child

    def flush(self) -> None:
        f = self.f
        for name in ("consumed", "completed", "skipped", "duplicates"):
            self._write(getattr(self, name), getattr(f, name), lambda tp: (tp,))
        by_partition = lambda key: ((key[0], key[1]), key[2])  # noqa: E731
        self._write(self.retried, f.retried, by_partition)
        self._write(self.produce_errors, f.produce_errors, by_partition)
        self._write(self.failed, f.failed, lambda key: (None, *key))
        self._write(self.dead, f.dead_lettered, lambda key: (None, *key))
        self._write(self.rate_limited, f.rate_limited, lambda key: (None, *key))
        for name in ("commits", "aborts", "commit_failures"):
            n = getattr(self, name)
            if n:
                setattr(self, name, 0)
                self._child(getattr(f, name), None).inc(n)
        self._flush_durations()
        stalled = self.stalled
        for _ in range(len(stalled)):  # what the watch thread adds meanwhile waits
            self._child(f.stalled, stalled.popleft()).inc()

    def _write(
        self, counts: dict[Any, int], family: Any, where: Callable[[Any], tuple[Any, ...]]
    ) -> None:
        """Add ``counts`` to their children (``where``: a key's partition, then other labels)."""
        if counts:
            for key, n in counts.items():
                self._child(family, *where(key)).inc(n)
            counts.clear()

    def _flush_durations(self) -> None:
        durations = self.durations
        if durations:
            counts = [0] * (len(DURATION_BUCKETS) + 1)
            seconds = 0.0
            take = durations.popleft
            for _ in range(len(durations)):  # what handler threads add meanwhile waits
                took = take()
                counts[bisect_left(DURATION_BUCKETS, took)] += 1
                seconds += took
            child = self._child(self.f.duration, None)
            # prometheus-client has no "observe n times": add to its bucket values directly.
            for value, n in zip(child._buckets, counts, strict=True):
                if n:
                    value.inc(n)
            child._sum.inc(seconds)
        self._child(self.f.in_flight, None).set(len(self.running))

    def flush_gauges(self, now_ms: int) -> None:
        oldest = self.f.oldest_age
        for (topic, partition), age_ms in self.age.ages(now_ms).items():
            oldest.labels(*self.labels, topic, str(partition)).set(age_ms / 1000)
        self._child(self.f.assigned, None).set(len(self.assigned))


class _Timed:
    """One handler call: in flight while entered, then its duration. Lock-free (a set's add
    and discard and a deque's append are atomic), as handler threads enter them too."""

    __slots__ = ("_start", "_tally")

    def __init__(self, tally: _Tally) -> None:
        self._tally = tally

    def __enter__(self) -> None:
        self._tally.running.add(self)
        self._start = perf_counter()

    def __exit__(self, *exc: object) -> None:
        took = perf_counter() - self._start
        tally = self._tally
        tally.running.discard(self)
        tally.durations.append(took)


class Metrics(Hook, Trusted):
    """Prometheus metrics of every stage it is registered for (``Pipeline.build(hooks=[...])``
    or, with ``PIPELINE_METRICS_PORT``, by ``pipeline run``). Its methods only count, so it is
    trusted (called without a guard). ``registry`` is where the metrics live (a new one when
    None); ``pipeline.metrics.serve`` exposes it. ``clock`` tells the wall time that event
    ages are measured against (a test broker's ``FakeClock``, say)."""

    def __init__(self, registry: CollectorRegistry | None = None, clock: Clock = SYSTEM) -> None:
        self._clock = clock
        self.registry = registry if registry is not None else CollectorRegistry()
        self._families = Families.on(self.registry)
        self._tallies: dict[str, _Tally] = {}  # by stage name (unique in a pipeline)

    def _tally(self, stage: StageInfo) -> _Tally:
        tally = self._tallies.get(stage.name)
        if tally is None:
            tally = self._tallies[stage.name] = _Tally(self._families, stage)
        return tally

    def flush(self) -> None:
        """Write every stage's counts now (a test, or before a last scrape)."""
        now_ms = self._clock.wall_ms()
        for tally in list(self._tallies.values()):
            tally.flush()
            tally.flush_gauges(now_ms)

    # -- lifecycle and partitions -----------------------------------------------------------
    def on_stage_start(self, stage: StageInfo) -> None:
        if stage.has_breaker:  # a breaker starts closed: say so before its first move
            self.on_breaker_change(stage, "closed", "closed")
        self._tally(stage).flush_gauges(self._clock.wall_ms())

    def on_stage_stop(self, stage: StageInfo) -> None:
        tally = self._tally(stage)
        tally.assigned.clear()
        tally.flush()
        tally.flush_gauges(self._clock.wall_ms())

    def on_assign(self, stage: StageInfo, partitions: list[TopicPartition]) -> None:
        tally = self._tally(stage)
        tally.assigned.update(partitions)
        tally.bind(partitions)

    def on_revoke(self, stage: StageInfo, partitions: list[TopicPartition]) -> None:
        tally = self._tally(stage)
        tally.flush()  # their last counts, to their children, before letting those go
        tally.unbind(partitions)
        tally.assigned.difference_update(partitions)
        tally.age.forget(partitions)

    on_lost = on_revoke

    # -- the hot path -----------------------------------------------------------------------
    def before_batch(self, stage: StageInfo, records: Sequence[RawRecord]) -> None:
        tally = self._tallies.get(stage.name) or self._tally(stage)
        consumed, note = tally.consumed, tally.age.note
        for tp, first, last, n in runs(records):
            consumed[tp] = consumed.get(tp, 0) + n
            note(tp, first, last)

    def around_handler(self, stage: StageInfo, event: Any, ctx: Context) -> _Timed:
        return _Timed(self._tallies.get(stage.name) or self._tally(stage))

    def wrap_handler(
        self, stage: StageInfo, handler: Callable[..., Any], is_async: bool
    ) -> Callable[..., Any]:
        """What ``around_handler`` does, inlined into one wrapper (see ``pipeline.hooks.Trusted``):
        the call is in flight (keyed by its context) while it runs, then its duration is kept."""
        tally = self._tally(stage)
        running, durations = tally.running, tally.durations

        if is_async:

            async def timed_async(event: Any, ctx: Context) -> None:
                running.add(ctx)
                start = perf_counter()
                try:
                    await handler(event, ctx)
                finally:
                    durations.append(perf_counter() - start)
                    running.discard(ctx)

            return timed_async

        def timed(event: Any, ctx: Context) -> None:
            running.add(ctx)
            start = perf_counter()
            try:
                handler(event, ctx)
            finally:
                durations.append(perf_counter() - start)
                running.discard(ctx)

        return timed

    def on_completed(self, stage: StageInfo, record: RawRecord) -> None:
        completed = (self._tallies.get(stage.name) or self._tally(stage)).completed
        tp = (record.topic(), record.partition())
        completed[tp] = completed.get(tp, 0) + 1

    # -- other outcomes ---------------------------------------------------------------------
    def on_failed(
        self, stage: StageInfo, record: RawRecord, error: Exception, attempt: int, retrying: bool
    ) -> None:
        tally = self._tally(stage)
        _add(tally.failed, (record.topic(), tally.error(error)))

    def on_retrying(
        self, stage: StageInfo, record: RawRecord, error: Exception, attempt: int,
        tier: int | None,
    ) -> None:  # fmt: skip
        label = "in_place" if tier is None else str(tier)
        _add(self._tally(stage).retried, (record.topic(), record.partition(), label))

    def on_dead_lettered(self, stage: StageInfo, record: RawRecord, error: Exception) -> None:
        tally = self._tally(stage)
        _add(tally.dead, (record.topic(), tally.error(error)))

    def on_skipped(self, stage: StageInfo, record: RawRecord, error: Exception) -> None:
        _add(self._tally(stage).skipped, (record.topic(), record.partition()))

    def on_duplicate(self, stage: StageInfo, record: RawRecord) -> None:
        _add(self._tally(stage).duplicates, (record.topic(), record.partition()))

    def on_stalled(self, stage: StageInfo, record: RawRecord, running_s: float) -> None:
        tally = self._tallies.get(stage.name) or self._tally(stage)
        tally.stalled.append((record.topic(), record.partition()))

    def on_delivery_stall(
        self, stage: StageInfo, tp: TopicPartition, offset: int, error: Exception, attempt: int
    ) -> None:
        _add(self._tally(stage).produce_errors, (*tp, "retriable"))

    def on_undeliverable(
        self, stage: StageInfo, tp: TopicPartition, offset: int, error: Exception
    ) -> None:
        _add(self._tally(stage).produce_errors, (*tp, "permanent"))

    def on_rate_limited(
        self, stage: StageInfo, tp: TopicPartition, offset: int, delay_s: float
    ) -> None:
        _add(self._tally(stage).rate_limited, (tp[0],))

    # -- commits, breaker, time -------------------------------------------------------------
    def on_commit(self, stage: StageInfo, offsets: dict[TopicPartition, int]) -> None:
        tally = self._tally(stage)
        tally.commits += 1
        tally.age.committed(offsets)

    def on_commit_failed(self, stage: StageInfo, partitions: list[TopicPartition]) -> None:
        self._tally(stage).commit_failures += 1

    def on_abort(self, stage: StageInfo) -> None:
        self._tally(stage).aborts += 1

    def on_breaker_change(self, stage: StageInfo, old: str, new: str) -> None:
        breaker = self._families.breaker
        for state in BREAKER_STATES:
            breaker.labels(stage.name, stage.group, state).set(1 if state == new else 0)

    def on_hung_change(self, stage: StageInfo, hung: int) -> None:
        self._families.hung.labels(stage.name, stage.group).set(hung)

    def on_tick(self, stage: StageInfo, now: float) -> None:
        tally = self._tally(stage)
        tally.flush()
        tally.flush_gauges(self._clock.wall_ms())

    # -- alerts (rare: written at once) -----------------------------------------------------
    def on_alert(self, stage: StageInfo, alert: Alert) -> None:
        f = self._families
        f.alerts.labels(stage.name, stage.group, alert.kind).inc()
        f.alert_firing.labels(stage.name, stage.group, alert.kind).set(1)

    def on_resolved(self, stage: StageInfo, alert: Alert) -> None:
        self._families.alert_firing.labels(stage.name, stage.group, alert.kind).set(0)

    # -- schedules (rare, on the scheduler's thread: written at once) -------------------------
    def on_schedule_fired(self, fired: Fired) -> None:
        self._families.schedule_fired.labels(fired.schedule).inc()


def _add(counts: dict[K, int], key: K) -> None:
    counts[key] = counts.get(key, 0) + 1
