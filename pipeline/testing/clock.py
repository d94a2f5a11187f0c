"""Time for the in-memory broker: a monotonic clock for deadlines, wall time for timestamps,
and the one place a consumer waits.

``SystemClock`` waits on the broker's condition for real, so a record produced from another
thread wakes a waiting ``consume`` at once. ``FakeClock`` is
``pipeline.clock.FakeClock``, the one fake clock, re-exported here: it moves only when a test
calls ``advance``, and by default never blocks: a ``consume`` with nothing ready returns at
once. ``FakeClock(blocking=True)`` is for clients running in threads of their own: a wait
lasts until something is written or the test advances the clock past its deadline (never for
real time; a single-threaded test must not use it, its first empty wait would never end).
"""

from __future__ import annotations

import threading
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


FakeClock = runner_clock.FakeClock
"""The one fake clock (``pipeline.clock.FakeClock``): the runner's time and the broker's waits."""
