"""librdkafka's synchronous commit and close wait for the group coordinator without a bound of
their own (a probe saw a commit still waiting after 20 s): the adapter gives each one, so a
stopping worker whose broker does not answer still exits within its shutdown timeout."""

from __future__ import annotations

import time
import uuid

import pytest

from pipeline.errors import KafkaError
from pipeline.kafka.clients import KafkaConsumer

# Nothing listens there: no coordinator is ever found, so neither call would ever return.
NOBODY = "127.0.0.1:1"
BOUND_S = 1.0


def _consumer() -> KafkaConsumer:
    group = f"unanswered-{uuid.uuid4().hex[:8]}"
    return KafkaConsumer({"bootstrap.servers": NOBODY, "group.id": group,
                          "enable.auto.commit": False, "log_level": 0})  # fmt: skip


def test_sync_commit_without_a_coordinator_fails_at_its_bound() -> None:
    """The final commit of a stopping stage, no coordinator answering: KafkaError after the
    bound (the stage logs it and goes on to close; the records are redelivered)."""
    consumer = _consumer()
    try:
        started = time.monotonic()
        with pytest.raises(KafkaError, match=r"no answer within 1\.0s"):
            consumer.commit({("t", 0): 5}, sync=True, timeout_s=BOUND_S)
        assert time.monotonic() - started >= BOUND_S
    finally:
        consumer.close(BOUND_S)


def test_close_without_a_coordinator_returns_at_its_bound() -> None:
    """close() after a commit that is still waiting for the coordinator (librdkafka's close
    waits for it): it returns once its bound is spent, without raising."""
    consumer = _consumer()
    with pytest.raises(KafkaError):
        consumer.commit({("t", 0): 5}, sync=True, timeout_s=0.1)
    started = time.monotonic()
    consumer.close(BOUND_S)
    assert time.monotonic() - started >= BOUND_S - 0.05, "close returned early: nothing to bound"
