"""``Publisher.request`` and ``request_sync``: publish a request, wait for its reply.

Order, so that no reply can outrun its waiter and no waiter outlives its request:

1. open the publisher's reply inbox (first request only: its topic and reader);
2. register the request id with the inbox, with its deadline;
3. publish the request with ``reply-to`` naming the inbox's topic;
4. wait: the reply, the send's failure (``DeliveryError``), the deadline (``RequestTimeout``,
   settled by the inbox's reader) or the publisher closing (``RequestCancelled``), whichever
   comes first. The caller's own wait is bounded too, a little past the deadline, in case the
   reader is stuck.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from pipeline import headers as hdr
from pipeline.config import Settings
from pipeline.errors import DeclarationError, DeliveryError, PipelineError, RequestTimeout
from pipeline.events import Event
from pipeline.reply import ReplyCounts
from pipeline.replyinbox import ReplyInbox, default_reply_topic
from pipeline.serde import Binding, Codec
from pipeline.stage import Topic
from pipeline.transport import Transport

# The publisher's ``_send(topic, event, key, headers, report, event_id)``.
Send = Callable[..., None]
_GRACE_S = 2.0  # how far past its deadline a caller waits for the reader to settle it


class Requests:
    """A publisher's requests; its reply inbox is opened at the first one."""

    def __init__(
        self,
        send: Send,
        bind: Callable[[type[Event]], Binding],
        codec: Codec,
        transport: Transport,
        settings: Settings,
        reply_topic: str | None,
    ) -> None:
        self._send = send
        self._bind = bind
        self._codec = codec
        self._transport = transport
        self._settings = settings
        self._reply_topic = reply_topic
        self._inbox: ReplyInbox | None = None
        self._closed = False
        self._lock = threading.Lock()

    @property
    def counts(self) -> ReplyCounts:
        return self._inbox.counts if self._inbox is not None else ReplyCounts()

    def send_sync(
        self, topic: Topic, event: Event, request_id: str, timeout_s: float,
        reply: type[Event] | None, key: str | bytes | None, headers: dict[str, Any] | None,
    ) -> Any:  # fmt: skip
        binding = self._bind(_reply_model(topic, reply))
        inbox = self._open()
        done = threading.Event()
        outcome: list[Any] = []

        def settle(value: Any) -> None:
            if not outcome:  # the first outcome wins (a reply racing a failed send, say)
                outcome.append(value)
                done.set()

        inbox.expect(request_id, binding, timeout_s, settle)
        self._publish(inbox, topic, event, request_id, key, headers, settle)
        if not done.wait(timeout_s + _GRACE_S):
            inbox.forget(request_id)
            settle(_timeout(request_id, timeout_s))
        return _unwrap(outcome[0])

    async def send(
        self, topic: Topic, event: Event, request_id: str, timeout_s: float,
        reply: type[Event] | None, key: str | bytes | None, headers: dict[str, Any] | None,
    ) -> Any:  # fmt: skip
        binding = self._bind(_reply_model(topic, reply))
        inbox = self._inbox
        if inbox is None:
            inbox = await asyncio.to_thread(self._open)  # creates a topic: I/O
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def settle(value: Any) -> None:
            loop.call_soon_threadsafe(_resolve, future, value)

        inbox.expect(request_id, binding, timeout_s, settle)
        try:
            self._publish(inbox, topic, event, request_id, key, headers, settle)
            value = await asyncio.wait_for(future, timeout_s + _GRACE_S)
        except TimeoutError:
            raise _timeout(request_id, timeout_s) from None
        finally:  # settled, timed out or the caller gave up (cancelled): nobody waits now
            inbox.forget(request_id)
        return _unwrap(value)

    def close(self) -> None:
        """Cancel what still waits and remove the reply topic if it is the publisher's own."""
        with self._lock:
            self._closed = True
            inbox, self._inbox = self._inbox, None
        if inbox is not None:
            inbox.close()

    def _open(self) -> ReplyInbox:
        with self._lock:
            if self._closed:
                raise PipelineError("the publisher is closed: no request can be sent")
            if self._inbox is None:
                topic = self._reply_topic
                if topic is None:
                    topic = default_reply_topic(self._settings.topic("replies"))
                self._inbox = ReplyInbox(
                    self._transport, self._codec, topic, owned=self._reply_topic is None
                )
            return self._inbox

    def _publish(
        self, inbox: ReplyInbox, topic: Topic, event: Event, request_id: str,
        key: str | bytes | None, headers: dict[str, Any] | None, settle: Callable[[Any], None],
    ) -> None:  # fmt: skip
        def delivered(result: Any) -> None:
            if isinstance(result, DeliveryError):  # never sent: no reply can come
                inbox.forget(request_id)
                settle(result)

        sent = {**(headers or {}), hdr.REPLY_TO: inbox.topic}
        try:
            self._send(topic, event, key, sent, delivered, event_id=request_id)
        except BaseException:
            inbox.forget(request_id)
            raise


def _reply_model(topic: Topic, reply: type[Event] | None) -> type[Event]:
    model = reply or topic.replies
    if model is None:
        raise DeclarationError(
            f"topic {topic.name!r} declares no replies model: declare "
            f"Topic({topic.name!r}, {topic.model.__name__}, replies=...) or pass reply=..."
        )
    return model


def _timeout(request_id: str, timeout_s: float) -> RequestTimeout:
    return RequestTimeout(f"no reply to request {request_id} within {timeout_s:g}s", request_id)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _unwrap(value: Any) -> Any:
    if isinstance(value, BaseException):
        raise value
    return value
