"""The collaborators of one stage's runner, chosen once from what the stage declares.

A selector, as karafka's: the breaker, the committer (offsets, or transactions for exactly
once) and the gate chain exist only as the stage enables them, so the runner's loop never
branches on a feature the stage does not use. Everything shares the runner's offset tracker,
its set of assigned partitions and its clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline import gates
from pipeline.breaker import CircuitBreaker, State
from pipeline.clock import Clock
from pipeline.commit import OffsetCommitter, TransactionCommitter
from pipeline.dedupe import Deduper
from pipeline.errors import TruncatedPayloadError, UnknownSchemaError
from pipeline.execute import Core, Executor, InlineExecutor
from pipeline.holds import Holds
from pipeline.hookcalls import Hooks
from pipeline.invoke import Invoker
from pipeline.jobs.result import keeping_result
from pipeline.keyed import KeyedExecutor
from pipeline.keylimit import KeyRateLimited
from pipeline.offsets import OffsetTracker
from pipeline.outputs import OutputWriter
from pipeline.patience import Patience
from pipeline.ports import ConsumerPort, ProducerPort, RawRecord, TopicPartition
from pipeline.ratelimit import GroupShare, PartitionCounts, deferral_name
from pipeline.refusals import Refusals
from pipeline.registry import StagePlan
from pipeline.retrytopics import Origin
from pipeline.routing import Router
from pipeline.serde import Codec
from pipeline.serde.codec import bound_decoder
from pipeline.stage import Stage
from pipeline.stalls import StallDetector, StallWatch, stall_after


@dataclass(slots=True)
class Parts:
    plan: StagePlan
    consumer: ConsumerPort
    clock: Clock
    tracker: OffsetTracker
    assigned: set[TopicPartition]  # one set, shared: assignment changes show everywhere
    holds: Holds
    breaker: CircuitBreaker | None
    committer: OffsetCommitter | TransactionCommitter
    outputs: OutputWriter
    router: Router
    refusals: Refusals
    chain: gates.Chain

    def assign(self, partitions: list[TopicPartition]) -> None:
        """Partitions now ours (called inside ``consume``, before any of their records)."""
        self.assigned.update(partitions)
        if self.chain.rate_limit is not None:
            self.chain.rate_limit.changed()

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Partitions no longer ours (revoked or lost): every part drops what it held of them."""
        if self.chain.rate_limit is not None:
            self.chain.rate_limit.changed()
        if self.chain.breaker is not None:
            self.chain.breaker.forget(partitions)
        self.holds.forget(partitions)
        self.tracker.drop(partitions)
        self.router.forget(partitions)
        self.refusals.forget(partitions)


def build(
    plan: StagePlan,
    consumer: ConsumerPort,
    producer: ProducerPort,
    codec: Codec,
    hooks: Hooks,
    clock: Clock,
    *,
    rewind_all: Callable[[], None],
    in_loop_budget_s: float,
    partition_counts: PartitionCounts | None = None,
    transaction_retry_timeout_s: float | None = None,
) -> Parts:
    """``rewind_all``: what an aborted transaction calls; ``in_loop_budget_s``: how long a
    transaction call made inside the loop may take; ``partition_counts``: where a
    rate-limited stage learns its topics' partition counts (its share of the limit);
    ``transaction_retry_timeout_s``: how long an exactly-once stage waits for a broker that is
    away (``pipeline.patience``; None: its default)."""
    tracker, assigned = OffsetTracker(), set[TopicPartition]()
    holds = Holds(consumer, tracker, assigned, clock)
    breaker = None
    if plan.stage.breaker is not None:
        on_change = hooks.on_breaker_change

        def changed(_name: str, old: State, new: State) -> None:
            if on_change is not None:
                on_change(old.value, new.value)

        breaker = CircuitBreaker(plan.name, plan.stage.breaker, clock.monotonic, changed)
    committer: OffsetCommitter | TransactionCommitter
    if plan.stage.guarantee == "exactly_once":
        transactional: Any = producer
        retry_s = transaction_retry_timeout_s
        committer = TransactionCommitter(
            consumer, transactional, tracker, hooks, rewind_all, in_loop_budget_s,
            clock.monotonic, None if retry_s is None else Patience(retry_s),
        )  # fmt: skip
    else:
        committer = OffsetCommitter(plan.group, consumer, tracker, hooks)
    outputs = OutputWriter(plan, codec, producer, hooks, clock)
    policy = plan.stage.retry
    router = Router(
        plan, policy, outputs, tracker, hooks, holds, breaker, committer.after_commit, clock
    )
    refusals = Refusals(plan.name, holds, tracker, router, assigned, hooks, policy.ordered_backoff)
    # A built-in stage (a delay mover) may bring gates of its own: they settle its records.
    built_in = getattr(plan.stage, "built_in_gates", None)
    chain = gates.build(
        holds, tracker, refusals, hooks, retry_topics=frozenset(plan.retry_topics),
        breaker=breaker, idempotent=plan.stage.idempotency is not None,
        transaction=committer if isinstance(committer, TransactionCommitter) else None,
        extra=built_in(tracker, outputs, clock) if built_in is not None else (),
        rate_limit=group_share(plan, assigned, clock, partition_counts),
        key_limit=key_limit(plan, codec, tracker, outputs, clock, hooks),
    )  # fmt: skip
    return Parts(
        plan, consumer, clock, tracker, assigned, holds, breaker, committer, outputs, router,
        refusals, chain,
    )  # fmt: skip


