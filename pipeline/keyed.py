"""The executor of an async stage with ``concurrency`` > 1: handlers on a ``KeyedDispatcher``.

The loop is the runner's (``pipeline.runner``); this only changes how the handler calls run:

- fetch only as many records as there are free slots (``concurrency`` minus in flight);
- each admitted record (its token begun, in offset order) is scheduled behind the previous
  record with the same key; records beyond the free slots are handed back (seek there);
- between fetches the event loop runs until a handler completes (a few ms at most while there
  is room to fetch more), and completions are settled by the runner like inline outcomes.

Backpressure: while every slot is taken nothing is fetched. If that lasts longer than
``SATURATED_PAUSE_S`` the assigned partitions are paused, so the consumer can keep polling for
the group (rebalances) without taking records; they are resumed as soon as a slot frees up,
except those whose own hold (retry due time, breaker) still runs.

A call dropped before it started (its token cancelled while it waited for its key: the
partition rewound by a breaker's hold, a refused output, an in-place retry) gives back what
the gates took for it (``unspent``: a rate limit's token), as its record is read again and
checked anew.

On revoke the revoked partitions' handlers are awaited and settled (half the revoke budget), so
the next owner does not redo finished work; on shutdown every handler is (half the shutdown
budget). Handlers still running at the deadline, and those of lost partitions, are cancelled:
their events stay uncommitted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from pipeline.clock import Clock
from pipeline.dispatch import Completion, KeyedDispatcher
from pipeline.execute import Core
from pipeline.holds import Holds
from pipeline.invoke import Invoker
from pipeline.ports import ConsumerPort, RawRecord, TopicPartition
from pipeline.retrytopics import Origin

log = logging.getLogger("pipeline.runner")
# While there is room to fetch more, handlers get this long before the consumer is asked again;
# new records therefore wait at most this long behind handlers that are still running.
FETCH_GAP_S = 0.005
# Saturated this long: pause the partitions (the consumer keeps polling for the group only).
SATURATED_PAUSE_S = 0.5
# How long cancelled handlers get to unwind (their finally blocks) before we move on.
MIN_CANCEL_WAIT_S = 1.0
# Told about an admitted record whose call was dropped before it started (``gates.Chain``).
Unspent = Callable[[RawRecord, TopicPartition, Origin | None], None]


class KeyedExecutor:
    def __init__(
        self,
        core: Core,
        invoke: Invoker,
        consumer: ConsumerPort,
        holds: Holds,
        assigned: set[TopicPartition],
        *,
        limit: int,
        batch_size: int,
        batch_timeout_s: float,
        clock: Clock,
        name: str,
        unspent: Unspent | None = None,
    ) -> None:
        self._core = core
        self._unspent = unspent
        self._consumer = consumer
        self._holds = holds
        self._assigned = assigned  # the runner's own set
        self._batch_size = batch_size
        self._timeout = batch_timeout_s
        self._clock = clock
        self._name = name
        self.loop = asyncio.new_event_loop()
        self.dispatcher = KeyedDispatcher(limit, invoke, self.loop)
        self.blocking = False  # the loop polls while handlers run
        self._saturated_since: float | None = None
        self._held_back: set[TopicPartition] = set()  # paused for backpressure

    # -- fetch within the free slots ------------------------------------------------------

    def running(self) -> Sequence[RawRecord]:
        return list(self.dispatcher.running.values())  # one C-level copy: safe across threads

    def room(self) -> int:
        return self.dispatcher.room

    def fetch(self, room: int) -> Sequence[RawRecord]:
        if room > 0:
            self._saturated_since = None
            if self._held_back:
                self._release_backpressure()
            timeout = 0 if self.dispatcher.in_flight else self._timeout
            return self._consumer.consume(min(room, self._batch_size), timeout)
        now = self._clock.monotonic()
        if self._saturated_since is None:
            self._saturated_since = now
        if now - self._saturated_since < SATURATED_PAUSE_S:
            return ()  # a slot frees up soon: just let the handlers run
        self._apply_backpressure()
        # Serves the group (rebalance callbacks); records of partitions assigned meanwhile are
        # handed back by execute, since there is no room for them.
        return self._consumer.consume(self._batch_size, 0)

    def _apply_backpressure(self) -> None:
        paused = self._holds.pauses.is_paused
        fresh = [tp for tp in self._assigned if tp not in self._held_back and not paused(tp)]
        if fresh:
            self._consumer.pause(fresh)
            self._held_back.update(fresh)
            log.debug("%s: %d handlers in flight; paused %d partitions",
                      self._name, self.dispatcher.in_flight, len(fresh))  # fmt: skip

    def _release_backpressure(self) -> None:
        # A partition whose hold (retry due time, breaker) is still running stays paused.
        held = self._holds.pauses.is_paused
        ready = [tp for tp in self._held_back if tp in self._assigned and not held(tp)]
        self._held_back.clear()
        if ready:
            self._consumer.resume(ready)

    def resume(self, partitions: list[TopicPartition]) -> None:
        if self._held_back:
            self._held_back.update(partitions)  # resumed when the backpressure ends
        else:
            self._consumer.resume(partitions)

    # -- execute and complete -------------------------------------------------------------

    def execute(self, records: Sequence[RawRecord]) -> None:
        dispatcher, admit, skip = self.dispatcher, self._core.admit, self._holds.skip
        for record in records:
            if dispatcher.room <= 0:
                # No slot: hand this record and the rest of its partition back (seek there).
                skip.setdefault((record.topic(), record.partition()), True)
            admitted = admit(record)
            if admitted is not None:
                dispatcher.submit(record, *admitted)

    def complete(self, room: int) -> None:
        dispatcher = self.dispatcher
        if dispatcher.in_flight or dispatcher.completed:
            wait = FETCH_GAP_S if room > 0 else self._timeout
            self.loop.run_until_complete(dispatcher.settle(wait))
            self._settle(dispatcher.take())

    def _settle(self, completions: list[Completion]) -> None:
        settle, unspent = self._core.settle, self._unspent
        for c in completions:
            if not c.started and unspent is not None:
                unspent(c.record, c.tp, c.origin)  # never handled: read (and gated) again
            # A token cancelled meanwhile (rewound, revoked) is dropped there.
            settle(c.record, c.tp, c.origin, c.token, c.ctx, c.error)

    # -- rebalance and shutdown: wait for handlers in flight ------------------------------

    def revoking(self, partitions: set[TopicPartition], timeout_s: float) -> float:
        started = self._clock.monotonic()
        if not self._await(partitions, timeout_s):
            log.warning("%s: handlers of revoked partitions still running; cancelled",
                        self._name)  # fmt: skip
            self._cancel(partitions)
        return self._clock.monotonic() - started

    def lost(self, partitions: set[TopicPartition]) -> None:
        # Another member owns them already: their handlers must not run on beside it.
        self._cancel(partitions)

    def drain(self, timeout_s: float) -> float:
        started = self._clock.monotonic()
        if not self._await(None, max(timeout_s, 0.0)):
            log.warning("%s: %d handlers still running at shutdown; cancelled, their "
                        "events stay uncommitted", self._name,
                        self.dispatcher.in_flight)  # fmt: skip
            self.loop.run_until_complete(self.dispatcher.cancel_all(MIN_CANCEL_WAIT_S))
        return self._clock.monotonic() - started

    def forget(self, partitions: list[TopicPartition]) -> None:
        self._held_back.difference_update(partitions)

    def close(self) -> None:
        self.loop.close()

    def _await(self, partitions: set[TopicPartition] | None, timeout_s: float) -> bool:
        """Let the handlers of ``partitions`` (all if None) finish, and settle their results;
        False if some were still running at ``timeout_s``."""
        dispatcher = self.dispatcher
        if partitions is not None and not dispatcher.in_flight_for(partitions):
            return True
        finished = self.loop.run_until_complete(dispatcher.drain(timeout_s, partitions))
        self._settle(dispatcher.take())
        return finished

    def _cancel(self, partitions: set[TopicPartition]) -> None:
        if self.dispatcher.in_flight_for(partitions):
            self.loop.run_until_complete(self.dispatcher.cancel(partitions, MIN_CANCEL_WAIT_S))
