"""A librdkafka call with no timeout of its own (a synchronous commit, close) is waited for at
most its bound; its answer within the bound is the caller's, result or error alike."""

from __future__ import annotations

import threading

import pytest

from pipeline.errors import KafkaError
from pipeline.kafka.bounded import within


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
