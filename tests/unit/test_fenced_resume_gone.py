"""A fenced resumed commit that covers a partition no longer this worker's is told as failed
and aborted, even when the group's committed offsets are exactly the transaction's: a new
owner of that partition may have committed the very same offsets, so they say nothing of
whether this transaction landed (``TransactionCommitter._landed``). Fake clients, FakeClock."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from pipeline.clock import FakeClock
from pipeline.commit import TransactionCommitter
from pipeline.errors import ProducerFencedError
from pipeline.offsets import OffsetTracker
from pipeline.patience import Patience
from pipeline.ports import TopicPartition
from pipeline.stats import StageStats, counting
from tests.hookkit import Recorder
from tests.unit.test_commit import TP, FakeConsumer, Log
from tests.unit.test_commit_abort_resume import SlowCommit

GONE = ("in", 1)


class FencedOnResume(SlowCommit):
    """Its first commit times out and goes on in the background; before it is resumed the
    transactional id is taken by a newer epoch, so the resumed call raises the fence."""

    def __init__(self, log: Log) -> None:
        super().__init__(log, commit_attempts=1_000)

    def commit_transaction(self, timeout_s: float) -> None:
        if self.committing:
            self.committing = False
            raise ProducerFencedError("commit_transaction: fenced (_FENCED)", code="_FENCED")
        super().commit_transaction(timeout_s)

    def renew(self) -> None:
        self.log.calls.append(("renew", None))


class CommittedAsSent(FakeConsumer):
    """The group's committed offsets are the transaction's own on every partition: what a
    landed commit leaves, and what a new owner that committed the same offsets leaves too."""

    def __init__(self, log: Log, offsets: dict[TopicPartition, int]) -> None:
        super().__init__(log)
        self.offsets = offsets

    def committed(self, partitions: list[TopicPartition], timeout_s: float) -> dict[Any, int]:
        self.log.calls.append(("read committed", sorted(partitions)))
        return {tp: self.offsets[tp] for tp in partitions}


def test_a_fenced_resume_of_a_commit_over_a_gone_partition_is_failed_and_aborted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log, tracker, recorder, rewound = Log(), OffsetTracker(), Recorder(), []
    committer = TransactionCommitter(
        CommittedAsSent(log, {TP: 1, GONE: 6}), FencedOnResume(log), tracker,
        counting(StageStats("s", "g"), recorder), lambda: rewound.append(True),
        clock=FakeClock().monotonic, patience=Patience(60.0),
    )  # fmt: skip
    committer.before_batch()
    tracker.partition(TP).begin(0, 0)
    tracker.partition(GONE).begin(5, 0)
    assigned = {TP, GONE}  # the runner's own set: a revoke or a loss shows in it
    committer.commit(assigned, sync=False)  # times out: pending, over both partitions
    assert ("send_offsets", {TP: 1, GONE: 6}) in log.calls
    assigned.discard(GONE)  # the partition went to another member meanwhile
    with caplog.at_level(logging.WARNING, logger="pipeline.commit"):
        committer.before_batch()  # resumed first: fenced, renewed, then a new transaction
    names = [name for name, _ in log.calls]
    assert "read committed" not in names, "no verdict drawn from a new owner's offsets"
    assert names[-3:] == ["renew", "init", "begin"], "renewed, and transactions go on"
    assert [h[0] for h in recorder.heard] == ["commit_failed", "abort"]
    assert recorder.of("commit_failed")[0][2] == [TP, GONE], "the whole commit is told failed"
    assert rewound == [True], "its records are read again from the committed offsets"
    assert "in[1]: no longer this worker's); told as failed and aborted" in caplog.text
