"""The one source of time for the consume loop and its helpers.

Two kinds of time, never mixed:

- ``monotonic()``: seconds that only move forward, for deadlines and intervals (pause
  deadlines, the breaker's cooldown, commit intervals, shutdown budgets);
- ``time()`` / ``wall_ms()``: wall-clock time, for what travels in headers or is compared with
  another process's clock (a retry's due time, a dead letter's failure times).

The runner takes one ``Clock`` (``SystemClock`` by default) and hands it to holds, routing,
dead-letter and retry headers, refusals, the breaker and the committers, so all time-based logic
can be driven by a ``FakeClock`` in tests: ``advance()`` moves both kinds at once, no sleeping.
"""

from __future__ import annotations

import threading
import time as _time
import weakref
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def time(self) -> float: ...
    def wall_ms(self) -> int: ...


class SystemClock:
    """The real clocks of this process."""

    __slots__ = ()

    def monotonic(self) -> float:
        return _time.monotonic()

    def time(self) -> float:
        return _time.time()

    def wall_ms(self) -> int:
        return int(_time.time() * 1000)


class FakeClock:
    """Time that moves only when told: ``advance(seconds)`` moves monotonic and wall alike.

    Starts at ``start`` seconds since the epoch (wall) and ``monotonic`` (0 by default). It is
    also the one place a client of the in-memory broker waits (``wait``, see
    ``pipeline.testing.clock``): by default a wait never blocks, so a ``consume`` with nothing
    ready returns at once. ``blocking=True`` is for clients running in threads of their own: a
    wait lasts until something is written or the test advances the clock past its deadline
    (never for real time; a single-threaded test must not use it, its first empty wait would
    never end).
    """

    def __init__(
        self, start: float = 1_700_000_000.0, *, monotonic: float = 0.0, blocking: bool = False
    ) -> None:
        self._wall = start
        self._mono = monotonic
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._blocking = blocking
        self._waiting: weakref.WeakSet[threading.Condition] = weakref.WeakSet()
        self._waiters = 0
        self._begun = 0  # waits begun since this clock was made

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def time(self) -> float:
        with self._lock:
            return self._wall

    def wall_ms(self) -> int:
        return int(self.time() * 1000)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go backwards")
        with self._lock:
            self._mono += seconds
            self._wall += seconds
            waiting = list(self._waiting)
        for condition in waiting:  # waiters re-check their deadlines
            with condition:
                condition.notify_all()

    def wait(self, condition: threading.Condition, timeout_s: float) -> bool:
        """Wait (holding ``condition``) until notified or the clock is advanced; False at once,
        without waiting, unless this clock blocks."""
        if not self._blocking:
            # Never real time: the caller returns what is ready now, which may be nothing.
            return False
        with self._lock:
            self._waiting.add(condition)
            self._waiters += 1
            self._begun += 1
            self._changed.notify_all()
        try:
            # Holding ``condition`` until wait() releases it: an advance() that saw this waiter
            # cannot notify before the wait begins.
            condition.wait()
        finally:
            with self._lock:
                self._waiters -= 1
                self._changed.notify_all()
        return True

    def await_waiters(self, count: int = 1, *, begun: int = 0, timeout_s: float = 10.0) -> bool:
        """Block (real time, at most ``timeout_s``) until ``count`` threads are waiting on
        this clock and ``begun`` waits in all have begun: a threaded test then knows its
        clients are idle (again) before it advances the clock."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self._waiters >= count and self._begun >= begun, timeout_s
            )


SYSTEM = SystemClock()
