"""An exactly-once abort that times out (its transaction coordinator is moving to another broker)
is resumed before the next transaction begins, as librdkafka requires. Found by the 3-node chaos
run: after a node kill, ``begin_transaction`` failed with ``_CONFLICT`` ("Conflicting
abort_transaction API call is already in progress") and the worker exited 1."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.clock import FakeClock
from pipeline.commit import TransactionCommitter
from pipeline.errors import TransactionError
from pipeline.offsets import OffsetTracker
from pipeline.patience import Patience
from pipeline.stats import StageStats, counting
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


def committer(
    producer: CoordinatorAway, rewound: list[bool], clock: FakeClock | None = None
) -> TransactionCommitter:
    log = producer.log
    tracker = OffsetTracker()
    c = TransactionCommitter(
        FakeConsumer(log), producer, tracker, counting(StageStats("s", "g")),
        lambda: rewound.append(True),
        timeout_s=7.5, clock=(clock or FakeClock()).monotonic, patience=Patience(60.0),
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
    c.before_batch()  # the next batch: resume the abort (one short attempt), then begin
    assert [name for name, _ in log.calls] == ["begin", "abort timed out", "abort", "begin"]
    assert log.calls[2] == ("abort", Patience().attempt_s)


def test_an_abort_that_cannot_finish_holds_the_records_then_stops_the_stage_clearly() -> None:
    """While the broker is away (a restart) the pending abort is resumed at each batch and no
    transaction begins (the gate holds every record: ``waiting``), for up to the patience;
    past it the stage stops with an error naming the bound."""
    log, rewound, clock = Log(), [], FakeClock()
    producer = CoordinatorAway(log, abort_attempts=1_000)
    c = committer(producer, rewound, clock)
    c.commit({TP}, sync=False)
    c.before_batch()  # the broker is away: no begin, no crash
    assert c.waiting
    clock.advance(59.0)
    c.before_batch()
    assert c.waiting
    clock.advance(1.0)
    with pytest.raises(TransactionError, match=r"did not finish within 2\.0s, resumed for 60s "
                       r"\(transaction_retry_timeout_s=60\)"):  # fmt: skip
        c.before_batch()
    assert ("begin", None) not in log.calls[1:], "no transaction may begin over the abort"


def test_an_abort_finished_once_the_broker_is_back_lets_transactions_go_on() -> None:
    log, rewound, clock = Log(), [], FakeClock()
    producer = CoordinatorAway(log, abort_attempts=4)  # one at the commit, two resumes fail
    c = committer(producer, rewound, clock)
    c.commit({TP}, sync=False)
    for _ in range(2):
        c.before_batch()
        assert c.waiting
        clock.advance(20.0)
    c.before_batch()
    assert not c.waiting
    assert [name for name, _ in log.calls][-2:] == ["abort", "begin"]
    clock.advance(59.0)  # a later outage has the whole patience again
    producer.left = 4  # the abort at the commit and two resumes time out again
    c.commit({TP}, sync=False)
    c.before_batch()
    clock.advance(59.0)
    c.before_batch()
    assert c.waiting


class SlowCommit(CoordinatorAway):
    """Its first ``commit_attempts - 1`` commits time out (outputs wait for a moved leader) and
    carry on in the background; an abort or a begin meanwhile is refused, as librdkafka does."""

    def __init__(self, log: Log, commit_attempts: int) -> None:
        super().__init__(log, abort_attempts=1)
        self.commit_left = commit_attempts
        self.committing = False

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, timeout_s: float) -> None:
        self.log.calls.append(("send_offsets", dict(offsets)))

    def commit_transaction(self, timeout_s: float) -> None:
        self.commit_left -= 1
        if self.commit_left > 0:
            self.committing = True
            self.log.calls.append(("commit timed out", timeout_s))
            raise TransactionError(f"commit_transaction: {TIMED_OUT}", retriable=True)
        self.committing = False
        self.log.calls.append(("commit_txn", timeout_s))

    def abort_transaction(self, timeout_s: float) -> None:
        if self.committing:
            raise TransactionError("abort_transaction: Conflicting commit_transaction (_CONFLICT)")
        super().abort_transaction(timeout_s)

    def begin_transaction(self) -> None:
        if self.committing:
            raise TransactionError("begin_transaction: Conflicting commit_transaction (_CONFLICT)")
        super().begin_transaction()


def test_a_timed_out_commit_is_resumed_not_aborted_and_nothing_is_rewound() -> None:
    log, rewound = Log(), []
    producer = SlowCommit(log, commit_attempts=2)
    c = committer(producer, rewound)
    c.commit({TP}, sync=False)  # the commit times out: it goes on in the background
    c.before_batch()  # the next batch: resume the commit, then begin the next transaction
    names = [name for name, _ in log.calls]
    assert names == ["begin", "send_offsets", "commit timed out", "commit_txn", "begin"]
    assert rewound == [], "the committed batch must not be read again"
    assert "abort" not in names


def test_a_resumed_commit_at_the_interval_finishes_the_pending_one_only() -> None:
    log, rewound = Log(), []
    producer = SlowCommit(log, commit_attempts=2)
    c = committer(producer, rewound)
    c.commit({TP}, sync=False)
    c.commit({TP}, sync=True, timeout_s=3.0)  # a revoke or the shutdown: within its budget
    assert log.calls[-1] == ("commit_txn", 3.0)
    assert [n for n, _ in log.calls].count("send_offsets") == 1


def test_a_commit_that_cannot_finish_holds_the_records_then_stops_the_stage_clearly() -> None:
    log, rewound, clock = Log(), [], FakeClock()
    producer = SlowCommit(log, commit_attempts=1_000)
    c = committer(producer, rewound, clock)
    c.commit({TP}, sync=False)
    c.commit({TP}, sync=False)  # the interval: resumed, kept pending
    c.before_batch()
    assert c.waiting and ("begin", None) not in log.calls[1:]
    clock.advance(60.0)
    with pytest.raises(TransactionError, match=r"commit did not finish within 2\.0s, resumed "
                       r"for 60s"):  # fmt: skip
        c.before_batch()
    assert rewound == [], "the pending commit must not be aborted and rewound"


def test_the_shutdown_finishes_a_pending_abort_within_its_budget() -> None:
    """Chaos run b2: a worker whose abort timed out as the broker restarted exited with it
    pending; the transaction was never aborted and the group's offsets stayed unstable."""
    log, rewound = Log(), []
    producer = CoordinatorAway(log, abort_attempts=2)
    c = committer(producer, rewound)
    c.commit({TP}, sync=False)  # offsets fail, the abort times out
    c.commit({TP}, sync=True, timeout_s=4.0)  # the final commit of the shutdown
    assert [name for name, _ in log.calls] == ["begin", "abort timed out", "abort"]
    assert log.calls[-1] == ("abort", 4.0)
    c.commit({TP}, sync=True, timeout_s=4.0)  # done: nothing more to finish
    assert len(log.calls) == 3