def group_share(
    plan: StagePlan, assigned: set[TopicPartition], clock: Clock, counts: PartitionCounts | None
) -> GroupShare | None:
    """The worker's part of the stage's group-wide rate limit, if it has one."""
    limit = plan.stage.rate_limit
    if limit is None or limit.keyed:
        return None
    if counts is None:
        raise ValueError(f"{plan.name}: a rate-limited stage's runner needs partition_counts")
    return GroupShare(
        limit, list(plan.inputs), plan.retry_topics, assigned, counts, clock.monotonic, plan.name
    )


def key_limit(
    plan: StagePlan, codec: Codec, tracker: OffsetTracker, writer: OutputWriter, clock: Clock,
    hooks: Hooks,
) -> KeyRateLimited | None:  # fmt: skip
    """The gate of the stage's per-key rate limit, if it has one."""
    limit = plan.stage.rate_limit
    if limit is None or not limit.keyed:
        return None
    deferral = deferral_name(plan.group)
    lanes = {topic: k for k, topics in enumerate(plan.lanes, 1) for topic in topics}
    by_topic = decoder(plan, codec)

    def decode(record: RawRecord, origin: Origin | None) -> Any:
        return by_topic(record, origin.topic if origin is not None else record.topic())

    return KeyRateLimited(limit, deferral, decode, tracker, writer, clock, hooks, lanes)


def decoder(plan: StagePlan, codec: Codec) -> Callable[[RawRecord, str], Any]:
    """Decoding a record with the binding of ``topic``: its input topic (a retry record's: its
    origin topic), bound to the codec once per input topic (``serde.codec.bound_decoder``)."""
    bound = {topic: bound_decoder(codec, binding) for topic, binding in plan.inputs.items()}
    by_topic = bound.get

    def decode(record: RawRecord, topic: str) -> Any:
        value = record.value()
        if value is None:
            raise TruncatedPayloadError("record has no value (a tombstone?)")
        decode_value = by_topic(topic)
        if decode_value is None:
            raise UnknownSchemaError(f"retry record names {topic!r}, not an input of this stage")
        return decode_value(value)

    return decode


def invoker(plan: StagePlan, stage: Stage, hooks: Hooks) -> Invoker:
    """What calls the stage's handler (inside the ``around_handler`` hooks, if any)."""
    is_async = plan.stage.is_async()
    handler = stage.handle
    if plan.replies:  # its returned event is the reply to a request
        from pipeline.reply import replying  # request-reply's module, for a replying stage

        handler = replying(handler, is_async)
    if plan.stage.track_jobs is not None:  # its return value is the job's result
        handler = keeping_result(handler, is_async)
    return Invoker(
        plan.name, hooks.wrap(handler, is_async), is_async, frozenset(plan.outputs),
        plan.stage.retry, plan.stage.timeout_s, plan.group, hooks.on_hung_change,
        hooks.on_progress,
    )  # fmt: skip


def executor(
    core: Core, p: Parts, invoke: Invoker, batch_size: int, batch_timeout_s: float
) -> Executor:
    """Inline for ``concurrency = 1``; keyed (per-key order, up to ``concurrency`` handlers
    at once) otherwise."""
    limit = p.plan.stage.concurrency
    if limit == 1:
        return InlineExecutor(core, invoke, p.consumer, batch_size, batch_timeout_s)
    return KeyedExecutor(
        core, invoke, p.consumer, p.holds, p.assigned, limit=limit, batch_size=batch_size,
        batch_timeout_s=batch_timeout_s, clock=p.clock, name=p.plan.name,
        unspent=p.chain.unspent if p.chain.spending else None,
    )  # fmt: skip


def stall_watch(
    plan: StagePlan, executor: Executor, hooks: Hooks, clock: Clock, poll_limit_s: float | None
) -> StallWatch:
    """The thread reporting the stage's handler calls that run too long (``pipeline.stalls``);
    the poll deadline only matters where a running handler holds the loop."""
    limit = poll_limit_s if executor.blocking else None
    detector = StallDetector(stall_after(plan.stage.stall_after_s, plan.stage.timeout_s), limit)
    return StallWatch(plan.name, executor.running, detector, clock, hooks.on_stalled, limit)


def open_store(
    plan: StagePlan, default_url: str | None, invoke: Invoker, clock: Clock,
    gate: gates.Deduplicate | None, committer: OffsetCommitter | TransactionCommitter,
) -> Deduper | None:  # fmt: skip
    """Open the stage's idempotency store (at ``run``, not at construction: it connects), and
    hand it to whoever needs it: the dedupe gate, the handler's context, the committer."""
    policy = plan.stage.idempotency
    if policy is None or gate is None:
        return None
    deduper = Deduper(
        plan.name, plan.group, policy, policy.url or default_url or "", clock.monotonic
    )
    gate.deduper = deduper
    invoke.store = deduper.store
    if isinstance(committer, OffsetCommitter):
        committer.store = deduper.store
    return deduper
