"""Exactly-once: a commit kept pending while the broker is away (a restart) is finished by
resuming it, whatever happens in the loop meanwhile: a lost assignment or a refused output does
not abort it (librdkafka refuses, ``_CONFLICT``, and it may yet commit), the gate keeps holding
records instead of handing them back as "overdue", and each resume in the loop is one short
attempt, so a SIGTERM meanwhile still leaves the shutdown its budget. FakeClock, no sleeping."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.clock import FakeClock
from pipeline.errors import TransactionError
from pipeline.gates import WAIT_FOR_BROKER, TransactionAge
from pipeline.patience import Patience
from tests.unit.test_commit import TP, Log
from tests.unit.test_commit_abort_resume import CoordinatorAway, SlowCommit, committer


class RefusedInCommit(SlowCommit):
    """Its first commit times out; the resumed one fails, needing an abort (an output of the
    transaction was refused meanwhile)."""

    def __init__(self, log: Log) -> None:
        super().__init__(log, commit_attempts=1_000)

    def commit_transaction(self, timeout_s: float) -> None:
        if self.committing:
            self.committing = False
            raise TransactionError("commit_transaction: a message failed", abortable=True)
        super().commit_transaction(timeout_s)


def test_a_lost_assignment_does_not_abort_a_pending_commit_and_its_outcomes_are_told() -> None:
    log, rewound = Log(), []
    producer = SlowCommit(log, commit_attempts=2)
    c = committer(producer, rewound)
    told: list[str] = []
    c.after_commit(lambda: told.append("dead letter stored"))  # an outcome of the transaction
    c.commit({TP}, sync=False)  # times out: it goes on in the background
    c.abandon()  # on_lost while it is pending (the broker away past the session timeout)
    assert rewound == [], "nothing may be rewound: the pending commit may yet go through"
    c.before_batch()  # the next step: the commit is resumed and finishes
    names = [name for name, _ in log.calls]
    assert names == ["begin", "send_offsets", "commit timed out", "commit_txn", "begin"]
    assert told == ["dead letter stored"], "a committed transaction's outcomes must be told"


def test_a_refused_output_during_a_pending_commit_is_aborted_once_the_commit_fails() -> None:
    log, rewound = Log(), []
    producer = RefusedInCommit(log)
    c = committer(producer, rewound)
    told: list[str] = []
    c.after_commit(lambda: told.append("told"))
    c.commit({TP}, sync=False)  # times out
    assert c.delivery_failed()  # its delivery report: refused
    assert rewound == [], "not aborted over the pending commit"
    c.before_batch()  # resumed: it fails, so it is aborted and rewound now, then a new begin
    names = [name for name, _ in log.calls]
    assert names == ["begin", "send_offsets", "commit timed out", "abort", "begin"]
    assert rewound == [True] and told == []


def test_a_pending_commit_is_not_overdue_so_the_gate_keeps_holding_every_record() -> None:
    log, rewound, clock = Log(), [], FakeClock()
    producer = SlowCommit(log, commit_attempts=1_000)
    c = committer(producer, rewound, clock)
    c.commit({TP}, sync=False)
    clock.advance(45.0)  # past half the transaction timeout (60 s) since the begin
    c.before_batch()  # resumed, still pending
    assert c.waiting
    assert not c.overdue, "a pending commit cannot be committed again"
    record: Any = None
    assert TransactionAge(c).check(record, TP, None) is WAIT_FOR_BROKER


def test_a_resume_in_the_loop_is_one_short_attempt_and_the_shutdown_gets_its_budget() -> None:
    log, rewound = Log(), []
    producer = SlowCommit(log, commit_attempts=1_000)
    c = committer(producer, rewound)  # calls in the loop: 7.5 s; attempts: Patience's 2 s
    c.commit({TP}, sync=False)
    assert log.calls[-1] == ("commit timed out", 7.5)  # the commit itself: the loop's budget
    c.before_batch()
    c.commit({TP}, sync=False)  # the interval
    assert log.calls[-2:] == [("commit timed out", 2.0)] * 2
    with pytest.raises(TransactionError):  # the shutdown: its own budget, then it says so
        c.commit({TP}, sync=True, timeout_s=5.0)
    assert log.calls[-1] == ("commit timed out", 5.0)


def test_an_abort_resumed_in_the_loop_is_one_short_attempt() -> None:
    log, rewound = Log(), []
    producer = CoordinatorAway(log, abort_attempts=1_000)
    c = committer(producer, rewound)
    c.commit({TP}, sync=False)  # offsets fail, the abort times out (the loop's budget)
    assert log.calls[-1] == ("abort timed out", 7.5)
    c.before_batch()
    assert log.calls[-1] == ("abort timed out", Patience().attempt_s)