def test_an_interval_commit_resumes_a_pending_abort_in_one_short_attempt() -> None:
    """After the abort every partition may be held (its rewind unreadable), so no batch comes:
    the interval resumes it, one attempt at a time, and the patience bounds the wait."""
    log, rewound, clock = Log(), [], FakeClock()
    producer = CoordinatorAway(log, abort_attempts=10)
    c = committer(producer, rewound, clock)
    c.commit({TP}, sync=False)  # offsets fail, the abort times out
    c.commit({TP}, sync=False)  # the next interval: one short attempt, still away
    assert log.calls[-1] == ("abort timed out", Patience().attempt_s) and c.waiting
    clock.advance(60.0)  # the committer's patience
    with pytest.raises(TransactionError, match=r"aborted transaction did not finish"):
        c.commit({TP}, sync=False)


def test_a_pending_abort_the_shutdown_cannot_finish_is_reported_not_hidden() -> None:
    log, rewound = Log(), []
    producer = CoordinatorAway(log, abort_attempts=3)
    c = committer(producer, rewound)
    c.commit({TP}, sync=False)
    with pytest.raises(TransactionError, match=r"did not finish within 2\.0s"):
        c.commit({TP}, sync=True, timeout_s=2.0)


def test_a_pending_commit_a_revoke_cannot_finish_stays_pending_for_the_next_batch() -> None:
    """The revoke reports it (raises); the commit is still in flight in librdkafka, so the next
    batch resumes it rather than beginning over it (refused: ``_CONFLICT``)."""
    log, rewound = Log(), []
    producer = SlowCommit(log, commit_attempts=3)
    c = committer(producer, rewound)
    c.commit({TP}, sync=False)  # times out: pending
    with pytest.raises(TransactionError, match=r"commit did not finish within 3\.0s"):
        c.commit({TP}, sync=True, timeout_s=3.0)  # a revoke, within its budget
    c.before_batch()  # resumed: it finishes now, then the next transaction begins
    names = [name for name, _ in log.calls]
    assert names[-2:] == ["commit_txn", "begin"] and not c.waiting
    assert rewound == []
