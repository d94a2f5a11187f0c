"""The typed context a handler receives next to its event.

``ctx.emit`` only buffers: outputs are produced after the handler returns successfully, so a
handler that raises half way has emitted nothing (no half-done work reaches Kafka).

Everything else is read lazily from the record, so a handler that looks at nothing costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any, Protocol

from pipeline import delays
from pipeline import headers as hdr
from pipeline.errors import DeclarationError
from pipeline.events import Event
from pipeline.jobs.result import check_progress, encode_result
from pipeline.ports import RawRecord
from pipeline.stage import Topic


class TransactionalStore(Protocol):
    def transaction(self, group: str, event_id: str) -> AbstractContextManager[Any]: ...


_NO_HEADERS: list[tuple[str, bytes]] = []  # shared, never mutated
_new = object.__new__


class Output:
    """One emitted event, buffered until the handler returns. A plain slotted class with
    positional defaults, built once per output: a dataclass's keyword defaults cost more."""

    __slots__ = ("delay", "due_ms", "event", "headers", "key", "lane", "reply_to", "topic")

    def __init__(
        self,
        topic: Topic,
        event: Event,
        key: bytes | None,
        headers: list[tuple[str, bytes]],  # extra headers given to emit()
        delay: tuple[int | None, int | None] | None = None,
        lane: int = 0,
        reply_to: str | None = None,
    ) -> None:
        self.topic, self.event, self.key, self.headers = topic, event, key, headers
        # emit(delay=...): (delay in ms, None) or (None, due wall ms); the writer fixes the due
        # time on its clock (``due_ms``) and sends the output to a delay tier (``pipeline.delays``).
        self.delay = delay
        self.due_ms: int | None = None
        self.lane = lane  # the priority lane it goes to (``pipeline.lanes``; 0: the topic itself)
        self.reply_to = reply_to  # a reply (``Context.reply``): the requester's reply topic

    def __repr__(self) -> str:
        return f"Output({self.topic.name!r}, {type(self.event).__name__}, lane={self.lane})"


class Scope:
    """What every Context of one stage shares (its name, allowed outputs, store, group and
    progress hooks): one reference per event instead of five attributes to set."""

    __slots__ = ("allowed", "group", "on_progress", "stage", "store")

    def __init__(
        self,
        stage: str,
        allowed_outputs: frozenset[str],
        store: TransactionalStore | None = None,
        group: str = "",
        on_progress: Callable[..., None] | None = None,
    ) -> None:
        self.stage, self.allowed, self.store = stage, allowed_outputs, store
        self.group, self.on_progress = group, on_progress


