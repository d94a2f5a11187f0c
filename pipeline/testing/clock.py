"""Time for the in-memory broker: a monotonic clock for deadlines, wall time for timestamps,
and the one place a consumer waits.

``SystemClock`` waits on the broker's condition for real, so a record produced from another
thread wakes a waiting ``consume`` at once. ``FakeClock`` never blocks: a ``consume`` with
nothing ready returns at once, and time moves only when a test calls ``advance``.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def time(self) -> float: ...
    def wait(self, condition: threading.Condition, timeout_s: float) -> bool:
        """Wait (holding ``condition``) until notified or ``timeout_s`` passes; False if this
        clock does not block, so the caller must not wait again for the same deadline."""
        ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def wait(self, condition: threading.Condition, timeout_s: float) -> bool:
        if timeout_s > 0:
            condition.wait(timeout_s)
        return True


class FakeClock:
    """Starts at ``start`` seconds since the epoch (wall) and 0 (monotonic)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._wall = start
        self._mono = 0.0
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def time(self) -> float:
        with self._lock:
            return self._wall

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go backwards")
        with self._lock:
            self._mono += seconds
            self._wall += seconds

    def wait(self, condition: threading.Condition, timeout_s: float) -> bool:
        # Never real time: the caller returns what is ready now, which may be nothing.
        return False


def wall_ms(clock: Clock) -> int:
    return int(clock.time() * 1000)
