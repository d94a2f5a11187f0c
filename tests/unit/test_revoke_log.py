"""What the revoke's log line says when its commit fails is what is true: at least once, the
records are redelivered; exactly once, a commit still pending (it goes on in the background)
may yet land, outputs and offsets together, and only if it does not are they redelivered. On
the memory broker, no Kafka."""

from __future__ import annotations

import logging
import threading

import pytest

from pipeline import Context, Stage
from pipeline.commit import TransactionCommitter
from pipeline.errors import KafkaError, ProducerFencedError, TransactionError
from pipeline.runner import StageRunner
from pipeline.testing.producer import MemoryProducer
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong
from tests.unit.memory_rig import RecordingProducer, Rig

TIMED_OUT = "Timed out waiting for operation to finish, retry call to resume (_TIMED_OUT)"
TP = (PINGS.name, 0)


class Once(Stage):
    consumes = PINGS
    emits = (PONGS,)
    group = "revoke-log-eos"
    guarantee = "exactly_once"

    def handle(self, event: Ping, ctx: Context) -> None:
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="once"))


class AtLeastOnce(Once):
    group = "revoke-log-alo"
    guarantee = "at_least_once"


def eos_runner() -> StageRunner:
    """An exactly-once runner on the memory broker, its transaction open."""
    rig = Rig(Once)
    producer = RecordingProducer(rig.broker, {"transactional.id": "revoke-log"})
    runner = StageRunner(rig.plan, rig.consumer, producer, rig.pipeline.codec, clock=rig.clock)
    assert isinstance(runner._committer, TransactionCommitter)
    assert runner._committer.start(threading.Event())
    runner._committer.before_batch()
    return runner


def revoke_line(caplog: pytest.LogCaptureFixture) -> str:
    [line] = [r.getMessage() for r in caplog.records if "commit on revoke failed" in r.getMessage()]
    return line


def test_a_revoke_whose_commit_is_still_pending_says_it_may_yet_land(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def timed_out(self: MemoryProducer, timeout_s: float) -> None:
        raise TransactionError(f"commit_transaction: {TIMED_OUT}", code="_TIMED_OUT",
                               retriable=True)  # fmt: skip

    monkeypatch.setattr(MemoryProducer, "commit_transaction", timed_out)
    runner = eos_runner()
    runner._committer.commit(set(), sync=False)  # it times out: pending, in the background
    with caplog.at_level(logging.WARNING, logger="pipeline.runner"):
        runner.on_revoke([TP], budget_s=1.0)
    line = revoke_line(caplog)
    assert "still pending and may yet land" in line, line
    assert not line.endswith("; records will be redelivered"), "not the whole truth"


def test_a_fenced_revoke_renews_the_producer_and_says_the_transaction_counts_as_aborted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A fence met by the revoke's commit is renewed in place (``pipeline.renewal``): the
    commit does not fail, and the renewal's line says what became of the records."""

    def fenced(self: MemoryProducer, timeout_s: float) -> None:
        raise ProducerFencedError("commit_transaction: fenced (_FENCED)", code="_FENCED")

    monkeypatch.setattr(MemoryProducer, "commit_transaction", fenced)
    runner = eos_runner()  # its coordinator aborted its transaction (or a newer instance)
    with caplog.at_level(logging.WARNING):
        runner.on_revoke([TP], budget_s=1.0)
    assert not [r for r in caplog.records if "commit on revoke failed" in r.getMessage()]
    [line] = [r.getMessage() for r in caplog.records if "re-created in place" in r.getMessage()]
    assert line.endswith("its open transaction counts as aborted, its inputs are read again "
                         "from the committed offsets"), line  # fmt: skip


def test_a_revoke_fenced_past_renewal_says_its_transaction_is_aborted_and_redelivered(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def fenced(self: MemoryProducer, timeout_s: float) -> None:
        raise ProducerFencedError("commit_transaction: fenced (_FENCED)", code="_FENCED")

    monkeypatch.setattr(MemoryProducer, "commit_transaction", fenced)
    runner = eos_runner()  # a newer instance fenced it: the broker aborted its transaction
    assert isinstance(runner._committer, TransactionCommitter)
    runner._committer._renewer.budget.limit = 0  # its renewals are spent: the fence stands
    with caplog.at_level(logging.WARNING, logger="pipeline.runner"):
        runner.on_revoke([TP], budget_s=1.0)
    assert revoke_line(caplog).endswith("the transaction is aborted: records will be redelivered")


def test_an_at_least_once_revoke_whose_commit_fails_says_records_will_be_redelivered(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with Rig(AtLeastOnce, commit_interval_s=60.0) as rig:
        rig.ping(1)
        rig.step()  # handled; its offset waits for the interval

        def refused(offsets: object, *, sync: bool, timeout_s: float | None = None) -> None:
            raise KafkaError("commit: REBALANCE_IN_PROGRESS")

        monkeypatch.setattr(rig.consumer, "commit", refused)
        with caplog.at_level(logging.WARNING, logger="pipeline.runner"):
            rig.runner.on_revoke([TP], budget_s=1.0)
        monkeypatch.undo()
    assert revoke_line(caplog).endswith("; records will be redelivered")
