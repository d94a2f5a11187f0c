"""Exponential backoff with full jitter, and partition pause deadlines, on an injectable clock.

Used for in-place retries: the runner pauses a partition until its deadline instead of sleeping,
so the consumer keeps polling and never exceeds ``max.poll.interval.ms``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_s: float = 0.5
    max_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2  # +/- fraction of the delay, so many workers do not retry in lockstep

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Delay before retry number ``attempt`` (1 = first retry)."""
        exponent = min(max(0, attempt - 1), 64)  # forever-retrying stages reach huge attempts
        base = min(self.max_s, self.initial_s * self.multiplier**exponent)
        spread = base * self.jitter
        return max(0.0, base - spread + 2 * spread * rand())


class PauseDeadlines:
    """Partitions paused until a moment in time."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._until: dict[tuple[str, int], float] = {}

    def pause(self, tp: tuple[str, int], seconds: float) -> None:
        self._until[tp] = self._clock() + seconds

    def due(self) -> list[tuple[str, int]]:
        """Partitions whose pause is over; they are forgotten here, the caller resumes them."""
        if not self._until:
            return []
        now = self._clock()
        ready = [tp for tp, until in self._until.items() if until <= now]
        for tp in ready:
            del self._until[tp]
        return ready

    def forget(self, tps: list[tuple[str, int]]) -> None:
        for tp in tps:
            self._until.pop(tp, None)

    def is_paused(self, tp: tuple[str, int]) -> bool:
        return tp in self._until
