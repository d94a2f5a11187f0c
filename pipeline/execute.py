"""Who calls the handler: the runner's executor strategy.

The runner (``pipeline.runner``) owns the loop; an executor owns only the handler calls. Both
executors see records through the same two calls on the runner (``Core``):

- ``admit(record)``: gates, then the record's offset token is begun, then it is decoded: an
  ``Admitted`` (partition, event, origin, token), or None when the record is not to be
  handled now (held, settled, or its decode failure routed);
- ``settle(record, tp, origin, token, ctx, error)``: the one place a begun record's outcome
  is decided (outputs produced, or the failure routed), for success and failure alike.

``InlineExecutor`` (sync handlers, and async ones with ``concurrency = 1``) calls the handler
in the consume loop, one record after another: a sync handler without a timeout is a plain loop
with no coroutine or task per record; an async (or timed) one is one ``run_until_complete`` per
batch. ``KeyedExecutor`` (``pipeline.keyed``) runs up to ``concurrency`` handlers at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from pipeline.context import Context
from pipeline.dispatch import handler_cancelled
from pipeline.errors import CallAbandoned
from pipeline.invoke import Invoker
from pipeline.offsets import Token
from pipeline.ports import ConsumerPort, RawRecord, TopicPartition
from pipeline.retrytopics import Origin

# (partition, decoded event, origin, offset token) of a record about to be handled
Admitted = tuple[TopicPartition, Any, Origin | None, Token]


class Core(Protocol):
    def admit(self, record: RawRecord) -> Admitted | None: ...

    def settle(
        self, record: RawRecord, tp: TopicPartition, origin: Origin | None, token: Token,
        ctx: Context | None, error: Exception | None,
    ) -> None: ...  # fmt: skip

    def abandoned(self, exc: CallAbandoned, record: RawRecord, token: Token) -> None: ...


class Executor(Protocol):
    """What the loop asks of an executor, step by step (see ``pipeline.runner``)."""

    def room(self) -> int:
        """How many records to fetch at most now."""
        ...

    def fetch(self, room: int) -> Sequence[RawRecord]: ...
    def execute(self, records: Sequence[RawRecord]) -> None: ...

    def complete(self, room: int) -> None:
        """Settle the handlers that completed since the last step (none are left inline);
        with ``room`` to fetch more, handlers only get a short turn first."""
        ...

    def resume(self, partitions: list[TopicPartition]) -> None: ...

    def revoking(self, partitions: set[TopicPartition], timeout_s: float) -> float:
        """Settle (or, at ``timeout_s``, cancel) the handlers of partitions being revoked;
        the seconds it took."""
        ...

    def lost(self, partitions: set[TopicPartition]) -> None: ...
    def drain(self, timeout_s: float) -> float:
        """Shutdown: settle (or, at ``timeout_s``, cancel) every handler; the seconds it took."""
        ...

    def forget(self, partitions: list[TopicPartition]) -> None: ...
    def close(self) -> None: ...

    # Whether a running handler holds the consume loop (no poll meanwhile).
    blocking: bool

    def running(self) -> Sequence[RawRecord]:
        """The records whose handlers run now; read from the stall-watch thread."""
        ...


class InlineExecutor:
    def __init__(
        self,
        core: Core,
        invoke: Invoker,
        consumer: ConsumerPort,
        batch_size: int,
        batch_timeout_s: float,
    ) -> None:
        self._core = core
        self._invoke = invoke
        self._consumer = consumer
        self._batch_size = batch_size
        self._timeout = batch_timeout_s
        # Async handlers (or any with a timeout) share one event loop, entered once per batch.
        self.loop = None if invoke.sync else asyncio.new_event_loop()
        self.blocking = True
        self.current: RawRecord | None = None  # the record being handled, for the stall watch

    def running(self) -> Sequence[RawRecord]:
        current = self.current
        return () if current is None else (current,)

    def room(self) -> int:
        return self._batch_size

    def fetch(self, room: int) -> Sequence[RawRecord]:
        return self._consumer.consume(room, self._timeout) if room > 0 else ()

    def execute(self, records: Sequence[RawRecord]) -> None:
        try:
            if self.loop is None:
                self._sync(records)
            else:
                self.loop.run_until_complete(self._async(records))
        finally:
            self.current = None

    def _sync(self, records: Sequence[RawRecord]) -> None:
        # The fast path: a plain loop, no coroutine per record.
        admit, settle, call = self._core.admit, self._core.settle, self._invoke.call_sync
        for record in records:
            admitted = admit(record)
            if admitted is None:
                continue
            tp, event, origin, token = admitted
            self.current = record
            try:
                ctx = call(event, record)
            except Exception as exc:
                settle(record, tp, origin, token, None, exc)
                continue
            settle(record, tp, origin, token, ctx, None)

    async def _async(self, records: Sequence[RawRecord]) -> None:
        admit, settle, call = self._core.admit, self._core.settle, self._invoke
        for record in records:
            admitted = admit(record)
            if admitted is None:
                continue
            tp, event, origin, token = admitted
            self.current = record
            try:
                ctx = await call(event, record)
            except CallAbandoned as exc:
                self._core.abandoned(exc, record, token)
                return  # the rest of the batch is not begun either: it is all re-read
            except asyncio.CancelledError as exc:  # raised by the handler: a failure, as keyed
                settle(record, tp, origin, token, None, handler_cancelled(exc, record))
                continue
            except Exception as exc:
                settle(record, tp, origin, token, None, exc)
                continue
            settle(record, tp, origin, token, ctx, None)

    def complete(self, room: int) -> None:
        pass

    def resume(self, partitions: list[TopicPartition]) -> None:
        self._consumer.resume(partitions)

    def revoking(self, partitions: set[TopicPartition], timeout_s: float) -> float:
        return 0.0  # nothing is in flight between steps

    def lost(self, partitions: set[TopicPartition]) -> None:
        pass

    def drain(self, timeout_s: float) -> float:
        return 0.0

    def forget(self, partitions: list[TopicPartition]) -> None:
        pass

    def close(self) -> None:
        if self.loop is not None:
            self.loop.close()
