"""Turning a failed record into what the policy decided: a retry-topic copy, an in-place
retry, a dead letter, a skip, or (breaker open) a pause of the whole stage.

Every copy it produces is tied to the input's offset token, so the input is committed only once
the copy is acknowledged: a retry or dead letter that cannot be published loses nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pipeline.breaker import CircuitBreaker, CircuitOpenError, State
from pipeline.clock import SYSTEM, Clock
from pipeline.deadletter import DeadLetterSource, headers_for
from pipeline.failures import Decision, Outcome, RetryPolicy, decide
from pipeline.hookcalls import Hooks
from pipeline.offsets import OffsetTracker, Token
from pipeline.ports import RawRecord, TopicPartition
from pipeline.registry import StagePlan
from pipeline.retrytopics import Origin, origin_of, retry_headers

if TYPE_CHECKING:
    from pipeline.holds import Holds
    from pipeline.outputs import OutputWriter

log = logging.getLogger("pipeline.runner")


def _now(claim: Callable[[], None]) -> None:
    claim()


class Router:
    def __init__(
        self,
        plan: StagePlan,
        policy: RetryPolicy,
        writer: OutputWriter,
        tracker: OffsetTracker,
        hooks: Hooks,
        holds: Holds,
        breaker: CircuitBreaker | None,
        claim: Callable[[Callable[[], None]], None] = _now,
        clock: Clock = SYSTEM,
    ) -> None:
        self._clock = clock
        self._plan = plan
        self._policy = policy
        self._writer = writer
        self._tracker = tracker
        self._on_retrying, self._on_dead_lettered = hooks.on_retrying, hooks.on_dead_lettered
        self._on_skipped, self._on_failed = hooks.on_skipped, hooks.on_failed
        self._holds = holds
        self._breaker = breaker
        # Claims an outcome (counts, logs) when it is final: at once, or at the transaction's
        # commit for an exactly-once stage (an acknowledged copy may still be aborted).
        self._claim = claim
        self._dlq = DeadLetterSource(plan.name, plan.group, plan.dlq_topic)
        # In-place attempts of the record a partition is stuck on: (offset, attempts, first ms).
        # Non-empty (``stuck``) while some partition retries a record in place: ``succeeded``
        # then matters. The same dict, so the hot path reads an attribute, not a property.
        self._in_place: dict[TopicPartition, tuple[int, int, int]] = {}
        self.stuck = self._in_place

    def succeeded(self, tp: TopicPartition, offset: int) -> None:
        # Only the stuck record's own success unsticks it: in a concurrent stage an earlier
        # record of the partition may finish after it failed.
        stuck = self._in_place.get(tp)
        if stuck is not None and stuck[0] == offset:
            del self._in_place[tp]

    def forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._in_place.pop(tp, None)

    def failed(
        self,
        record: RawRecord,
        tp: TopicPartition,
        exc: Exception,
        origin: Origin | None,
        token: Token,
    ) -> None:
        """Route a failed record; ``token`` is its offset token, begun before the handler ran,
        which the copy it needs (retry, dead letter) is tied to. A rewind cancels it."""
        offset = record.offset()
        origin = origin or origin_of(record, from_retry_topic=False)
        attempts, first_ms = self._count(tp, offset, origin)
        if isinstance(exc, CircuitOpenError):  # a dependency's breaker refused the call
            if self._breaker is not None:
                self._breaker.cancel_probe()  # the probe told us nothing about the stage
            self._told_failed(record, exc, attempts, True)
            self._holds.hold_everything(tp, offset, max(exc.retry_in_s, 0.1))
            return
        decision = decide(self._policy, exc, attempts)
        if self._outage(decision, tp, offset):
            self._told_failed(record, exc, attempts, True)  # held until the breaker lets it in
            return
        retrying = decision.outcome in (Outcome.RETRY_IN_PLACE, Outcome.RETRY_TOPIC)
        self._told_failed(record, exc, attempts, retrying)
        self._route(decision, record, tp, exc, origin, attempts, first_ms, token)

    def _told_failed(self, record: RawRecord, exc: Exception, attempts: int, again: bool) -> None:
        if self._on_failed is not None:
            self._on_failed(record, exc, attempts, again)

    def _outage(self, decision: Decision, tp: TopicPartition, offset: int) -> bool:
        """Feed the stage breaker; True when it is (now) open and the record must wait."""
        breaker = self._breaker
        if breaker is None:
            return False
        if not decision.counts_for_breaker:
            breaker.cancel_probe()
            return False
        breaker.record_failure()
        if breaker.state is not State.OPEN:
            return False
        self._holds.hold_everything(tp, offset, breaker.remaining_s())
        return True

    def _count(self, tp: TopicPartition, offset: int, origin: Origin) -> tuple[int, int]:
        now = self._clock.wall_ms()
        if origin.attempts:  # a record from a retry topic
            return origin.attempts + 1, origin.first_failure_ms or now
        prev = self._in_place.get(tp)
        if prev is not None and prev[0] == offset:
            return prev[1] + 1, prev[2]
        return 1, now

    def _route(
        self, decision: Decision, record: RawRecord, tp: TopicPartition, exc: Exception,
        origin: Origin, attempts: int, first_ms: int, token: Token,
    ) -> None:  # fmt: skip
        offset = record.offset()
        where = f"{tp[0]}[{tp[1]}]@{offset}"
        self._in_place.pop(tp, None)
        if decision.outcome is Outcome.RETRY_IN_PLACE:
            self._in_place[tp] = (offset, attempts, first_ms)
            log.warning(
                "%s: %s failed (attempt %d, %s); retrying in place in %.2fs",
                self._plan.name,
                where,
                attempts,
                type(exc).__name__,
                decision.delay_s,
            )
            if self._on_retrying is not None:
                self._on_retrying(record, exc, attempts, None)
            self._holds.rewind(tp, offset, decision.delay_s)
        elif decision.outcome is Outcome.RETRY_TOPIC:
            topic = self._plan.retry_topics[decision.tier]
            log.warning(
                "%s: %s failed (attempt %d, %s); sending it to %s",
                self._plan.name,
                where,
                attempts,
                type(exc).__name__,
                topic,
            )
            due_ms = self._clock.wall_ms() + int(decision.delay_s * 1000)
            headers = retry_headers(record, origin, attempts, due_ms, first_ms, exc)
            acked = self._retry_acked(record, exc, attempts, decision.tier)
            self._copy(record, tp, topic, headers, token, acked)
        elif decision.outcome is Outcome.DEAD_LETTER:
            self._dead_letter(record, tp, exc, origin, attempts, first_ms, token)
        else:  # SKIP
            token.settle(0)
            if self._on_skipped is not None:
                self._on_skipped(record, exc)

    def dead_letter(
        self, record: RawRecord, tp: TopicPartition, exc: Exception, origin: Origin | None
    ) -> None:
        """Dead-letter ``record`` now, whatever the policy, without handling it: no retry can
        fix ``exc`` (an output the broker will never take, say). Its token is begun here."""
        token = self._tracker.partition(tp).begin(record.offset(), 1)
        origin = origin or origin_of(record, from_retry_topic=False)
        self._in_place.pop(tp, None)
        attempts = origin.attempts + 1 if origin.attempts else 1
        self._dead_letter(record, tp, exc, origin, attempts, origin.first_failure_ms, token)

    def _dead_letter(
        self, record: RawRecord, tp: TopicPartition, exc: Exception, origin: Origin,
        attempts: int, first_ms: int | None, token: Token,
    ) -> None:  # fmt: skip
        where = f"{tp[0]}[{tp[1]}]@{record.offset()}"
        name, dlq = self._plan.name, self._dlq.topic
        kind = type(exc).__name__

        on_dead_lettered = self._on_dead_lettered

        def written() -> None:  # claimed once the broker has the dead letter
            if on_dead_lettered is not None:
                on_dead_lettered(record, exc)
            log.error("%s: %s dead-lettered to %s after %d attempt(s): %s",
                      name, where, dlq, attempts, kind)  # fmt: skip

        headers = headers_for(record, self._dlq, exc, origin, attempts, first_ms, self._clock)

        def acked() -> None:
            self._claim(written)

        self._copy(record, tp, self._dlq.topic, headers, token, acked, dead_letter=True)

    def _retry_acked(
        self, record: RawRecord, exc: Exception, attempts: int, tier: int
    ) -> Callable[[], None]:
        """What the retry copy's acknowledgement does: claim the outcome (``on_retrying``)."""
        on_retrying = self._on_retrying

        def retrying() -> None:
            if on_retrying is not None:
                on_retrying(record, exc, attempts, tier)

        def acked() -> None:
            self._claim(retrying)

        return acked

    def _copy(
        self, record: RawRecord, tp: TopicPartition, topic: str, headers: Any, token: Token,
        acked: Callable[[], None], *, dead_letter: bool = False,
    ) -> None:  # fmt: skip
        token.settle(1)  # the handler's unit becomes the copy's acknowledgement
        self._writer.copy(record, topic, headers, tp, token, acked, dead_letter=dead_letter)
