"""The stop request a worker's stage threads share, and when it was made.

A stage thread may be inside a blocking client call (a flush, a transaction commit) when the
stop comes. Its graceful shutdown then has only what is left of ``shutdown_timeout_s`` since
the request, so the worker still exits within it.

A worker's signal handler sets a ``StopEvent`` (reentrant: see its docstring); a plain
``threading.Event`` a user hands the worker is mirrored into it (``StopMirror``), never set
from the handler.
"""

from __future__ import annotations

import threading
import time

# How soon a user's plain Event hears that the worker's own stop was set (``StopMirror``).
MIRROR_SLICE_S = 0.1


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


class StopMirror:
    """A user's plain ``threading.Event`` (``Worker(stop=...)``) kept in step with the worker's
    own ``StopEvent``, both ways, from a thread of its own.

    The worker's main loop waits on its ``StopEvent`` and the signal handler sets only that one,
    so a signal can never meet the plain Event's non-reentrant lock on the thread that holds it.
    The user's event set (from any thread) sets the worker's at once; the worker's set (a
    signal, ``stop()``, a crashed stage) sets the user's within ``MIRROR_SLICE_S``, so their
    waiters wake as they did when the worker used their event itself. The thread ends once
    either is set."""

    def __init__(self, theirs: threading.Event, ours: StopEvent) -> None:
        self.theirs, self.ours = theirs, ours
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Begin mirroring (again a no-op); a user's event set already sets ours now."""
        if self.theirs.is_set():
            self.ours.set()
        if self._thread is None:
            thread = threading.Thread(target=self._run, name="stop-mirror", daemon=True)
            thread.start()  # then kept: a thread that never started cannot be joined
            self._thread = thread

    def join(self, timeout_s: float) -> bool:
        """True when the mirroring thread has ended (or never began), waiting at most
        ``timeout_s``; it ends within ``MIRROR_SLICE_S`` of either event being set."""
        if self._thread is not None:
            self._thread.join(timeout_s)
        return self._thread is None or not self._thread.is_alive()

    def _run(self) -> None:
        theirs, ours = self.theirs, self.ours
        while not theirs.wait(MIRROR_SLICE_S):  # on this thread: their lock is never ours
            if ours.is_set():
                theirs.set()
                return
        ours.set()


def own_stop(event: threading.Event | None) -> tuple[StopEvent, StopMirror | None]:
    """The ``StopEvent`` a worker waits on and its signal handler sets, and, when the caller
    passed a plain Event, the mirror that keeps that one in step with it."""
    if event is None:
        return StopEvent(), None
    if isinstance(event, StopEvent):
        return event, None
    ours = StopEvent()
    if event.is_set():
        ours.set()
    return ours, StopMirror(event, ours)


def seconds_since_stop(event: threading.Event) -> float:
    """How long ago ``event`` was set (0 if unknown: a plain Event, or not set)."""
    set_at = getattr(event, "set_at", None)
    return 0.0 if set_at is None else max(0.0, time.monotonic() - set_at)
