"""Failure policy as a decision: (exception, attempt, policy) -> what to do with the record.

The runner never branches on exception types itself; it asks ``decide`` and routes the outcome.
Later policies (retry topics, breaker) add outcomes here, not branches in the loop.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from pipeline.backoff import Backoff
from pipeline.errors import DeclarationError, DecodeError, SerializationError


class Outcome(enum.Enum):
    RETRY_IN_PLACE = "retry_in_place"  # pause the partition, seek back, try again after backoff
    DEAD_LETTER = "dead_letter"  # park the original bytes in the stage's DLQ, move on


# Failures that no retry can fix: bytes we cannot decode, events the model rejects, and a
# stage emitting something it did not declare or cannot encode.
NEVER_RETRY: tuple[type[BaseException], ...] = (DecodeError, SerializationError, DeclarationError)


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """How a stage treats a failing record.

    ``max_attempts`` counts handler calls, the first one included; after the last one the record
    is dead-lettered so the partition can move on. ``None`` retries forever (strict ordering,
    at the price of a stuck partition on a bug). ``fatal`` adds exception types to dead-letter
    at once.
    """

    backoff: Backoff = field(default_factory=Backoff)
    max_attempts: int | None = 10
    fatal: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1 or None")


def decide(policy: FailurePolicy, exc: BaseException, attempt: int) -> Outcome:
    """``attempt`` is the number of the call that just failed (1 for the first)."""
    if isinstance(exc, NEVER_RETRY + policy.fatal):
        return Outcome.DEAD_LETTER
    if policy.max_attempts is not None and attempt >= policy.max_attempts:
        return Outcome.DEAD_LETTER
    return Outcome.RETRY_IN_PLACE
