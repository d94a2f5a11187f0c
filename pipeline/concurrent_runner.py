"""The consume loop of an async stage with ``concurrency`` > 1.

The steps are the sequential loop's (``pipeline.runner``), with the handler calls moved onto a
``KeyedDispatcher``:

1. resume partitions whose pause is over, unless backpressure holds them;
2. fetch, but only as many records as there are free slots (``concurrency`` minus in flight);
3. dispatch each record: the same checks as the sequential loop (dedupe, retry due time,
   decode, breaker), then its offset token is begun *before* the handler runs, and the handler
   is scheduled behind the previous record with the same key;
4. run the event loop until a handler completes (a few ms at most while there is room to fetch
   more), then turn completions into outputs, retries or dead letters;
5. serve delivery reports, rewind refused outputs, commit each partition's contiguous low
   watermark on the interval: a record that finished early waits for the ones before it.

Backpressure: while every slot is taken nothing is fetched. If that lasts longer than
``SATURATED_PAUSE_S`` the assigned partitions are paused, so the consumer can keep polling for
the group (rebalances) without taking records; they are resumed as soon as a slot frees up.

On revoke the revoked partitions' handlers are awaited (up to the shutdown timeout) and their
outputs flushed before committing, so the next owner does not redo finished work; on shutdown
every handler is (for half the shutdown timeout, the other half is for flushing and
committing). Handlers still running at the deadline, and those of lost partitions, are
cancelled; their events stay uncommitted.

Circuit breaker: while the half-open probe runs nothing else is taken (it would only be held);
if the probe's result is dropped (its partition rewound, revoked or lost) the breaker is told to
let the next record probe instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from pipeline.breaker import State
from pipeline.dispatch import Completion, KeyedDispatcher
from pipeline.offsets import Token
from pipeline.ports import RawRecord, TopicPartition
from pipeline.runner import StageRunner
from pipeline.stop import seconds_since_stop

log = logging.getLogger("pipeline.runner")
# While there is room to fetch more, handlers get this long before the consumer is asked again;
# new records therefore wait at most this long behind handlers that are still running.
FETCH_GAP_S = 0.005
# Saturated this long: pause the partitions (the consumer keeps polling for the group only).
SATURATED_PAUSE_S = 0.5
# How long cancelled handlers get to unwind (their finally blocks) before we move on.
MIN_CANCEL_WAIT_S = 1.0


class ConcurrentStageRunner(StageRunner):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        assert self._loop is not None, "concurrent stages have async handlers"
        self._dispatcher = KeyedDispatcher(self.plan.stage.concurrency, self._invoke, self._loop)
        self._saturated_since: float | None = None
        self._held_back: set[TopicPartition] = set()  # paused for backpressure
        # The half-open breaker's probe, while it runs: nothing else is taken meanwhile, and
        # if its result is dropped (rewound, revoked) the breaker is told to probe again.
        self._probe: tuple[TopicPartition, Token] | None = None

    def step(self) -> None:
        self._resume_due_partitions()
        self._holds.new_batch()
        records = self._fetch()
        if records:
            self._dispatch(records)
        dispatcher = self._dispatcher
        if dispatcher.in_flight or dispatcher.completed:
            assert self._loop is not None
            wait = FETCH_GAP_S if self._room() > 0 else self._batch_timeout
            self._loop.run_until_complete(dispatcher.settle(wait))
            self._complete(dispatcher.take())
        self._producer.poll(0)
        self._rewind_failed_deliveries()
        self._maybe_commit()

    # -- step 2: fetch within the free slots ----------------------------------------------

    def _room(self) -> int:
        # While the breaker's probe runs, every other record would only be held: take none.
        return 0 if self._probe is not None else self._dispatcher.room

    def _fetch(self) -> Sequence[RawRecord]:
        room = self._room()
        if room > 0:
            self._saturated_since = None
            if self._held_back:
                self._release_backpressure()
            timeout = 0 if self._dispatcher.in_flight else self._batch_timeout
            return self._consumer.consume(min(room, self._batch_size), timeout)
        now = self._clock()
        if self._saturated_since is None:
            self._saturated_since = now
        if now - self._saturated_since < SATURATED_PAUSE_S:
            return ()  # a slot frees up soon: just let the handlers run
        self._apply_backpressure()
        # Serves the group (rebalance callbacks); records of partitions assigned meanwhile are
        # handed back by _dispatch, since there is no room for them.
        return self._consumer.consume(self._batch_size, 0)

    def _apply_backpressure(self) -> None:
        fresh = [
            tp
            for tp in self._assigned
            if tp not in self._held_back and not self._holds.pauses.is_paused(tp)
        ]
        if fresh:
            self._consumer.pause(fresh)
            self._held_back.update(fresh)
            log.debug("%s: %d handlers in flight; paused %d partitions",
                      self.plan.name, self._dispatcher.in_flight, len(fresh))  # fmt: skip

    def _release_backpressure(self) -> None:
        # A partition whose hold (retry due time, breaker) is still running stays paused.
        held = self._holds.pauses.is_paused
        ready = [tp for tp in self._held_back if tp in self._assigned and not held(tp)]
        self._held_back.clear()
        if ready:
            self._consumer.resume(ready)

    def _resume(self, partitions: list[TopicPartition]) -> None:
        if self._held_back:
            self._held_back.update(partitions)  # resumed when the backpressure ends
        else:
            super()._resume(partitions)

    # -- step 3: dispatch -----------------------------------------------------------------

    def _dispatch(self, records: Sequence[RawRecord]) -> None:
        self._committer.before_batch()
        self.stats.consumed += len(records)
        ids = self._dedupe.ids_not_done(records) if self._dedupe is not None else None
        dispatcher = self._dispatcher
        partition = self._tracker.partition
        for record in records:
            if dispatcher.room <= 0:
                # No slot: hand this record and the rest of its partition back (seek there).
                self._holds.skip.setdefault((record.topic(), record.partition()), True)
            prepared = self._prepare(record, ids)
            if prepared is None:
                continue
            tp, event, origin, event_id = prepared
            # Begun now, in offset order, with one unit for the handler itself: the watermark
            # cannot pass this record until its handler and outputs are done.
            token = partition(tp).begin(record.offset(), 1, event_id)
            dispatcher.submit(record, tp, event, origin, token)
            if self._breaker is not None and self._breaker.state is State.HALF_OPEN:
                self._probe = (tp, token)  # allow() let exactly this one through

    # -- step 4: completions --------------------------------------------------------------

    def _complete(self, completions: list[Completion]) -> None:
        for c in completions:
            if self._probe is not None and c.token is self._probe[1]:
                self._probe = None
                if c.token.cancelled or not c.started:
                    self._release_probe()
            if c.token.cancelled or not c.started:
                continue  # its partition was rewound or revoked: it will be read again
            error = c.error
            if error is None:
                assert c.ctx is not None
                try:
                    payloads = self._outputs.encode(c.ctx) if c.ctx.outputs else None
                except Exception as exc:
                    error = exc
                else:
                    self._succeeded(c.record, c.tp, c.ctx, payloads, None, c.token)
                    continue
            self._router.failed(c.record, c.tp, error, c.origin, c.token)

    # -- rebalance and shutdown: wait for handlers in flight ------------------------------

    def on_revoke(self, partitions: list[TopicPartition], budget_s: float | None = None) -> None:
        budget = self._in_loop_budget if budget_s is None else budget_s
        started = time.monotonic()
        if not self._closing:
            revoked = set(partitions)
            if not self._await_handlers(revoked, budget / 2):
                log.warning("%s: handlers of revoked partitions still running; cancelled",
                            self.plan.name)  # fmt: skip
                self._cancel_handlers(revoked)
        super().on_revoke(partitions, budget - (time.monotonic() - started))

    def on_lost(self, partitions: list[TopicPartition]) -> None:
        # Another member owns them already: their handlers must not run on beside it.
        self._cancel_handlers(set(partitions))
        super().on_lost(partitions)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        self._held_back.difference_update(partitions)
        if self._probe is not None and self._probe[0] in partitions:
            self._probe = None
            self._release_probe()
        super()._forget(partitions)

    def _release_probe(self) -> None:
        """The probe's result will never come: let the next record probe instead."""
        if self._breaker is not None:
            self._breaker.cancel_probe()

    def _shutdown(self, budget_s: float | None = None) -> None:
        # Half the time left for handlers, the rest for flushing outputs and committing.
        if budget_s is None:
            budget_s = self._shutdown_timeout - seconds_since_stop(self.stop_event)
        started = time.monotonic()
        try:
            if not self._await_handlers(None, max(budget_s / 2, 0.0)):
                log.warning("%s: %d handlers still running at shutdown; cancelled, their "
                            "events stay uncommitted", self.plan.name,
                            self._dispatcher.in_flight)  # fmt: skip
                assert self._loop is not None
                self._loop.run_until_complete(self._dispatcher.cancel_all(MIN_CANCEL_WAIT_S))
        finally:
            super()._shutdown(budget_s - (time.monotonic() - started))

    def _await_handlers(self, partitions: set[TopicPartition] | None, timeout_s: float) -> bool:
        """Let the handlers of ``partitions`` (all if None) finish, and act on their results;
        False if some were still running at ``timeout_s``."""
        dispatcher = self._dispatcher
        if partitions is not None and not dispatcher.in_flight_for(partitions):
            return True
        assert self._loop is not None
        finished = self._loop.run_until_complete(dispatcher.drain(timeout_s, partitions))
        self._complete(dispatcher.take())
        return finished

    def _cancel_handlers(self, partitions: set[TopicPartition]) -> None:
        if self._dispatcher.in_flight_for(partitions):
            assert self._loop is not None
            self._loop.run_until_complete(self._dispatcher.cancel(partitions, MIN_CANCEL_WAIT_S))
