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
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from pipeline.clock import SYSTEM, Clock
from pipeline.hooks import Hook, StageInfo, Trusted
from pipeline.metrics.age import OldestUnfinished
from pipeline.metrics.families import BREAKER_STATES, DURATION_BUCKETS, Families
from pipeline.ports import RawRecord, TopicPartition

if TYPE_CHECKING:
    from pipeline.context import Context

# Distinct error types labelled per stage; later ones are counted as "other" (bounded labels).
MAX_ERROR_TYPES = 20
OTHER = "other"


class _Tally:
    """One stage's counts since the last flush, and its prometheus children."""

    def __init__(self, families: Families, stage: StageInfo) -> None:
        self.f, self.labels = families, (stage.name, stage.group)
        self.consumed = self.completed = self.skipped = self.duplicates = 0
        self.commits = self.commit_failures = self.aborts = 0
        self.retriable = self.permanent = 0
        self.failed: dict[str, int] = {}
        self.dead: dict[str, int] = {}
        self.retried: dict[str, int] = {}
        self.errors: dict[type, str] = {}  # error type -> its label (capped)
        # Written by handler threads too (see _Timed).
        self.running: set[object] = set()  # a _Timed, or the call's Context (wrap_handler)
        self.durations: deque[float] = deque()
        self.stalled: deque[float] = deque()  # from the stall-watch thread
        self.age = OldestUnfinished()
        self.assigned: set[TopicPartition] = set()

    def error(self, exc: Exception) -> str:
        kind = type(exc)
        label = self.errors.get(kind)
        if label is None:
            label = kind.__name__ if len(self.errors) < MAX_ERROR_TYPES else OTHER
            self.errors[kind] = label
        return label

    def flush(self) -> None:
        f, labels = self.f, self.labels
        for name in ("consumed", "completed", "skipped", "duplicates", "commits", "aborts",
                     "commit_failures"):  # fmt: skip
            n = getattr(self, name)
            if n:
                setattr(self, name, 0)
                getattr(f, name).labels(*labels).inc(n)
        if self.retriable or self.permanent:
            for kind in ("retriable", "permanent"):
                f.produce_errors.labels(*labels, kind).inc(getattr(self, kind))
            self.retriable = self.permanent = 0
        for counts, family in ((self.failed, f.failed), (self.dead, f.dead_lettered),
                               (self.retried, f.retried)):  # fmt: skip
            if counts:
                for label, n in counts.items():
                    family.labels(*labels, label).inc(n)
                counts.clear()
        self._flush_durations()
        stalled = self.stalled
        if stalled:
            n = len(stalled)
            for _ in range(n):
                stalled.popleft()
            f.stalled.labels(*labels).inc(n)

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
            child = self.f.duration.labels(*self.labels)
            # prometheus-client has no "observe n times": add to its bucket values directly.
            for value, n in zip(child._buckets, counts, strict=True):
                if n:
                    value.inc(n)
            child._sum.inc(seconds)
        self.f.in_flight.labels(*self.labels).set(len(self.running))

    def flush_gauges(self, now_ms: int) -> None:
        oldest = self.f.oldest_age
        for (topic, partition), age_ms in self.age.ages(now_ms).items():
            oldest.labels(*self.labels, topic, str(partition)).set(age_ms / 1000)
        self.f.assigned.labels(*self.labels).set(len(self.assigned))


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
        self._tally(stage).flush_gauges(self._clock.wall_ms())

    def on_stage_stop(self, stage: StageInfo) -> None:
        tally = self._tally(stage)
        tally.assigned.clear()
        tally.flush()
        tally.flush_gauges(self._clock.wall_ms())

    def on_assign(self, stage: StageInfo, partitions: list[TopicPartition]) -> None:
        self._tally(stage).assigned.update(partitions)

    def on_revoke(self, stage: StageInfo, partitions: list[TopicPartition]) -> None:
        tally = self._tally(stage)
        tally.assigned.difference_update(partitions)
        tally.age.forget(partitions)

    on_lost = on_revoke

    # -- the hot path -----------------------------------------------------------------------
    def before_batch(self, stage: StageInfo, records: Sequence[RawRecord]) -> None:
        tally = self._tally(stage)
        tally.consumed += len(records)
        tally.age.fetched(records)

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
        (self._tallies.get(stage.name) or self._tally(stage)).completed += 1

    # -- other outcomes ---------------------------------------------------------------------
    def on_failed(
        self, stage: StageInfo, record: RawRecord, error: Exception, attempt: int, retrying: bool
    ) -> None:
        tally = self._tally(stage)
        label = tally.error(error)
        tally.failed[label] = tally.failed.get(label, 0) + 1

    def on_retrying(
        self, stage: StageInfo, record: RawRecord, error: Exception, attempt: int,
        tier: int | None,
    ) -> None:  # fmt: skip
        retried = self._tally(stage).retried
        label = "in_place" if tier is None else str(tier)
        retried[label] = retried.get(label, 0) + 1

    def on_dead_lettered(self, stage: StageInfo, record: RawRecord, error: Exception) -> None:
        tally = self._tally(stage)
        label = tally.error(error)
        tally.dead[label] = tally.dead.get(label, 0) + 1

    def on_skipped(self, stage: StageInfo, record: RawRecord, error: Exception) -> None:
        self._tally(stage).skipped += 1

    def on_duplicate(self, stage: StageInfo, record: RawRecord) -> None:
        self._tally(stage).duplicates += 1

    def on_stalled(self, stage: StageInfo, record: RawRecord, running_s: float) -> None:
        (self._tallies.get(stage.name) or self._tally(stage)).stalled.append(running_s)

    def on_delivery_stall(
        self, stage: StageInfo, tp: TopicPartition, offset: int, error: Exception, attempt: int
    ) -> None:
        self._tally(stage).retriable += 1

    def on_undeliverable(
        self, stage: StageInfo, tp: TopicPartition, offset: int, error: Exception
    ) -> None:
        self._tally(stage).permanent += 1

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
