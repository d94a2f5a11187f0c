"""The consume loop of one stage in one worker: the whole data path, as named steps.

Each ``step``, in order:

1. resume due partitions: holds whose time is up (retry backoff, retry-topic due time, open
   breaker, refused output; the pause / seek-back bookkeeping is ``pipeline.holds``);
2. fetch: one ``consume`` call, for as many records as the executor has room for (none while
   the breaker's probe is in flight: every other record would only be held);
3. begin the batch: the gates see it (a deduplicating stage asks its store once), an
   exactly-once stage opens its transaction;
4. execute: for each record, the gates (``pipeline.gates``: pass, hold its partition, or
   settle it) → its offset token is begun → decode → the handler, called by the executor
   (``pipeline.execute``: inline, or ``pipeline.keyed`` for ``concurrency`` > 1);
5. route outcomes: every begun record's outcome is decided in ``settle``, success and failure
   alike: outputs produced tied to its token, or the failure routed (``Router``: retry topic,
   retry in place, dead letter, skip, or a hold of everything while the breaker is open);
6. serve delivery reports (an input *finishes* when all its outputs are acknowledged) and
   refused outputs (``pipeline.refusals``: re-read after a backoff, or dead-letter the input);
7. on their intervals: commit the contiguous finished watermark of each partition, and tick;
   and every step, the step's successes counted to the hooks that only count them.

Hooks (``pipeline.hooks``) hear every step, resolved once in the constructor: a hook point nobody
listens to is ``None`` and costs one attribute test. ``StageStats`` is such a subscriber.

Guarantee: an offset is committed only after its handler succeeded and every output (or its
retry / dead-letter copy) was acknowledged, so a crash at any point redelivers rather than
loses (at-least-once). Order is per partition (per key with ``concurrency`` > 1).

Rebalance callbacks run inside ``consume`` on this thread. On revoke we settle the handlers in
flight, wait for outstanding acknowledgements and commit what finished; on lost we cancel the
handlers and commit nothing (another member owns the partitions already).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from pipeline import parts
from pipeline.clock import SYSTEM, Clock
from pipeline.commit import TransactionCommitter
from pipeline.context import Context
from pipeline.dedupe import Deduper
from pipeline.errors import CallAbandoned, KafkaError, PipelineError, TooManyHungCalls
from pipeline.execute import Admitted
from pipeline.hookcalls import Hooks
from pipeline.hooks import Hook, StageInfo
from pipeline.offsets import Token
from pipeline.ports import ConsumerPort, ProducerPort, RawRecord, TopicPartition, close_port
from pipeline.ratelimit import PartitionCounts
from pipeline.refusals import ALONE_FLUSH_S
from pipeline.registry import StagePlan
from pipeline.retrytopics import Origin, origin_of
from pipeline.serde import Codec
from pipeline.stats import StageStats, StatsHook
from pipeline.stop import StopEvent, seconds_since_stop

log = logging.getLogger("pipeline.runner")
MIN_SHUTDOWN_STEP_S = 1.0  # flush and final commit always get a try, even past the deadline
TICK_INTERVAL_S = 1.0  # how often ``on_tick`` hooks are called


class StageRunner:
    def __init__(
        self,
        plan: StagePlan,
        consumer: ConsumerPort,
        producer: ProducerPort,
        codec: Codec,
        *,
        batch_size: int = 500,
        batch_timeout_s: float = 0.1,
        commit_interval_s: float = 1.0,
        shutdown_timeout_s: float = 30.0,
        stop: threading.Event | None = None,
        clock: Clock = SYSTEM,
        store_url: str | None = None,
        hooks: Sequence[Hook] = (),
        worker_id: str = "",
        poll_limit_s: float | None = None,
        partition_counts: PartitionCounts | None = None,
        transaction_retry_timeout_s: float | None = None,
    ) -> None:
        self.plan = plan
        breaker = "closed" if plan.stage.breaker else "-"
        self.stats = StageStats(plan.name, plan.group, breaker=breaker)
        # The stats first, then the Pipeline's hooks, then the stage's own.
        subscribers = (StatsHook(self.stats), *hooks, *plan.stage.hooks)
        info = StageInfo(plan.name, plan.group, worker_id, has_breaker=bool(plan.stage.breaker))
        self.hooks = h = Hooks(info, subscribers)
        self.stop_event = stop or StopEvent()
        self._consumer, self._producer, self._clock = consumer, producer, clock
        self._decode = parts.decoder(plan, codec)
        self._stage = plan.stage()
        self._invoke = parts.invoker(plan, self._stage, h)
        self._dedupe: Deduper | None = None  # the idempotency store, opened in run()
        self._store_url = store_url
        self._commit_interval, self._shutdown_timeout = commit_interval_s, shutdown_timeout_s
        # Blocking work inside the loop (a revoke's flush and commit, a transaction commit) gets
        # half the shutdown timeout: one in progress when a stop comes leaves shutdown the rest.
        self._in_loop_budget = shutdown_timeout_s / 2
        self._parts = p = parts.build(
            plan, consumer, producer, codec, h, clock,
            rewind_all=self._rewind_to_committed, in_loop_budget_s=self._in_loop_budget,
            partition_counts=partition_counts,
            transaction_retry_timeout_s=transaction_retry_timeout_s,
        )  # fmt: skip
        self._tracker, self._assigned, self._holds = p.tracker, p.assigned, p.holds
        self._breaker, self._committer, self._outputs = p.breaker, p.committer, p.outputs
        self._router, self._refusals = p.router, p.refusals
        self._batch_gates = p.chain.batch_gates
        # Bound once, not per record; input records skip the gates about retry-topic records,
        # and every record skips the gates whose watched state is all empty (``calm``).
        self._retry_checks = tuple(gate.check for gate in p.chain.gates)
        self._input_checks = tuple(gate.check for gate in p.chain.input_gates)
        self._calm_retry_checks = tuple(gate.check for gate in p.chain.calm_gates)
        self._calm_input_checks = tuple(gate.check for gate in p.chain.calm_input_gates)
        self._watched = p.chain.watched
        self._offsets_of = p.tracker.partitions.get
        self._stuck, self._verdicts = p.router.stuck, p.refusals.verdicts  # read, never replaced
        self._dedupe_gate, self._probe = p.chain.dedupe, p.chain.breaker
        self._retry_topics = frozenset(plan.retry_topics)
        self._executor = parts.executor(self, p, self._invoke, batch_size, batch_timeout_s)
        self._stalls = parts.stall_watch(plan, self._executor, h, clock, poll_limit_s)
        self._last_commit = self._last_tick = clock.monotonic()
        self._on_succeeded, self._on_completed = h.on_succeeded, h.on_completed
        # Successes (records, outputs) of this step, for the hooks that only count them.
        self._count_succeeded = h.count_succeeded
        self._succeeded_records = self._succeeded_outputs = 0
        self._on_tick = h.on_tick
        self._closing = False
        # Set when the stage must stop because of an error it cannot recover from in place
        # (raised from run() after the graceful shutdown, so the worker reports it: exit 1).
        self._fatal: PipelineError | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def run(self) -> None:
        """Consume until ``stop_event`` is set, then shut down gracefully."""
        self._stage.setup()
        try:
            self._open_store()
            if not self._committer.start(self.stop_event):
                return  # told to stop while waiting for the broker: nothing began
            self._producer.stop = self.stop_event  # a produce waiting for queue room gives up
            self._consumer.subscribe(self.plan.subscriptions, self)
            self._stalls.start()
            # A call still running at a stop gets half the shutdown timeout; flush+commit the rest.
            self._invoke.stop_event = self.stop_event
            self._invoke.stop_budget_s = self._in_loop_budget
            if self.hooks.on_stage_start is not None:
                self.hooks.on_stage_start()
            while not self.stop_event.is_set():
                self.step()
            if self._fatal is not None:
                raise self._fatal  # after the graceful shutdown below: the worker exits 1
        finally:
            try:
                self._shutdown()
            finally:
                self._stalls.stop()
                self._invoke.close()
                if self._dedupe is not None:
                    self._dedupe.close()
                self._executor.close()
                try:
                    self._stage.teardown()
                finally:
                    if self.hooks.on_stage_stop is not None:
                        self.hooks.on_stage_stop()

    def _open_store(self) -> None:  # it connects: at run, not at construction
        self._dedupe = parts.open_store(self.plan, self._store_url, self._invoke, self._clock,
                                        self._dedupe_gate, self._committer)  # fmt: skip

    def _shutdown(self, budget_s: float | None = None) -> None:
        """Settle handlers in flight (half the time), wait for outputs in flight, commit, leave
        the group: all within ``budget_s`` (the shutdown timeout), so the worker's grace period
        is enough."""
        if budget_s is None:  # what is left since the stop request (a step may have blocked)
            budget_s = self._shutdown_timeout - seconds_since_stop(self.stop_event)
        try:
            budget_s -= self._executor.drain(budget_s / 2)
        finally:
            started = self._clock.monotonic()
            try:
                self._flush_and_commit(self._assigned, budget_s)
            except (KafkaError, PipelineError) as exc:
                log.error("%s: final commit failed (%s); %s",
                          self.plan.name, exc, self._committer.uncommitted_fate())  # fmt: skip
            # close() revokes the partitions: everything was flushed and committed (or tried)
            # just now, so the revoke callback must not block on a second round. It waits on
            # the broker (LeaveGroup, commits in flight): what is left of the budget, at least
            # one short try.
            self._closing = True
            spent = self._clock.monotonic() - started
            close_port(self._consumer, max(budget_s - spent, MIN_SHUTDOWN_STEP_S))
            self._hand_over_counts()  # the drain's successes
            log.info("%s: stopped", self.plan.name)

    def _flush_and_commit(self, partitions: set[TopicPartition], budget_s: float) -> None:
        """Wait for outputs in flight, then commit what finished: both within ``budget_s``."""
        budget = max(budget_s, MIN_SHUTDOWN_STEP_S)
        started = self._clock.monotonic()
        left = self._producer.flush(budget)
        if left:
            log.error("%s: %d outputs unacknowledged; their inputs stay uncommitted",
                      self.plan.name, left)  # fmt: skip
        remaining = max(budget - (self._clock.monotonic() - started), MIN_SHUTDOWN_STEP_S)
        self._committer.commit(partitions, sync=True, timeout_s=remaining)

    # -- the loop -------------------------------------------------------------------------

    def step(self) -> None:
        self._resume_due_partitions()  # 1. holds whose time is up: read those partitions again
        records = self._fetch()  # 2. one consume call, never more than the executor can take
        if records:
            self._begin_batch(records)  # 3. batch-wide gate work (one store query); transaction
            self._executor.execute(records)  # 4. gates → token → decode → handler, per record
            if self.hooks.after_batch is not None:
                self.hooks.after_batch(records)
        self._executor.complete(self._room())  # 5. outcomes of handlers that completed meanwhile
        self._serve_deliveries()  # 6. acknowledged outputs finish inputs; refused ones rewind
        self._on_intervals()  # 7. commit the finished watermark; tick the hooks

    # 1. resume due partitions
    def _resume_due_partitions(self) -> None:
        due = self._holds.due()
        if due:
            self._executor.resume(due)

    # 2. fetch
    def _room(self) -> int:
        probe = self._probe
        return 0 if probe is not None and probe.busy else self._executor.room()

    def _fetch(self) -> Sequence[RawRecord]:
        self._holds.new_batch()  # a hold of the last batch does not hand this one's back
        return self._executor.fetch(self._room())

    # 3. begin the batch
    def _begin_batch(self, records: Sequence[RawRecord]) -> None:
        self._committer.before_batch()
        if self.hooks.before_batch is not None:
            self.hooks.before_batch(records)
        for gate in self._batch_gates:
            gate.begin_batch(records)

    # 4. execute: what the executor asks before each handler call
    def admit(self, record: RawRecord) -> Admitted | None:
        """Gates → begin the offset token → decode. None when the record is not handled now:
        held, settled by a gate, or its decode failure routed."""
        if record.error() is not None:
            log.warning("%s: consume error: %s", self.plan.name, record.error())
            return None
        topic = record.topic()
        tp = (topic, record.partition())
        watching = any(self._watched)  # else the gates that watch some state pass it anyway
        if topic in self._retry_topics:  # decoded with the binding of its origin topic
            retried = origin_of(record, from_retry_topic=True)
            origin: Origin | None = retried
            source = retried.topic
            checks = self._retry_checks if watching else self._calm_retry_checks
        else:
            origin, source = None, topic
            checks = self._input_checks if watching else self._calm_input_checks
        offset = record.offset()
        for check in checks:
            verdict = check(record, tp, origin)
            if verdict is not None:  # held (its partition paused and rewound) or settled
                verdict.act(self._holds, tp, offset)
                return None
        part = self._offsets_of(tp)
        if part is None:  # its first record
            part = self._tracker.partition(tp)
        dedupe = self._dedupe_gate  # the id it let pass is recorded as done once committed
        token = part.begin(offset, 1, None if dedupe is None else dedupe.event_id)
        try:
            event = self._decode(record, source)
        except Exception as exc:
            self.settle(record, tp, origin, token, None, exc)
            return None
        return tp, event, origin, token

    # 5. route outcomes
    def settle(
        self, record: RawRecord, tp: TopicPartition, origin: Origin | None, token: Token,
        ctx: Context | None, error: Exception | None,
    ) -> None:  # fmt: skip
        """The one place a begun record's outcome is decided: its outputs produced, tied to its
        token, or its failure routed. A token cancelled meanwhile (its partition rewound,
        revoked or lost) drops the result: the record will be read again."""
        if token.cancelled:
            if self._probe is not None:
                self._probe.dropped(tp, token)
            return
        if ctx is not None:  # the handler succeeded
            try:
                payloads = self._outputs.encode(ctx) if ctx.outputs else None
            except Exception as exc:
                error = exc
            else:
                self._succeeded(record, tp, token, ctx, payloads)
                return
        assert error is not None
        # Only a success makes the event done for the idempotency store: a retry copy or a
        # replayed dead letter of it must still be handled.
        token.event_id = None
        self._router.failed(record, tp, error, origin, token)
        if self._probe is not None:
            self._probe.ended(tp, token)

    def _succeeded(
        self, record: RawRecord, tp: TopicPartition, token: Token, ctx: Context,
        payloads: list[bytes] | None,
    ) -> None:  # fmt: skip
        if self._probe is not None:
            self._probe.succeeded(tp, token)
        if self._stuck:  # some partition retries a record in place
            self._router.succeeded(tp, token.offset)
        if self._on_succeeded is not None:
            self._on_succeeded(record, ctx)
        self._succeeded_records += 1
        if not payloads:
            token.outstanding -= 1  # token.settle(0), inline
            if self._on_completed is not None:
                self._on_completed(record)
            return
        # The handler's unit becomes its outputs' acknowledgements (token.settle, inline).
        emitted = len(payloads)
        token.outstanding += emitted - 1
        self._succeeded_outputs += emitted
        if self._verdicts and self._refusals.take_alone(tp, token.offset):
            self._producer.flush(ALONE_FLUSH_S)  # nothing else in its produce batch
            self._outputs.produce(record, ctx, payloads, tp, token)
            self._producer.flush(ALONE_FLUSH_S)
        else:
            self._outputs.produce(record, ctx, payloads, tp, token)

    def abandoned(self, exc: CallAbandoned, record: RawRecord, token: Token) -> None:
        """No outcome for ``record``: its token is rewound, so nothing from it on is committed
        (an exactly-once commit included)."""
        tp = (record.topic(), record.partition())
        self._tracker.rewind(tp, record.offset())
        if self._probe is not None:
            self._probe.dropped(tp, token)
        where = f"{record.topic()}[{record.partition()}]@{record.offset()}"
        if isinstance(exc, TooManyHungCalls):  # its message names the stage
            log.error("%s; stopping the stage (%s and after stay uncommitted)", exc, where)
            self._fatal = exc
        else:
            log.warning("%s", exc)
        self.stop_event.set()

    # 6. serve delivery reports and refused outputs
    def _serve_deliveries(self) -> None:
        self._producer.poll(0)
        if self._refusals.active:
            self._refusals.check()
        if self._outputs.failed and self._refusals.serve(self._outputs.take_failed()):
            # Exactly-once: the open transaction cannot commit; it is aborted and every
            # partition rewound to its committed offset (refused ones stay held meanwhile).
            self._committer.delivery_failed()

    # 7. commit, tick, count
    def _on_intervals(self) -> None:
        self._hand_over_counts()
        now = self._clock.monotonic()
        if now - self._last_commit >= self._commit_interval or self._committer.overdue:
            self._last_commit = now
            self._committer.commit(self._assigned, sync=False)
            if self._dedupe is not None:
                self._dedupe.maybe_clean()
        if self._on_tick is not None and now - self._last_tick >= TICK_INTERVAL_S:
            self._last_tick = now
            self._on_tick(now)

    def _hand_over_counts(self) -> None:
        """The successes since the last call, to the hooks that count them (``StatsHook``)."""
        if self._succeeded_records and self._count_succeeded is not None:
            self._count_succeeded(self._succeeded_records, self._succeeded_outputs)
        self._succeeded_records = self._succeeded_outputs = 0

    def hold_deadlines(self) -> list[float]:
        """When each held partition resumes (monotonic): a test harness's fake clock jumps."""
        return self._holds.pauses.deadlines()

    def _rewind_to_committed(self) -> None:
        """After an aborted transaction: every partition goes back to its committed offset and
        the rest of the batch is dropped (it will be read again). One whose offset cannot be
        read now (its coordinator is away) is held by the consumer until it can be."""
        try:
            self._holds.rewind_to_committed()
        except Exception as exc:  # not even held (a client error): the restart re-reads instead
            log.error("%s: cannot rewind after an abort (%s); stopping", self.plan.name, exc)
            self._tracker.drop(list(self._assigned))
            self._fatal = KafkaError(f"{self.plan.name}: no rewind after an abort: {exc}")
            self.stop_event.set()

    # -- rebalance listener (called inside consume) ---------------------------------------

    def on_assign(self, partitions: list[TopicPartition]) -> None:
        self._parts.assign(partitions)
        if self.hooks.on_assign is not None:
            self.hooks.on_assign(partitions)
        log.info("%s: assigned %s", self.plan.name, _fmt(partitions))

    def on_revoke(self, partitions: list[TopicPartition], budget_s: float | None = None) -> None:
        if self._closing:
            self._forget(partitions, self.hooks.on_revoke)
            return
        budget = self._in_loop_budget if budget_s is None else budget_s
        # Handlers in flight settle first (half the budget); then their outputs, and those of
        # earlier records, are waited for, so the new owner does not redo finished work.
        # Exactly-once: the open transaction holds every partition's work, so it all commits.
        budget -= self._executor.revoking(set(partitions), budget / 2)
        eos = isinstance(self._committer, TransactionCommitter)
        try:
            self._flush_and_commit(self._assigned if eos else set(partitions), budget)
        except KafkaError as exc:
            log.warning("%s: commit on revoke failed (%s); %s",
                        self.plan.name, exc, self._committer.uncommitted_fate())  # fmt: skip
        self._forget(partitions, self.hooks.on_revoke)
        log.info("%s: revoked %s", self.plan.name, _fmt(partitions))

    def on_lost(self, partitions: list[TopicPartition]) -> None:
        self._executor.lost(set(partitions))
        self._forget(partitions, None)
        self._committer.abandon()  # after forgetting: an abort's rewind skips lost partitions
        if self.hooks.on_lost is not None:
            self.hooks.on_lost(partitions)
        log.warning("%s: lost %s (not committing)", self.plan.name, _fmt(partitions))

    def _forget(self, partitions: list[TopicPartition], tell: Callable[..., None] | None) -> None:
        self._assigned.difference_update(partitions)
        self._executor.forget(partitions)
        self._parts.forget(partitions)
        if tell is not None:  # the on_revoke / on_lost hooks
            tell(partitions)


def _fmt(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in partitions) or "nothing"
