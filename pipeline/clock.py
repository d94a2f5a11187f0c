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

import time as _time
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
    """Time that moves only when told: ``advance(seconds)`` moves monotonic and wall alike."""

    def __init__(self, monotonic: float = 100.0, wall: float = 1_700_000_000.0) -> None:
        self._monotonic = monotonic
        self._wall = wall

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self._monotonic += seconds
        self._wall += seconds

    def monotonic(self) -> float:
        return self._monotonic

    def time(self) -> float:
        return self._wall

    def wall_ms(self) -> int:
        return int(self._wall * 1000)


SYSTEM = SystemClock()
