"""Backoff delays, pause deadlines on a fake clock, and the failure decision."""

from __future__ import annotations

import pytest

from pipeline.backoff import Backoff, PauseDeadlines
from pipeline.errors import BadMagicError, EventValidationError, SerializationError
from pipeline.failures import FailurePolicy, Outcome, decide


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_up_to_the_cap() -> None:
    backoff = Backoff(initial_s=0.5, max_s=3.0, jitter=0)
    assert [backoff.delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_jitter_stays_within_its_fraction() -> None:
    backoff = Backoff(initial_s=1.0, jitter=0.2)
    assert backoff.delay(1, rand=lambda: 0.0) == pytest.approx(0.8)
    assert backoff.delay(1, rand=lambda: 1.0) == pytest.approx(1.2)


def test_pauses_come_due_at_their_deadline_and_only_once() -> None:
    clock = FakeClock()
    pauses = PauseDeadlines(clock)
    pauses.pause(("t", 0), 2.0)
    pauses.pause(("t", 1), 5.0)
    clock.now += 1.9
    assert pauses.due() == []
    clock.now += 0.1
    assert pauses.due() == [("t", 0)]
    assert pauses.due() == []
    assert pauses.is_paused(("t", 1))
    pauses.forget([("t", 1)])
    clock.now += 10
    assert pauses.due() == []


@pytest.mark.parametrize(
    "exc", [BadMagicError("x"), EventValidationError("x"), SerializationError("x")]
)
def test_undecodable_or_unencodable_records_are_dead_lettered_at_once(exc: Exception) -> None:
    assert decide(FailurePolicy(), exc, attempt=1) is Outcome.DEAD_LETTER


def test_other_errors_are_retried_until_max_attempts() -> None:
    policy = FailurePolicy(max_attempts=3)
    assert decide(policy, ConnectionError(), 1) is Outcome.RETRY_IN_PLACE
    assert decide(policy, ConnectionError(), 2) is Outcome.RETRY_IN_PLACE
    assert decide(policy, ConnectionError(), 3) is Outcome.DEAD_LETTER


def test_unlimited_attempts_never_dead_letter_a_transient_error() -> None:
    assert (
        decide(FailurePolicy(max_attempts=None), TimeoutError(), 10_000) is Outcome.RETRY_IN_PLACE
    )


def test_declared_fatal_errors_skip_retries() -> None:
    policy = FailurePolicy(fatal=(KeyError,))
    assert decide(policy, KeyError("k"), 1) is Outcome.DEAD_LETTER


def test_max_attempts_must_be_positive() -> None:
    with pytest.raises(ValueError):
        FailurePolicy(max_attempts=0)
