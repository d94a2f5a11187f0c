"""Commit policies, with fake clients: what is committed, in which order, and on failure."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from pipeline.commit import OffsetCommitter, TransactionCommitter
from pipeline.errors import ProducerFencedError, TransactionError
from pipeline.offsets import OffsetTracker
from pipeline.stats import StageStats, counting

TP = ("in", 0)


class Log:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []


class FakeConsumer:
    def __init__(self, log: Log) -> None:
        self.log = log
        self.failed: list[Any] = []

    def commit(
        self, offsets: dict[Any, int], *, sync: bool, timeout_s: float | None = None
    ) -> None:
        self.log.calls.append(("commit", dict(offsets)))

    def take_commit_failures(self) -> list[Any]:
        failed, self.failed = self.failed, []
        return failed

    def group_metadata(self) -> str:
        return "gm"


class FakeStore:
    def __init__(self, log: Log, fail: bool = False) -> None:
        self.log, self.fail = log, fail

    def mark_completed(self, group: str, ids: list[str]) -> None:
        if self.fail:
            raise RuntimeError("database down")
        self.log.calls.append(("done", list(ids)))


class FakeProducer:
    def __init__(self, log: Log, fail_commit: Exception | None = None) -> None:
        self.log, self.fail_commit = log, fail_commit

    def init_transactions(self, timeout_s: float) -> None:
        self.log.calls.append(("init", None))

    def begin_transaction(self) -> None:
        self.log.calls.append(("begin", None))

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, timeout_s: float) -> None:
        self.log.calls.append(("send_offsets", dict(offsets)))

    def commit_transaction(self, timeout_s: float) -> None:
        if self.fail_commit is not None:
            raise self.fail_commit
        self.log.calls.append(("commit_txn", None))

    def abort_transaction(self, timeout_s: float) -> None:
        self.log.calls.append(("abort", None))


def test_ids_are_recorded_done_before_their_offsets_are_committed() -> None:
    log, tracker = Log(), OffsetTracker()
    committer = OffsetCommitter("g", FakeConsumer(log), tracker, counting(StageStats("s", "g")))  # type: ignore[arg-type]
    committer.store = FakeStore(log)
    tracker.partition(TP).begin(0, 0, event_id="a")
    tracker.partition(TP).begin(1, 0, event_id="b")
    committer.commit({TP}, sync=True)
    assert log.calls == [("done", ["a", "b"]), ("commit", {TP: 2})]


def test_a_store_failure_commits_no_offsets_and_keeps_the_ids_for_next_time() -> None:
    log, tracker = Log(), OffsetTracker()
    store = FakeStore(log, fail=True)
    committer = OffsetCommitter("g", FakeConsumer(log), tracker, counting(StageStats("s", "g")))  # type: ignore[arg-type]
    committer.store = store
    tracker.partition(TP).begin(0, 0, event_id="a")
    committer.commit({TP}, sync=False)
    assert log.calls == [], "offsets committed although their ids were not recorded"
    store.fail = False
    committer.commit({TP}, sync=False)
    assert log.calls == [("done", ["a"]), ("commit", {TP: 1})]


def test_a_transaction_commits_outputs_and_input_positions_together() -> None:
    log, tracker = Log(), OffsetTracker()
    committer = TransactionCommitter(
        FakeConsumer(log), FakeProducer(log), tracker, counting(StageStats("s", "g")), lambda: None
    )
    assert committer.start(threading.Event())
    committer.before_batch()
    committer.before_batch()  # already open: no second begin
    tracker.partition(TP).begin(7, 1)  # its output is not acknowledged yet: irrelevant here
    committer.commit({TP}, sync=False)
    assert [c for c, _ in log.calls] == ["init", "begin", "send_offsets", "commit_txn"]
    assert log.calls[2] == ("send_offsets", {TP: 8})


def test_an_abortable_failure_aborts_and_rewinds_to_the_committed_offsets() -> None:
    log, tracker, rewound = Log(), OffsetTracker(), []
    producer = FakeProducer(log, fail_commit=TransactionError("x", abortable=True))
    stats = StageStats("s", "g")
    committer = TransactionCommitter(
        FakeConsumer(log), producer, tracker, counting(stats), lambda: rewound.append(True)
    )
    committer.before_batch()
    tracker.partition(TP).begin(0, 0)
    committer.commit({TP}, sync=False)
    assert ("abort", None) in log.calls and rewound == [True] and stats.aborts == 1
    producer.fail_commit = None
    committer.before_batch()
    assert log.calls[-1] == ("begin", None), "a new transaction starts after the abort"


def test_a_fatal_producer_error_that_is_not_a_fence_stops_the_stage() -> None:
    """A fence is renewed (tests/unit/test_producer_renewal.py); another fatal error is not."""
    log, tracker = Log(), OffsetTracker()
    fatal = ProducerFencedError("commit_transaction: denied", code="CLUSTER_AUTHORIZATION_FAILED")
    producer = FakeProducer(log, fail_commit=fatal)
    committer = TransactionCommitter(
        FakeConsumer(log), producer, tracker, counting(StageStats("s", "g")), lambda: None
    )
    committer.before_batch()
    tracker.partition(TP).begin(0, 0)
    with pytest.raises(ProducerFencedError):
        committer.commit({TP}, sync=False)


def test_an_async_commit_that_failed_is_sent_again() -> None:
    """A commit lost to a rebalance (ILLEGAL_GENERATION) is retried on the next interval even
    when no new record arrived on that partition."""
    log, tracker = Log(), OffsetTracker()
    consumer = FakeConsumer(log)
    committer = OffsetCommitter("g", consumer, tracker, counting(StageStats("s", "g")))  # type: ignore[arg-type]
    tracker.partition(TP).begin(0, 0)
    committer.commit({TP}, sync=False)
    committer.commit({TP}, sync=False)
    assert log.calls == [("commit", {TP: 1})], "nothing new: nothing re-sent"
    consumer.failed = [TP]
    committer.commit({TP}, sync=False)
    assert log.calls == [("commit", {TP: 1}), ("commit", {TP: 1})]


def test_committed_transactions_release_their_tokens() -> None:
    """The tracker does not keep a token per record forever in exactly-once mode."""
    log, tracker = Log(), OffsetTracker()
    committer = TransactionCommitter(
        FakeConsumer(log), FakeProducer(log), tracker, counting(StageStats("s", "g")), lambda: None
    )
    for offset in range(3):
        committer.before_batch()
        tracker.partition(TP).begin(offset, 1).finish_one()  # acknowledged by the commit
        committer.commit({TP}, sync=False)
    assert tracker.in_flight == 0


def test_a_commit_with_a_timeout_shares_one_deadline_across_its_calls() -> None:
    """At shutdown the whole commit (offsets, commit, and the abort when it fails) must fit the
    shutdown timeout, not take the timeout once per call."""
    now = [0.0]

    class SlowProducer(FakeProducer):
        timeouts: list[tuple[str, float]] = []

        def send_offsets_to_transaction(self, offsets: Any, meta: Any, timeout_s: float) -> None:
            self.timeouts.append(("send_offsets", timeout_s))
            now[0] += 4.0  # the coordinator is slow after a broker restart

        def commit_transaction(self, timeout_s: float) -> None:
            self.timeouts.append(("commit", timeout_s))
            now[0] += timeout_s
            raise TransactionError("timed out", abortable=True)

        def abort_transaction(self, timeout_s: float) -> None:
            self.timeouts.append(("abort", timeout_s))

    log, tracker = Log(), OffsetTracker()
    producer = SlowProducer(log)
    committer = TransactionCommitter(
        FakeConsumer(log), producer, tracker, counting(StageStats("s", "g")), lambda: None,
        timeout_s=30.0, clock=lambda: now[0],
    )  # fmt: skip
    committer.before_batch()
    tracker.partition(TP).begin(0, 0)
    committer.commit({TP}, sync=True, timeout_s=10.0)
    assert producer.timeouts == [("send_offsets", 10.0), ("commit", 6.0), ("abort", 0.5)]


def test_outcomes_in_a_transaction_are_claimed_when_it_commits_never_if_it_aborts() -> None:
    """A dead letter acknowledged inside a transaction is not final: it is counted and logged
    only once the transaction commits; an aborted one forgets it (it will be redone)."""
    log, tracker, claimed = Log(), OffsetTracker(), []
    producer = FakeProducer(log, fail_commit=TransactionError("x", abortable=True))
    committer = TransactionCommitter(
        FakeConsumer(log), producer, tracker, counting(StageStats("s", "g")), lambda: None
    )
    committer.before_batch()
    committer.after_commit(lambda: claimed.append("aborted"))
    committer.commit({TP}, sync=False)
    producer.fail_commit = None
    committer.before_batch()
    committer.after_commit(lambda: claimed.append("committed"))
    assert claimed == []
    committer.commit({TP}, sync=False)
    assert claimed == ["committed"]


class RenewingProducer(FakeProducer):
    def renew(self) -> None:
        self.log.calls.append(("renew", None))


def test_a_fence_met_while_stopping_is_not_renewed_and_counts_as_aborted() -> None:
    """A fence met by the shutdown's commit (the stop set): the worker is leaving, so no new
    producer is made (a renewal purges the old one, serves its reports for up to 2 s and makes
    a client nobody uses, out of the shutdown's budget). The transaction counts as aborted:
    every partition is rewound, nothing raised."""
    log, tracker = Log(), OffsetTracker()
    fence = ProducerFencedError("commit_transaction: fenced (_FENCED)", code="_FENCED")
    rewinds: list[int] = []
    committer = TransactionCommitter(
        FakeConsumer(log), RenewingProducer(log, fail_commit=fence), tracker,
        counting(StageStats("s", "g")), lambda: rewinds.append(1),
    )  # fmt: skip
    stop = threading.Event()
    assert committer.start(stop)
    committer.before_batch()
    tracker.partition(TP).begin(0, 0)
    stop.set()
    committer.commit({TP}, sync=True, timeout_s=1.0)
    assert ("renew", None) not in log.calls
    assert rewinds == [1] and not committer.overdue
