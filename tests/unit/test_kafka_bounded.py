"""A librdkafka call with no timeout of its own (a synchronous commit, close) is waited for at
most its bound; its answer within the bound is the caller's, result or error alike."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.bounded import within
from pipeline.errors import KafkaError


def test_a_call_that_never_answers_is_given_up_on_at_its_bound() -> None:
    """A commit the coordinator never answers: KafkaError naming it, and the caller goes on."""
    never = threading.Event()
    try:
        with pytest.raises(KafkaError, match=r"commit in group g: no answer within 0\.1s"):
            within(never.wait, 0.1, "commit in group g")
    finally:
        never.set()  # lets the abandoned call's thread end


def test_an_answer_within_the_bound_is_returned_or_raised() -> None:
    """The result of a call that answers in time is returned; its exception is raised as is."""
    assert within(lambda: [1, 2], 30.0, "commit") == [1, 2]

    def refused() -> None:
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        within(refused, 30.0, "commit")


def test_a_call_given_up_on_is_counted_until_it_returns() -> None:
    """The worker reads the count at exit: a call still inside the client means skipping the
    interpreter's shutdown (see ``worker.exit_within``)."""
    from pipeline import bounded

    release = threading.Event()
    before = bounded.abandoned()
    with pytest.raises(KafkaError, match="no answer within"):
        within(lambda: release.wait(10), 0.05, "stuck call")
    assert bounded.abandoned() == before + 1
    release.set()
    deadline = time.monotonic() + 10
    while bounded.abandoned() > before and time.monotonic() < deadline:
        time.sleep(0.01)  # the released thread ends at once; bounded by the deadline
    assert bounded.abandoned() == before