class Context:
    """Where the event came from, its headers, and the way to emit follow-up events."""

    __slots__ = ("_headers", "_record", "_scope", "outputs", "result_json")

    def __init__(
        self,
        stage: str,
        record: RawRecord,
        allowed_outputs: frozenset[str],
        store: TransactionalStore | None = None,
        group: str = "",
        on_progress: Callable[..., None] | None = None,
    ) -> None:
        self._scope = Scope(stage, allowed_outputs, store, group, on_progress)
        self._record = record
        self._headers: hdr.Headers | None = None
        self.outputs: list[Output] = []
        # The job result as JSON text (``result``), None until one is given.
        self.result_json: str | None = None

    @classmethod
    def of(cls, scope: Scope, record: RawRecord) -> Context:
        """The Context of ``record`` in a stage's ``scope``: what the invoker builds per event
        (``Invoker.call_sync`` makes the same stores inline: keep the two alike)."""
        ctx = _new(cls)  # one store per slot: a tuple assignment builds and unpacks a tuple
        ctx._scope = scope
        ctx._record = record
        ctx._headers = None
        ctx.outputs = []
        ctx.result_json = None
        return ctx

    @property
    def stage(self) -> str:
        return self._scope.stage

    @property
    def record(self) -> RawRecord:
        """The record being handled, as the consumer returned it (hooks read its headers and
        coordinates; its ``value()`` is the raw bytes: never log it)."""
        return self._record

    @property
    def topic(self) -> str:
        return self._record.topic()

    @property
    def partition(self) -> int:
        return self._record.partition()

    @property
    def offset(self) -> int:
        return self._record.offset()

    @property
    def key(self) -> bytes | None:
        return self._record.key()

    @property
    def timestamp_ms(self) -> int:
        return self._record.timestamp()[1]

    @property
    def coordinates(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    @property
    def headers(self) -> hdr.Headers:
        if self._headers is None:
            self._headers = hdr.to_dict(self._record.headers())
        return self._headers

    @property
    def event_id(self) -> str:
        """The ``event-id`` header; for records from producers that set none, a stable id
        derived from the record's coordinates (the same on every redelivery)."""
        return hdr.event_id_of(self._record.headers(), self.coordinates)

    @property
    def correlation_id(self) -> str:
        """The ``correlation-id`` header as text (read like the event id: bytes that are not
        UTF-8 never raise), or the event id when there is none."""
        raw = self.headers.get(hdr.CORRELATION_ID)
        return hdr.id_text(raw) if raw else self.event_id

    @property
    def parent_id(self) -> str | None:
        """The ``parent-id`` header: the id of the event this one was derived from (None for
        an event published from outside a stage)."""
        raw = self.headers.get(hdr.PARENT_ID)
        return hdr.id_text(raw) if raw else None

    def progress(self, percent: float, note: str | None = None) -> None:
        """Report how far the handler is with this event (0..100, and an optional short note):
        a tracking stage (``track_jobs``) records it in the job's status. Cheap when nobody
        listens; a bad value raises ``ValueError``."""
        value, note = check_progress(percent, note)
        on_progress = self._scope.on_progress
        if on_progress is not None:
            on_progress(self._record, value, note)

    def result(self, value: Any) -> None:
        """Set the job's result: a small JSON value or a pydantic model (the last call wins; a
        handler's non-None return value in a tracking stage does the same). Raises
        ``ResultError`` if it is not JSON or over ``pipeline.jobs.RESULT_MAX_BYTES`` (a
        ``SerializationError``: the event is dead-lettered, not retried)."""
        self.result_json = encode_result(value)

    def transaction(self) -> AbstractContextManager[Any]:
        """A database transaction of the stage's idempotency store, holding this event's id.

        Write your side effects through it (``tx.execute(sql, params)``): they commit together
        with the id, once. On a redelivery the id is already recorded, so they are rolled back
        (``tx.duplicate`` is True) while the handler still runs and emits its outputs.
        """
        scope = self._scope
        if scope.store is None:
            raise DeclarationError(
                f"stage {scope.stage} has no idempotency store: set `idempotency = Idempotency()`"
            )
        return scope.store.transaction(scope.group, self.event_id)

    def emit(
        self,
        topic: Topic,
        event: Event,
        *,
        key: str | bytes | None = None,
        headers: dict[str, str | bytes] | None = None,
        delay: timedelta | float | None = None,
        deliver_at: datetime | None = None,
        priority: int | str | None = None,
    ) -> None:
        """Queue ``event`` for ``topic``. The key defaults to the topic's key field, else the
        input record's key, so per-key order is kept along the pipeline. ``delay`` (1 s to 30
        days) or ``deliver_at``: the topic's consumers see it then (a ``delayed=True`` topic);
        a bad one raises ``DelayError`` here (the event is dead-lettered, never retried).
        ``priority``: the lane of a topic with priorities (an index, 0 highest, or a level
        name; default 0)."""
        if topic.name not in self._scope.allowed:
            raise DeclarationError(
                f"stage {self.stage} emitted to {topic.name!r}, which is not in its `emits`"
            )
        if not isinstance(event, topic.model):
            raise DeclarationError(
                f"stage {self.stage}: topic {topic.name!r} carries {topic.model.__name__}, "
                f"not {type(event).__name__}"
            )
        if key is None:
            field = topic.key
            if field is None:
                raw_key = self.key
            else:  # str() of what is already a str (the usual key field) is a call for nothing
                value = getattr(event, field)
                raw_key = (value if type(value) is str else str(value)).encode()
        else:
            raw_key = key.encode() if isinstance(key, str) else key
        if headers is None and delay is None and deliver_at is None and priority is None:
            # The common case: Output(topic, event, raw_key, _NO_HEADERS) inline (calling the
            # class costs about as much again as allocating the object and these stores).
            output = _new(Output)
            output.topic = topic
            output.event = event
            output.key = raw_key
            output.headers = _NO_HEADERS
            output.delay = None
            output.due_ms = None
            output.lane = 0
            output.reply_to = None
            self.outputs.append(output)
            return
        extra = [(k, hdr.encode(v)) for k, v in headers.items()] if headers else _NO_HEADERS
        later = (
            None
            if delay is None and deliver_at is None
            else delays.relative(topic, delay, deliver_at)
        )
        lane = 0 if priority is None else self._lane(topic, priority)
        self.outputs.append(Output(topic, event, raw_key, extra, later, lane))

    def _lane(self, topic: Topic, priority: int | str) -> int:
        try:
            return topic.lane(priority)
        except ValueError as exc:  # a declaration error: the input is dead-lettered
            raise DeclarationError(f"stage {self.stage}: {exc}") from None

    @property
    def reply_to(self) -> str | None:
        """The topic a requester waits on for this event's reply (its ``reply-to`` header),
        or None for an event that was published, not requested."""
        raw = self.headers.get(hdr.REPLY_TO)
        return raw.decode(errors="replace") if raw else None

    def reply(self, event: Event) -> None:
        """Answer the request being handled with ``event``, an instance of the ``replies``
        model its topic declares. Sent like an output: only if the handler then succeeds, and
        before the request's offset is committed. The last reply given wins (a returned event
        replaces an earlier ``ctx.reply``). An event nobody requested gets no reply."""
        reply_to = self.reply_to
        if reply_to is None:
            return
        if any(o.reply_to is not None for o in self.outputs):
            self.outputs = [o for o in self.outputs if o.reply_to is None]
        answered = [(hdr.IN_REPLY_TO, self.event_id.encode())]
        topic = Topic(reply_to, type(event))
        self.outputs.append(Output(topic, event, None, answered, None, 0, reply_to))
