"""Alert thresholds of a stage, and the pure logic that decides when an alert fires or resolves.

A stage declares what is worth waking someone for::

    class Transcode(Stage):
        alerts = Alerts(waiting_above=10_000, oldest_waiting_above_s=300,
                        failure_ratio_above=0.05, window_s=60)

Each threshold is a ``Threshold`` with hysteresis: it fires once when its value goes *above* the
threshold and resolves once when the value falls to ``resolve_below`` times the threshold or
less (80 % by default), so a value wobbling around the line does not flap. A value that is not
known (the broker did not answer) changes nothing.

The failure ratio is over a sliding window of ``window_s`` seconds (``FailureWindow``, one
bucket per second of the injected clock): failed deliveries / (failed + succeeded). It is judged
only once the window holds ``min_events`` outcomes, so one failure out of one is not 100 %; a
firing failure alert resolves when the ratio falls back, or when the window has emptied (the
stage sees no more events). Everything here is pure: time comes in as arguments.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

from pipeline.errors import DeclarationError

AlertKind = Literal["waiting", "oldest_waiting", "failure_ratio"]
RESOLVE_BELOW = 0.8


@dataclass(frozen=True, slots=True)
class Alerts:
    """A stage's alert thresholds; None leaves a threshold off.

    - ``waiting_above``: events in the stage's input topics not yet committed by its group;
    - ``oldest_waiting_above_s``: age of the oldest of them (its record timestamp);
    - ``failure_ratio_above``: failed / all deliveries in the last ``window_s`` seconds, judged
      once the window holds ``min_events`` outcomes;
    - ``resolve_below``: a firing alert resolves at this fraction of its threshold or less;
    - ``check_interval_s``: how often the waiting counts are read from the broker (by a thread
      of the stage's, never the consume loop).
    """

    waiting_above: int | None = None
    oldest_waiting_above_s: float | None = None
    failure_ratio_above: float | None = None
    window_s: float = 60.0
    min_events: int = 10
    resolve_below: float = RESOLVE_BELOW
    check_interval_s: float = 10.0

    def __post_init__(self) -> None:
        problems = [
            *_positive("waiting_above", self.waiting_above, optional=True, integer=True),
            *_positive("oldest_waiting_above_s", self.oldest_waiting_above_s, optional=True),
            *_positive("window_s", self.window_s),
            *_positive("check_interval_s", self.check_interval_s),
            *_positive("min_events", self.min_events, integer=True),
        ]
        ratio = self.failure_ratio_above
        if ratio is not None and not (_number(ratio) and 0 <= ratio < 1):
            problems.append(f"failure_ratio_above must be in [0, 1), not {ratio!r}")
        if not (_number(self.resolve_below) and 0 <= self.resolve_below < 1):
            problems.append(f"resolve_below must be in [0, 1), not {self.resolve_below!r}")
        if problems:
            raise DeclarationError("Alerts: " + "; ".join(problems))

    @property
    def reads_broker(self) -> bool:
        """Whether a threshold needs the broker's counts (waiting, oldest age)."""
        return self.waiting_above is not None or self.oldest_waiting_above_s is not None


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive(
    name: str, value: object, *, optional: bool = False, integer: bool = False
) -> list[str]:
    """A threshold may be 0 (any at all is too many); a window, interval or count may not."""
    if value is None and optional:
        return []
    least = 0 if optional else 1e-9
    if _number(value) and (not integer or isinstance(value, int)) and value >= least:  # type: ignore[operator]
        return []
    kind = "an int" if integer else "a number"
    return [f"{name} must be {kind} {'>= 0' if optional else '> 0'}, not {value!r}"]


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert's firing or resolution, as the ``on_alert`` / ``on_resolved`` hooks get it.
    ``at`` is wall-clock seconds; ``value`` is what was measured then."""

    kind: AlertKind
    value: float
    threshold: float
    at: float

    def describe(self) -> str:
        what = {
            "waiting": f"{self.value:.0f} events waiting (threshold {self.threshold:.0f})",
            "oldest_waiting": f"oldest waiting event is {self.value:.0f}s old "
            f"(threshold {self.threshold:g}s)",
            "failure_ratio": f"{self.value:.1%} of deliveries failed (threshold "
            f"{self.threshold:.1%})",
        }
        return what[self.kind]


Change = tuple[Literal["alert", "resolved"], Alert]


class Threshold:
    """Fires once above ``above``; resolves once at ``above * resolve_below`` or less."""

    __slots__ = ("above", "firing", "kind", "resolve_at")

    def __init__(self, kind: AlertKind, above: float, resolve_below: float = RESOLVE_BELOW):
        self.kind, self.above = kind, above
        self.resolve_at = above * resolve_below
        self.firing = False

    def update(self, value: float | None, at: float) -> Change | None:
        if value is None:
            return None
        if not self.firing and value > self.above:
            self.firing = True
            return "alert", Alert(self.kind, value, self.above, at)
        if self.firing and value <= self.resolve_at:
            self.firing = False
            return "resolved", Alert(self.kind, value, self.above, at)
        return None


class FailureWindow:
    """Outcomes of the last ``window_s`` seconds, in one-second buckets of monotonic time."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._buckets: deque[list[int]] = deque()  # [second, succeeded, failed]

    def add(self, now: float, failed: bool) -> None:
        second = int(now)
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0, 0])
        self._buckets[-1][2 if failed else 1] += 1

    def counts(self, now: float) -> tuple[int, int]:
        """(succeeded, failed) within the window ending at ``now``."""
        oldest = now - self.window_s
        buckets = self._buckets
        while buckets and buckets[0][0] + 1 <= oldest:
            buckets.popleft()
        return sum(b[1] for b in buckets), sum(b[2] for b in buckets)


