"""The mover of a delayed topic: a built-in stage whose records are all settled by one gate.

For each topic declared ``Topic(..., delayed=True)`` that a pipeline's stages consume,
``Pipeline.build`` adds one mover stage (``movers``): it reads the topic's delay tiers
(``pipeline.delays``) in its own group ``<topic>.delay``, so it runs in the workers of the
stages that consume the topic, scales with them, and moves every record once whichever groups
read the topic (fan-out holds: they all read the target when the event lands there).

It is an ordinary stage for the runner: same loop, same commit rules. Its ``DelayMove`` gate
settles every tier record before any handler (``pipeline.gates``):

1. not released yet: hold the tier partition until the head's tier due time (pause, seek back,
   resume; the loop never sleeps);
2. cancelled (its event id is in the topic's cancel topic): dropped;
3. otherwise a copy goes to the next hop (a tier, or the target once due), tied to the record's
   offset token: the tier offset is committed only after the copy is acknowledged.

Delivery is at least once: a mover that dies between the copy and the commit copies the record
again, with the same ``event-id``, which idempotent stages drop. A tier record whose headers are
not ours reaches the handler, which dead-letters it to ``<topic>.delay.dlq``: nothing is lost.

Cancellations are read from ``<topic>.delay.cancel`` (one partition, keys are event ids) with
the transport's topic log, on the loop thread: before a record's last hop the set is re-read if
older than ``CANCEL_FRESH_S``, so a cancel acknowledged that long before the due time is always
honoured; earlier hops drop a record cancelled by the last read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pipeline import delays
from pipeline.clock import Clock
from pipeline.config import Settings
from pipeline.errors import KafkaError, TopicNotFoundError
from pipeline.failures import DeadLetter, RetryPolicy
from pipeline.gates import Gate, Hold, Settled, Verdict
from pipeline.headers import EVENT_ID
from pipeline.lanes import lane_topic
from pipeline.offsets import OffsetTracker
from pipeline.ports import AdminPort, RawRecord, TopicLogPort, TopicPartition
from pipeline.ratelimit import deferral_name
from pipeline.retrytopics import Origin
from pipeline.stage import Stage, Topic

if TYPE_CHECKING:
    from pipeline.context import Context
    from pipeline.outputs import OutputWriter
    from pipeline.registry import StagePlan

log = logging.getLogger("pipeline.delays")
CANCEL_FRESH_S = 1.0
UNREADABLE_HOLD_S = 1.0  # the cancel topic cannot be read: the last hop waits, nothing is lost
MOVED = Settled("moved")
CANCELLED = Settled("cancelled")


class Cancellations:
    """Event ids cancelled for one delayed topic, read incrementally from its cancel topic (a
    tombstone, a record with no value, withdraws a cancellation)."""

    def __init__(self, topic_log: Callable[[], TopicLogPort], topic: str, clock: Clock) -> None:
        self._topic_log, self.topic, self._clock = topic_log, topic, clock
        self._ids: set[bytes] = set()
        self._next = 0
        self.read_at_ms: int | None = None  # when the last complete read started
        self._failed_at_ms: int | None = None  # when the last read failed, if it did

    def __contains__(self, event_id: bytes) -> bool:
        return event_id in self._ids

    def fresh(self, now_ms: int) -> bool:
        """Read now if the last read is older than ``CANCEL_FRESH_S``; False if it failed."""
        if self.read_at_ms is not None and now_ms - self.read_at_ms < CANCEL_FRESH_S * 1000:
            return True
        failed = self._failed_at_ms
        if failed is not None and now_ms - failed < UNREADABLE_HOLD_S * 1000:
            return False  # a read just failed (and may have taken its timeout): not per record
        try:
            self.refresh()
        except TopicNotFoundError:  # never created (creating is off): nothing can be cancelled
            self.read_at_ms = self._clock.wall_ms()
        except KafkaError as exc:
            log.warning("cannot read cancellations from %s (%s); delivery waits", self.topic, exc)
            self._failed_at_ms = self._clock.wall_ms()  # after the read: its time is not counted
            return False
        self._failed_at_ms = None
        return True

    def refresh(self) -> None:
        started = self._clock.wall_ms()
        for r in self._topic_log().read(self.topic, partition=0, start_offset=self._next):
            self._next = r.offset + 1
            if r.key is None:
                continue
            if r.value is None:
                self._ids.discard(r.key)
            else:
                self._ids.add(r.key)
        self.read_at_ms = started


class DelayMove(Gate):
    """Settles every tier record of a mover: hold until released, drop if cancelled, else copy
    to the next hop (see the module docstring)."""

    def __init__(
        self, base: str, targets: frozenset[str], tracker: OffsetTracker, writer: OutputWriter,
        clock: Clock, cancels: Cancellations | None,
    ) -> None:  # fmt: skip
        self._base, self._targets = base, targets
        self._tracker, self._writer, self._clock = tracker, writer, clock
        self._cancels = cancels

    def check(self, record: RawRecord, tp: TopicPartition, origin: Origin | None) -> Verdict:
        headers = record.headers()
        delayed = delays.read(headers, record.topic(), record.timestamp()[1])
        if delayed is None or delayed.target not in self._targets:
            return None  # not ours: the handler dead-letters it
        now = self._clock.wall_ms()
        if delayed.tier_due_ms > now:
            return Hold((delayed.tier_due_ms - now) / 1000)
        hop = delays.next_hop(self._base, delayed.target, delayed.due_ms, now, headers)
        cancels = self._cancels
        if cancels is not None:
            if hop.final and not cancels.fresh(now):
                return Hold(UNREADABLE_HOLD_S)
            event_id = next((v for k, v in headers or () if k == EVENT_ID and v), None)
            if event_id is not None and event_id in cancels:
                self._tracker.partition(tp).begin(record.offset(), 0)  # done: finished at once
                log.info("delayed event cancelled at %s[%d]@%d", tp[0], tp[1], record.offset())
                return CANCELLED
        token = self._tracker.partition(tp).begin(record.offset(), 1)
        self._writer.copy(record, hop.topic, hop.headers, tp, token)
        return MOVED


class DelayMover(Stage):
    """Base of the mover stages ``movers`` creates, one per delayed topic."""

    __abstract_stage__ = True
    base: ClassVar[str]  # the delayed topic, physical
    targets: ClassVar[frozenset[str]]
    topic_log: ClassVar[Callable[[], TopicLogPort] | None] = None
    retry = RetryPolicy(in_process_attempts=1, tiers=())

    def handle(self, event: Any, ctx: Context) -> None:
        raise DeadLetter(f"{ctx.coordinates} carries no valid delay headers")

    @classmethod
    def built_in_gates(
        cls, tracker: OffsetTracker, writer: OutputWriter, clock: Clock
    ) -> Sequence[Gate]:
        """The gates ``pipeline.parts`` adds to this stage's chain."""
        cancels = None
        if cls.topic_log is not None:
            cancels = Cancellations(cls.topic_log, delays.cancel_topic(cls.base), clock)
        return (DelayMove(cls.base, cls.targets, tracker, writer, clock, cancels),)


