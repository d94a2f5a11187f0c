"""Threads for sync handlers that have a timeout, and the bookkeeping of calls that hang.

A Python thread cannot be interrupted, so a call that runs past its stage's ``timeout_s`` is
*abandoned*: the consume loop moves on (the event is retried) while the call goes on in its
thread, its outputs discarded. A fixed pool would fill up with such calls and make healthy
events wait behind them until they too "time out" without having run. Here a call therefore
always gets a thread at once: an idle one, or a new one when all are busy. The timeout clock
starts when the call starts.

Threads are daemon threads: a hung call never keeps the process from exiting (its event is
uncommitted, so it is redelivered). Abandoned calls are counted (the ``on_hung_change`` hook) and
logged with their coordinates when abandoned and when they return. Once ``max_hung`` are stuck
at the same time, ``submit`` refuses with ``TooManyHungCalls``: every call the stage makes is
likely to hang the same way (a dependency that never answers), and more threads would only pile
up; the runner then stops the stage (the worker exits 1, and its supervisor restarts it).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from pipeline.errors import TooManyHungCalls

log = logging.getLogger("pipeline.invoke")
# Abandoned calls still running at once, per stage and worker, before the stage stops. One event
# that hangs on every attempt costs in_process_attempts x (1 + retry tiers) threads (12 with the
# default policy): this leaves room for a few such events before the stage gives up.
MAX_HUNG_CALLS = 32
# Idle threads kept for reuse; more are started when needed, and end once idle beyond this.
IDLE_THREADS = 4

_Job = tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]


class _Thread:
    """One daemon thread running calls handed to it, one at a time."""

    def __init__(self, owner: HandlerThreads, name: str) -> None:
        self._owner = owner
        self.inbox: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.started_at = 0.0
        self.coordinates = ""
        self.future: Future[Any] | None = None
        threading.Thread(target=self._loop, name=name, daemon=True).start()

    def _loop(self) -> None:
        while (job := self.inbox.get()) is not None:
            self._run(*job)
            del job  # the call's arguments and result are not kept while waiting for the next

    def _run(self, future: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        if not future.set_running_or_notify_cancel():
            self._owner._finished(self)
            return
        try:
            result = fn(*args)
        except BaseException as exc:  # handed to the waiting caller
            self._owner._finished(self)  # free before the caller wakes: its next call reuses us
            future.set_exception(exc)
        else:
            self._owner._finished(self)
            future.set_result(result)


class HandlerThreads:
    def __init__(
        self,
        stage: str,
        on_hung: Callable[[int], None] | None = None,
        max_hung: int = MAX_HUNG_CALLS,
    ):
        self._stage = stage
        self._on_hung = on_hung  # told the hung count whenever it changes
        self.max_hung = max_hung
        self._lock = threading.Lock()
        self._idle: list[_Thread] = []
        self._busy: dict[Future[Any], _Thread] = {}
        self._hung: set[_Thread] = set()
        self._started = 0
        self._closed = False

    def submit(self, coordinates: str, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Start ``fn(*args)`` now on a free thread. Raises ``TooManyHungCalls`` instead once
        ``max_hung`` abandoned calls are still running."""
        future: Future[Any] = Future()
        with self._lock:
            if len(self._hung) >= self.max_hung:
                raise TooManyHungCalls(
                    f"{self._stage}: {len(self._hung)} handler calls ran past their timeout and "
                    f"are still running (at most {self.max_hung}); not starting more"
                )
            thread = self._idle.pop() if self._idle else self._new_thread()
            thread.started_at = time.monotonic()
            thread.coordinates = coordinates
            thread.future = future
            self._busy[future] = thread
        thread.inbox.put((future, fn, args))
        return future

    def abandon(self, future: Future[Any]) -> None:
        """The caller stops waiting for ``future``: if its call is still running, it is hung."""
        with self._lock:
            thread = self._busy.get(future)
            if thread is None or future.done():
                return  # it finished just now: its thread is free already
            self._busy.pop(future)
            self._hung.add(thread)
            hung = self._count()
        log.warning("%s: handler call on %s abandoned after %.1fs, still running in its thread "
                    "(%d hung, at most %d)", self._stage, thread.coordinates,
                    time.monotonic() - thread.started_at, hung, self.max_hung)  # fmt: skip

    def close(self) -> None:
        """Let idle threads end; running (and hung) ones end when their call returns."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for thread in idle:
            thread.inbox.put(None)

    def _new_thread(self) -> _Thread:
        self._started += 1
        return _Thread(self, f"{self._stage}-handler-{self._started}")

    def _finished(self, thread: _Thread) -> None:
        with self._lock:
            was_hung = thread in self._hung
            if was_hung:
                self._hung.discard(thread)
                hung = self._count()
            elif thread.future is not None:
                self._busy.pop(thread.future, None)
            thread.future = None
            keep = not self._closed and len(self._idle) < IDLE_THREADS
            if keep:
                self._idle.append(thread)
        if was_hung:
            log.info("%s: abandoned handler call on %s returned after %.1fs (%d still hung)",
                     self._stage, thread.coordinates, time.monotonic() - thread.started_at,
                     hung)  # fmt: skip
        if not keep:
            thread.inbox.put(None)

    def _count(self) -> int:
        """Under the lock: the hung count, told to ``on_hung`` (under the lock too, so the counts
        it hears from different threads arrive in order)."""
        hung = len(self._hung)
        if self._on_hung is not None:
            self._on_hung(hung)
        return hung
