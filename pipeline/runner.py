"""The consume loop of one stage in one worker.

Each step, in order:

1. resume partitions whose retry pause is over;
2. poll a batch (one ``consume`` call, up to ``batch_size`` records);
3. for each record: decode → handle → emit outputs, or route the failure (``failures.decide``):
   retry in place (pause + seek back) or dead-letter the original bytes;
4. serve delivery reports: an input *finishes* when all its outputs are acknowledged;
5. rewind partitions whose outputs the broker refused (nothing is committed past them);
6. commit the contiguous finished watermark of each partition, on an interval.

Guarantee: an offset is committed only after its handler succeeded and every output was
acknowledged, so a crash at any point re-delivers rather than loses (at-least-once). Order is
per partition: a failing record holds back the records behind it on its partition only.

Rebalance callbacks run inside ``consume`` on this thread. On revoke we wait for outstanding
acknowledgements and commit what finished; on lost we commit nothing (another member owns the
partitions already).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable
from typing import Any, cast

from pipeline import headers as hdr
from pipeline.backoff import PauseDeadlines
from pipeline.context import Context
from pipeline.deadletter import DeadLetterSource, headers_for
from pipeline.errors import DecodeError, KafkaError, SerializationError, TruncatedPayloadError
from pipeline.failures import FailurePolicy, Outcome, decide
from pipeline.offsets import OffsetTracker, Token
from pipeline.ports import ConsumerPort, ProducerPort, RawRecord, TopicPartition
from pipeline.registry import StagePlan
from pipeline.serde import Codec
from pipeline.stats import StageStats

log = logging.getLogger("pipeline.runner")


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
    ) -> None:
        self.plan = plan
        self.stats = StageStats(plan.name, plan.group)
        self.stop_event = stop or threading.Event()
        self._consumer = consumer
        self._producer = producer
        self._codec = codec
        self._stage = plan.stage()
        self._handler = self._stage.handle
        self._is_async = plan.stage.is_async()
        self._policy: FailurePolicy = getattr(plan.stage, "failure_policy", None) or FailurePolicy()
        self._dlq = DeadLetterSource(plan.name, plan.group, plan.dlq_topic)
        self._allowed = frozenset(plan.outputs)
        self._batch_size = batch_size
        self._batch_timeout = batch_timeout_s
        self._commit_interval = commit_interval_s
        self._shutdown_timeout = shutdown_timeout_s
        self._clock = clock
        self._tracker = OffsetTracker()
        self._pauses = PauseDeadlines(clock)
        self._attempts: dict[TopicPartition, tuple[int, int, int]] = {}  # offset, count, first ms
        self._failed_deliveries: list[tuple[TopicPartition, Token, Any]] = []
        self._skip: set[TopicPartition] = set()  # partitions to skip in the current batch
        self._assigned: set[TopicPartition] = set()
        self._last_commit = clock()
        self._loop = asyncio.new_event_loop()

    # -- lifecycle ------------------------------------------------------------------------

    def run(self) -> None:
        """Consume until ``stop_event`` is set, then shut down gracefully."""
        self._stage.setup()
        try:
            self._consumer.subscribe(list(self.plan.inputs), self)
            self.stats.running = True
            while not self.stop_event.is_set():
                self.step()
        finally:
            try:
                self._shutdown()
            finally:
                self.stats.running = False
                self._loop.close()
                self._stage.teardown()

    def step(self) -> None:
        self._resume_due_partitions()
        self._skip.clear()
        records = self._consumer.consume(self._batch_size, self._batch_timeout)
        if records:
            self._loop.run_until_complete(self._process(records))
        self._producer.poll(0)
        self._rewind_failed_deliveries()
        self._maybe_commit()

    def _shutdown(self) -> None:
        """Stop fetching, wait for outputs in flight, commit, leave the group."""
        left = self._producer.flush(self._shutdown_timeout)
        if left:
            log.error(
                "%s: %d outputs unacknowledged at shutdown; their inputs stay uncommitted",
                self.plan.name,
                left,
            )
        try:
            self._commit(sync=True)
        except KafkaError as exc:
            log.error(
                "%s: final commit failed (%s); the records will be redelivered", self.plan.name, exc
            )
        self._consumer.close()
        log.info("%s: stopped", self.plan.name)

    # -- step 3: one batch ----------------------------------------------------------------

    async def _process(self, records: Any) -> None:
        self.stats.consumed += len(records)
        for record in records:
            if record.error() is not None:
                self._on_consume_error(record)
                continue
            tp = (record.topic(), record.partition())
            if tp in self._skip:
                # Seeked back (these records come again) or revoked during this poll (they
                # belong to another member now): either way, not ours to handle.
                continue
            await self._handle(record, tp)

    async def _handle(self, record: RawRecord, tp: TopicPartition) -> None:
        offset = record.offset()
        try:
            event = self._decode(record)
            ctx = Context(self.plan.name, record, self._allowed)
            result = self._handler(event, ctx)
            if self._is_async:
                await cast(Awaitable[None], result)
            payloads = self._encode_outputs(ctx) if ctx.outputs else None
        except Exception as exc:
            self._on_failure(record, tp, exc)
            return
        if self._attempts and tp in self._attempts:
            del self._attempts[tp]
        self.stats.processed += 1
        token = self._tracker.partition(tp).begin(offset, len(payloads) if payloads else 0)
        if payloads:
            self._produce_outputs(ctx, payloads, tp, token)

    def _decode(self, record: RawRecord) -> Any:
        value = record.value()
        if value is None:
            raise TruncatedPayloadError("record has no value (a tombstone?)")
        return self._codec.decode(value, self.plan.inputs[record.topic()])

    def _encode_outputs(self, ctx: Context) -> list[bytes]:
        # Encode all before producing any: an output that cannot be encoded must not leave
        # its siblings half published.
        out = []
        for output in ctx.outputs:
            physical, binding = self.plan.outputs[output.topic.name]
            try:
                out.append(self._codec.encode(output.event, binding, physical))
            except SerializationError:
                raise
            except Exception as exc:
                raise SerializationError(
                    f"cannot encode {type(output.event).__name__}: {exc}"
                ) from exc
        return out

    def _produce_outputs(
        self, ctx: Context, payloads: list[bytes], tp: TopicPartition, token: Token
    ) -> None:
        parent_id = ctx.event_id
        propagated = [(k, v) for k, v in ctx.headers.items() if k in hdr.PROPAGATED]
        if hdr.CORRELATION_ID not in ctx.headers:
            propagated.append((hdr.CORRELATION_ID, parent_id.encode()))
        on_delivery = self._delivery_callback(tp, token)
        for index, (output, value) in enumerate(zip(ctx.outputs, payloads, strict=True)):
            event_id = hdr.derived_event_id(parent_id, self.plan.name, index)
            headers = [(hdr.EVENT_ID, event_id.encode()), *propagated, *output.headers.items()]
            physical = self.plan.outputs[output.topic.name][0]
            self._producer.produce(physical, value, output.key, headers, on_delivery)
        self.stats.outputs += len(payloads)

    def _delivery_callback(self, tp: TopicPartition, token: Token) -> Any:
        def delivered(err: Any, _msg: Any) -> None:
            if err is None:
                token.finish_one()
            elif not token.failed:
                token.failed = True
                self._failed_deliveries.append((tp, token, err))

        return delivered

    # -- failures -------------------------------------------------------------------------

    def _on_failure(self, record: RawRecord, tp: TopicPartition, exc: Exception) -> None:
        offset = record.offset()
        prev = self._attempts.get(tp)
        attempt, first_ms = (prev[1] + 1, prev[2]) if prev and prev[0] == offset else (1, _now_ms())
        outcome = decide(self._policy, exc, attempt)
        self.stats.failed += 0 if isinstance(exc, DecodeError) else 1
        if outcome is Outcome.RETRY_IN_PLACE:
            self._attempts[tp] = (offset, attempt, first_ms)
            delay = self._policy.backoff.delay(attempt)
            log.warning(
                "%s: %s[%d]@%d failed (attempt %d, %s: %s); retrying in %.2fs",
                self.plan.name,
                tp[0],
                tp[1],
                offset,
                attempt,
                type(exc).__name__,
                exc,
                delay,
            )
            self.stats.retried += 1
            self._rewind(tp, offset, delay)
        else:
            self._attempts.pop(tp, None)
            self._dead_letter(record, tp, exc, attempt, first_ms)

    def _dead_letter(
        self,
        record: RawRecord,
        tp: TopicPartition,
        exc: BaseException,
        attempts: int,
        first_ms: int,
    ) -> None:
        log.error(
            "%s: %s[%d]@%d dead-lettered to %s after %d attempt(s): %s: %s",
            self.plan.name,
            tp[0],
            tp[1],
            record.offset(),
            self._dlq.topic,
            attempts,
            type(exc).__name__,
            exc,
        )
        token = self._tracker.partition(tp).begin(record.offset(), 1)
        headers = headers_for(record, self._dlq, exc, attempts, first_ms)
        self._producer.produce(
            self._dlq.topic,
            record.value(),
            record.key(),
            headers,
            self._delivery_callback(tp, token),
        )
        self.stats.dead_lettered += 1

    def _rewind(self, tp: TopicPartition, offset: int, delay_s: float) -> None:
        """Re-read ``tp`` from ``offset`` after ``delay_s``, without sleeping: the partition is
        paused while the consumer keeps polling (and so keeps its group membership)."""
        self._tracker.partition(tp).rewind(offset)
        self._consumer.pause([tp])
        self._consumer.seek(tp, offset)
        self._pauses.pause(tp, delay_s)
        self._skip.add(tp)

    def _rewind_failed_deliveries(self) -> None:
        if not self._failed_deliveries:
            return
        failed, self._failed_deliveries = self._failed_deliveries, []
        for tp, token, err in failed:
            if token.cancelled or tp not in self._assigned:
                continue
            log.error(
                "%s: output of %s[%d]@%d not delivered (%s); re-reading from there",
                self.plan.name,
                tp[0],
                tp[1],
                token.offset,
                err,
            )
            self.stats.retried += 1
            self._rewind(tp, token.offset, self._policy.backoff.delay(1))

    def _resume_due_partitions(self) -> None:
        due = [tp for tp in self._pauses.due() if tp in self._assigned]
        if due:
            self._consumer.resume(due)

    def _on_consume_error(self, record: RawRecord) -> None:
        log.warning("%s: consume error on %s: %s", self.plan.name, record.topic(), record.error())

    # -- step 6: commit -------------------------------------------------------------------

    def _maybe_commit(self) -> None:
        now = self._clock()
        if now - self._last_commit >= self._commit_interval:
            self._last_commit = now
            self._commit(sync=False)

    def _commit(self, *, sync: bool, only: set[TopicPartition] | None = None) -> None:
        offsets = self._tracker.committable(self._assigned if only is None else only)
        if not offsets:
            return
        self._consumer.commit(offsets, sync=sync)
        self._tracker.mark_committed(offsets)
        self.stats.commits += 1

    # -- rebalance listener (called inside consume) ---------------------------------------

    def on_assign(self, partitions: list[TopicPartition]) -> None:
        self._assigned.update(partitions)
        self.stats.assigned = len(self._assigned)
        log.info("%s: assigned %s", self.plan.name, _fmt(partitions))

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        # Outputs of these partitions' records may still be in flight: wait for them, so the
        # new owner does not redo work that is actually finished.
        self._producer.flush(self._shutdown_timeout)
        try:
            self._commit(sync=True, only=set(partitions))
        except KafkaError as exc:
            log.warning(
                "%s: commit on revoke failed (%s); records will be redelivered", self.plan.name, exc
            )
        self._forget(partitions)
        log.info("%s: revoked %s", self.plan.name, _fmt(partitions))

    def on_lost(self, partitions: list[TopicPartition]) -> None:
        self._forget(partitions)
        log.warning("%s: lost %s (not committing)", self.plan.name, _fmt(partitions))

    def _forget(self, partitions: list[TopicPartition]) -> None:
        self._skip.update(partitions)
        self._tracker.drop(partitions)
        self._pauses.forget(partitions)
        for tp in partitions:
            self._assigned.discard(tp)
            self._attempts.pop(tp, None)
        self.stats.assigned = len(self._assigned)


def _fmt(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in partitions) or "nothing"


def _now_ms() -> int:
    return int(time.time() * 1000)
