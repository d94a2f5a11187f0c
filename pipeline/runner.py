"""The consume loop of one stage in one worker.

Each step, in order:

1. resume partitions whose hold is over (retry backoff, retry-topic due time, open breaker;
   the pause / seek-back bookkeeping is ``pipeline.holds``);
2. poll a batch (one ``consume`` call, up to ``batch_size`` records);
3. for each record: hold it if it is a retry not yet due → decode → handle (``Invoker``:
   timeout, in-process attempts) → emit outputs; or route the failure (``Router``): retry
   topic, retry in place, dead letter, skip, or pause everything while the breaker is open;
4. serve delivery reports: an input *finishes* when all its outputs are acknowledged;
5. act on outputs the broker refused (``pipeline.refusals``): re-read the partition from the
   input after a growing backoff, or dead-letter the input if no retry can help; nothing is
   committed past it, and what finished after it is not redone;
6. commit the contiguous finished watermark of each partition, on an interval.

Guarantee: an offset is committed only after its handler succeeded and every output (or its
retry / dead-letter copy) was acknowledged, so a crash at any point redelivers rather than
loses (at-least-once). Order is per partition.

Rebalance callbacks run inside ``consume`` on this thread. On revoke we wait for outstanding
acknowledgements and commit what finished; on lost we commit nothing (another member owns the
partitions already).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from pipeline.breaker import CircuitBreaker, State
from pipeline.commit import OffsetCommitter, TransactionCommitter
from pipeline.context import Context
from pipeline.dedupe import Deduper, EventIds
from pipeline.errors import (
    CallAbandoned,
    KafkaError,
    PipelineError,
    TooManyHungCalls,
    TruncatedPayloadError,
    UnknownSchemaError,
)
from pipeline.holds import Holds
from pipeline.invoke import Invoker
from pipeline.offsets import OffsetTracker, Token
from pipeline.outputs import OutputWriter
from pipeline.ports import ConsumerPort, ProducerPort, RawRecord, TopicPartition
from pipeline.refusals import ALONE_FLUSH_S, Refusals
from pipeline.registry import StagePlan
from pipeline.retrytopics import Origin, origin_of
from pipeline.routing import Router
from pipeline.serde import Codec
from pipeline.stats import StageStats
from pipeline.stop import StopEvent, seconds_since_stop

log = logging.getLogger("pipeline.runner")
MIN_HOLD_S = 0.1  # a hold of 0 s would re-fetch and re-hold in a busy loop
MIN_SHUTDOWN_STEP_S = 1.0  # flush and final commit always get a try, even past the deadline


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
        clock: Any = time.monotonic,
        store_url: str | None = None,
    ) -> None:
        self.plan = plan
        self.stats = StageStats(plan.name, plan.group)
        self.stop_event = stop or StopEvent()
        self._consumer = consumer
        self._producer = producer
        self._codec = codec
        self._stage = plan.stage()
        policy = plan.stage.retry
        self._invoke = Invoker(
            plan.name, self._stage.handle, plan.stage.is_async(), frozenset(plan.outputs),
            policy, plan.stage.timeout_s, plan.group, self.stats,
        )  # fmt: skip
        self._dedupe: Deduper | None = None  # the idempotency store, opened in run()
        self._store_url = store_url
        self._breaker: CircuitBreaker | None = None
        if plan.stage.breaker is not None:
            self._breaker = CircuitBreaker(plan.name, plan.stage.breaker, clock, self._on_breaker)
            self.stats.breaker = State.CLOSED.value
        self._batch_size = batch_size
        self._batch_timeout = batch_timeout_s
        self._commit_interval = commit_interval_s
        self._shutdown_timeout = shutdown_timeout_s
        # Blocking work inside the loop (a revoke's flush and commit, a transaction commit) gets
        # half the shutdown timeout: one in progress when a stop comes leaves shutdown the rest.
        self._in_loop_budget = shutdown_timeout_s / 2
        self._clock = clock
        self._tracker = OffsetTracker()
        self._assigned: set[TopicPartition] = set()
        self._holds = Holds(consumer, self._tracker, self._assigned, clock)
        self._committer = self._make_committer()
        self._outputs = OutputWriter(plan, codec, producer, self.stats)
        self._router = Router(
            plan, policy, self._outputs, self._tracker, self.stats, self._holds, self._breaker,
            self._committer.after_commit,
        )  # fmt: skip
        self._refusals = Refusals(
            plan.name, self._holds, self._tracker, self._router, self._assigned, self.stats,
            policy.ordered_backoff,
        )  # fmt: skip
        self._retry_topics = frozenset(plan.retry_topics)
        self._last_commit = clock()
        self._closing = False
        # Set when the stage must stop because of an error it cannot recover from in place
        # (raised from run() after the graceful shutdown, so the worker reports it: exit 1).
        self._fatal: PipelineError | None = None
        # Async handlers (or any with a timeout) share one event loop, entered once per batch.
        self._loop = None if self._invoke.sync else asyncio.new_event_loop()

    # -- lifecycle ------------------------------------------------------------------------

    def run(self) -> None:
        """Consume until ``stop_event`` is set, then shut down gracefully."""
        self._stage.setup()
        try:
            self._open_store()
            self._committer.start()
            self._producer.stop = self.stop_event  # a produce waiting for queue room gives up
            self._consumer.subscribe(self.plan.subscriptions, self)
            # A handler call still running at a stop gets half the shutdown timeout, like the
            # concurrent stages' handlers; flushing and committing get the rest.
            self._invoke.stop_event = self.stop_event
            self._invoke.stop_budget_s = self._in_loop_budget
            self.stats.running = True
            while not self.stop_event.is_set():
                self.step()
            if self._fatal is not None:
                raise self._fatal  # after the graceful shutdown below: the worker exits 1
        finally:
            try:
                self._shutdown()
            finally:
                self.stats.running = False
                self._invoke.close()
                if self._dedupe is not None:
                    self._dedupe.close()
                if self._loop is not None:
                    self._loop.close()
                self._stage.teardown()

    def _open_store(self) -> None:
        policy = self.plan.stage.idempotency
        if policy is None:
            return
        url = policy.url or self._store_url or ""
        self._dedupe = Deduper(self.plan.name, self.plan.group, policy, url, self._clock)
        self._invoke.store = self._dedupe.store
        if isinstance(self._committer, OffsetCommitter):
            self._committer.store = self._dedupe.store

    def _make_committer(self) -> OffsetCommitter | TransactionCommitter:
        if self.plan.stage.guarantee == "exactly_once":
            producer: Any = self._producer
            return TransactionCommitter(
                self._consumer, producer, self._tracker, self.stats, self._rewind_to_committed,
                self._in_loop_budget,
            )  # fmt: skip
        return OffsetCommitter(self.plan.group, self._consumer, self._tracker, self.stats)

    def step(self) -> None:
        self._resume_due_partitions()
        self._holds.new_batch()
        records = self._consumer.consume(self._batch_size, self._batch_timeout)
        if records:
            self._committer.before_batch()
            self.stats.consumed += len(records)
            ids = self._dedupe.ids_not_done(records) if self._dedupe is not None else None
            if self._invoke.sync:
                # Sync handler, no timeout: a plain loop, no coroutine per record.
                for record in records:
                    self._handle_sync(record, ids)
            else:
                assert self._loop is not None
                self._loop.run_until_complete(self._handle_async(records, ids))
        self._producer.poll(0)
        self._rewind_failed_deliveries()
        self._maybe_commit()

    def _shutdown(self, budget_s: float | None = None) -> None:
        """Stop fetching, wait for outputs in flight, commit, leave the group: all within
        ``budget_s`` (the shutdown timeout), so the worker's grace period is enough."""
        if budget_s is None:  # what is left since the stop request (a step may have blocked)
            budget_s = self._shutdown_timeout - seconds_since_stop(self.stop_event)
        try:
            self._flush_and_commit(self._assigned, budget_s)
        except (KafkaError, PipelineError) as exc:
            log.error("%s: final commit failed (%s); records will be redelivered",
                      self.plan.name, exc)  # fmt: skip
        # close() revokes the partitions: everything was flushed and committed (or tried) just
        # now, so the revoke callback must not block on a second round (shutdown deadline).
        self._closing = True
        self._consumer.close()
        log.info("%s: stopped", self.plan.name)

    def _flush_and_commit(self, partitions: set[TopicPartition], budget_s: float) -> None:
        """Wait for outputs in flight, then commit what finished: both within ``budget_s``."""
        budget = max(budget_s, MIN_SHUTDOWN_STEP_S)
        started = time.monotonic()
        left = self._producer.flush(budget)
        if left:
            log.error("%s: %d outputs unacknowledged; their inputs stay uncommitted",
                      self.plan.name, left)  # fmt: skip
        remaining = max(budget - (time.monotonic() - started), MIN_SHUTDOWN_STEP_S)
        self._committer.commit(partitions, sync=True, timeout_s=remaining)

    # -- step 3: one batch ----------------------------------------------------------------

    def _handle_sync(self, record: RawRecord, ids: EventIds | None) -> None:
        prepared = self._prepare(record, ids)
        if prepared is None:
            return
        tp, event, origin, event_id = prepared
        try:
            ctx = self._invoke.call_sync(event, record)
            payloads = self._outputs.encode(ctx) if ctx.outputs else None
        except Exception as exc:
            self._router.failed(record, tp, exc, origin)
            return
        self._succeeded(record, tp, ctx, payloads, event_id)

    async def _handle_async(self, records: Any, ids: EventIds | None) -> None:
        for record in records:
            prepared = self._prepare(record, ids)
            if prepared is None:
                continue
            tp, event, origin, event_id = prepared
            try:
                ctx = await self._invoke(event, record)
                payloads = self._outputs.encode(ctx) if ctx.outputs else None
            except CallAbandoned as exc:
                self._abandoned(exc, record)
                return  # the rest of the batch is not begun either: it is all re-read
            except Exception as exc:
                self._router.failed(record, tp, exc, origin)
                continue
            self._succeeded(record, tp, ctx, payloads, event_id)

    def _abandoned(self, exc: CallAbandoned, record: RawRecord) -> None:
        """No outcome for ``record``: it is not begun, so nothing from it on is committed."""
        where = f"{record.topic()}[{record.partition()}]@{record.offset()}"
        if isinstance(exc, TooManyHungCalls):  # its message names the stage
            log.error("%s; stopping the stage (%s and after stay uncommitted)", exc, where)
            self._fatal = exc
        else:
            log.warning("%s", exc)
        self.stop_event.set()

    def _prepare(
        self, record: RawRecord, ids: EventIds | None
    ) -> tuple[TopicPartition, Any, Origin | None, str | None] | None:
        """Everything before the handler: skip, dedupe, hold a retry not yet due, decode, ask
        the breaker. None when the record is not to be handled now (its fate is settled)."""
        if record.error() is not None:
            log.warning("%s: consume error: %s", self.plan.name, record.error())
            return None
        topic = record.topic()
        tp = (topic, record.partition())
        if tp in self._holds.skip:
            self._holds.skipped(record, tp)
            return None
        event_id = None
        if ids is not None:
            event_id = ids.get((tp, record.offset()))
            if event_id is None:  # already done: a duplicate delivery
                self._tracker.partition(tp).begin(record.offset(), 0)
                self.stats.duplicates += 1
                return None
        origin: Origin | None = None
        if topic in self._retry_topics:
            origin = origin_of(record, from_retry_topic=True)
            if self._holds.until_due(record, tp, origin):
                return None
        if (self._tracker.keeping or self._refusals.verdicts) and self._refusals.settled(
            record, tp, origin
        ):
            return None  # finished before a rewind, or its output can never be produced
        try:
            event = self._decode(record, origin)
        except Exception as exc:
            self._router.failed(record, tp, exc, origin)
            return None
        breaker = self._breaker
        if breaker is not None and not breaker.allow():
            self._holds.hold_everything(tp, record.offset(), max(breaker.remaining_s(), MIN_HOLD_S))
            return None
        return tp, event, origin, event_id

    def _succeeded(
        self,
        record: RawRecord,
        tp: TopicPartition,
        ctx: Context,
        payloads: list[bytes] | None,
        event_id: str | None,
        token: Token | None = None,
    ) -> None:
        """The handler succeeded: produce its outputs, tied to the input's offset token (begun
        now, or before the handler ran for concurrent stages)."""
        if self._breaker is not None:
            self._breaker.record_success()
        if self._router.stuck:
            self._router.succeeded(tp, record.offset())
        self.stats.processed += 1
        outstanding = len(payloads) if payloads else 0
        if token is None:
            token = self._tracker.partition(tp).begin(record.offset(), outstanding, event_id)
        else:
            token.settle(outstanding)
        if payloads:
            if self._refusals.verdicts and self._refusals.take_alone(tp, record.offset()):
                self._producer.flush(ALONE_FLUSH_S)  # nothing else in its produce batch
                self._outputs.produce(record, ctx, payloads, tp, token)
                self._producer.flush(ALONE_FLUSH_S)
            else:
                self._outputs.produce(record, ctx, payloads, tp, token)

    def _decode(self, record: RawRecord, origin: Origin | None) -> Any:
        value = record.value()
        if value is None:
            raise TruncatedPayloadError("record has no value (a tombstone?)")
        topic = origin.topic if origin is not None else record.topic()
        binding = self.plan.inputs.get(topic)
        if binding is None:
            raise UnknownSchemaError(f"retry record names {topic!r}, not an input of this stage")
        return self._codec.decode(value, binding)

    # -- holds: failed deliveries, due partitions ---------------------------------------

    def _rewind_failed_deliveries(self) -> None:
        if self._refusals.active:
            self._refusals.check()
        if self._outputs.failed and self._refusals.serve(self._outputs.take_failed()):
            # Exactly-once: the open transaction cannot commit; it is aborted and every
            # partition rewound to its committed offset (refused ones stay held meanwhile).
            self._committer.delivery_failed()

    def _resume_due_partitions(self) -> None:
        due = self._holds.due()
        if due:
            self._resume(due)

    def _resume(self, partitions: list[TopicPartition]) -> None:
        self._consumer.resume(partitions)

    def _on_breaker(self, _name: str, _old: State, new: State) -> None:
        self.stats.breaker = new.value

    # -- step 6: commit -------------------------------------------------------------------

    def _maybe_commit(self) -> None:
        now = self._clock()
        if now - self._last_commit >= self._commit_interval:
            self._last_commit = now
            self._committer.commit(self._assigned, sync=False)
            if self._dedupe is not None:
                self._dedupe.maybe_clean()

    def _rewind_to_committed(self) -> None:
        """After an aborted transaction: every partition goes back to its committed offset and
        the rest of the batch is dropped (it will be read again)."""
        try:
            self._holds.rewind_to_committed()
        except Exception as exc:  # coordinator unreachable: the restart re-reads instead
            log.error("%s: cannot read committed offsets after an abort (%s); stopping",
                      self.plan.name, exc)  # fmt: skip
            self._tracker.drop(list(self._assigned))
            self._fatal = KafkaError(f"{self.plan.name}: no rewind after an abort: {exc}")
            self.stop_event.set()

    # -- rebalance listener (called inside consume) ---------------------------------------

    def on_assign(self, partitions: list[TopicPartition]) -> None:
        self._assigned.update(partitions)
        self.stats.assigned = len(self._assigned)
        log.info("%s: assigned %s", self.plan.name, _fmt(partitions))

    def on_revoke(self, partitions: list[TopicPartition], budget_s: float | None = None) -> None:
        if self._closing:
            self._forget(partitions)
            return
        # Outputs of these partitions' records may still be in flight: wait for them, so the
        # new owner does not redo work that is actually finished. Exactly-once: the open
        # transaction holds every partition's work, so it all commits.
        eos = isinstance(self._committer, TransactionCommitter)
        try:
            self._flush_and_commit(
                self._assigned if eos else set(partitions),
                self._in_loop_budget if budget_s is None else budget_s,
            )
        except KafkaError as exc:
            log.warning("%s: commit on revoke failed (%s); records will be redelivered",
                        self.plan.name, exc)  # fmt: skip
        self._forget(partitions)
        log.info("%s: revoked %s", self.plan.name, _fmt(partitions))

    def on_lost(self, partitions: list[TopicPartition]) -> None:
        self._forget(partitions)
        self._committer.abandon()
        log.warning("%s: lost %s (not committing)", self.plan.name, _fmt(partitions))

    def _forget(self, partitions: list[TopicPartition]) -> None:
        self._assigned.difference_update(partitions)
        self._holds.forget(partitions)
        self._tracker.drop(partitions)
        self._router.forget(partitions)
        self._refusals.forget(partitions)
        self.stats.assigned = len(self._assigned)


def _fmt(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in partitions) or "nothing"
