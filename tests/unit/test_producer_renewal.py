"""Exactly-once: a fenced producer is re-created in place and the stage goes on, within a
bound. On the memory broker and its FakeClock (no Kafka, no sleeping); the real broker's
case is tests/integration/test_eos_broker_restart.py."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline import Context, Settings, Stage
from pipeline.clock import FakeClock
from pipeline.errors import ProducerFencedError, TransactionError
from pipeline.hooks import Hook, StageInfo
from pipeline.renewal import RENEWALS, RenewalBudget
from pipeline.testing import MemoryBroker, TestPipeline
from pipeline.testing.producer import MemoryProducer
from tests.conftest import TEST_SCHEMAS
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong

RENEWED = "re-created in place"


class Eos(Stage):
    consumes = PINGS
    emits = (PONGS,)
    guarantee = "exactly_once"
    handled: list[int] = []
    # Called in the handler of the record whose n it names, once: the fence comes while its
    # transaction is open, as the coordinator's abort of a timed-out one does.
    during: dict[int, Any] = {}

    def handle(self, event: Ping, ctx: Context) -> None:
        Eos.handled.append(event.n)
        action = Eos.during.pop(event.n, None)
        if action is not None:
            action()
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="eos"))


class Aborts(Hook):
    """Counts aborts; ``fence_after_batch`` is called once after a batch is handled (its
    outputs produced, its transaction open), before the commit."""

    def __init__(self) -> None:
        self.count = 0
        self.fence_after_batch: Any = None

    def after_batch(self, stage: StageInfo, records: Any) -> None:
        fence, self.fence_after_batch = self.fence_after_batch, None
        if fence is not None:
            fence()

    def on_abort(self, stage: StageInfo) -> None:
        self.count += 1


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    Eos.handled, Eos.during = [], {}
    yield
    Eos.during = {}


def pipeline(hooks: tuple[Hook, ...] = (), retry_timeout_s: float = 120.0) -> TestPipeline:
    settings = Settings(schemas_dir=TEST_SCHEMAS, topic_partitions=2,
                        transaction_retry_timeout_s=retry_timeout_s)  # fmt: skip
    return TestPipeline([Eos], settings, hooks=hooks)


def publish(t: TestPipeline, numbers: range) -> None:
    for n in numbers:
        t.publish(PINGS, Ping(ping_id=f"p{n}", n=n), key=f"k{n}")


def transactional_id(t: TestPipeline) -> str:
    return f"{t.pipeline.plans[0].group}-test-1"  # Pipeline.runner: the group and worker id


def coordinator_aborts(broker: MemoryBroker, tid: str) -> None:
    """What Kafka's coordinator does to a transaction open past its timeout: bump the epoch
    (fencing the producer) and abort it."""
    with broker.condition:
        broker.register_producer(tid)


def pong_counts(t: TestPipeline) -> dict[int, int]:
    counts: dict[int, int] = {}
    for pong in t.outputs(PONGS):
        counts[pong.n] = counts.get(pong.n, 0) + 1
    return counts


def test_a_fenced_commit_renews_the_producer_and_every_output_is_committed_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The coordinator aborts the open transaction (a broker away past its timeout) and
    fences the producer before it commits: the commit is fenced, the producer re-created, the
    batch read again from the committed offsets; the next batch's outputs commit too, each
    exactly once."""
    aborts = Aborts()
    with pipeline(hooks=(aborts,)) as t:
        publish(t, range(5))
        t.run_until_idle()
        tid = transactional_id(t)
        aborts.fence_after_batch = lambda: coordinator_aborts(t.broker, tid)
        publish(t, range(5, 10))
        with caplog.at_level(logging.WARNING, logger="pipeline.commit"):
            t.run_until_idle()
        assert aborts.fence_after_batch is None, "the fence came"
        publish(t, range(10, 15))  # the next batch, on the renewed producer
        t.run_until_idle()
        assert pong_counts(t) == {n: 1 for n in range(15)}, "each output committed once"
        assert sorted(Eos.handled) == sorted([*range(15), *range(5, 10)]), "read again once"
        renewals = [r for r in caplog.records if RENEWED in r.message]
        assert len(renewals) == 1 and tid in renewals[0].message
        assert "(send_offsets_to_transaction: " in renewals[0].message, "fenced at the commit"
        assert aborts.count == 1, "the lost transaction is told as an abort"


def test_a_fence_while_outputs_are_produced_renews_and_each_output_is_committed_once() -> None:
    """Fenced in the middle of a batch: the next output is refused (fenced), the transaction
    aborts into a renewal, and every input ends with one committed output."""
    with pipeline() as t:
        publish(t, range(5))
        t.run_until_idle()
        Eos.during[7] = lambda: coordinator_aborts(t.broker, transactional_id(t))
        publish(t, range(5, 10))
        t.run_until_idle()
        assert pong_counts(t) == {n: 1 for n in range(10)}
        assert Eos.handled.count(7) == 2, "the lost transaction's inputs were read again"


