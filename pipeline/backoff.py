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

    def deadlines(self) -> list[float]:
        """When each paused partition resumes (on the clock given)."""
        return list(self._until.values())

    def is_paused(self, tp: tuple[str, int]) -> bool:
        return tp in self._until


class Streaks:
    """Consecutive failures per partition, each waiting longer (``backoff``), reset on success.

    ``failed`` answers the attempt number (1 = the first failure since the partition last
    succeeded: a change of state worth logging) and the delay before the next attempt.
    """

    def __init__(self, backoff: Backoff, rand: Callable[[], float] = random.random) -> None:
        self._backoff = backoff
        self._rand = rand
        self._failures: dict[tuple[str, int], tuple[int, int]] = {}  # tp -> (offset, count)

    def failed(self, tp: tuple[str, int], offset: int) -> tuple[int, float]:
        first, count = self._failures.get(tp, (offset, 0))
        # The earliest offset failing in the streak: success means the partition got past it.
        self._failures[tp] = (min(first, offset), count + 1)
        return count + 1, self._backoff.delay(count + 1, self._rand)

    def recovered(
        self, progress: Callable[[tuple[str, int]], int | None]
    ) -> list[tuple[tuple[str, int], int]]:
        """Partitions whose streak is over: ``progress(tp)`` (say, the committed offset) passed
        the offset that failed. Forgotten here, with their streak's failure count."""
        over = []
        for tp, (offset, count) in list(self._failures.items()):
            done_to = progress(tp)
            if done_to is not None and done_to > offset:
                del self._failures[tp]
                over.append((tp, count))
        return over

    def __bool__(self) -> bool:
        return bool(self._failures)

    def forget(self, tps: list[tuple[str, int]]) -> None:
        for tp in tps:
            self._failures.pop(tp, None)
