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
from pipeline.holds import Holds
from pipeline.hooks import Hooks
from pipeline.offsets import OffsetTracker
from pipeline.outputs import OutputWriter
from pipeline.ports import ConsumerPort, ProducerPort, TopicPartition
from pipeline.refusals import Refusals
from pipeline.registry import StagePlan
from pipeline.routing import Router
from pipeline.serde import Codec


@dataclass(slots=True)
class Parts:
    tracker: OffsetTracker
    assigned: set[TopicPartition]  # one set, shared: assignment changes show everywhere
    holds: Holds
    breaker: CircuitBreaker | None
    committer: OffsetCommitter | TransactionCommitter
    outputs: OutputWriter
    router: Router
    refusals: Refusals
    chain: gates.Chain


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
) -> Parts:
    """``rewind_all``: what an aborted transaction calls; ``in_loop_budget_s``: how long a
    transaction call made inside the loop may take."""
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
        committer = TransactionCommitter(
            consumer, transactional, tracker, hooks, rewind_all, in_loop_budget_s,
            clock.monotonic,
        )  # fmt: skip
    else:
        committer = OffsetCommitter(plan.group, consumer, tracker, hooks)
    outputs = OutputWriter(plan, codec, producer, hooks)
    policy = plan.stage.retry
    router = Router(
        plan, policy, outputs, tracker, hooks, holds, breaker, committer.after_commit, clock
    )
    refusals = Refusals(plan.name, holds, tracker, router, assigned, hooks, policy.ordered_backoff)
    chain = gates.build(
        holds, tracker, refusals, hooks, retry_topics=frozenset(plan.retry_topics),
        breaker=breaker, idempotent=plan.stage.idempotency is not None,
    )  # fmt: skip
    return Parts(tracker, assigned, holds, breaker, committer, outputs, router, refusals, chain)
