"""Outlasting a broker that is away: a transaction call retried until the broker answers.

During a broker restart (or while a transaction coordinator is loading) librdkafka's
``init_transactions`` fails with a retriable timeout: the call may simply be made again (it
resumes). A worker that starts then must wait for the broker, not crash. ``outlast`` retries
such a call with a growing backoff (tenacity) and ends in one of three ways:

- the call succeeds: True;
- the worker is told to stop (``stop`` is set): False at once, between two short attempts, so
  a SIGTERM during the wait exits cleanly within ``shutdown_timeout_s``;
- the broker is still away after ``Patience.limit_s`` (``Settings.transaction_retry_timeout_s``):
  the last error is raised, naming the bound.

Only a retriable ``TransactionError`` is retried. A fenced producer, a fatal error or one that
needs an abort is raised at once: waiting cannot fix those. Each attempt gets at most
``attempt_s`` (a stop is seen between attempts), and the wait between attempts is cut short by
a stop. The cause is logged at WARNING when the first attempt fails, then every
``log_every_s``; time comes from the injected monotonic clock, so all of this is tested on a
``FakeClock`` without sleeping.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.errors import ProducerFencedError, TransactionError

if TYPE_CHECKING:
    from tenacity import RetryCallState

log = logging.getLogger("pipeline.commit")
DEFAULT_LIMIT_S = 300.0  # a broker restart takes seconds; a rolling restart of a cluster, minutes
MIN_ATTEMPT_S = 0.5  # an attempt past the deadline still gets one short try


@dataclass(frozen=True, slots=True)
class Patience:
    """How long, and at what pace, a transaction call is retried while the broker is away."""

    limit_s: float = DEFAULT_LIMIT_S
    attempt_s: float = 2.0  # one call's own timeout: a stop is seen at least this often
    first_wait_s: float = 0.5
    max_wait_s: float = 5.0
    log_every_s: float = 30.0
    setting: str = "transaction_retry_timeout_s"  # named in the error that gives up

    def __post_init__(self) -> None:
        if self.limit_s <= 0:
            raise ValueError(f"{self.setting} must be greater than 0, got {self.limit_s:g}")


class _Stopped(Exception):
    """The worker was told to stop before the next attempt."""


def waits_out(exc: BaseException) -> bool:
    """True for a failure that time can fix: retriable, neither fenced nor needing an abort."""
    return (
        isinstance(exc, TransactionError)
        and exc.retriable
        and not exc.abortable
        and not isinstance(exc, ProducerFencedError)
    )


def outlast(
    what: str,
    call: Callable[[float], None],
    patience: Patience,
    *,
    clock: Callable[[], float],
    stop: threading.Event,
    sleep: Callable[[float], object] | None = None,
) -> bool:
    """``call(timeout_s)`` until it succeeds (True) or ``stop`` is set (False); raise what it
    raised if it cannot wait that out, or once ``patience.limit_s`` has passed. ``sleep``
    waits between attempts (by default on ``stop``, so a stop cuts it short)."""
    # tenacity loads with the first transaction call: every worker imports this module, and
    # only exactly-once stages and the scheduler call it.
    from tenacity import Retrying, retry_if_exception, wait_exponential_jitter

    started = clock()
    deadline = started + patience.limit_s
    pause = sleep if sleep is not None else stop.wait
    warn = _Warn(what, patience, clock, started)

    def attempt() -> None:
        if stop.is_set():
            raise _Stopped
        call(max(MIN_ATTEMPT_S, min(patience.attempt_s, deadline - clock())))

    retrying = Retrying(
        retry=retry_if_exception(waits_out),
        stop=lambda _state: stop.is_set() or clock() >= deadline,
        wait=wait_exponential_jitter(
            multiplier=patience.first_wait_s, max=patience.max_wait_s, jitter=patience.first_wait_s
        ),
        sleep=lambda seconds: _wait(pause, max(0.0, min(seconds, deadline - clock()))),
        before_sleep=warn,
        reraise=True,
    )
    try:
        retrying(attempt)
    except _Stopped:
        return _stopped(what, clock() - started)
    except TransactionError as exc:
        if stop.is_set() and waits_out(exc):
            return _stopped(what, clock() - started)
        if not waits_out(exc):
            raise
        raise TransactionError(
            f"{what}: the broker did not answer within {patience.limit_s:g}s "
            f"({patience.setting}): {exc}",
            code=exc.code, retriable=True,
        ) from None  # fmt: skip
    if warn.failures:
        log.info("%s succeeded after %.1fs", what, clock() - started)
    return True


class _Warn:
    """Before each wait: the cause at WARNING after the first failure, then every
    ``log_every_s`` (a broker restart is expected; minutes of it are worth a line a while)."""

    def __init__(
        self, what: str, patience: Patience, clock: Callable[[], float], started: float
    ) -> None:
        self._what, self._patience, self._clock = what, patience, clock
        self._started = self._told = started
        self.failures = 0

    def __call__(self, state: RetryCallState) -> None:
        now, patience = self._clock(), self._patience
        self.failures += 1
        if self.failures > 1 and now - self._told < patience.log_every_s:
            return
        self._told = now
        cause = state.outcome.exception() if state.outcome is not None else None
        log.warning("%s: the broker does not answer yet (%s); still trying after %.0fs, for "
                    "up to %.0fs (%s)", self._what, cause, now - self._started,
                    patience.limit_s, patience.setting)  # fmt: skip


def _wait(pause: Callable[[float], object], seconds: float) -> None:
    pause(seconds)  # Event.wait answers a bool; tenacity wants None


def _stopped(what: str, waited_s: float) -> bool:
    log.info("%s: stopping while waiting for the broker (%.1fs); not started", what, waited_s)
    return False