def mover_stage(
    topic: Topic, settings: Settings, topic_log: Callable[[], TopicLogPort] | None
) -> type[Stage]:
    """The mover of ``topic``'s delay tiers (group and name ``<topic>.delay``)."""
    attrs = {
        "consumes": tuple(Topic(t, topic.model) for t in delays.tier_topics(topic.name)),
        "group": f"{topic.name}.delay",
        "name": f"{topic.name}.delay",
        "base": settings.topic(topic.name),
        # The topic and its priority lanes (``pipeline.lanes``) share its tiers.
        "targets": frozenset(lane_topic(settings.topic(topic.name), k) for k in range(topic.lanes)),
        "topic_log": staticmethod(topic_log) if topic_log is not None else None,
        "__module__": __name__,
    }
    return type(f"DelayMover_{topic.name}", (DelayMover,), attrs)


def delayed_inputs(stages: Iterable[type[Stage]]) -> list[Topic]:
    """The ``delayed=True`` topics the stages read, each once, in order."""
    found: dict[str, Topic] = {}
    for stage in stages:
        if issubclass(stage, DelayMover):
            continue
        for t in stage.input_topics():
            if getattr(t, "delayed", False):
                found.setdefault(t.name, t)
    return list(found.values())


def movers(
    stages: Iterable[type[Stage]], settings: Settings,
    topic_log: Callable[[], TopicLogPort] | None = None,
) -> list[type[Stage]]:  # fmt: skip
    """One mover stage per delayed topic the stages read."""
    return [mover_stage(t, settings, topic_log) for t in delayed_inputs(stages)]


def ensure_cancel_topics(admin: AdminPort, plans: Sequence[StagePlan], create: bool) -> list[str]:
    """Create each mover's cancel topic with one partition (read as one log by every mover);
    where creating is off, a missing one is only reported: cancelling then fails loudly.
    Returns the ones created."""
    names = [delays.cancel_topic(p.stage.base) for p in plans if issubclass(p.stage, DelayMover)]
    if not names:
        return []
    if create:
        # Compacted: a cancellation outlives any retention, for delays up to 30 days.
        return admin.create(names, partitions=1, config={"cleanup.policy": "compact"})
    missing = [n for n in names if n not in admin.topics()]
    if missing:
        log.warning("cancel topics %s do not exist: delayed events cannot be cancelled",
                    ", ".join(missing))  # fmt: skip
    return []


def tiers_read(plan: StagePlan) -> list[tuple[str, list[str]]]:
    """(mover group, tier topics) of each delayed input of ``plan``, physical names: where
    ``pipeline status`` counts the stage's delayed events. A per-key rate limit's deferral
    topic is one of them: a busy key's deferred excess waits in its tiers."""
    declared = zip(plan.stage.input_topics(), plan.inputs, strict=False)
    delayed = [physical for topic, physical in declared if topic.delayed]
    limit = plan.stage.rate_limit
    if limit is not None and limit.keyed:
        delayed.append(deferral_name(plan.group))
    return [(f"{physical}.delay", delays.tier_topics(physical)) for physical in delayed]
