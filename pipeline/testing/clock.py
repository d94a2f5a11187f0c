"""Time for the in-memory broker: a monotonic clock for deadlines, wall time for timestamps,
and the one place a consumer waits.

``SystemClock`` waits on the broker's condition for real, so a record produced from another
thread wakes a waiting ``consume`` at once. ``FakeClock`` moves only when a test calls
``advance``, and by default never blocks: a ``consume`` with nothing ready returns at once.
``FakeClock(blocking=True)`` is for clients running in threads of their own: a wait lasts
until something is written or the test advances the clock past its deadline (never for
real time; a single-threaded test must not use it, its first empty wait would never end).
"""

from __future__ import annotations

import threading
import weakref
from typing import Protocol

from pipeline import clock as runner_clock


class Clock(runner_clock.Clock, Protocol):
    """The runner's clock (``pipeline.clock.Clock``: the broker and the stages it serves keep
    one time), plus the one place a client waits."""

    def wait(self, condition: threading.Condition, timeout_s: float) -> bool:
        """Wait (holding ``condition``) until notified or ``timeout_s`` passes; False if this
        clock does not block, so the caller must not wait again for the same deadline."""
        ...


class SystemClock(runner_clock.SystemClock):
    __slots__ = ()

    def wait(self, condition: threading.Condition, timeout_s: float) -> bool:
        if timeout_s > 0:
            condition.wait(timeout_s)
        return True


class FakeClock:
    """Starts at ``start`` seconds since the epoch (wall) and 0 (monotonic)."""

    def __init__(self, start: float = 1_700_000_000.0, *, blocking: bool = False) -> None:
        self._wall = start
        self._mono = 0.0
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

