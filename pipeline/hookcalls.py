"""Calling hooks: how the vocabulary of ``pipeline.hooks`` is resolved and dispatched.

``Hooks`` resolves, once per runner, each event to ``None`` (nobody listens) or one callable
with the stage bound; user hooks are guarded (a hook that raises is logged, not raised),
``Trusted`` built-in subscribers are called directly, and one that only counts successes
(``count_succeeded``) is handed the counts once per loop step rather than called per record
(``Hooks.count_succeeded``). ``around_handler`` is applied once to the handler
(``Hooks.wrap``). A Publisher's ``before_publish`` is resolved by ``publish_hook``, the
scheduler's ``on_schedule_fired`` by ``pipeline_hook``; the worker's two rare events go
through ``call_each``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from functools import partial
from typing import TYPE_CHECKING, Any

from pipeline.hooks import EVENTS, Hook, StageInfo, Trusted

if TYPE_CHECKING:
    from pipeline.context import Context
    from pipeline.errors import DeliveryError
    from pipeline.publisher import Delivered

log = logging.getLogger("pipeline.hooks")
# After its first failure (logged with the traceback), a failing hook method is logged again
# every this many failures, with the count, rather than on every event.
LOG_EVERY = 1000


class Hooks:
    """The hooks of one stage, resolved: for each event, ``None`` when no hook overrides it,
    else one callable taking the event's arguments after ``stage`` (call sites test for
    ``None`` first, so an event nobody listens to costs one attribute read).
    ``around_handler`` is resolved into ``wrap``, applied once to the handler."""

    on_stage_start: Callable[..., None] | None
    on_stage_stop: Callable[..., None] | None
    on_assign: Callable[..., None] | None
    on_revoke: Callable[..., None] | None
    on_lost: Callable[..., None] | None
    before_batch: Callable[..., None] | None
    after_batch: Callable[..., None] | None
    on_succeeded: Callable[..., None] | None
    on_completed: Callable[..., None] | None
    on_failed: Callable[..., None] | None
    on_retrying: Callable[..., None] | None
    on_dead_lettered: Callable[..., None] | None
    on_skipped: Callable[..., None] | None
    on_duplicate: Callable[..., None] | None
    on_stalled: Callable[..., None] | None
    on_progress: Callable[..., None] | None
    on_delivery_stall: Callable[..., None] | None
    on_undeliverable: Callable[..., None] | None
    on_rate_limited: Callable[..., None] | None
    on_commit: Callable[..., None] | None
    on_commit_failed: Callable[..., None] | None
    on_abort: Callable[..., None] | None
    on_breaker_change: Callable[..., None] | None
    on_hung_change: Callable[..., None] | None
    on_tick: Callable[..., None] | None
    on_alert: Callable[..., None] | None
    on_resolved: Callable[..., None] | None
    output_headers: Callable[..., list[tuple[str, bytes]]] | None
    # (records, outputs): what ``on_succeeded`` would have told the counting subscribers for
    # that many records; the runner tallies them and calls this once per loop step.
    count_succeeded: Callable[[int, int], None] | None

    def __init__(self, stage: StageInfo, hooks: Sequence[Hook] = ()) -> None:
        self.stage = stage
        self.hooks = tuple(hooks)
        for name in EVENTS:
            setattr(self, name, _resolve(stage, name, self.hooks))
        counting = [h for h in self.hooks if _counts_succeeded(h)]
        if counting:  # on_succeeded without them; they get the counts instead
            rest = [h for h in self.hooks if h not in counting]
            self.on_succeeded = _resolve(stage, "on_succeeded", rest)
        self.count_succeeded = (
            _unguarded("count_succeeded", counting, (stage,)) if counting else None
        )
        self.output_headers = _collect(stage, "output_headers", self.hooks)
        self._around = [
            (_Guard(h, "around_handler"), partial(h.around_handler, stage))
            for h in self.hooks
            if _overrides(h, "around_handler")
        ]

    def wrap(self, handler: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
        """``handler`` inside every ``around_handler``; the handler itself when none."""
        arounds = self._around
        if not arounds:
            return handler
        around_hooks = [h for h in self.hooks if _overrides(h, "around_handler")]
        direct = getattr(around_hooks[0], "wrap_handler", None)
        if len(around_hooks) == 1 and isinstance(around_hooks[0], Trusted) and direct:
            # The same as its around_handler, in one call per event instead of five.
            return direct(self.stage, handler, is_async)  # type: ignore[no-any-return]
        if is_async:

            async def wrapped_async(event: Any, ctx: Context) -> None:
                entered = _enter(arounds, event, ctx)
                try:
                    await handler(event, ctx)
                except BaseException as exc:
                    _exit(entered, exc)
                    raise
                _exit(entered, None)

            return wrapped_async

        def wrapped(event: Any, ctx: Context) -> None:
            entered = _enter(arounds, event, ctx)
            try:
                handler(event, ctx)
            except BaseException as exc:
                _exit(entered, exc)
                raise
            _exit(entered, None)

        return wrapped


def _counts_succeeded(hook: Hook) -> bool:
    """A trusted subscriber whose ``on_succeeded`` only counts, and says so with
    ``count_succeeded(stage, records, outputs)`` (``pipeline.hooks.Trusted``)."""
    return isinstance(hook, Trusted) and callable(getattr(hook, "count_succeeded", None))


def _overrides(hook: Hook, name: str) -> bool:
    return getattr(type(hook), name, None) is not getattr(Hook, name)


def _resolve(stage: StageInfo, name: str, hooks: Sequence[Hook]) -> Callable[..., None] | None:
    return _dispatch(name, hooks, (stage,))


def pipeline_hook(hooks: Sequence[Hook], name: str) -> Callable[..., None] | None:
    """A Pipeline-level event that concerns no stage (``on_schedule_fired``), resolved once
    as a stage's are: None when no hook overrides it, else one guarded callable."""
    return _dispatch(name, hooks, ())