def test_a_fence_before_a_batch_renews_and_the_batch_is_handled_once() -> None:
    """Fenced between two transactions (begin_transaction is refused): the batch is handed
    back, handled on the renewed producer, and its outputs committed once."""
    with pipeline() as t:
        publish(t, range(3))
        t.run_until_idle()
        coordinator_aborts(t.broker, transactional_id(t))
        publish(t, range(3, 6))
        t.run_until_idle()
        assert pong_counts(t) == {n: 1 for n in range(6)}


def test_another_live_producer_with_the_same_id_cannot_ping_pong_forever(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A second live process with the stage's transactional id fences it every time: the
    stage renews at most RENEWALS times within transaction_retry_timeout_s, then stops on the
    fence (exit 1) and leaves the id to the other; nothing it wrote meanwhile is visible twice."""
    t = pipeline()
    intruder = MemoryProducer(t.broker, {"transactional.id": transactional_id(t)})
    publish(t, range(2))
    t.run_until_idle()
    with pytest.raises(ProducerFencedError), caplog.at_level(logging.ERROR, "pipeline.commit"):
        for n in range(2, 2 + RENEWALS + 1):
            intruder.init_transactions(1.0)  # fences the stage's producer
            publish(t, range(n, n + 1))
            t.run_until_idle()
    t.close()  # raised from its step already
    assert "not re-created again" in caplog.text
    counts = pong_counts(t)
    assert max(counts.values()) == 1, f"duplicated outputs: {counts}"
    assert set(counts) == set(range(2 + RENEWALS)), "the last one is left uncommitted"


def test_fences_spread_wider_than_the_window_are_each_renewed() -> None:
    """The bound counts renewals within the window: one broker restart every few minutes
    is renewed each time."""
    with pipeline(retry_timeout_s=60.0) as t:
        clock: Any = t.clock
        assert isinstance(clock, FakeClock)
        for n in range(RENEWALS + 2):
            Eos.during[n] = lambda: coordinator_aborts(t.broker, transactional_id(t))
            publish(t, range(n, n + 1))
            t.run_until_idle()
            clock.advance(61.0)
        assert pong_counts(t) == {n: 1 for n in range(RENEWALS + 2)}


def test_a_renewal_that_fails_stops_the_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    """init_transactions of the renewed producer fails with an error waiting cannot fix (an
    authorization refused, say): the stage stops, with that error; nothing is committed from
    the lost transaction."""
    t = pipeline()
    publish(t, range(1))
    t.run_until_idle()  # started: its first init_transactions is behind it

    def init_transactions(self: MemoryProducer, timeout_s: float) -> None:
        code = "TRANSACTIONAL_ID_AUTHORIZATION_FAILED"
        raise TransactionError(f"init_transactions: denied ({code})", code=code)

    monkeypatch.setattr(MemoryProducer, "init_transactions", init_transactions)
    Eos.during[2] = lambda: coordinator_aborts(t.broker, transactional_id(t))
    publish(t, range(1, 4))
    with pytest.raises(TransactionError, match="TRANSACTIONAL_ID_AUTHORIZATION_FAILED"):
        t.run_until_idle()
    t.close()
    assert pong_counts(t) == {0: 1}, "nothing of the lost transaction is visible"


def test_a_fatal_error_that_is_not_a_fence_is_not_renewed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a fence is renewed: another fatal error would fail the new producer too."""
    t = pipeline()

    def commit_transaction(self: MemoryProducer, timeout_s: float) -> None:
        raise ProducerFencedError("commit_transaction: boom (_FATAL)", code="_FATAL")

    monkeypatch.setattr(MemoryProducer, "commit_transaction", commit_transaction)
    renewed: list[MemoryProducer] = []
    monkeypatch.setattr(MemoryProducer, "renew", lambda self: renewed.append(self))
    publish(t, range(2))
    with pytest.raises(ProducerFencedError, match="_FATAL"):
        t.run_until_idle()
    t.close()
    assert renewed == []


def test_a_renewed_memory_producer_fails_the_reports_still_waiting_once() -> None:
    """The dead producer's delivery reports are served by renew, each once, as failures (not
    as delivered, not left behind); the producer must init again before a transaction."""
    broker = MemoryBroker(FakeClock())
    broker.create(["out"], 1)
    producer = MemoryProducer(broker, {"transactional.id": "t1"})
    producer.init_transactions(1.0)
    producer.begin_transaction()
    reports: list[Any] = []
    for i in range(3):
        producer.produce("out", b"v%d" % i, None, None, lambda err, msg: reports.append(err))
    producer.renew()
    assert [err.name() for err in reports] == ["_PURGE_QUEUE"] * 3
    assert len(producer) == 0
    with pytest.raises(TransactionError, match="init_transactions first"):
        producer.begin_transaction()
    producer.init_transactions(1.0)  # the old transaction is aborted by the new epoch
    producer.begin_transaction()
    producer.commit_transaction(1.0)
    assert broker.records("out") == [], "the old transaction's records stay invisible"


def test_the_renewal_budget_counts_within_a_sliding_window() -> None:
    clock = FakeClock()
    budget = RenewalBudget(3, 60.0, clock.monotonic)
    assert [budget.take() for _ in range(4)] == [True, True, True, False]
    clock.advance(59.0)
    assert not budget.take()
    clock.advance(1.0)
    assert budget.take(), "the first three left the window"
    assert budget.taken == 1


# -- a commit that timed out, resumed, and fenced: did it land? ---------------------------------


class Commits(Aborts):
    """Counts what the commit hooks hear: each transaction committed, failed or aborted."""

    def __init__(self) -> None:
        super().__init__()
        self.committed: list[dict[Any, int]] = []
        self.failed = 0

    def on_commit(self, stage: StageInfo, offsets: dict[Any, int]) -> None:
        self.committed.append(dict(offsets))

    def on_commit_failed(self, stage: StageInfo, partitions: Any) -> None:
        self.failed += 1


TIMED_OUT = "Timed out waiting for operation to finish, retry call to resume (_TIMED_OUT)"


def commit_times_out_then_fenced(
    monkeypatch: pytest.MonkeyPatch, t: TestPipeline, *, lands: bool
) -> None:
    """The next ``commit_transaction`` times out (retriable: resumed before the next batch);
    before it is resumed, the coordinator bumps the epoch, so the resumed call is fenced.
    ``lands``: its EndTxn had reached the coordinator, which completes it (committed, offsets
    and outputs); else the transaction was still open and the new epoch aborts it."""
    real = MemoryProducer.commit_transaction
    tid = transactional_id(t)

    def commit_transaction(self: MemoryProducer, timeout_s: float) -> None:
        monkeypatch.setattr(MemoryProducer, "commit_transaction", real)  # once
        if lands:
            real(self, timeout_s)
        coordinator_aborts(t.broker, tid)
        raise TransactionError(f"commit_transaction: {TIMED_OUT}", retriable=True)

    monkeypatch.setattr(MemoryProducer, "commit_transaction", commit_transaction)


def test_a_fenced_resumed_commit_that_had_landed_is_heard_once_as_a_commit(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The commit timed out but landed, and its resume is fenced: the committed offsets read
    after the renewal are the transaction's own, so the hooks hear one commit (not a failure,
    not an abort), and nothing is handled or written twice."""
    hooks = Commits()
    with pipeline(hooks=(hooks,)) as t:
        publish(t, range(4))
        t.run_until_idle()
        before = len(hooks.committed)
        commit_times_out_then_fenced(monkeypatch, t, lands=True)
        publish(t, range(4, 8))
        t.run_until_idle()  # its commit timed out: pending
        landed = t.broker.committed_offsets(t.pipeline.plans[0].group)
        assert hooks.committed[before:] == [], "not heard yet"
        publish(t, range(8, 10))  # the next batch resumes it first: fenced
        with caplog.at_level(logging.INFO, logger="pipeline.commit"):
            t.run_until_idle()
        assert pong_counts(t) == {n: 1 for n in range(10)}
        assert sorted(Eos.handled) == list(range(10)), "nothing read again: it had committed"
        assert (hooks.failed, hooks.count) == (0, 0), "no failure, no abort: it committed"
        heard = hooks.committed[before:]
        assert heard[0] == {tp: o for tp, o in landed.items() if tp in heard[0]}, "heard"
        assert heard.count(heard[0]) == 1, "heard once"
        assert "had landed" in caplog.text


def test_a_fenced_resumed_commit_that_had_not_landed_is_heard_as_failed_and_aborted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The commit timed out with its transaction still open, and the new epoch aborted it:
    the committed offsets are older than the transaction's, so the hooks hear a failed commit
    and an abort, and its records are read again, each output committed once."""
    hooks = Commits()
    with pipeline(hooks=(hooks,)) as t:
        publish(t, range(4))
        t.run_until_idle()
        before = len(hooks.committed)
        commit_times_out_then_fenced(monkeypatch, t, lands=False)
        publish(t, range(4, 8))
        t.run_until_idle()  # its commit timed out: pending
        publish(t, range(8, 10))  # the next batch resumes it first: fenced
        t.run_until_idle()
        assert pong_counts(t) == {n: 1 for n in range(10)}
        assert sorted(Eos.handled) == sorted([*range(10), *range(4, 8)]), "read again once"
        assert (hooks.failed, hooks.count) == (1, 1)
        committed = t.broker.committed_offsets(t.pipeline.plans[0].group)
        assert hooks.committed[before:][-1] == committed, "the re-read batch's commit is heard"
