"""An exactly-once worker that starts while the broker is away waits for it (``outlast``): it
retries init_transactions with a backoff for a bounded time, stops waiting at once when told
to stop, and fails at once on what waiting cannot fix. All on a FakeClock, no sleeping.
Found by chaos run 20261201-170709 (seed 7): a worker started during the broker restart exited 1
with "init_transactions: still failing after retries"."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from pipeline.clock import FakeClock
from pipeline.commit import TransactionCommitter
from pipeline.config import load_settings
from pipeline.errors import ConfigError, ProducerFencedError, TransactionError
from pipeline.offsets import OffsetTracker
from pipeline.patience import Patience, outlast
from pipeline.stats import StageStats, counting
from tests.unit.test_commit import FakeConsumer, Log

TIMED_OUT = "Timed out waiting for operation to finish, retry call to resume (_TIMED_OUT)"


class BrokerAway:
    """init_transactions as librdkafka makes it while the broker is down: each call takes its
    whole timeout and fails with a retriable timeout, until the broker is back at ``back_at``."""

    def __init__(self, clock: FakeClock, back_at: float, stop_on_call: int = 0) -> None:
        self.clock, self.back_at = clock, back_at
        self.timeouts: list[float] = []
        self.stop = threading.Event()
        self._stop_on_call = stop_on_call

    def __call__(self, timeout_s: float) -> None:
        self.timeouts.append(timeout_s)
        if len(self.timeouts) == self._stop_on_call:
            self.stop.set()  # a SIGTERM arrives during this attempt
        left = self.back_at - self.clock.monotonic()
        if left <= timeout_s:  # back during this attempt: it answers then
            self.clock.advance(max(0.0, left))
            return
        self.clock.advance(timeout_s)
        raise TransactionError(f"init_transactions: {TIMED_OUT}", code="_TIMED_OUT",
                               retriable=True)  # fmt: skip


def run(away: BrokerAway, patience: Patience) -> bool:
    clock = away.clock
    return outlast("init_transactions", away, patience, clock=clock.monotonic, stop=away.stop,
                   sleep=clock.advance)  # fmt: skip


def test_a_worker_started_while_the_broker_is_down_waits_for_it() -> None:
    clock = FakeClock()
    away = BrokerAway(clock, back_at=95.0)
    assert run(away, Patience(limit_s=300)) is True
    assert 95.0 <= clock.monotonic() < 95.0 + 5.0 + 5.0, "it waited much longer than needed"
    assert max(away.timeouts) <= 5.0, "one attempt outlasted attempt_s: a stop would wait"
    assert len(away.timeouts) >= 10


def test_the_cause_is_logged_once_then_at_a_modest_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    away = BrokerAway(clock, back_at=95.0)
    with caplog.at_level(logging.INFO, logger="pipeline.commit"):
        run(away, Patience(limit_s=300, log_every_s=30))
    # Only this logger's records: caplog also catches what a thread left by an earlier test logs.
    ours = [r for r in caplog.records if r.name == "pipeline.commit"]
    warnings = [r for r in ours if r.levelno == logging.WARNING]
    assert 3 <= len(warnings) <= 4, [r.getMessage() for r in warnings]  # at 0 s, ~30, ~60, ~90
    assert all("_TIMED_OUT" in r.getMessage() for r in warnings), "the cause is not named"
    assert "transaction_retry_timeout_s" in warnings[0].getMessage()
    # Back at 95 s; the attempt after it comes within one backoff (at most 5 s + 0.5 s jitter).
    last = ours[-1].getMessage()
    assert last.startswith("init_transactions succeeded after "), last
    assert 95.0 <= float(last.rsplit(" ", 1)[1].rstrip("s")) <= 100.5, last


def test_it_gives_up_after_the_bound_with_an_error_naming_the_setting() -> None:
    clock = FakeClock()
    away = BrokerAway(clock, back_at=10_000.0)
    with pytest.raises(TransactionError, match=r"did not answer within 60s "
                       r"\(transaction_retry_timeout_s\): .*_TIMED_OUT") as caught:  # fmt: skip
        run(away, Patience(limit_s=60))
    assert caught.value.retriable
    assert 60.0 <= clock.monotonic() <= 61.0, "it waited past its bound"
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "error",
    [
        ProducerFencedError("init_transactions: fenced (_FENCED)", code="_FENCED"),
        TransactionError("init_transactions: not authorised (TRANSACTIONAL_ID_AUTHORIZATION)"),
        TransactionError("init_transactions: needs an abort", abortable=True, retriable=True),
    ],
)
def test_a_fenced_or_fatal_error_fails_at_once(error: TransactionError) -> None:
    clock, calls = FakeClock(), []

    def init(timeout_s: float) -> None:
        calls.append(timeout_s)
        raise error

    with pytest.raises(type(error)) as caught:
        outlast("init_transactions", init, Patience(), clock=clock.monotonic,
                stop=threading.Event(), sleep=clock.advance)  # fmt: skip
    assert caught.value is error
    assert calls == [2.0] and clock.monotonic() == 0.0


def test_a_stop_during_the_wait_ends_it_at_once_without_another_attempt() -> None:
    clock = FakeClock()
    away = BrokerAway(clock, back_at=10_000.0, stop_on_call=3)
    assert run(away, Patience()) is False
    assert len(away.timeouts) == 3, "an attempt began after the stop"
    assert clock.monotonic() <= 3 * 5.0 + 2 * 5.0


def test_a_stop_before_the_start_makes_no_call() -> None:
    clock = FakeClock()
    away = BrokerAway(clock, back_at=0.0)
    away.stop.set()
    assert run(away, Patience()) is False
    assert away.timeouts == []


def test_the_bound_must_be_positive_and_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match="transaction_retry_timeout_s must be greater than 0"):
        Patience(limit_s=0)
    with pytest.raises(ConfigError) as caught:
        load_settings(transaction_retry_timeout_s=-1)
    lines = str(caught.value).splitlines()
    assert [line for line in lines if "transaction_retry_timeout_s" in line] == [
        "  transaction_retry_timeout_s: Input should be greater than 0"
    ]
    assert load_settings().transaction_retry_timeout_s == 300.0


class ClockedStop(threading.Event):
    """A stop event whose waits pass on a FakeClock instead of real time."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock

    def wait(self, timeout: float | None = None) -> bool:
        self.clock.advance(timeout or 0.0)
        return self.is_set()


