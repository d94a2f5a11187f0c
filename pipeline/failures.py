"""Failure policy as a decision: (exception, attempts so far, policy) -> what to do with the record.

The runner never branches on exception types itself; it asks ``decide`` and routes the outcome:

    succeeded ─────────────────────────────► commit
    transient ──► in-process attempts (tenacity, short backoff)
               └► retry topic tier 1 … tier N (non-blocking, delayed) ──► dead-letter topic
    ordered   ──► pause the partition, back off, retry in place (per-key order kept)
    poison, fatal, not transient ───────────► dead-letter topic at once
    DeadLetter / Skip / RetryAfter raised by the handler: what it asks for

The circuit breaker sits in front of this: while a dependency is down, failures pause the
stage instead of spending retries (see ``pipeline.breaker``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from pipeline.backoff import Backoff
from pipeline.errors import DeclarationError, DecodeError, PipelineError, SerializationError


class DeadLetter(PipelineError):
    """Raised by a handler: park this event in the dead-letter topic now, no retries."""


class Skip(PipelineError):
    """Raised by a handler: drop this event (it is committed, nothing is emitted)."""


class RetryAfter(PipelineError):
    """Raised by a handler: try this event again after ``delay_s`` seconds."""

    def __init__(self, delay_s: float, reason: str = "") -> None:
        super().__init__(reason or f"retry requested in {delay_s}s")
        self.delay_s = delay_s


class HandlerTimeout(PipelineError):
    """The handler ran longer than the stage's ``timeout_s``. Retryable."""


class HandlerCancelled(PipelineError):
    """The handler raised ``asyncio.CancelledError`` on its own (say, an awaited future that a
    client library cancelled), not because the stage cancelled it. Retryable."""


# Failures no retry can fix: bytes we cannot decode, events the model rejects, and a stage
# emitting something it did not declare or cannot encode.
NEVER_RETRY: tuple[type[BaseException], ...] = (DecodeError, SerializationError, DeclarationError)


REQUESTS: tuple[type[BaseException], ...] = (DeadLetter, Skip, RetryAfter)


class Outcome(enum.Enum):
    RETRY_TOPIC = "retry_topic"  # republish to a delayed retry topic; the partition moves on
    RETRY_IN_PLACE = "retry_in_place"  # pause the partition, seek back, try again after backoff
    DEAD_LETTER = "dead_letter"  # park the original bytes in the stage's DLQ; move on
    SKIP = "skip"  # commit and forget


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    delay_s: float = 0.0
    tier: int = 0  # index into RetryPolicy.tiers for RETRY_TOPIC
    # Whether the failure says something about a dependency's health (feeds the breaker).
    counts_for_breaker: bool = False


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a stage treats a failing event.

    ``in_process_attempts`` handler calls are made in a row (short backoff, tenacity) before
    the event leaves the consume loop; then it goes through ``tiers`` (delays in seconds of the
    retry topics ``<group>.retry.<delay>``), then to ``<group>.dlq``. ``ordered=True`` replaces
    retry topics with in-place retries (pause, back off, retry; up to ``ordered_max_attempts``,
    None = forever) for stages that need per-key order. Exceptions outside ``transient`` and
    inside ``fatal`` go to the DLQ at once.
    """

    transient: tuple[type[BaseException], ...] = (Exception,)
    fatal: tuple[type[BaseException], ...] = ()
    in_process_attempts: int = 3
    in_process_backoff: Backoff = field(default_factory=lambda: Backoff(0.05, 1.0))
    tiers: tuple[float, ...] = (1.0, 10.0, 60.0)
    ordered: bool = False
    ordered_backoff: Backoff = field(default_factory=Backoff)
    ordered_max_attempts: int | None = 10

    def __post_init__(self) -> None:
        if self.in_process_attempts < 1:
            raise ValueError("in_process_attempts must be >= 1")
        if any(t <= 0 for t in self.tiers) or list(self.tiers) != sorted(self.tiers):
            raise ValueError("tiers must be positive delays in increasing order")
        if self.ordered_max_attempts is not None and self.ordered_max_attempts < 1:
            raise ValueError("ordered_max_attempts must be >= 1 or None")

    @property
    def uses_retry_topics(self) -> bool:
        return bool(self.tiers) and not self.ordered

    def is_transient(self, exc: BaseException) -> bool:
        """Worth another attempt. A handler's explicit request is never retried in process."""
        return isinstance(exc, self.transient) and not isinstance(
            exc, NEVER_RETRY + REQUESTS + self.fatal
        )


def decide(policy: RetryPolicy, exc: BaseException, attempts: int) -> Decision:
    """``attempts``: failed deliveries of this event so far, this one included (1 = first)."""
    requested = _requested(policy, exc, attempts)
    if requested is not None:
        return requested
    if not policy.is_transient(exc):
        return Decision(Outcome.DEAD_LETTER)
    if policy.ordered:
        if policy.ordered_max_attempts is not None and attempts >= policy.ordered_max_attempts:
            return Decision(Outcome.DEAD_LETTER, counts_for_breaker=True)
        delay = policy.ordered_backoff.delay(attempts)
        return Decision(Outcome.RETRY_IN_PLACE, delay, counts_for_breaker=True)
    tier = attempts - 1  # the first failed delivery goes to tier 0
    if tier >= len(policy.tiers):
        return Decision(Outcome.DEAD_LETTER, counts_for_breaker=True)
    return Decision(Outcome.RETRY_TOPIC, policy.tiers[tier], tier, counts_for_breaker=True)


def _requested(policy: RetryPolicy, exc: BaseException, attempts: int) -> Decision | None:
    if isinstance(exc, DeadLetter):
        return Decision(Outcome.DEAD_LETTER)
    if isinstance(exc, Skip):
        return Decision(Outcome.SKIP)
    if isinstance(exc, RetryAfter):
        if policy.ordered or not policy.tiers:
            return Decision(Outcome.RETRY_IN_PLACE, exc.delay_s)
        # The first tier long enough; the last one if none is.
        tier = next(
            (i for i, t in enumerate(policy.tiers) if t >= exc.delay_s), len(policy.tiers) - 1
        )
        return Decision(Outcome.RETRY_TOPIC, policy.tiers[tier], tier)
    return None
