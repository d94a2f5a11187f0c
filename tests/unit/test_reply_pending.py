"""The requester's table of pending requests (pipeline.reply), on a FakeClock: correlation by
request id, late and duplicate replies dropped and counted, timeouts and cancellation."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline import RequestCancelled, RequestTimeout
from pipeline.clock import FakeClock
from pipeline.reply import PendingRequests


class Waiter:
    def __init__(self) -> None:
        self.outcomes: list[Any] = []

    def __call__(self, value: Any) -> None:
        self.outcomes.append(value)


def test_a_reply_is_handed_to_the_request_it_names_and_no_other() -> None:
    """Two waiting requests: the reply to the second settles the second only."""
    pending = PendingRequests(FakeClock())
    first, second = Waiter(), Waiter()
    pending.add("r1", 5, first, "binding-1")
    pending.add("r2", 5, second, "binding-2")
    outcome, settle, context = pending.answer("r2")
    assert (outcome, settle, context) == ("answered", second, "binding-2")
    assert len(pending) == 1 and pending.counts.answered == 1


def test_a_second_reply_to_an_answered_request_is_dropped_as_duplicate() -> None:
    """A redelivered request is answered twice: the second reply is dropped and counted."""
    pending = PendingRequests(FakeClock())
    pending.add("r1", 5, Waiter())
    pending.answer("r1")
    assert pending.answer("r1") == ("duplicate", None, None)
    assert (pending.counts.answered, pending.counts.duplicate, pending.counts.late) == (1, 1, 0)


def test_a_request_past_its_deadline_fails_with_request_timeout_naming_its_id() -> None:
    """Nothing settles before the deadline; at it, RequestTimeout carries the request id."""
    clock = FakeClock()
    pending = PendingRequests(clock)
    waiter = Waiter()
    pending.add("req-42", 5, waiter)
    clock.advance(4.9)
    assert pending.expire() == 0 and waiter.outcomes == []
    clock.advance(0.1)
    assert pending.expire() == 1
    [error] = waiter.outcomes
    assert isinstance(error, RequestTimeout) and error.request_id == "req-42"
    assert "req-42" in str(error) and "5s" in str(error)
    assert len(pending) == 0 and pending.counts.timed_out == 1


def test_a_reply_after_the_timeout_is_dropped_as_late_and_settles_nothing() -> None:
    """The waiter heard its timeout once; the late reply does not reach it."""
    clock = FakeClock()
    pending = PendingRequests(clock)
    waiter = Waiter()
    pending.add("r1", 1, waiter)
    clock.advance(1)
    pending.expire()
    assert pending.answer("r1") == ("late", None, None)
    assert len(waiter.outcomes) == 1 and pending.counts.late == 1


def test_a_reply_to_a_request_this_process_never_made_is_late() -> None:
    """After a restart, replies meant for the previous run name unknown ids: dropped."""
    pending = PendingRequests(FakeClock())
    assert pending.answer("from-before-the-restart")[0] == "late"
    assert pending.counts.late == 1


def test_closing_cancels_every_waiting_request_once() -> None:
    """cancel_all settles each with RequestCancelled; a later expire settles nothing again."""
    clock = FakeClock()
    pending = PendingRequests(clock)
    waiters = [Waiter(), Waiter()]
    pending.add("a", 5, waiters[0])
    pending.add("b", 5, waiters[1])
    pending.cancel_all("the publisher closed")
    clock.advance(10)
    assert pending.expire() == 0
    for waiter, rid in zip(waiters, "ab", strict=True):
        [error] = waiter.outcomes
        assert isinstance(error, RequestCancelled) and error.request_id == rid
        assert "the publisher closed" in str(error)
    assert pending.counts.cancelled == 2


def test_a_request_id_already_waiting_is_refused() -> None:
    """Two requests with one id (a repeated id_field) could not be told apart."""
    pending = PendingRequests(FakeClock())
    pending.add("same", 5, Waiter())
    with pytest.raises(ValueError, match="already waiting"):
        pending.add("same", 5, Waiter())


def test_forget_drops_a_request_without_settling_it() -> None:
    """A request that could not be sent is forgotten: its error is raised, not a timeout."""
    clock = FakeClock()
    pending = PendingRequests(clock)
    waiter = Waiter()
    pending.add("r1", 1, waiter)
    pending.forget("r1")
    clock.advance(2)
    assert pending.expire() == 0 and waiter.outcomes == []


@pytest.mark.parametrize("timeout_s", [0, -1.0])
def test_a_timeout_that_is_not_positive_is_refused(timeout_s: float) -> None:
    """A request must be bounded in time by a positive timeout."""
    with pytest.raises(ValueError, match="timeout_s must be positive"):
        PendingRequests(FakeClock()).add("r1", timeout_s, Waiter())