class AwayProducer:
    transaction_timeout_s = 60.0

    def __init__(self, log: Log, init: BrokerAway) -> None:
        self.log, self.init_transactions = log, init

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"{name} called before init_transactions succeeded")


def committer(producer: Any, clock: FakeClock, limit_s: float) -> TransactionCommitter:
    return TransactionCommitter(
        FakeConsumer(Log()), producer, OffsetTracker(), counting(StageStats("s", "g")),
        lambda: None, timeout_s=15.0, clock=clock.monotonic, patience=Patience(limit_s),
    )  # fmt: skip


def test_the_committer_starts_once_the_broker_is_back() -> None:
    clock = FakeClock()
    away = BrokerAway(clock, back_at=40.0)
    c = committer(AwayProducer(Log(), away), clock, limit_s=300)
    assert c.start(ClockedStop(clock)) is True
    assert clock.monotonic() >= 40.0


def test_the_committer_stops_waiting_when_the_worker_stops() -> None:
    clock = FakeClock()
    stop = ClockedStop(clock)
    away = BrokerAway(clock, back_at=10_000.0)
    away.stop = stop
    away._stop_on_call = 2
    c = committer(AwayProducer(Log(), away), clock, limit_s=300)
    assert c.start(stop) is False
    assert len(away.timeouts) == 2
