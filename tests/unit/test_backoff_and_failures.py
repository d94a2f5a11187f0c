"""Backoff delays, pause deadlines on a fake clock, and the failure decision."""

from __future__ import annotations

import pytest

from pipeline.backoff import Backoff, PauseDeadlines
from pipeline.errors import BadMagicError, EventValidationError, SerializationError
from pipeline.failures import DeadLetter, Outcome, RetryAfter, RetryPolicy, Skip, decide


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
    decision = decide(RetryPolicy(), exc, attempts=1)
    assert decision.outcome is Outcome.DEAD_LETTER
    assert not decision.counts_for_breaker


def test_transient_errors_walk_the_retry_tiers_then_dead_letter() -> None:
    policy = RetryPolicy(tiers=(1, 10, 60))
    decisions = [decide(policy, ConnectionError(), n) for n in (1, 2, 3, 4)]
    assert [(d.outcome, d.delay_s, d.tier) for d in decisions] == [
        (Outcome.RETRY_TOPIC, 1, 0),
        (Outcome.RETRY_TOPIC, 10, 1),
        (Outcome.RETRY_TOPIC, 60, 2),
        (Outcome.DEAD_LETTER, 0.0, 0),
    ]
    assert all(d.counts_for_breaker for d in decisions)


def test_without_tiers_a_transient_error_dead_letters_after_in_process_attempts() -> None:
    assert decide(RetryPolicy(tiers=()), TimeoutError(), 1).outcome is Outcome.DEAD_LETTER


def test_ordered_stages_retry_in_place_until_their_limit() -> None:
    policy = RetryPolicy(ordered=True, ordered_max_attempts=3, ordered_backoff=Backoff(1, jitter=0))
    assert decide(policy, ConnectionError(), 1) == decide(policy, ConnectionError(), 1)
    first = decide(policy, ConnectionError(), 1)
    assert (first.outcome, first.delay_s) == (Outcome.RETRY_IN_PLACE, 1)
    assert decide(policy, ConnectionError(), 2).delay_s == 2
    assert decide(policy, ConnectionError(), 3).outcome is Outcome.DEAD_LETTER


def test_unlimited_ordered_attempts_never_dead_letter_a_transient_error() -> None:
    policy = RetryPolicy(ordered=True, ordered_max_attempts=None)
    assert decide(policy, TimeoutError(), 10_000).outcome is Outcome.RETRY_IN_PLACE


def test_declared_fatal_and_non_transient_errors_skip_retries() -> None:
    assert decide(RetryPolicy(fatal=(KeyError,)), KeyError("k"), 1).outcome is Outcome.DEAD_LETTER
    narrow = RetryPolicy(transient=(ConnectionError,))
    assert decide(narrow, ValueError(), 1).outcome is Outcome.DEAD_LETTER
    assert decide(narrow, ConnectionError(), 1).outcome is Outcome.RETRY_TOPIC


def test_handlers_can_ask_for_a_dead_letter_a_skip_or_a_delayed_retry() -> None:
    policy = RetryPolicy(tiers=(1, 10, 60))
    assert decide(policy, DeadLetter("no"), 1).outcome is Outcome.DEAD_LETTER
    assert decide(policy, Skip("dup"), 1).outcome is Outcome.SKIP
    later = decide(policy, RetryAfter(5), 1)
    assert (later.outcome, later.delay_s, later.tier) == (Outcome.RETRY_TOPIC, 10, 1)
    assert decide(policy, RetryAfter(999), 1).delay_s == 60
    in_place = decide(RetryPolicy(ordered=True), RetryAfter(7), 1)
    assert (in_place.outcome, in_place.delay_s) == (Outcome.RETRY_IN_PLACE, 7)
    assert not later.counts_for_breaker


def test_policy_values_are_validated() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(in_process_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(tiers=(10, 1))
    with pytest.raises(ValueError):
        RetryPolicy(ordered_max_attempts=0)


def test_a_handlers_explicit_request_is_never_retried_in_process() -> None:
    policy = RetryPolicy()
    assert not policy.is_transient(Skip("dup"))
    assert not policy.is_transient(DeadLetter("no"))
    assert not policy.is_transient(RetryAfter(5))
    assert policy.is_transient(ConnectionError())
