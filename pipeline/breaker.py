"""Circuit breaker: stop calling a dependency that is down, probe it after a cooldown.

    CLOSED ──(N consecutive failures, or failure ratio ≥ r over the window)──► OPEN
    OPEN ──(cooldown elapsed)──► HALF_OPEN: one probe call is let through
    HALF_OPEN ──success──► CLOSED        HALF_OPEN ──failure──► OPEN, cooldown * multiplier

Pure logic on an injectable clock. A stage has one (``breaker = BreakerPolicy(...)``): while
it is open the runner pauses every partition and seeks back, so an outage neither burns retries
nor floods the dead-letter topic. Handlers can guard a named dependency with their own::

    payments = CircuitBreaker("payments-api", BreakerPolicy(failure_threshold=3))

    def handle(self, event, ctx):
        with payments:               # raises CircuitOpenError while open
            client.charge(event)

A CircuitOpenError escaping a handler pauses the stage until that breaker's cooldown ends. The
failure that opens the circuit, and a failed probe, surface as CircuitOpenError too (chained to
the real error), so those events wait for the dependency rather than going down the retry path.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from pipeline.errors import PipelineError

log = logging.getLogger("pipeline.breaker")
Clock = Callable[[], float]


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitOpenError(PipelineError):
    """A call was refused because the breaker is open. ``retry_in_s``: cooldown left."""

    def __init__(self, name: str, retry_in_s: float) -> None:
        super().__init__(f"circuit {name!r} is open; next probe in {retry_in_s:.1f}s")
        self.name = name
        self.retry_in_s = retry_in_s


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failure_threshold: int = 5  # consecutive failures that open the circuit
    failure_ratio: float | None = None  # or: this share of calls failing within the window…
    window_s: float = 30.0
    min_calls: int = 10  # …counted only once the window holds this many calls
    cooldown_s: float = 5.0
    max_cooldown_s: float = 120.0
    multiplier: float = 2.0  # a failed probe makes the next cooldown this much longer

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if self.failure_ratio is not None and not 0 < self.failure_ratio <= 1:
            raise ValueError("failure_ratio must be in (0, 1]")
        if self.cooldown_s <= 0 or self.max_cooldown_s < self.cooldown_s:
            raise ValueError("need 0 < cooldown_s <= max_cooldown_s")


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        policy: BreakerPolicy | None = None,
        clock: Clock = time.monotonic,
        on_change: Callable[[str, State, State], None] | None = None,
    ) -> None:
        self.name = name
        self.policy = policy or BreakerPolicy()
        self.state = State.CLOSED
        self._clock = clock
        self._on_change = on_change
        self._consecutive = 0
        self._calls: deque[tuple[float, bool]] = deque()  # (time, failed) within the window
        self._cooldown = self.policy.cooldown_s
        self._open_until = 0.0
        self._probe_out = False

    # -- the protocol ---------------------------------------------------------------------

    def allow(self) -> bool:
        """May a call go through now? In HALF_OPEN, only one probe at a time."""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN:
            if self._clock() < self._open_until:
                return False
            self._move(State.HALF_OPEN)
        if self._probe_out:
            return False
        self._probe_out = True
        return True

    def would_allow(self) -> bool:
        """Would ``allow`` say yes now? Nothing is taken (no probe, no state change): asked
        before something else is spent on a call (a rate-limit token) the breaker would
        refuse. On one thread, a yes is followed by ``allow``'s yes."""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN and self._clock() < self._open_until:
            return False
        return not self._probe_out

    def record_success(self) -> None:
        self._consecutive = 0
        self._remember(failed=False)
        if self.state is State.HALF_OPEN:
            self._probe_out = False
            self._cooldown = self.policy.cooldown_s
            self._move(State.CLOSED)

    def record_failure(self) -> None:
        self._consecutive += 1
        self._remember(failed=True)
        if self.state is State.HALF_OPEN:
            self._probe_out = False
            self._cooldown = min(
                self.policy.max_cooldown_s, self._cooldown * self.policy.multiplier
            )
            self._open()
        elif self.state is State.CLOSED and self._should_open():
            self._open()

    def cancel_probe(self) -> None:
        """The probe ended without saying anything about the dependency (the event was poison,
        skipped or dead-lettered on request): let the next call probe instead."""
        self._probe_out = False

    def remaining_s(self) -> float:
        """Cooldown left while OPEN (0 otherwise)."""
        if self.state is not State.OPEN:
            return 0.0
        return max(0.0, self._open_until - self._clock())

    # -- guarding a call in a handler -----------------------------------------------------

    def __enter__(self) -> CircuitBreaker:
        if not self.allow():
            raise CircuitOpenError(self.name, self.remaining_s())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.record_success()
            return
        self.record_failure()
        if self.state is State.OPEN and isinstance(exc, Exception):
            # This failure opened the circuit (or was a failed probe): report it as an outage,
            # so the stage pauses instead of spending a retry or a dead letter on it.
            raise CircuitOpenError(self.name, self.remaining_s()) from exc

    # -- internals ------------------------------------------------------------------------

    def _should_open(self) -> bool:
        if self._consecutive >= self.policy.failure_threshold:
            return True
        ratio = self.policy.failure_ratio
        if ratio is None or len(self._calls) < self.policy.min_calls:
            return False
        failed = sum(1 for _, f in self._calls if f)
        return failed / len(self._calls) >= ratio

    def _remember(self, *, failed: bool) -> None:
        if self.policy.failure_ratio is None:
            return
        now = self._clock()
        self._calls.append((now, failed))
        while self._calls and self._calls[0][0] < now - self.policy.window_s:
            self._calls.popleft()

    def _open(self) -> None:
        self._open_until = self._clock() + self._cooldown
        self._move(State.OPEN)

    def _move(self, new: State) -> None:
        old, self.state = self.state, new
        if new is State.CLOSED:
            self._calls.clear()
        log.warning(
            "circuit %s: %s -> %s%s",
            self.name,
            old.value,
            new.value,
            f" for {self._cooldown:.1f}s" if new is State.OPEN else "",
        )
        if self._on_change is not None:
            try:
                self._on_change(self.name, old, new)
            except Exception:  # a hook's error is logged, never raised into the loop
                log.exception("breaker on_change hook failed")
