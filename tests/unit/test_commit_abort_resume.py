"""An exactly-once abort that times out (its transaction coordinator is moving to another broker)
is resumed before the next transaction begins, as librdkafka requires. Found by the 3-node chaos
run: after a node kill, ``begin_transaction`` failed with ``_CONFLICT`` ("Conflicting
abort_transaction API call is already in progress") and the worker exited 1."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.commit import TransactionCommitter
from pipeline.errors import TransactionError
from pipeline.offsets import OffsetTracker
from pipeline.stats import StageStats
from tests.unit.test_commit import TP, FakeConsumer, Log

TIMED_OUT = "Timed out waiting for operation to finish, retry call to resume (_TIMED_OUT)"


class CoordinatorAway:
    """A transactional producer (librdkafka's rules) whose coordinator answers again only after
    ``abort_attempts`` abort calls: the earlier ones time out and the abort goes on in the
    background; a begin while it does is refused."""

    def __init__(self, log: Log, abort_attempts: int) -> None:
        self.log, self.left = log, abort_attempts
        self.aborting = False

    def init_transactions(self, timeout_s: float) -> None:
        self.log.calls.append(("init", None))

    def begin_transaction(self) -> None:
        if self.aborting:
            raise TransactionError("begin_transaction: Conflicting abort_transaction (_CONFLICT)")
        self.log.calls.append(("begin", None))

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, timeout_s: float) -> None:
        raise TransactionError("COORDINATOR_NOT_AVAILABLE", abortable=True)

    def commit_transaction(self, timeout_s: float) -> None:
        self.log.calls.append(("commit_txn", None))

    def abort_transaction(self, timeout_s: float) -> None:
        self.left -= 1
        if self.left > 0:
            self.aborting = True
            self.log.calls.append(("abort timed out", timeout_s))
            raise TransactionError(f"abort_transaction: {TIMED_OUT}", retriable=True)
        self.aborting = False
        self.log.calls.append(("abort", timeout_s))


def committer(producer: CoordinatorAway, rewound: list[bool]) -> TransactionCommitter:
    log = producer.log
    tracker = OffsetTracker()
    c = TransactionCommitter(
        FakeConsumer(log), producer, tracker, StageStats("s", "g"), lambda: rewound.append(True),
        timeout_s=7.5,
    )  # fmt: skip
    c.before_batch()
    tracker.partition(TP).begin(0, 0)
    return c


def test_a_timed_out_abort_is_resumed_before_the_next_transaction_begins() -> None:
    log, rewound = Log(), []
    producer = CoordinatorAway(log, abort_attempts=2)
    c = committer(producer, rewound)
    c.commit({TP}, sync=False)  # offsets fail, the abort times out
    assert rewound == [True]
    c.before_batch()  # the next batch: resume the abort (full timeout), then begin
    assert [name for name, _ in log.calls] == ["begin", "abort timed out", "abort", "begin"]
    assert log.calls[2] == ("abort", 7.5)


def test_an_abort_that_still_cannot_finish_stops_the_stage_with_a_clear_error() -> None:
    log, rewound = Log(), []
    producer = CoordinatorAway(log, abort_attempts=3)
    c = committer(producer, rewound)
    c.commit({TP}, sync=False)
    with pytest.raises(TransactionError, match=r"did not finish within 7\.5s"):
        c.before_batch()
    assert ("begin", None) not in log.calls[1:], "no transaction may begin over the abort"
