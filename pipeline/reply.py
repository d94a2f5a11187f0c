"""Request-reply: the requests a publisher waits on, and how a stage answers one.

A request is an ordinary event with two more headers: ``reply-to`` (the requester's own reply
topic) and its ``event-id``, which is the request id. The stage that reads it answers by
returning an event of the model its input topic declares (``Topic(..., replies=Quote)``) or by
calling ``ctx.reply(quote)``; the answer is produced like any output (after the handler,
before the input's offset is committed) to the ``reply-to`` topic with an ``in-reply-to``
header naming the request. ``correlation-id`` keeps its meaning (the business flow's id,
carried along), so a request made inside a correlated flow stays in that flow.

``PendingRequests`` is the requester's table, pure and on an injected clock:

- a reply to a waiting request settles it (``answered``);
- a second reply to a request already answered is dropped (``duplicate``): a redelivered
  request is answered again, at-least-once;
- a reply to a request that timed out, or that this process never made (one from before a
  restart), is dropped (``late``);
- ``expire`` settles every request past its deadline with ``RequestTimeout``; ``cancel_all``
  settles the rest with ``RequestCancelled`` when the publisher closes. Every request is
  settled exactly once, so nothing waits forever.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.clock import Clock
from pipeline.errors import RequestCancelled, RequestError, RequestTimeout
from pipeline.events import Event

# What a waiter is given: the reply, or why there is none.
Settle = Callable[[Any], None]
Outcome = Literal["answered", "duplicate", "late"]

# Ids of answered and expired requests remembered to tell a duplicate from a late reply; older
# ones are forgotten (their replies then count as late, and are dropped all the same).
REMEMBERED = 10_000


@dataclass(slots=True)
class _Waiting:
    deadline: float
    settle: Settle
    context: Any  # the caller's (the reply's binding): handed back by ``answer``
    timeout_s: float


@dataclass(slots=True)
class ReplyCounts:
    answered: int = 0
    duplicate: int = 0
    late: int = 0
    timed_out: int = 0
    cancelled: int = 0


class PendingRequests:
    """Requests waiting for their reply, by request id. Thread-safe only under the caller's
    lock (``ReplyInbox`` holds one)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._waiting: dict[str, _Waiting] = {}
        self._answered: OrderedDict[str, None] = OrderedDict()
        self._expired: OrderedDict[str, None] = OrderedDict()
        self.counts = ReplyCounts()

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, request_id: str, timeout_s: float, settle: Settle, context: Any = None) -> None:
        """Wait for the reply to ``request_id`` for ``timeout_s``. An id already waiting is
        refused: its replies could not be told apart (a topic's ``id_field`` repeated)."""
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, not {timeout_s!r}")
        if request_id in self._waiting:
            raise ValueError(f"request {request_id} is already waiting for its reply")
        deadline = self._clock.monotonic() + timeout_s
        self._waiting[request_id] = _Waiting(deadline, settle, context, timeout_s)

    def forget(self, request_id: str) -> None:
        """Stop waiting without settling (the request could not be sent: its error is raised)."""
        self._waiting.pop(request_id, None)

    def answer(self, request_id: str) -> tuple[Outcome, Settle | None, Any]:
        """A reply to ``request_id`` arrived: for a waiting request, its settle function and
        context (the caller decodes the reply and settles); otherwise why it is dropped."""
        waiting = self._waiting.pop(request_id, None)
        if waiting is None:
            outcome: Outcome = "duplicate" if request_id in self._answered else "late"
            if outcome == "duplicate":
                self.counts.duplicate += 1
            else:
                self.counts.late += 1
            return outcome, None, None
        self.counts.answered += 1
        _remember(self._answered, request_id)
        return "answered", waiting.settle, waiting.context

    def expire(self) -> int:
        """Settle every request past its deadline with ``RequestTimeout``; how many."""
        now = self._clock.monotonic()
        due = [rid for rid, w in self._waiting.items() if w.deadline <= now]
        for request_id in due:
            waiting = self._waiting.pop(request_id)
            _remember(self._expired, request_id)
            self.counts.timed_out += 1
            waiting.settle(
                RequestTimeout(
                    f"no reply to request {request_id} within {waiting.timeout_s:g}s",
                    request_id,
                )
            )
        return len(due)

    def cancel_all(self, why: str) -> None:
        """Settle every waiting request with ``RequestCancelled`` (``why`` says the cause)."""
        waiting, self._waiting = self._waiting, {}
        for request_id, w in waiting.items():
            self.counts.cancelled += 1
            w.settle(RequestCancelled(f"request {request_id} got no reply: {why}", request_id))


def _remember(ids: OrderedDict[str, None], request_id: str) -> None:
    ids[request_id] = None
    if len(ids) > REMEMBERED:
        ids.popitem(last=False)


def replying(handler: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
    """``handler`` whose returned event is its reply (``ctx.reply``), for a stage whose input
    topic declares ``replies``. The value is passed on: a job-tracking wrapper around this one
    still sees it as the job's result."""
    if is_async:

        async def replied_async(event: Any, ctx: Any) -> Any:
            value = await handler(event, ctx)
            if isinstance(value, Event):
                ctx.reply(value)
            return value

        return replied_async

    def replied(event: Any, ctx: Any) -> Any:
        value = handler(event, ctx)
        if isinstance(value, Event):
            ctx.reply(value)
        return value

    return replied


__all__ = [
    "PendingRequests",
    "ReplyCounts",
    "RequestCancelled",
    "RequestError",
    "RequestTimeout",
    "replying",
]
