"""Handler calls that run too long: reported as *stalled*, once per call, and warned about
before a blocked consume loop would be dropped from its group.

A stalled handler is not failed: it is still running, and its event's fate is unchanged. The
operator hears about it (a log line with its coordinates, the ``on_stalled`` hook, the
``stalled`` counter) while there is still time to act. A sync handler, or an async one with
``concurrency = 1``, holds the consume loop while it runs: past ``max.poll.interval.ms`` the
consumer leaves its group and its partitions go to another worker. So for such *blocking*
executors a second, louder warning comes at ``POLL_WARN_FRACTION`` of that limit.

``StallDetector`` is the pure decision (which calls crossed a line since the last look), on
the caller's clock. ``StallWatch`` is the thread that looks, about once a second: the consume
loop cannot look for itself while a handler blocks it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from pipeline.clock import Clock
from pipeline.ports import RawRecord

log = logging.getLogger("pipeline.stalls")
DEFAULT_STALL_AFTER_S = 30.0
POLL_WARN_FRACTION = 0.8  # of max.poll.interval.ms: when a blocking call is warned about again
WATCH_INTERVAL_S = 1.0


def stall_after(declared: float | None, timeout_s: float | None) -> float:
    """A stage's ``stall_after_s``: as declared, else half its ``timeout_s`` (a call that
    stalls is reported before it times out), else 30 s."""
    if declared is not None:
        return declared
    if timeout_s is not None:
        return min(DEFAULT_STALL_AFTER_S, timeout_s / 2)
    return DEFAULT_STALL_AFTER_S


@dataclass(frozen=True, slots=True)
class Notice:
    record: RawRecord
    running_s: float  # at least this long: calls are first seen at a look, not when they start
    kind: Literal["stalled", "poll_deadline"]


class StallDetector:
    """Remembers when each running call was first seen; says once per call when it passes
    ``stall_after_s``, and (``poll_limit_s`` given) once when it nears the poll limit."""

    def __init__(self, stall_after_s: float, poll_limit_s: float | None = None) -> None:
        self.stall_after_s = stall_after_s
        self._poll_warn_s = None if poll_limit_s is None else poll_limit_s * POLL_WARN_FRACTION
        # id(record) -> (record, first seen, notices given). The record is kept so its id cannot
        # be reused by another record while it is remembered.
        self._seen: dict[int, tuple[RawRecord, float, int]] = {}

    def check(self, running: Iterable[RawRecord], now: float) -> list[Notice]:
        notices: list[Notice] = []
        seen: dict[int, tuple[RawRecord, float, int]] = {}
        for record in running:
            key = id(record)
            known = self._seen.get(key)
            first, given = (known[1], known[2]) if known and known[0] is record else (now, 0)
            took = now - first
            if given == 0 and took >= self.stall_after_s:
                notices.append(Notice(record, took, "stalled"))
                given = 1
            if given == 1 and self._poll_warn_s is not None and took >= self._poll_warn_s:
                notices.append(Notice(record, took, "poll_deadline"))
                given = 2
            seen[key] = (record, first, given)
        self._seen = seen  # calls that ended are forgotten
        return notices


class StallWatch:
    """The thread looking at ``running()`` every ``interval_s`` of ``clock``; ``tell`` gets
    each stalled call (the ``on_stalled`` hooks, or None)."""

    def __init__(
        self,
        stage: str,
        running: Callable[[], Sequence[RawRecord]],
        detector: StallDetector,
        clock: Clock,
        tell: Callable[[RawRecord, float], None] | None,
        poll_limit_s: float | None = None,
        interval_s: float = WATCH_INTERVAL_S,
    ) -> None:
        self._stage = stage
        self._running = running
        self._detector = detector
        self._clock = clock
        self._tell = tell
        self._poll_limit_s = poll_limit_s
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, name=f"{self._stage}-stalls", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._interval * 2)

    def look(self) -> None:
        """One look (what the thread does each interval)."""
        try:
            running = list(self._running())
        except RuntimeError:  # the loop thread changed the collection mid-copy: next time
            return
        for notice in self._detector.check(running, self._clock.monotonic()):
            self._report(notice)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.look()
            except Exception:  # the watch must never die silently, nor take the stage down
                log.exception("%s: stall watch failed; looking again", self._stage)

    def _report(self, notice: Notice) -> None:
        r = notice.record
        where = f"{r.topic()}[{r.partition()}]@{r.offset()}"
        if notice.kind == "stalled":
            log.warning("%s: handler on %s stalled: running for %.0fs (stall_after_s=%g)",
                        self._stage, where, notice.running_s,
                        self._detector.stall_after_s)  # fmt: skip
            if self._tell is not None:
                self._tell(r, notice.running_s)
        else:
            log.error("%s: handler on %s has blocked the consumer for %.0fs; at %.0fs "
                      "(max.poll.interval.ms) it leaves its group and its partitions are handed "
                      "to another worker", self._stage, where, notice.running_s,
                      self._poll_limit_s or 0)  # fmt: skip
