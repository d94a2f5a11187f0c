"""The stop request a worker's stage threads share, and when it was made.

A stage thread may be inside a blocking client call (a flush, a transaction commit) when the
stop comes. Its graceful shutdown then has only what is left of ``shutdown_timeout_s`` since
the request, so the worker still exits within it.
"""

from __future__ import annotations

import threading
import time


class StopEvent(threading.Event):
    """A ``threading.Event`` that a signal handler may set (``pipeline.worker``).

    A handler runs on the main thread between two bytecodes, so it can interrupt that very
    thread inside ``wait`` (the worker's main loop waits on this event) while it holds the
    event's lock. With ``threading.Event``'s plain lock, ``set`` then blocks for good: the stop
    never reached the stages, which ran on until the worker was killed (a chaos run saw a
    SIGTERM'd worker handle records 23 s later). A reentrant lock lets ``set`` go through; the
    interrupted ``wait`` may miss the notification and return at its timeout, and the next one
    sees the flag."""

    def __init__(self) -> None:
        super().__init__()
        self._cond = threading.Condition(threading.RLock())
        self.set_at: float | None = None  # time.monotonic() of the first set()

    def set(self) -> None:
        if self.is_set():  # no second round (a signal during the worker's own set())
            return
        if self.set_at is None:
            self.set_at = time.monotonic()
        super().set()


def seconds_since_stop(event: threading.Event) -> float:
    """How long ago ``event`` was set (0 if unknown: a plain Event, or not set)."""
    set_at = getattr(event, "set_at", None)
    return 0.0 if set_at is None else max(0.0, time.monotonic() - set_at)