class AlertRules:
    """A stage's thresholds and failure window: ``failure_ratio(now, at)`` and
    ``backlog(waiting, oldest_s, at)`` return the alerts that fired or resolved."""

    def __init__(self, alerts: Alerts) -> None:
        self.alerts = alerts
        r = alerts.resolve_below
        self.window = FailureWindow(alerts.window_s)
        self._ratio = _maybe("failure_ratio", alerts.failure_ratio_above, r)
        self._waiting = _maybe("waiting", alerts.waiting_above, r)
        self._oldest = _maybe("oldest_waiting", alerts.oldest_waiting_above_s, r)

    @property
    def judges_failures(self) -> bool:
        return self._ratio is not None

    def failure_ratio(self, now: float, at: float) -> list[Change]:
        if self._ratio is None:
            return []
        ok, failed = self.window.counts(now)
        total = ok + failed
        if total == 0:
            value: float | None = 0.0  # nothing left in the window: the condition is over
        elif total < self.alerts.min_events:
            value = None  # too few to judge either way
        else:
            value = failed / total
        change = self._ratio.update(value, at)
        return [change] if change else []

    def forget_backlog(self) -> None:
        """Drop the waiting thresholds' state (firing or not), without telling anyone: another
        worker judges them now."""
        for threshold in (self._waiting, self._oldest):
            if threshold is not None:
                threshold.firing = False

    def backlog(self, waiting: int | None, oldest_s: float | None, at: float) -> list[Change]:
        """``oldest_s`` None with ``waiting`` 0 means nothing waits: an age of 0."""
        if oldest_s is None and waiting == 0:
            oldest_s = 0.0
        changes = []
        for threshold, value in ((self._waiting, waiting), (self._oldest, oldest_s)):
            if threshold is not None:
                change = threshold.update(value, at)
                if change:
                    changes.append(change)
        return changes


def _maybe(kind: AlertKind, above: float | None, resolve_below: float) -> Threshold | None:
    return None if above is None else Threshold(kind, above, resolve_below)