def _dispatch(
    name: str, hooks: Sequence[Hook], bound: tuple[object, ...]
) -> Callable[..., None] | None:
    """``name`` of every hook overriding it, with ``bound`` as its first arguments."""
    listeners = [h for h in hooks if _overrides(h, name)]
    if not listeners:
        return None
    if all(isinstance(h, Trusted) for h in listeners):  # no guard: they cannot raise
        return _unguarded(name, listeners, bound)
    calls = [(_Guard(h, name), partial(getattr(h, name), *bound)) for h in listeners]
    if len(calls) == 1:
        guard, call = calls[0]

        def one(*args: Any) -> None:
            try:
                call(*args)
            except Exception as exc:
                guard.failed(exc)

        return one

    def every(*args: Any) -> None:
        for guard, call in calls:
            try:
                call(*args)
            except Exception as exc:
                guard.failed(exc)

    return every


def _unguarded(
    name: str, listeners: Sequence[Hook], bound: tuple[object, ...]
) -> Callable[..., None]:
    calls = [partial(getattr(h, name), *bound) for h in listeners]
    if len(calls) == 1:
        return calls[0]

    def each(*args: Any) -> None:
        for call in calls:
            call(*args)

    return each


def _collect(
    stage: StageInfo, name: str, hooks: Sequence[Hook]
) -> Callable[..., list[tuple[str, bytes]]] | None:
    """A method whose listeners return headers: one callable concatenating what each returns
    (a raising one returns nothing), or None when no hook overrides it."""
    listeners = [h for h in hooks if _overrides(h, name)]
    calls = [(_Guard(h, name), partial(getattr(h, name), stage)) for h in listeners]
    if not calls:
        return None

    def collected(*args: Any) -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        for guard, call in calls:
            try:
                out.extend(call(*args))
            except Exception as exc:
                guard.failed(exc)
        return out

    return collected


class _Guard:
    """Logs a hook method's failures: the first with its traceback, then every LOG_EVERY."""

    __slots__ = ("_failures", "_what")

    def __init__(self, hook: object, name: str) -> None:
        self._what = f"{type(hook).__qualname__}.{name}"
        self._failures = 0

    def failed(self, exc: Exception) -> None:
        self._failures += 1
        if self._failures == 1:
            log.error("hook %s raised; the stage goes on", self._what, exc_info=exc)
        elif self._failures % LOG_EVERY == 0:
            log.error("hook %s has raised %d times (last: %r)", self._what, self._failures, exc)


Around = tuple["_Guard", Callable[[Any, Any], AbstractContextManager[object]]]
Entered = list[tuple["_Guard", AbstractContextManager[object]]]


def _enter(arounds: Sequence[Around], event: Any, ctx: Any) -> Entered:
    entered: Entered = []
    for guard, around in arounds:
        try:
            manager = around(event, ctx)
            manager.__enter__()
        except Exception as exc:  # the handler runs without this hook
            guard.failed(exc)
            continue
        entered.append((guard, manager))
    return entered


def _exit(entered: Entered, exc: BaseException | None) -> None:
    # Innermost first, as nested ``with`` blocks would; what __exit__ returns is ignored: a hook
    # cannot swallow the handler's exception.
    for guard, manager in reversed(entered):
        try:
            if exc is None:
                manager.__exit__(None, None, None)
            else:
                manager.__exit__(type(exc), exc, exc.__traceback__)
        except Exception as hook_exc:
            if hook_exc is not exc:  # a generator-based manager re-raises the handler's own
                guard.failed(hook_exc)


PublishWatch = Callable[["Delivered | DeliveryError"], None]


def publish_hook(
    hooks: Sequence[Hook],
) -> Callable[[str, bytes | None, list[tuple[str, bytes]]], PublishWatch | None] | None:
    """A Publisher's ``before_publish`` hooks as one callable (returning one watch of the
    delivery, or None), or None when no hook overrides it: resolved once, per publisher."""
    calls = [(_Guard(h, "before_publish"), h.before_publish) for h in hooks
             if _overrides(h, "before_publish")]  # fmt: skip
    if not calls:
        return None

    def before(topic: str, key: bytes | None, headers: list[tuple[str, bytes]]) -> Any:
        watches: list[tuple[_Guard, PublishWatch]] = []
        for guard, call in calls:
            try:
                watch = call(topic, key, headers)
            except Exception as exc:
                guard.failed(exc)
                continue
            if watch is not None:
                watches.append((guard, watch))
        return None if not watches else partial(_tell, watches)

    return before


def _tell(watches: Sequence[tuple[_Guard, PublishWatch]], outcome: Any) -> None:
    for guard, watch in watches:
        try:
            watch(outcome)
        except Exception as exc:
            guard.failed(exc)


def call_each(hooks: Sequence[Hook], name: str, *args: Any) -> None:
    """Call ``name`` on every hook that overrides it, logging (not raising) what they raise:
    for rare events (a worker's start and stop), not resolved ahead."""
    for hook in hooks:
        if _overrides(hook, name):
            try:
                getattr(hook, name)(*args)
            except Exception as exc:
                _Guard(hook, name).failed(exc)
