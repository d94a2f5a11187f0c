"""The scheduler: fires every tick of a pipeline's cron schedules exactly once, cluster-wide.

Every worker of a pipeline with schedules runs one, on a thread of its own beside the stages
(it never touches their consume loops). Exactly one of them, the *owner*, fires:

- **Ownership** is the single partition of the state topic (``pipeline.schedulestate``), held
  by one member of the group of the same name. A worker killed with -9 loses it when its
  session times out (``session.timeout.ms``, 10 s by default); a worker that stops cleanly
  hands it over at once.
- **Taking over**, in this order: (1) a new transactional producer with the one stable
  ``transactional.id`` ``<group>-owner`` calls ``init_transactions``, which fences the previous
  owner (a zombie's later commits fail) and completes or aborts its open transaction;
  (2) the state topic is read ``read_committed`` to its end; (3) only then does it fire.
- **Firing**: the events of the due ticks and the new ``tick/<name>`` state records are
  written in one transaction, so a tick is recorded as handled if and only if its event is
  visible to ``read_committed`` readers. Any failure of a transaction (fenced, aborted, a
  timeout whose outcome is unknown) drops the producer and the state in memory, and the owner
  takes over again from step (1): the topic, not memory, says what was fired.

Each tick fired is told to the Pipeline's hooks (``on_schedule_fired``, after its commit; the
Prometheus subscriber counts it as ``pipeline_schedule_fired_total{schedule}``).

Time comes from the injected clock; the thread waits in ``consume`` (which serves the group's
heartbeats and rebalances) exactly until the next tick is due, or a state record (a CLI
command) arrives, and never longer than ``IDLE_WAIT_S``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline import headers as hdr
from pipeline.clock import SYSTEM, Clock
from pipeline.config import Settings
from pipeline.dlq import StoredRecord
from pipeline.errors import KafkaError, ProducerFencedError
from pipeline.hookcalls import pipeline_hook
from pipeline.hooks import Hook
from pipeline.patience import Patience, outlast
from pipeline.ports import RawHeaders, RawRecord, TopicPartition, TransactionalProducerPort
from pipeline.schedules import Due, Schedule, due, from_ms, to_ms
from pipeline.schedulestate import (
    ScheduleState,
    Trigger,
    ensure_state_topic,
    read_state,
    state_topic,
    tick_record,
)
from pipeline.serde import Binding, Codec
from pipeline.transport import Transport

__all__ = ["Fired", "Scheduler", "ensure_state_topic"]

log = logging.getLogger("pipeline.schedules")
IDLE_WAIT_S = 1.0  # longest wait in consume: how soon a stop request is seen
RETRY_S = 1.0  # after a failed take-over or transaction, before taking over again
FENCED_RETRY_S = 5.0  # after being fenced: the group is moving ownership elsewhere
# The owner learns of CLI commands from its consumer of the state topic, which it seeks to the
# end of what it read when taking over; it also re-reads the topic from where it stands this
# often. Not more often: a read opens a client, which on a loaded machine can delay a tick ~1 s.
REFRESH_S = 60.0
INIT_TIMEOUT_S = 30.0  # the longest one take-over waits for init_transactions
TRANSACTION_TIMEOUT_S = 10.0  # an open transaction of a killed owner is aborted after this
MAX_RECORDS = 500
SCHEDULE_HEADER = "schedule"
TICK_HEADER = "schedule-tick"

Output = tuple[str, bytes | None, bytes | None, RawHeaders]  # topic, key, value, headers


@dataclass(frozen=True, slots=True)
class Fired:
    """One tick fired (``trigger_id`` set for a manual ``pipeline schedules trigger``)."""

    schedule: str
    tick: datetime
    trigger_id: str | None = None


class Scheduler:
    def __init__(
        self,
        schedules: Sequence[Schedule],
        settings: Settings,
        transport: Transport,
        codec: Codec,
        bindings: dict[str, Binding[Any]],
        *,
        worker_id: str,
        clock: Clock = SYSTEM,
        hooks: Sequence[Hook] = (),
    ) -> None:
        self.schedules = {s.name: s for s in schedules}
        self.settings = settings
        self.topic = state_topic(settings)
        self.group = self.topic
        self.stop_event = threading.Event()
        self.fired: list[Fired] = []  # by this instance, oldest first (tests, logs)
        self._transport = transport
        self._codec = codec
        self._bindings = bindings
        self._clock = clock
        self._client_id = f"{self.group}-{worker_id}"
        self._consumer = transport.consumer(self.group, self._client_id)
        self._producer: TransactionalProducerPort | None = None
        self._state: ScheduleState | None = None  # None until taken over: not ready to fire
        self._owned = False
        self._subscribed = False
        self._retake_at = 0.0  # monotonic
        self._refresh_at = 0.0
        self._failing: dict[str, float] = {}  # schedule -> when its event function is retried
        self._patience = Patience(
            min(settings.transaction_retry_timeout_s, INIT_TIMEOUT_S), setting="one take-over"
        )
        self._on_fired = pipeline_hook(hooks, "on_schedule_fired")  # None: nobody listens

    @property
    def owner(self) -> bool:
        """True while this instance owns the schedules and has taken over (ready to fire)."""
        return self._owned and self._state is not None

    @property
    def state(self) -> ScheduleState | None:
        return self._state

    def idle(self) -> bool:
        """Owner, and nothing due now: every tick up to the clock's now has been handled."""
        return self.owner and self._wait_s(1.0) > 0

    def run(self) -> None:
        """Step until ``stop_event`` is set, then leave the group (handing ownership over)."""
        described = ", ".join(f"{s.name} ({s.cron}, {s.tz})" for s in self.schedules.values())
        log.info("schedules %s: state and ownership in %s", described, self.topic)
        try:
            while not self.stop_event.is_set():
                self.step(IDLE_WAIT_S)
        finally:
            self.close()

    def step(self, max_wait_s: float = 0.0) -> None:
        """Serve the group (waiting up to ``max_wait_s``, less when a tick is due sooner), take
        over if just given ownership, pick up CLI commands, and fire what is due."""
        if not self._subscribed:
            self._consumer.subscribe([self.topic], self)
            self._subscribed = True
        records = self._consumer.consume(MAX_RECORDS, self._wait_s(max_wait_s))
        if not self._owned:
            return
        if self._state is None and not self._take_over():
            return
        self._follow(records)
        if self._clock.monotonic() >= self._refresh_at:  # should the seek have failed
            self._refresh()
        self._fire_due()

    def close(self) -> None:
        self._drop_producer()
        self._consumer.close()

    # -- the group's callbacks (inside consume, on this thread) ---------------------------

    def on_assign(self, partitions: list[TopicPartition]) -> None:
        if any(t == self.topic for t, _ in partitions):
            log.info("schedules: %s owns them now; taking over", self._client_id)
            self._owned, self._state, self._retake_at = True, None, 0.0

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        if any(t == self.topic for t, _ in partitions):
            log.info("schedules: %s no longer owns them", self._client_id)
            self._owned, self._state = False, None
            self._drop_producer()

    def on_lost(self, partitions: list[TopicPartition]) -> None:
        self.on_revoke(partitions)

    # -- steps ------------------------------------------------------------------------------

    def _wait_s(self, max_wait_s: float) -> float:
        """Until the next tick (or trigger) is due, at most ``max_wait_s``. A schedule whose
        event function failed waits for its retry, not for its (past) tick: no busy loop."""
        state = self._state
        if state is None or not self._owned:
            return max_wait_s
        now, mono = self._clock.time(), self._clock.monotonic()
        soonest = max_wait_s
        for name in {t.name for t in state.triggers.values()} & self.schedules.keys():
            soonest = min(soonest, max(self._failing.get(name, 0.0) - mono, 0.0))
        for name, schedule in self.schedules.items():
            through = state.through_ms.get(name)
            if through is None:
                return 0.0  # a new schedule: its starting point is written at once
            due_in = schedule.next_tick(from_ms(through, schedule)).timestamp() - now
            soonest = min(soonest, max(due_in, self._failing.get(name, 0.0) - mono, 0.0))
        return soonest

    def _take_over(self) -> bool:
        """Fence the previous owner, then read the state to its end (see the module doc)."""
        if self._clock.monotonic() < self._retake_at:
            return False
        producer = self._transport.transactional_producer(
            self._client_id, self.group + "-owner", TRANSACTION_TIMEOUT_S
        )
        try:
            # While the broker is away (a restart) the init is retried in short attempts that
            # see a stop at once; not for longer than INIT_TIMEOUT_S at a time, so the group's
            # consumer is served between take-overs.
            started = outlast(
                "schedules: init_transactions", producer.init_transactions, self._patience,
                clock=self._clock.monotonic, stop=self.stop_event,
            )  # fmt: skip
            if not started:
                return False  # stopping: nothing to take over
            state = read_state(self._transport.topic_log(), self.topic)
        except KafkaError as exc:
            log.warning("schedules: taking over failed (%s); trying again in %.0fs", exc, RETRY_S)
            self._retake_at = self._clock.monotonic() + RETRY_S
            return False
        self._producer, self._state = producer, state
        self._refresh_at = self._clock.monotonic() + REFRESH_S
        # Follow the topic from the end of what was read, so no command falls in between.
        self._consumer.seek((self.topic, 0), state.next_offset)
        log.info("schedules: taken over by %s at %s@%d", self._client_id, self.topic,
                 state.next_offset)  # fmt: skip
        return True

    def _follow(self, records: Sequence[RawRecord]) -> None:
        """Apply the state records the consumer delivered after what the state holds (older
        ones it holds already): CLI commands, and this owner's own ticks."""
        state = self._state
        assert state is not None
        for r in records:
            if not r.error() and r.offset() >= state.next_offset:
                state.apply(StoredRecord(r.topic(), r.partition(), r.offset(), r.key(),
                                         r.value(), (), r.timestamp()[1]))  # fmt: skip

    def _refresh(self) -> None:
        assert self._state is not None
        try:
            read_state(self._transport.topic_log(), self.topic, self._state)
        except KafkaError as exc:  # commands wait for the next refresh; firing carries on
            log.warning("schedules: reading %s failed: %s", self.topic, exc)
        self._refresh_at = self._clock.monotonic() + REFRESH_S

    def _fire_due(self) -> None:
        state = self._state
        assert state is not None
        now = self._clock.time()
        outputs: list[Output] = []
        fired: list[Fired] = []
        marks: dict[str, int] = {}
        for schedule in self.schedules.values():
            self._plan_schedule(schedule, state, now, outputs, fired, marks)
        done: list[Trigger] = []
        for trigger in list(state.triggers.values()):
            if self._plan_trigger(trigger, outputs, fired):
                done.append(trigger)
        if outputs:
            self._commit(outputs, fired, marks, done)

    def _plan_schedule(
        self, schedule: Schedule, state: ScheduleState, now: float,
        outputs: list[Output], fired: list[Fired], marks: dict[str, int],
    ) -> None:  # fmt: skip
        name = schedule.name
        if self._failing.get(name, 0.0) > self._clock.monotonic():
            return
        through_ms = state.through_ms.get(name)
        if through_ms is None:  # first seen: ticks after now are its first
            marks[name] = round(now * 1000)
            outputs.append((self.topic, *tick_record(name, marks[name]), None))
            return
        plan: Due | None = due(
            schedule, from_ms(through_ms, schedule), from_ms(round(now * 1000), schedule),
            paused=state.paused.get(name, False),
        )  # fmt: skip
        if plan is None:
            return
        events: list[Output] = []
        try:
            events = [self._event(schedule, tick, None) for tick in plan.fire]
        except Exception:
            log.exception("schedule %s: its event failed; trying again in %.0fs", name, RETRY_S)
            self._failing[name] = self._clock.monotonic() + RETRY_S
            return
        marks[name] = to_ms(plan.through)
        outputs.extend(events)
        outputs.append((self.topic, *tick_record(name, marks[name]), None))
        fired.extend(Fired(name, tick) for tick in plan.fire)

    def _plan_trigger(self, trigger: Trigger, outputs: list[Output], fired: list[Fired]) -> bool:
        schedule = self.schedules.get(trigger.name)
        if schedule is None or self._failing.get(trigger.name, 0.0) > self._clock.monotonic():
            return False  # another deployment's (left for it), or retried later
        tick = from_ms(trigger.at_ms, schedule)
        try:
            event = self._event(schedule, tick, trigger.trigger_id)
        except Exception:
            log.exception("schedule %s: its event failed for trigger %s", trigger.name,
                          trigger.trigger_id)  # fmt: skip
            self._failing[trigger.name] = self._clock.monotonic() + RETRY_S
            return False
        outputs.extend([event, (self.topic, trigger.key, None, None)])
        fired.append(Fired(trigger.name, tick, trigger.trigger_id))
        return True

    def _event(self, schedule: Schedule, tick: datetime, trigger_id: str | None) -> Output:
        event = schedule.event(tick)
        topic = schedule.emit
        if not isinstance(event, topic.model):
            raise TypeError(f"event= returned {type(event).__name__}, not {topic.model.__name__}")
        physical = self.settings.topic(topic.name)
        value = self._codec.encode(event, self._bindings[schedule.name], physical)
        key = str(getattr(event, topic.key)) if topic.key else schedule.name
        seed = f"schedule/{schedule.name}/{trigger_id or to_ms(tick)}"
        event_id = (
            str(getattr(event, topic.id_field)) if topic.id_field else hdr.derived_id(seed.encode())
        )
        headers = [(hdr.EVENT_ID, event_id.encode()), (SCHEDULE_HEADER, schedule.name.encode()),
                   (TICK_HEADER, tick.isoformat().encode())]  # fmt: skip
        return physical, key.encode(), value, headers

    def _commit(
        self, outputs: list[Output], fired: list[Fired], marks: dict[str, int],
        done: list[Trigger],
    ) -> None:  # fmt: skip
        producer, state = self._producer, self._state
        assert producer is not None and state is not None
        try:
            producer.begin_transaction()
            for topic, key, value, headers in outputs:
                producer.produce(topic, value, key, headers, _ignore)  # commit reports failures
            producer.commit_transaction(TRANSACTION_TIMEOUT_S)
        except KafkaError as exc:
            self._failed(exc)
            return
        for name, through in marks.items():
            state.through_ms[name] = through
        for trigger in done:
            state.triggers.pop(trigger.key, None)
        self.fired.extend(fired)
        on_fired = self._on_fired
        for f in fired:
            log.info("schedule %s fired %s%s", f.schedule, f.tick.isoformat(),
                     f" (trigger {f.trigger_id})" if f.trigger_id else "")  # fmt: skip
            if on_fired is not None:
                on_fired(f)

    def _failed(self, exc: KafkaError) -> None:
        """Nothing in memory is trusted after a failed transaction: take over again."""
        fenced = isinstance(exc, ProducerFencedError)
        wait = FENCED_RETRY_S if fenced else RETRY_S
        log.warning("schedules: transaction failed (%s); taking over again in %.0fs", exc, wait)
        # No abort: the next take-over's init_transactions aborts whatever is still open, and
        # after a commit timed out only the broker knows whether it committed.
        self._drop_producer()
        self._state = None
        self._retake_at = self._clock.monotonic() + wait

    def _drop_producer(self) -> None:
        # No transaction is ever left open between steps; dropping the client is enough.
        self._producer = None


def _ignore(_err: Any, _msg: Any) -> None:
    pass
