"""The circuit breaker's state machine, on a fake clock."""

from __future__ import annotations

import pytest

from pipeline.breaker import BreakerPolicy, CircuitBreaker, CircuitOpenError, State


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(**policy: float) -> tuple[CircuitBreaker, FakeClock, list[tuple[State, State]]]:
    clock = FakeClock()
    changes: list[tuple[State, State]] = []
    breaker = CircuitBreaker(
        "dep",
        BreakerPolicy(**policy),
        clock,
        lambda _n, old, new: changes.append((old, new)),  # type: ignore[arg-type]
    )
    return breaker, clock, changes


def test_opens_after_n_consecutive_failures_and_a_success_resets_the_count() -> None:
    breaker, _, _ = make(failure_threshold=3)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is State.CLOSED
    breaker.record_failure()
    assert breaker.state is State.OPEN
    assert not breaker.allow()


def test_opens_on_failure_ratio_within_the_window_once_enough_calls() -> None:
    breaker, _, _ = make(failure_threshold=100, failure_ratio=0.5, min_calls=4, window_s=10)
    for failed in (True, False, True):
        breaker.record_failure() if failed else breaker.record_success()
    assert breaker.state is State.CLOSED  # 3 calls < min_calls
    breaker.record_failure()
    assert breaker.state is State.OPEN


def test_old_calls_leave_the_ratio_window() -> None:
    breaker, clock, _ = make(failure_threshold=100, failure_ratio=0.5, min_calls=4, window_s=10)
    breaker.record_failure()
    breaker.record_failure()
    clock.now = 20
    for _ in range(3):
        breaker.record_success()
    breaker.record_failure()
    assert breaker.state is State.CLOSED  # 1 of 4 in the window


def test_half_open_lets_exactly_one_probe_through_after_the_cooldown() -> None:
    breaker, clock, _ = make(failure_threshold=1, cooldown_s=5)
    breaker.record_failure()
    clock.now = 4.9
    assert not breaker.allow()
    assert breaker.remaining_s() == pytest.approx(0.1)
    clock.now = 5.0
    assert breaker.allow()
    assert breaker.state is State.HALF_OPEN
    assert not breaker.allow(), "a second caller must wait for the probe"


def test_a_successful_probe_closes_the_circuit() -> None:
    breaker, clock, changes = make(failure_threshold=1, cooldown_s=5)
    breaker.record_failure()
    clock.now = 5
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is State.CLOSED and breaker.allow()
    assert changes == [
        (State.CLOSED, State.OPEN),
        (State.OPEN, State.HALF_OPEN),
        (State.HALF_OPEN, State.CLOSED),
    ]


def test_a_failed_probe_reopens_with_a_growing_cooldown_up_to_the_cap() -> None:
    breaker, clock, _ = make(failure_threshold=1, cooldown_s=5, multiplier=2, max_cooldown_s=12)
    breaker.record_failure()
    for expected in (10, 12, 12):
        clock.now += breaker.remaining_s()
        assert breaker.allow()
        breaker.record_failure()
        assert breaker.state is State.OPEN
        assert breaker.remaining_s() == pytest.approx(expected)


def test_a_cancelled_probe_lets_the_next_call_probe() -> None:
    breaker, clock, _ = make(failure_threshold=1, cooldown_s=1)
    breaker.record_failure()
    clock.now = 1
    assert breaker.allow()
    breaker.cancel_probe()
    assert breaker.allow()


def test_guarding_a_dependency_with_the_context_manager() -> None:
    breaker, clock, _ = make(failure_threshold=2, cooldown_s=3)
    with pytest.raises(ConnectionError), breaker:
        raise ConnectionError("down")
    with pytest.raises(CircuitOpenError) as opened, breaker:
        raise ConnectionError("down again")
    assert isinstance(opened.value.__cause__, ConnectionError), "the failure that opened it"
    with pytest.raises(CircuitOpenError) as refused, breaker:
        pass
    assert refused.value.retry_in_s == pytest.approx(3)
    clock.now = 3
    with breaker:
        pass
    assert breaker.state is State.CLOSED


def test_a_failing_change_hook_does_not_break_the_breaker() -> None:
    def explode(*_: object) -> None:
        raise RuntimeError("hook")

    breaker = CircuitBreaker("dep", BreakerPolicy(failure_threshold=1), on_change=explode)
    breaker.record_failure()
    assert breaker.state is State.OPEN


def test_policy_values_are_validated() -> None:
    with pytest.raises(ValueError):
        BreakerPolicy(failure_threshold=0)
    with pytest.raises(ValueError):
        BreakerPolicy(failure_ratio=1.5)
    with pytest.raises(ValueError):
        BreakerPolicy(cooldown_s=10, max_cooldown_s=5)


def test_would_allow_answers_as_allow_would_without_taking_the_probe() -> None:
    breaker, clock, changes = make(failure_threshold=1, cooldown_s=10)
    assert breaker.would_allow()
    breaker.record_failure()
    assert not breaker.would_allow()
    clock.now = 10
    changes.clear()
    assert breaker.would_allow() and breaker.would_allow(), "asked twice: nothing taken"
    assert breaker.state is State.OPEN and changes == [], "no state change either"
    assert breaker.allow(), "the yes is followed by allow's yes"
    assert not breaker.would_allow(), "the probe is out"
