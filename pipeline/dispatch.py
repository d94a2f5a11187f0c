"""Running an async stage's handlers concurrently, in order per key.

A ``KeyedDispatcher`` takes records in offset order and starts a handler task for each, at most
``limit`` at a time. Records with the same key (in the same partition) form a chain: each task
waits for its predecessor to finish before calling the handler, so per-key order is what a
sequential stage would give. Keyless records carry no order and run as soon as they are taken.

Results are not acted on here: a finished task appends a ``Completion`` that the runner collects
between polls, on its own thread, and turns into outputs, retries or dead letters. A record
whose offset token was cancelled (its partition was rewound) is not started if it is still
waiting for its predecessor; one already running finishes and its result is dropped by the
runner, because the record will be read again. Tasks of partitions this worker no longer owns
are cancelled (``cancel``): they must not run on beside the partitions' new owner.

No Kafka here, and no clock: the event loop is the runner's, run only while it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pipeline.context import Context
from pipeline.failures import HandlerCancelled
from pipeline.offsets import Token
from pipeline.ports import RawRecord, TopicPartition
from pipeline.retrytopics import Origin

log = logging.getLogger("pipeline.dispatch")
Call = Callable[[Any, RawRecord], Awaitable[Context]]


@dataclass(slots=True)
class Completion:
    """One record's task that ended: its Context when the handler succeeded, else the
    exception; ``started`` is False when its token was cancelled before the handler ran."""

    record: RawRecord
    tp: TopicPartition
    token: Token
    origin: Origin | None
    ctx: Context | None
    error: Exception | None
    started: bool = True


class KeyedDispatcher:
    def __init__(self, limit: int, call: Call, loop: asyncio.AbstractEventLoop) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self._call = call
        self._loop = loop
        self._tasks: dict[asyncio.Task[None], TopicPartition] = {}
        # The last task of each (partition, key): the next record with that key waits for it.
        self._tails: dict[tuple[TopicPartition, bytes], asyncio.Task[None]] = {}
        self.completed: list[Completion] = []
        self._wakeup = asyncio.Event()
        self.running: dict[int, RawRecord] = {}  # handlers running now, by id(record)

    @property
    def in_flight(self) -> int:
        """Records taken and not yet completed (running, or waiting for their key)."""
        return len(self._tasks)

    @property
    def room(self) -> int:
        return self.limit - len(self._tasks)

    def in_flight_for(self, partitions: set[TopicPartition]) -> int:
        return sum(1 for tp in self._tasks.values() if tp in partitions)

    def submit(
        self, record: RawRecord, tp: TopicPartition, event: Any, origin: Origin | None, token: Token
    ) -> None:
        """Schedule the handler for ``record``; it starts when the loop next runs."""
        key = record.key()
        chain = (tp, key) if key is not None else None
        before = self._tails.get(chain) if chain is not None else None
        task = self._loop.create_task(self._run(before, record, tp, event, origin, token))
        self._tasks[task] = tp
        if chain is not None:
            self._tails[chain] = task
        task.add_done_callback(lambda t: self._ended(t, chain))

    def take(self) -> list[Completion]:
        done, self.completed = self.completed, []
        return done

    async def settle(self, timeout_s: float) -> None:
        """Let handlers run until one completes, or ``timeout_s`` passes."""
        if self.completed or not self._tasks:
            await asyncio.sleep(0)  # one turn of the loop: newly submitted tasks start
            return
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout_s)

    async def drain(self, timeout_s: float, only: set[TopicPartition] | None = None) -> bool:
        """Wait for the records in flight (of ``only``, if given); False if some still are."""
        tasks = [t for t, tp in self._tasks.items() if only is None or tp in only]
        if not tasks:
            return True
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        return not pending

    async def cancel_all(self, timeout_s: float) -> None:
        """Shutdown after the drain deadline: stop what is left (it stays uncommitted)."""
        await self.cancel(set(self._tasks.values()), timeout_s)

    async def _run(
        self,
        before: asyncio.Task[None] | None,
        record: RawRecord,
        tp: TopicPartition,
        event: Any,
        origin: Origin | None,
        token: Token,
    ) -> None:
        if before is not None and not before.done():
            await asyncio.wait((before,))
        ctx: Context | None = None
        error: Exception | None = None
        started = not token.cancelled  # rewound or revoked while waiting: it will be read again
        if started:
            self.running[id(record)] = record
            try:
                ctx = await self._call(event, record)
            except asyncio.CancelledError as exc:
                error = handler_cancelled(exc, record)
            except Exception as exc:
                error = exc
            finally:
                self.running.pop(id(record), None)
        self.completed.append(Completion(record, tp, token, origin, ctx, error, started))
        self._wakeup.set()

    async def cancel(self, partitions: set[TopicPartition], timeout_s: float) -> None:
        """Cancel the tasks of ``partitions`` (no longer ours): they must not run on beside
        the partitions' new owner. Waits up to ``timeout_s`` for them to unwind."""
        tasks = [t for t, tp in self._tasks.items() if tp in partitions]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

    def _ended(self, task: asyncio.Task[None], chain: tuple[TopicPartition, bytes] | None) -> None:
        del self._tasks[task]
        if chain is not None and self._tails.get(chain) is task:
            del self._tails[chain]
        if not task.cancelled() and task.exception() is not None:
            # Not an Exception (those become Completions): KeyboardInterrupt, SystemExit...
            log.error("handler task ended abnormally: %r", task.exception())


def _where(record: RawRecord) -> str:
    return f"{record.topic()}[{record.partition()}]@{record.offset()}"


def handler_cancelled(exc: asyncio.CancelledError, record: RawRecord) -> HandlerCancelled:
    """A CancelledError the handler raised itself, as a failure to route like any other; one
    that cancels the stage's own task (shutdown, partitions gone) is raised again."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise exc
    error = HandlerCancelled(f"handler raised CancelledError on {_where(record)}")
    error.__cause__ = exc
    return error
