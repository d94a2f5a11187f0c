"""The job state machine, the result and progress checks, coalescing and retention: pure logic,
on a FakeClock where time matters, no broker and no sleeping."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from pipeline.errors import DeclarationError, ResultError, SerializationError
from pipeline.jobs.result import RESULT_MAX_BYTES, check_progress, encode_result
from pipeline.jobs.state import Job, decode, encode, merge, summarise
from pipeline.jobs.tracking import JobTracking


def job(state: Any, attempt: int = 1, **fields: Any) -> Job:
    return Job("j1", state, attempt, **fields)


def test_a_job_moves_forward_through_its_states() -> None:
    """waiting → active → retrying → active (attempt 2) → completed, each accepted."""
    held = None
    for new in (job("waiting"), job("active"), job("retrying"), job("active", 2),
                job("completed", 2)):  # fmt: skip
        held = merge(held, new)
        assert held is not None and held.state == new.state
    assert held is not None and held.attempt == 2


def test_a_redelivered_completed_event_does_not_show_active_again() -> None:
    """A crash redelivers the event under the same attempt: its active is behind completed."""
    completed = job("completed", result={"ok": True})
    assert merge(completed, job("active")) is None
    assert merge(completed, job("waiting")) is None


def test_a_new_attempt_may_follow_a_finished_one() -> None:
    """A replayed dead letter is a new delivery attempt: it may show active again."""
    assert merge(job("dead-lettered", 3), job("active", 4)) == job("active", 4)


def test_late_transitions_of_an_earlier_attempt_are_dropped() -> None:
    """Out of order (two producers, or a retry copy handled before the failure arrived)."""
    assert merge(job("active", 2), job("retrying", 1)) is None
    assert merge(job("active", 2), job("waiting", 1)) is None
    assert merge(job("completed", 2), job("failed", 1)) is None


def test_waiting_arriving_after_active_is_dropped() -> None:
    """The publisher's waiting entry may reach the topic after the worker's active."""
    assert merge(job("active", worker="w1"), job("waiting")) is None


def test_progress_updates_within_an_attempt_replace_each_other() -> None:
    held = merge(job("active", progress=30.0), job("active", progress=50.0, note="half"))
    assert held is not None and (held.progress, held.note) == (50.0, "half")


def test_dead_lettered_follows_the_final_failure_of_the_same_attempt() -> None:
    held = merge(job("failed", 3, error="E: x"), job("dead-lettered", 3, error="E: x"))
    assert held is not None and held.state == "dead-lettered"
    assert merge(job("dead-lettered", 3), job("failed", 3)) is None


def test_a_later_entry_inherits_what_it_does_not_know() -> None:
    """The worker does not know when the publisher stored the event, nor (coalesced away) the
    start of the attempt it completes."""
    waiting = job("waiting", topic="t", partition=2, offset=9, created_at=100.0)
    active = merge(waiting, job("active", started_at=101.0, worker="w1", progress=10.0))
    assert active is not None
    completed = merge(active, job("completed", result=1))
    assert completed is not None
    assert (completed.topic, completed.partition, completed.offset) == ("t", 2, 9)
    assert (completed.created_at, completed.started_at, completed.worker) == (100.0, 101.0, "w1")
    assert completed.progress == 10.0
    # A new attempt keeps the coordinates, but not the previous attempt's start or progress.
    again = merge(completed, job("active", 2))
    assert again is not None and again.started_at is None and again.progress is None
    assert again.created_at == 100.0


def test_a_job_was_created_when_it_was_first_stored() -> None:
    """A delayed event is written again when due: the worker's later record time is not it."""
    held = merge(job("delayed", created_at=100.0), job("active", created_at=160.0))
    assert held is not None and held.created_at == 100.0


def test_entries_round_trip_and_garbage_is_refused() -> None:
    entry = job("completed", result={"a": [1, 2]}, error=None, expires_at=5.0)
    assert decode(encode(entry)) == entry
    newer = json.loads(encode(entry)) | {"field_of_a_newer_writer": 1}
    assert decode(json.dumps(newer).encode()) == entry
    for raw in (b"not json", b"[]", b'{"id": "x", "state": "bogus"}', b'{"state": "active"}',
                b'{"id": "x", "state": "active", "attempt": "2"}'):  # fmt: skip
        with pytest.raises(ValueError):
            decode(raw)


def test_an_error_summary_is_its_type_and_a_short_message() -> None:
    assert summarise(ValueError("bad")) == "ValueError: bad"
    assert len(summarise(ValueError("x" * 5000))) == 500


class Receipt(BaseModel):
    message_id: str
    recipients: int


def test_a_result_is_json_or_a_pydantic_model() -> None:
    assert encode_result({"a": 1, "b": [True, None]}) == '{"a":1,"b":[true,null]}'
    assert json.loads(encode_result(Receipt(message_id="m1", recipients=2))) == {
        "message_id": "m1", "recipients": 2}  # fmt: skip


def test_a_result_that_is_not_json_is_refused_clearly() -> None:
    for bad in (object(), {1, 2}, float("nan"), {"when": b"bytes"}):
        with pytest.raises(ResultError, match="JSON-serialisable or a pydantic model"):
            encode_result(bad)


def test_a_result_over_the_size_limit_is_refused_and_never_retried() -> None:
    """ResultError is a SerializationError: the failure policy dead-letters it at once."""
    encode_result("x" * (RESULT_MAX_BYTES - 2))  # its two quotes make the limit exactly
    with pytest.raises(ResultError, match=f"at most {RESULT_MAX_BYTES} bytes"):
        encode_result("x" * (RESULT_MAX_BYTES - 1))
    assert issubclass(ResultError, SerializationError)


def test_progress_is_a_percentage_with_an_optional_short_note() -> None:
    assert check_progress(50, None) == (50.0, None)
    assert check_progress(0.5, "n")[0] == 0.5
    assert len(check_progress(1, "x" * 1000)[1] or "") == 200
    for bad in (-1, 101, float("nan"), True, "50"):
        with pytest.raises(ValueError, match="0 to 100"):
            check_progress(bad, None)
    with pytest.raises(ValueError, match="note"):
        check_progress(1, 5)


def test_job_tracking_refuses_bad_values_with_one_line() -> None:
    JobTracking(retention_s=60, keep_completed=False)
    for kwargs in ({"retention_s": 0}, {"retention_s": True}, {"flush_interval_s": 5},
                   {"keep_completed": "yes"}):  # fmt: skip
        with pytest.raises(DeclarationError, match="JobTracking"):
            JobTracking(**kwargs)
