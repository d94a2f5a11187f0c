"""Calling a stage's handler: timeout and in-process retries, kept off the fast path.

The common case (no timeout, handler succeeds) is one direct call. Only a failure enters
tenacity, for the remaining in-process attempts of a transient error, each with a fresh Context
so outputs buffered by a failed attempt are never published.

Timeouts: an async handler is cancelled at its timeout. A sync handler with a timeout runs on a
small thread pool; at the timeout the consume loop moves on and the event is retried, but the
thread itself cannot be interrupted (no Python thread can be) and runs to completion in the
background, its outputs discarded. CPU-bound sync handlers should therefore be sized to finish,
and scaled with worker processes, rather than relying on the timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from tenacity import (
    AsyncRetrying,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from pipeline.breaker import CircuitOpenError
from pipeline.context import Context, TransactionalStore
from pipeline.failures import HandlerTimeout, RetryPolicy
from pipeline.ports import RawRecord

Handler = Callable[[Any, Context], Awaitable[None] | None]


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
    ) -> None:
        self._stage = stage
        self._group = group
        self.store: TransactionalStore | None = None  # set once the runner opened it
        self._handler = handler
        self._is_async = is_async
        self._allowed = allowed_outputs
        self._policy = policy
        self._timeout = timeout_s
        # Sync handlers without a timeout are called straight from the consume loop.
        self.sync = not is_async and timeout_s is None
        self._pool: ThreadPoolExecutor | None = None
        if timeout_s is not None and not is_async:
            self._pool = ThreadPoolExecutor(4, thread_name_prefix=f"{stage}-handler")

    async def __call__(self, event: Any, record: RawRecord) -> Context:
        """Run the handler; return the Context of the attempt that succeeded, or raise."""
        try:
            return await self._once(event, record)
        except Exception as exc:
            if not self._retry_in_process(exc):
                raise
        return await self._retry(event, record)

    def call_sync(self, event: Any, record: RawRecord) -> Context:
        """``__call__`` for ``self.sync`` handlers: no event loop involved."""
        try:
            ctx = Context(self._stage, record, self._allowed, self.store, self._group)
            self._handler(event, ctx)
            return ctx
        except Exception as exc:
            if not self._retry_in_process(exc):
                raise
        for attempt in Retrying(**self._retry_args()):
            with attempt:
                ctx = Context(self._stage, record, self._allowed, self.store, self._group)
                self._handler(event, ctx)
        return ctx

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _retry_in_process(self, exc: Exception) -> bool:
        # An open dependency breaker will refuse again at once: no point retrying here.
        return (
            self._policy.in_process_attempts > 1
            and self._policy.is_transient(exc)
            and not isinstance(exc, CircuitOpenError)
        )

    async def _retry(self, event: Any, record: RawRecord) -> Context:
        ctx: Context | None = None
        async for attempt in AsyncRetrying(**self._retry_args()):
            with attempt:
                ctx = await self._once(event, record)
        assert ctx is not None
        return ctx

    def _retry_args(self) -> dict[str, Any]:
        """The remaining in-process attempts (the first call already failed)."""
        backoff = self._policy.in_process_backoff
        return {
            "stop": stop_after_attempt(self._policy.in_process_attempts - 1),
            "wait": wait_exponential_jitter(
                multiplier=backoff.initial_s, max=backoff.max_s, jitter=backoff.initial_s
            ),
            "retry": retry_if_exception(
                lambda e: self._policy.is_transient(e) and not isinstance(e, CircuitOpenError)
            ),
            "reraise": True,
        }

    async def _once(self, event: Any, record: RawRecord) -> Context:
        ctx = Context(self._stage, record, self._allowed, self.store, self._group)
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
                loop = asyncio.get_running_loop()
                call = loop.run_in_executor(self._pool, self._handler, event, ctx)
                await asyncio.wait_for(call, self._timeout)
        except TimeoutError:
            raise HandlerTimeout(
                f"{self._stage}: handler exceeded {self._timeout}s on {ctx.coordinates}"
            ) from None
        return ctx
