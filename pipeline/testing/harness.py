"""``TestPipeline``: a user's stages, run by the real runner, in a unit test.

::

    def test_a_ping_is_answered() -> None:
        with TestPipeline([Echo]) as t:
            t.publish(PINGS, Ping(ping_id="p1", n=1), key="k")
            t.run_until_idle()
            assert [p.ping_id for p in t.outputs(PONGS)] == ["p1"]

By default the stages run on a fresh ``MemoryBroker`` with a ``FakeClock`` (in the spirit of
dramatiq's ``StubBroker`` and FastStream's ``TestKafkaBroker``): no Kafka, no sleeping, well
under a second. Any other transport works too (``transport=KafkaTransport(settings)``): the
contract suite runs the same scenarios on both.

The runners are the ones ``Pipeline.runner`` builds, stepped in lockstep with the test
(``pipeline.testing.lockstep``): a handler runs on its stage's thread, one step at a time,
while the test waits. ``run_until_idle`` steps every stage until each group has
committed everything in its topics and no producer waits for a delivery report; when a round
changes nothing it lets time pass on the broker's ``FakeClock`` so that what waits for a
deadline comes due (straight to a held partition's deadline when that is far off: a delayed
event's tier). ``publish(..., delay=...)`` and ``cancel`` delay events on that clock. It is
bounded by ``timeout_s`` on that clock and by ``max_steps``.

``fail_fast=True`` re-raises, after the step in which it happened, the first error a handler
raised other than its requests (``DeadLetter``, ``Skip``, ``RetryAfter``): the test fails with
the handler's own traceback, not with a dead letter to decode. Every such error is kept in
``errors`` either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from pipeline import delays
from pipeline import headers as hdr
from pipeline.app import Pipeline
from pipeline.config import Settings, load_settings
from pipeline.dlq import Failure, StoredRecord
from pipeline.errors import DeliveryError
from pipeline.events import Event
from pipeline.failures import REQUESTS
from pipeline.hooks import Hook, StageInfo
from pipeline.lanes import lane_topic
from pipeline.registry import StagePlan
from pipeline.schedules import Schedule
from pipeline.stage import Stage, Topic
from pipeline.stats import StageStats
from pipeline.testing.broker import MemoryBroker
from pipeline.testing.clock import Clock, FakeClock, SystemClock
from pipeline.testing.consumer import MemoryConsumer
from pipeline.testing.lockstep import HarnessError, Lockstep
from pipeline.testing.recording import RecordingTransport
from pipeline.testing.transport import MemoryTransport
from pipeline.transport import Transport

log = logging.getLogger("pipeline.testing")
# Every step commits: idle means committed, and waiting for the commit interval on the FakeClock
# would only add quiet rounds.
COMMIT_EVERY_STEP_S = 0.0
FIRST_TICK_S = 0.05  # the first quiet round lets this much time pass; each next one doubles
MAX_TICK_S = 5.0


@dataclass(frozen=True, slots=True)
class DeadLettered:
    """A dead letter: the original bytes as stored, and what its ``dlq-*`` headers say."""

    record: StoredRecord
    failure: Failure

    @property
    def headers(self) -> dict[str, bytes | None]:
        return dict(self.record.headers)


class TestPipeline:
    __test__ = False  # not a pytest test class, whatever its name

    def __init__(
        self,
        stages: Iterable[type[Stage]],
        settings: Settings | None = None,
        *,
        transport: Transport | None = None,
        fail_fast: bool = False,
        step_timeout_s: float = 30.0,
        hooks: Sequence[Hook] = (),
        schedules: Sequence[Schedule] = (),
    ) -> None:
        """``settings``: ``load_settings()`` (the project's config) if None. ``transport``: a
        ``MemoryTransport`` on a new ``MemoryBroker(FakeClock())`` if None. ``hooks``: the
        Pipeline's hooks (``pipeline.hooks``), as in ``Pipeline.build``. ``schedules``: cron
        schedules, fired on the broker's clock by a scheduler stepped with the stages."""
        settings = settings or load_settings()
        if transport is None:
            settings = settings.model_copy(update={"commit_interval_s": COMMIT_EVERY_STEP_S})
            transport = MemoryTransport(MemoryBroker(FakeClock()), settings)
        self.settings = settings
        self.fail_fast = fail_fast
        self.errors: list[BaseException] = []
        self._step_timeout = step_timeout_s
        self._originals = list(stages)
        self.transport = RecordingTransport(transport)
        self.pipeline = Pipeline.build(
            settings,
            self._originals,
            self.transport,
            (_NoteErrors(self.errors), *hooks),
            schedules,
        )
        self.pipeline.ensure_topics()
        self._stepped: dict[str, Lockstep] = {}  # by group
        self._abandoned: list[Lockstep] = []
        self._workers = 0
        self._producer = self.transport.producer("test-publisher")
        self._raised = 0
        for plan in self.pipeline.plans:
            self._start(plan)
        self.scheduler = self.pipeline.scheduler("test", clock=self.clock)

    # -- the broker ----------------------------------------------------------------------

    @property
    def broker(self) -> MemoryBroker:
        inner = self.transport.inner
        if not isinstance(inner, MemoryTransport):
            raise HarnessError("this TestPipeline does not run on a MemoryBroker")
        return inner.broker

    @property
    def clock(self) -> Clock:
        """The broker's clock (a ``FakeClock`` by default); the system clock off memory."""
        inner = self.transport.inner
        return inner.broker.clock if isinstance(inner, MemoryTransport) else SystemClock()

    # -- input ---------------------------------------------------------------------------

    def publish(
        self,
        topic: Topic,
        event: Event,
        *,
        key: str | bytes | None = None,
        headers: dict[str, str | bytes] | None = None,
        priority: int | str | None = None,
        delay: timedelta | float | None = None,
        deliver_at: datetime | None = None,
    ) -> StoredRecord:
        """Write ``event`` to ``topic`` as ``Publisher.publish`` does (its key field, an
        ``event-id``; the lane ``priority`` names; ``delay`` or ``deliver_at``: to its delay
        tiers, due on the broker's clock) and wait for the acknowledgement; returns the record
        as stored."""
        binding = self.pipeline.catalog.bind(topic.model)
        self.pipeline.announce(binding)
        base = self.settings.topic(topic.name)
        value = self.pipeline.codec.encode(event, binding, base)
        physical = lane_topic(base, topic.lane(priority))
        if key is None and topic.key is not None:
            key = str(getattr(event, topic.key))
        event_id = str(getattr(event, topic.id_field)) if topic.id_field else hdr.new_event_id()
        raw = [(hdr.EVENT_ID, event_id.encode())]
        raw += [(k, hdr.encode(v)) for k, v in (headers or {}).items()]
        outcome: list[tuple[Any, Any]] = []
        raw_key = key.encode() if isinstance(key, str) else key
        if delay is not None or deliver_at is not None:
            physical, raw = _deferred(topic, physical, raw, self.clock.wall_ms(), delay,
                                      deliver_at, base)  # fmt: skip
        self._producer.produce(physical, value, raw_key, raw, lambda e, m: outcome.append((e, m)))
        self._producer.flush(self._step_timeout)
        if not outcome:
            raise DeliveryError(f"no acknowledgement for {physical}")
        err, msg = outcome[0]
        if err is not None:
            raise self._producer.delivery_error(err, physical)
        # From what was sent: Kafka's delivery reports carry no headers.
        return StoredRecord(
            topic=msg.topic(), partition=msg.partition(), offset=msg.offset(), key=raw_key,
            value=value, headers=tuple(raw), timestamp_ms=msg.timestamp()[1],
        )  # fmt: skip

    def cancel(self, topic: Topic, event_id: str) -> None:
        """Withdraw a delayed event of ``topic``, as ``Publisher.cancel`` does."""
        physical = delays.cancel_topic(self.settings.topic(topic.name))
        outcome: list[Any] = []
        self._producer.produce(physical, b"cancelled", event_id.encode(), [],
                               lambda e, _m: outcome.append(e))  # fmt: skip
        self._producer.flush(self._step_timeout)
        if not outcome or outcome[0] is not None:
            raise DeliveryError(f"cancellation not stored in {physical}: {outcome}")

    # -- running -------------------------------------------------------------------------

    def step(self) -> None:
        """One step of the scheduler, if any, and of every stage's loop, in declaration order."""
        if self.scheduler is not None:
            self.scheduler.step()
        for stepped in list(self._stepped.values()):
            stepped.step()
            self._raise_handler_error()

    def run_until_idle(self, timeout_s: float = 60.0, max_steps: int = 10_000) -> None:
        """Step until every stage has committed all of its topics and no delivery report is
        outstanding. ``HarnessError`` if that takes more than ``timeout_s`` on the broker's
        clock or ``max_steps`` rounds."""
        self.run_until(self._idle, timeout_s, max_steps, "idle")

    def run_until(
        self,
        condition: Callable[[], bool],
        timeout_s: float = 60.0,
        max_steps: int = 10_000,
        what: str = "the condition",
    ) -> None:
        """Step until ``condition()`` holds after a round (bounded as ``run_until_idle``)."""
        clock = self.clock
        deadline = clock.monotonic() + timeout_s
        tick, last = FIRST_TICK_S, self._progress()
        for _ in range(max_steps):
            self.step()
            if condition():
                return
            if clock.monotonic() >= deadline:
                raise HarnessError(f"not {what} after {timeout_s:g}s: {self._describe()}")
            progress = self._progress()
            if progress != last:
                tick, last = FIRST_TICK_S, progress
            elif isinstance(clock, FakeClock):  # nothing moved: let a deadline come due
                # A hold far ahead (a delayed event's tier) is jumped to, not ticked towards.
                step = max(tick, self._next_hold_s(clock.monotonic()))
                clock.advance(min(step, max(deadline - clock.monotonic(), 0)))
                tick = min(tick * 2, MAX_TICK_S)
        raise HarnessError(f"not {what} after {max_steps} rounds: {self._describe()}")

    def crash(self, stage: type[Stage]) -> None:
        """``stage``'s worker dies without committing; a new one takes over its partitions.
        On the memory broker its consumers leave the group at once (``MemoryBroker.crash``);
        elsewhere the worker is just never stepped again, so the broker hands its partitions
        over once it misses ``max.poll.interval.ms`` (set it low in ``consumer_config``)."""
        plan = self._plan(stage)
        old = self._stepped.pop(plan.group)
        self._abandoned.append(old)
        inner = self.transport.inner
        if isinstance(inner, MemoryTransport):
            for consumer in self.transport.consumers_of(old.name):
                assert isinstance(consumer, MemoryConsumer)
                inner.broker.crash(consumer)
        self._start(plan)

    # -- what came out -------------------------------------------------------------------

    def records(self, topic: Topic | str, priority: int | str | None = None) -> list[StoredRecord]:
        """Every committed record of ``topic`` (a Topic, or a physical topic name); of a
        Topic with priorities, of the lane ``priority`` names, else of every lane, lane 0
        first."""
        if isinstance(topic, str):
            return list(self.transport.topic_log().read(topic))
        base = self.settings.topic(topic.name)
        lanes = range(topic.lanes) if priority is None else (topic.lane(priority),)
        log = self.transport.topic_log()
        return [r for lane in lanes for r in log.read(lane_topic(base, lane))]

    def outputs(self, topic: Topic, priority: int | str | None = None) -> list[Any]:
        """The events in ``topic`` (its lanes as ``records``), decoded, partition by partition
        in offset order."""
        binding = self.pipeline.catalog.bind(topic.model)
        return [
            self.pipeline.codec.decode(r.value, binding)
            for r in self.records(topic, priority)
            if r.value is not None
        ]

    def dead_letters(self, stage: type[Stage]) -> list[DeadLettered]:
        return [DeadLettered(r, Failure.of(r)) for r in self.records(self._plan(stage).dlq_topic)]

    def stats(self, stage: type[Stage]) -> StageStats:
        """The counters of ``stage``'s current worker (``pipeline.stats.StageStats``)."""
        stats: StageStats = self._stepped[self._plan(stage).group].runner.stats
        return stats

    def lag(self, stage: type[Stage]) -> tuple[int, int]:
        """(records committed, records not yet committed) of ``stage``'s group on its inputs."""
        plan = self._plan(stage)
        monitor = self.transport.lag_monitor()
        try:  # each lane's inputs in the group that reads them
            done = waiting = 0
            for group, topics in plan.lane_readers:
                d, w = monitor.lag(group, topics)
                done, waiting = done + d, waiting + w
            return done, waiting
        finally:
            monitor.close()

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop every stage gracefully (flush, commit, leave), as a worker does."""
        try:
            if self.scheduler is not None:
                self.scheduler.close()
            for stepped in [*self._stepped.values(), *self._abandoned]:
                stepped.stop(self._step_timeout)
        finally:
            self._stepped.clear()
            self._abandoned.clear()
            self.pipeline.close()

    def __enter__(self) -> TestPipeline:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except Exception:  # the test's own failure is the one to raise; this one is logged
            log.exception("closing the TestPipeline after a failure")

    # -- internals -----------------------------------------------------------------------

    def _start(self, plan: StagePlan) -> None:
        self._workers += 1
        worker = f"test-{self._workers}"
        with self.transport.owner(f"{plan.group}-{worker}"):
            # The broker's clock: holds, retry due times and the breaker follow the FakeClock.
            runner = self.pipeline.runner(plan, worker, clock=self.clock)
        self._stepped[plan.group] = Lockstep(runner, f"{plan.group}-{worker}", self._step_timeout)

    def _plan(self, stage: type[Stage]) -> StagePlan:
        for plan in self.pipeline.plans:
            if plan.stage is stage or issubclass(plan.stage, stage):
                return plan
        raise HarnessError(f"stage {stage.__qualname__} is not in this TestPipeline")

    def _raise_handler_error(self) -> None:
        if self.fail_fast and len(self.errors) > self._raised:
            first, self._raised = self.errors[self._raised], len(self.errors)
            raise first

    def _idle(self) -> bool:
        if self.transport.outstanding():
            return False
        if self.scheduler is not None and not self.scheduler.idle():
            return False
        return all(self._unfinished(group, topics) == 0 for group, topics in self._readers())

    def _readers(self) -> list[tuple[str, list[str]]]:
        """(group, topics) of every consumer the stages read with (``StagePlan.readers``)."""
        return [reader for plan in self.pipeline.plans for reader in plan.readers]

    def _unfinished(self, group: str, topics: Sequence[str]) -> int:
        inner = self.transport.inner
        if isinstance(inner, MemoryTransport):  # exact: commit markers are not counted
            return sum(inner.broker.pending(group, t) for t in topics)
        monitor = self.transport.lag_monitor()
        try:
            return monitor.lag(group, list(topics))[1]
        finally:
            monitor.close()

    def _next_hold_s(self, now: float) -> float:
        """How long until the earliest held partition of any stage resumes, when that is more
        than ``MAX_TICK_S`` away (0 otherwise: ticking gets there soon enough)."""
        ends = [e for s in self._stepped.values() for e in s.runner.hold_deadlines()]
        wait = min(ends, default=now) - now
        return wait if wait > MAX_TICK_S else 0.0

    def _progress(self) -> tuple[int, ...]:
        stats = [s.runner.stats for s in self._stepped.values()]
        fired = len(self.scheduler.fired) if self.scheduler is not None else 0
        return (fired, *(n for s in stats for n in (s.consumed, s.processed, s.dead_lettered)))

    def _describe(self) -> str:
        left = [
            f"{group} has {n} unfinished"
            for group, topics in self._readers()
            if (n := self._unfinished(group, topics))
        ]
        if self.transport.outstanding():
            left.append(f"{self.transport.outstanding()} delivery report(s) outstanding")
        return "; ".join(left) or "idle now"


def _deferred(
    topic: Topic, physical: str, raw: list[tuple[str, bytes]], now_ms: int,
    delay: timedelta | float | None, deliver_at: datetime | None, base: str,
) -> tuple[str, list[tuple[str, bytes]]]:  # fmt: skip
    """Through the tiers of the topic itself (``base``), whichever lane ``physical`` is."""
    if not topic.delayed:
        raise delays.DelayError(f"topic {topic.name!r} is not declared delayed=True")
    due = delays.due_ms(now_ms, delay, deliver_at)
    hop = delays.defer(physical, due, now_ms, raw, base=base)
    return hop.topic, hop.headers


class _NoteErrors(Hook):
    """Notes each handler call's unexpected error (not the handler's own requests: Skip,
    RetryAfter, DeadLetter), for ``fail_fast`` and ``errors``; the runner routes it as always."""

    def __init__(self, errors: list[BaseException]) -> None:
        self._errors = errors

    @contextmanager
    def around_handler(self, stage: StageInfo, event: Any, ctx: Any) -> Iterator[None]:
        try:
            yield
        except REQUESTS:
            raise
        except Exception as exc:
            self._errors.append(exc)
            raise
