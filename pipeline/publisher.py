"""Publishing typed events from application code (a web handler, a script, a job).

::

    with Publisher.connect() as publisher:
        publisher.publish(USER_REGISTERED, UserRegistered(user_id="u1", email="a@b.c"))

``publish`` waits for the broker's acknowledgement by default and raises ``DeliveryError`` if
the record was refused. ``wait=False`` returns at once; the outcome then goes to ``on_delivery``
or, if none was given, is raised by the next ``flush()``/``close()``: a failed delivery is never
silently dropped. ``await publisher.publish_async(...)`` does the same from asyncio code without
blocking the event loop.

A background thread serves delivery reports, so acknowledgements arrive whichever style is used.
The publisher is thread-safe. Its producer and the admin client of its topic check come from its
transport (``pipeline.transport``): Kafka unless another is given.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from pipeline import delays
from pipeline import headers as hdr
from pipeline.app import Announce, build_codec, load_catalog
from pipeline.clock import SYSTEM
from pipeline.config import Settings, load_settings
from pipeline.errors import DeliveryError, KafkaError, TopicNotFoundError
from pipeline.events import Event
from pipeline.hookcalls import publish_hook
from pipeline.hooks import Hook, check
from pipeline.lanes import lane_topic
from pipeline.reply import ReplyCounts
from pipeline.replyrequests import Requests
from pipeline.serde import Binding, Codec, SchemaCatalog
from pipeline.stage import Topic
from pipeline.transport import Transport, kafka

log = logging.getLogger("pipeline.publisher")


@dataclass(frozen=True, slots=True)
class Delivered:
    """Where the broker stored an event, and its id (its ``event-id`` header): the job id a
    tracking stage's status is found by (``pipeline.jobs.get(delivered.job_id)``)."""

    topic: str
    partition: int
    offset: int
    event_id: str

    @property
    def job_id(self) -> str:
        return self.event_id

    @property
    def coordinates(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


DeliveryHandler = Callable[[Delivered | DeliveryError], None]


class Publisher:
    def __init__(
        self,
        settings: Settings,
        catalog: SchemaCatalog | None = None,
        codec: Codec | None = None,
        announce: Announce | None = None,
        *,
        check_topics: bool = True,
        transport: Transport | None = None,
        hooks: Sequence[Hook] = (),
        reply_topic: str | None = None,
    ) -> None:
        """``hooks``: ``pipeline.hooks.Hook`` instances whose ``before_publish`` hears each
        publish (a tracer's producer span). ``reply_topic``: where replies to this publisher's
        requests go (``pipeline.replyinbox``), by default a topic of its own made at the first
        request and deleted at ``close``."""
        self.settings = settings
        self._before_publish = publish_hook(check(hooks, "Publisher hooks"))
        self._transport = kafka(settings) if transport is None else transport
        self._catalog = catalog or load_catalog(settings)
        self._owns_codec = codec is None
        if codec is None:
            codec, announce = build_codec(settings, self._catalog, self._transport)
        self._codec = codec
        self._announce = announce
        self._producer = self._transport.producer("publisher")
        self._bindings: dict[type[Event], Binding] = {}
        self._known_topics: set[str] = set()
        self._check_topics = check_topics
        self._unreported: list[DeliveryError] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._serve_reports, name="publisher", daemon=True)
        self._poller.start()
        self._requests = Requests(
            self._send, self._binding, self._codec, self._transport, self.settings, reply_topic
        )

    @classmethod
    def connect(
        cls, *, hooks: Sequence[Hook] = (), reply_topic: str | None = None, **overrides: Any
    ) -> Publisher:
        return cls(load_settings(**overrides), hooks=hooks, reply_topic=reply_topic)

    # -- publishing -----------------------------------------------------------------------

    def publish(
        self,
        topic: Topic,
        event: Event,
        *,
        key: str | bytes | None = None,
        headers: dict[str, str | bytes] | None = None,
        wait: bool = True,
        timeout_s: float = 30.0,
        on_delivery: DeliveryHandler | None = None,
        delay: timedelta | float | None = None,
        deliver_at: datetime | None = None,
        priority: int | str | None = None,
    ) -> Delivered | None:
        """Encode and send ``event``. With ``wait`` (default) block until acknowledged and
        return where it was stored; otherwise return None and report to ``on_delivery``.

        ``delay`` (a timedelta or seconds) or ``deliver_at`` (a datetime): the topic's
        consumers see the event at that time, not before (a ``delayed=True`` topic; 1 s to 30
        days, else ``DelayError``). It is stored in a delay tier meanwhile (``Delivered``
        says where); ``cancel(topic, event_id)`` withdraws it.

        ``priority``: the lane of a topic with priorities (``pipeline.lanes``): an index, 0
        highest as in Bull, or a level name; default 0, the topic itself."""
        _require_topic(topic)
        due, lane = self._due(topic, delay, deliver_at), topic.lane(priority)
        if not wait:
            report = on_delivery or self._remember_failure
            self._send(topic, event, key, headers, report, due, lane)
            return None
        done = threading.Event()
        outcome: list[Delivered | DeliveryError] = []

        def record(result: Delivered | DeliveryError) -> None:
            outcome.append(result)
            done.set()

        self._send(topic, event, key, headers, record, due, lane)
        if not done.wait(timeout_s):
            raise DeliveryError(f"no acknowledgement for {topic.name} within {timeout_s}s")
        return _unwrap(outcome[0])

    async def publish_async(
        self,
        topic: Topic,
        event: Event,
        *,
        key: str | bytes | None = None,
        headers: dict[str, str | bytes] | None = None,
        delay: timedelta | float | None = None,
        deliver_at: datetime | None = None,
        priority: int | str | None = None,
    ) -> Delivered:
        """Send ``event`` and await its acknowledgement without blocking the event loop
        (``delay`` / ``deliver_at`` as in ``publish``)."""
        _require_topic(topic)
        due, lane = self._due(topic, delay, deliver_at), topic.lane(priority)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Delivered | DeliveryError] = loop.create_future()

        def record(result: Delivered | DeliveryError) -> None:
            loop.call_soon_threadsafe(_settle, future, result)

        self._send(topic, event, key, headers, record, due, lane)
        return _unwrap(await future)

    # -- request-reply (pipeline.reply) --------------------------------------------------

    def request_sync(
        self, topic: Topic, event: Event, *, timeout_s: float = 30.0,
        reply: type[Event] | None = None, key: str | bytes | None = None,
        headers: dict[str, str | bytes] | None = None,
    ) -> Any:  # fmt: skip
        """Publish ``event`` as a request and block until its reply (an instance of ``reply``,
        by default the topic's ``replies`` model). Raises ``RequestTimeout`` (with the
        request's id) if none arrives within ``timeout_s``, counted from now."""
        _require_topic(topic)
        request_id = event_id_for(topic, event)
        return self._requests.send_sync(topic, event, request_id, timeout_s, reply, key, headers)

    async def request(
        self, topic: Topic, event: Event, *, timeout_s: float = 30.0,
        reply: type[Event] | None = None, key: str | bytes | None = None,
        headers: dict[str, str | bytes] | None = None,
    ) -> Any:  # fmt: skip
        """``request_sync`` for asyncio code: awaits the reply without blocking the loop."""
        _require_topic(topic)
        request_id = event_id_for(topic, event)
        return await self._requests.send(topic, event, request_id, timeout_s, reply, key, headers)

    @property
    def replies(self) -> ReplyCounts:
        """Counts of replies answered, dropped (late, duplicate) and requests timed out."""
        return self._requests.counts

    def cancel(self, topic: Topic, event_id: str, *, timeout_s: float = 30.0) -> None:
        """Withdraw the delayed event ``event_id`` of ``topic``: it is not delivered if this
        returns at least a second before its due time (later: it may be). Cancelling an id
        that is not delayed (or no longer) does nothing. ``DeliveryError`` if not stored."""
        _require_topic(topic)
        if not topic.delayed:
            raise delays.DelayError(f"topic {topic.name!r} is not declared delayed=True")
        physical = delays.cancel_topic(self.settings.topic(topic.name))
        self._ensure_topic(physical)
        done = threading.Event()
        outcome: list[Any] = []

        def record(err: Any, _msg: Any) -> None:
            outcome.append(err)
            done.set()

        self._producer.produce(physical, b"cancelled", event_id.encode(), [], record)
        if not done.wait(timeout_s):
            raise DeliveryError(f"no acknowledgement for {physical} within {timeout_s}s")
        if outcome[0] is not None:
            raise _delivery_error(self._producer.delivery_error(outcome[0], physical))

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for every record sent so far; raise if any of them (not handed to an
        ``on_delivery``) failed."""
        left = self._producer.flush(timeout_s)
        with self._lock:
            failures, self._unreported = self._unreported, []
        if failures:
            raise DeliveryError(
                f"{len(failures)} event(s) were not delivered; first: {failures[0]}"
            )
        if left:
            raise DeliveryError(f"{left} event(s) still unacknowledged after {timeout_s}s")

    def close(self, timeout_s: float = 30.0) -> None:
        try:
            self.flush(timeout_s)
        finally:
            self._requests.close()
            self._closed.set()
            self._poller.join(2)
            if self._owns_codec:
                self._codec.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------

    @staticmethod
    def _due(
        topic: Topic, delay: timedelta | float | None, deliver_at: datetime | None
    ) -> int | None:
        if delay is None and deliver_at is None:
            return None
        if not topic.delayed:
            raise delays.DelayError(
                f"topic {topic.name!r} is not declared delayed=True: declare it so, for its "
                "consumers' workers to create and move its delay tiers"
            )
        return delays.due_ms(SYSTEM.wall_ms(), delay, deliver_at)

    def _send(
        self,
        topic: Topic,
        event: Event,
        key: str | bytes | None,
        headers: dict[str, str | bytes] | None,
        report: DeliveryHandler,
        due_ms: int | None = None,
        lane: int = 0,
        event_id: str | None = None,
    ) -> None:
        if not isinstance(event, topic.model):
            raise TypeError(
                f"{topic.name} carries {topic.model.__name__}, not {type(event).__name__}"
            )
        base = self.settings.topic(topic.name)
        physical = lane_topic(base, lane) if lane else base
        # Before encoding: the admin call also proves we may connect, so a refused login or TLS
        # handshake is our AuthenticationError/TLSError, not the schema topic's timeout.
        self._ensure_topic(physical)
        # Encoded for the topic itself whatever the lane: lanes are one topic to schemas.
        value = self._codec.encode(event, self._binding(topic.model), base)
        if key is None and topic.key is not None:
            key = str(getattr(event, topic.key))
        event_id = event_id or event_id_for(topic, event)  # a request's is chosen before
        raw_headers = [(hdr.EVENT_ID, event_id.encode())]
        raw_headers += [(k, hdr.encode(v)) for k, v in (headers or {}).items()]
        if due_ms is not None:  # to a delay tier; the mover delivers it when due
            hop = delays.defer(physical, due_ms, SYSTEM.wall_ms(), raw_headers, base=base)
            physical, raw_headers = hop.topic, hop.headers
            self._ensure_topic(physical)
        raw_key = key.encode() if isinstance(key, str) else key
        watch = None
        if self._before_publish is not None:
            watch = self._before_publish(physical, raw_key, raw_headers)

        def delivered(err: Any, msg: Any) -> None:
            result: Delivered | DeliveryError
            if err is not None:
                result = _delivery_error(self._producer.delivery_error(err, physical))
            else:
                result = Delivered(msg.topic(), msg.partition(), msg.offset(), event_id)
            if watch is not None:
                watch(result)
            report(result)

        try:
            self._producer.produce(physical, value, raw_key, raw_headers, delivered)
        except KafkaError as exc:
            if watch is not None:
                watch(_delivery_error(exc))
            raise

    def _binding(self, model: type[Event]) -> Binding:
        binding = self._bindings.get(model)
        if binding is None:
            binding = self._catalog.bind(model)
            if self._announce is not None:
                self._announce(binding)
            self._bindings[model] = binding
        return binding

    def _ensure_topic(self, physical: str) -> None:
        # Without this check librdkafka would hold the record for up to a minute and then
        # report an unknown topic; failing at once names the problem.
        if not self._check_topics or physical in self._known_topics:
            return
        self._known_topics = set(self._transport.admin().topics())
        if physical not in self._known_topics:
            raise TopicNotFoundError(f"topic {physical!r} does not exist")

    def _remember_failure(self, result: Delivered | DeliveryError) -> None:
        if isinstance(result, DeliveryError):
            log.error("publish failed: %s", result)
            with self._lock:
                self._unreported.append(result)

    def _serve_reports(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.1)


def event_id_for(topic: Topic, event: Event) -> str:
    return str(getattr(event, topic.id_field)) if topic.id_field else hdr.new_event_id()


def _require_topic(topic: object) -> None:
    # A bare name is refused rather than looked up: the Topic declaration says which model
    # (schema), key field and id field the record gets, and guessing them from the event would
    # silently change its key, hence its partition.
    if not isinstance(topic, Topic):
        raise TypeError(
            f"publish() takes a Topic, not {type(topic).__name__} {topic!r}: pass the Topic "
            "declared for it, e.g. UPLOADED = Topic('video.uploaded', VideoUploaded)"
        )
    topic.check()


def _delivery_error(err: KafkaError) -> DeliveryError:
    if isinstance(err, DeliveryError):
        return err
    return DeliveryError(
        str(err), code=err.code, retriable=err.retriable, permanent=err.permanent,
        batch_wide=err.batch_wide,
    )  # fmt: skip


def _settle(
    future: asyncio.Future[Delivered | DeliveryError], result: Delivered | DeliveryError
) -> None:
    if not future.done():
        future.set_result(result)


def _unwrap(result: Delivered | DeliveryError) -> Delivered:
    if isinstance(result, DeliveryError):
        raise result
    return result
