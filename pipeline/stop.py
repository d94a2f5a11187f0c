"""The stop request a worker's stage threads share, and when it was made.

A stage thread may be inside a blocking client call (a flush, a transaction commit) when the
stop comes. Its graceful shutdown then has only what is left of ``shutdown_timeout_s`` since
the request, so the worker still exits within it.
"""

from __future__ import annotations

import threading
import time


class StopEvent(threading.Event):
    def __init__(self) -> None:
        super().__init__()
        self.set_at: float | None = None  # time.monotonic() of the first set()

    def set(self) -> None:
        if self.set_at is None:
            self.set_at = time.monotonic()
        super().set()


def seconds_since_stop(event: threading.Event) -> float:
    """How long ago ``event`` was set (0 if unknown: a plain Event, or not set)."""
    set_at = getattr(event, "set_at", None)
    return 0.0 if set_at is None else max(0.0, time.monotonic() - set_at)
