"""Calling a stage's handler: timeout and in-process retries, kept off the fast path.

The common case (no timeout, handler succeeds) is one direct call. Only a failure enters
tenacity, for the remaining in-process attempts of a transient error, each with a fresh Context
so outputs buffered by a failed attempt are never published.

Timeouts: an async handler is cancelled at its timeout. A sync handler with a timeout runs on a
thread of its own (``pipeline.handlerthreads``: always a free one, so the clock starts when the
call does); at the timeout the consume loop moves on and the event is retried, but the thread
itself cannot be interrupted (no Python thread can be) and runs to completion in the
background, its outputs discarded. Such hung calls are counted; too many at once stop the
stage. When the stage is stopping, a sync call still running after half the shutdown timeout
is abandoned too, and its event stays uncommitted (``CallAbandoned``). CPU-bound sync handlers
should therefore be sized to finish, and scaled with worker processes, rather than relying on
the timeout.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from pipeline.breaker import CircuitOpenError
from pipeline.context import Context, Scope, TransactionalStore
from pipeline.errors import CallAbandoned
from pipeline.failures import HandlerTimeout, RetryPolicy
from pipeline.handlerthreads import HandlerThreads
from pipeline.ports import RawRecord
from pipeline.stop import seconds_since_stop

Handler = Callable[[Any, Context], Awaitable[None] | None]
# How often a sync call in its thread checks whether the stage is stopping.
STOP_CHECK_S = 0.2
_context = Context.of
_new = object.__new__


class Invoker:
    def __init__(
        self,
        stage: str,
        handler: Handler,
        is_async: bool,
        allowed_outputs: frozenset[str],
        policy: RetryPolicy,
        timeout_s: float | None,
        group: str = "",
        on_hung: Callable[[int], None] | None = None,
        on_progress: Callable[..., None] | None = None,
    ) -> None:
        self._stage = stage
        # What each Context shares; on_progress: ctx.progress tells the hooks.
        self._scope = Scope(stage, allowed_outputs, None, group, on_progress)
        self._handler = handler
        self._is_async = is_async
        self._policy = policy
        self._timeout = timeout_s
        # Sync handlers without a timeout are called straight from the consume loop.
        self.sync = not is_async and timeout_s is None
        self._threads: HandlerThreads | None = None
        if timeout_s is not None and not is_async:
            self._threads = HandlerThreads(stage, on_hung)
        # Set by the runner: once this is set, a sync call in a thread gets ``stop_budget_s``
        # more to finish (it may have waited part of that already), then is abandoned.
        self.stop_event: threading.Event | None = None
        self.stop_budget_s = 15.0

    async def __call__(self, event: Any, record: RawRecord) -> Context:
        """Run the handler; return the Context of the attempt that succeeded, or raise."""
        try:
            return await self._once(event, record)
        except Exception as exc:
            if not self._retry_in_process(exc):
                raise
        return await self._retry(event, record)

    @property
    def store(self) -> TransactionalStore | None:
        return self._scope.store

    @store.setter
    def store(self, store: TransactionalStore | None) -> None:
        """Set once the runner opened the stage's idempotency store (at run)."""
        self._scope.store = store

    def call_sync(self, event: Any, record: RawRecord) -> Context:
        """``__call__`` for ``self.sync`` handlers: no event loop involved."""
        try:
            # Context.of(self._scope, record), inline: the call costs as much as the five stores.
            ctx = _new(Context)
            ctx._scope = self._scope
            ctx._record = record
            ctx._headers = None
            ctx.outputs = []
            ctx.result_json = None
            self._handler(event, ctx)
            return ctx
        except Exception as exc:
            if not self._retry_in_process(exc):
                raise
        # tenacity loads with the first in-process retry: a worker whose handlers succeed
        # never needs it (the same holds for ``_retry`` and ``_retry_args``).
        from tenacity import Retrying

        for attempt in Retrying(**self._retry_args()):
            with attempt:
                ctx = self._context(record)
                self._handler(event, ctx)
        return ctx

    def _context(self, record: RawRecord) -> Context:
        return _context(self._scope, record)

    def close(self) -> None:
        if self._threads is not None:
            self._threads.close()

    def _retry_in_process(self, exc: Exception) -> bool:
        return self._policy.in_process_attempts > 1 and self._retryable(exc)

    def _retryable(self, exc: BaseException) -> bool:
        # An open dependency breaker will refuse again at once: no point retrying here. An
        # abandoned call has no outcome to retry: the stage is stopping or cannot run it.
        return self._policy.is_transient(exc) and not isinstance(
            exc, CircuitOpenError | CallAbandoned
        )

    async def _retry(self, event: Any, record: RawRecord) -> Context:
        from tenacity import AsyncRetrying

        ctx: Context | None = None
        async for attempt in AsyncRetrying(**self._retry_args()):
            with attempt:
                ctx = await self._once(event, record)
        assert ctx is not None
        return ctx

    def _retry_args(self) -> dict[str, Any]:
        """The remaining in-process attempts (the first call already failed)."""
        from tenacity import retry_if_exception, stop_after_attempt, wait_exponential_jitter

        backoff = self._policy.in_process_backoff
        return {
            "stop": stop_after_attempt(self._policy.in_process_attempts - 1),
            "wait": wait_exponential_jitter(
                multiplier=backoff.initial_s, max=backoff.max_s, jitter=backoff.initial_s
            ),
            "retry": retry_if_exception(self._retryable),
            "reraise": True,
        }

    async def _once(self, event: Any, record: RawRecord) -> Context:
        ctx = self._context(record)
        if self._timeout is None:
            result = self._handler(event, ctx)
            if self._is_async:
                await cast(Awaitable[None], result)
            return ctx
        try:
            if self._is_async:
                await asyncio.wait_for(
                    cast(Awaitable[None], self._handler(event, ctx)), self._timeout
                )
            else:
                await self._in_thread(event, ctx, self._timeout)
        except TimeoutError:
            raise HandlerTimeout(
                f"{self._stage}: handler exceeded {self._timeout}s on {ctx.coordinates}"
            ) from None
        return ctx

    async def _in_thread(self, event: Any, ctx: Context, timeout_s: float) -> None:
        """Run a sync handler on its own thread; raise TimeoutError past ``timeout_s``, or
        ``CallAbandoned`` once the stop budget is spent. Either way the call is left running
        (``HandlerThreads`` counts it) and its outputs are never used."""
        assert self._threads is not None
        self._check_stop(ctx)
        future = self._threads.submit(ctx.coordinates, self._handler, event, ctx)
        waiter = asyncio.wrap_future(future)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                done, _ = await asyncio.wait({waiter}, timeout=min(left, STOP_CHECK_S))
                if done:
                    waiter.result()
                    return
                self._check_stop(ctx)
        except BaseException:
            self._threads.abandon(future)
            waiter.cancel()  # it must not call back into this loop when the call returns
            raise

    def _check_stop(self, ctx: Context) -> None:
        stop = self.stop_event
        if stop is not None and stop.is_set() and seconds_since_stop(stop) >= self.stop_budget_s:
            raise CallAbandoned(
                f"{self._stage}: stopping; the handler call on {ctx.coordinates} is abandoned "
                "after the shutdown budget and its event stays uncommitted"
            )
