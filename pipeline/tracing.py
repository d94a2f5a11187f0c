"""OpenTelemetry tracing, as a hook subscriber (the ``[otel]`` extra: ``opentelemetry-api``).

Opt in by registering it, like any hook::

    tracing = Tracing()                        # the global tracer provider, or tracer_provider=
    Pipeline.build(settings, STAGES, hooks=[tracing])   # or HOOKS = [tracing] for pipeline run
    Publisher(settings, hooks=[tracing])                # producer spans on publish

Spans follow the OTel messaging semantic conventions for Kafka:

- ``send {topic}`` (PRODUCER) per ``Publisher.publish``, from the call until the broker's
  acknowledgement; its context goes out in the record's W3C ``traceparent``/``tracestate``.
- ``process {topic}`` (CONSUMER) per delivery of an event to a stage, a child of the context in
  the record's ``traceparent`` (a new trace when it has none). It is current inside the handler
  (``around_handler``: every in-process attempt runs in it, a failed one adds an event) and ends
  at the event's outcome: outputs acknowledged, retry copy written, dead letter written, skip.
  Its context, not a copy of the input's header, goes on the event's outputs
  (``output_headers``), so a chain of stages is one connected trace.
- Attributes: ``messaging.system=kafka``, ``messaging.operation.name``/``.type``,
  ``messaging.destination.name``, ``messaging.consumer.group.name``,
  ``messaging.destination.partition.id``, ``messaging.kafka.offset``, ``messaging.message.id``
  (the event id), ``messaging.kafka.message.key`` only with ``record_keys=True``, and
  ``error.type`` on failure. Failures, retries, dead letters, skips and stalls are span events
  (``pipeline.failed``, ``pipeline.retry``, ``pipeline.dead_letter``, ...).
- Never a payload, and never an exception's message (it may quote one): only its type.

Until a tracer provider that records is configured (none given, and none set globally: the
API alone, or ``OTEL_SDK_DISABLED``), the hook does nothing but that check (about a
microsecond an event): outputs carry the input's trace headers unchanged, as without it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.propagators.textmap import Getter
    from opentelemetry.trace import (
        NoOpTracerProvider,
        ProxyTracerProvider,
        Span,
        SpanKind,
        StatusCode,
        TracerProvider,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "pipeline.tracing needs OpenTelemetry: pip install 'kafka-pipeline[otel]'"
    ) from exc

from pipeline import headers as hdr
from pipeline.context import Context
from pipeline.errors import DeliveryError
from pipeline.hooks import Hook, StageInfo
from pipeline.ports import RawRecord, TopicPartition
from pipeline.publisher import Delivered

# (topic, partition, offset) of a delivery being processed
Key = tuple[str, int, int]
# A process span and the context it is current in (its parent's baggage included)
Open = tuple[Span, otel_context.Context]


class _HeaderGetter(Getter[dict[str, bytes]]):
    """Reads W3C trace headers from a record's headers (bytes; foreign ones never raise)."""

    def get(self, carrier: dict[str, bytes], key: str) -> list[str] | None:
        value = carrier.get(key)
        return None if value is None else [value.decode("latin-1")]

    def keys(self, carrier: dict[str, bytes]) -> list[str]:
        return list(carrier)


_GETTER = _HeaderGetter()
_NOTHING = nullcontext()


class Tracing(Hook):
    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        *,
        record_keys: bool = False,
        max_open: int = 10_000,
    ) -> None:
        """``record_keys``: put each record's key in ``messaging.kafka.message.key`` (keys may
        be personal data: off by default). ``max_open``: process spans kept open per stage
        awaiting their outcome; past it the oldest is ended (an event says so)."""
        self._tracer = trace.get_tracer("kafka-pipeline", tracer_provider=tracer_provider)
        self._provider = tracer_provider
        self._live = False  # until a provider that records is configured (then for good)
        self._record_keys = record_keys
        self._max_open = max_open
        self._open: dict[str, dict[Key, Open]] = {}  # by stage name
        self._lock = threading.Lock()  # around the per-stage maps (a pipeline hook is shared)

    # -- the handler and its outputs -----------------------------------------------------------

    def around_handler(
        self, stage: StageInfo, event: Any, ctx: Context
    ) -> AbstractContextManager[object]:
        if not self._live:
            return _NOTHING  # no SDK: outputs carry the input's context, as without this hook
        key = (ctx.topic, ctx.partition, ctx.offset)
        found = self._open_spans(stage).get(key)
        if found is None:  # a first attempt; later in-process attempts share its span
            found = self._start(stage, key, ctx.headers, ctx.key, ctx.event_id)
        return _Current(found)

    def output_headers(
        self, stage: StageInfo, record: RawRecord, ctx: Context
    ) -> list[tuple[str, bytes]]:
        if not self._live:
            return []
        found = self._open_spans(stage).get((record.topic(), record.partition(), record.offset()))
        if found is None or not found[0].get_span_context().is_valid:
            return []
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=found[1])
        return [(k, v.encode()) for k, v in carrier.items()]

    # -- outcomes ------------------------------------------------------------------------------

    def on_completed(self, stage: StageInfo, record: RawRecord) -> None:
        if self._live:
            self._end(stage, record, None)

    def on_failed(
        self, stage: StageInfo, record: RawRecord, error: Exception, attempt: int, retrying: bool
    ) -> None:
        span = self._span_of(stage, record)
        span.set_status(StatusCode.ERROR, _error_type(error))
        span.set_attribute("error.type", _error_type(error))
        span.add_event(
            "pipeline.failed", {"pipeline.attempt": attempt, "pipeline.retrying": retrying}
        )

    def on_retrying(
        self, stage: StageInfo, record: RawRecord, error: Exception, attempt: int,
        tier: int | None,
    ) -> None:  # fmt: skip
        where = {"pipeline.attempt": attempt}
        if tier is not None:
            where["pipeline.retry.tier"] = tier
        self._end(stage, record, ("pipeline.retry", where))

    def on_dead_lettered(self, stage: StageInfo, record: RawRecord, error: Exception) -> None:
        self._span_of(stage, record).set_status(StatusCode.ERROR, _error_type(error))
        self._end(stage, record, ("pipeline.dead_letter", {"error.type": _error_type(error)}))

    def on_skipped(self, stage: StageInfo, record: RawRecord, error: Exception) -> None:
        self._end(stage, record, ("pipeline.skipped", {}))

    def on_stalled(self, stage: StageInfo, record: RawRecord, running_s: float) -> None:
        found = self._open_spans(stage).get(_key(record))
        if found is not None:
            found[0].add_event("pipeline.stalled", {"pipeline.running_s": running_s})

    def on_delivery_stall(
        self, stage: StageInfo, tp: TopicPartition, offset: int, error: Exception, attempt: int
    ) -> None:
        # The input is read again (a new delivery, a new span).
        self._end_key(
            stage, (*tp, offset), ("pipeline.delivery_stall", {"pipeline.attempt": attempt})
        )

    # -- time --------------------------------------------------------------------------------

    def on_stage_start(self, stage: StageInfo) -> None:
        self._configured()

    def on_tick(self, stage: StageInfo, now: float) -> None:
        if not self._live:  # a provider may be set after the stages started
            self._configured()

    # -- partitions going away -----------------------------------------------------------------

    def on_revoke(self, stage: StageInfo, partitions: list[TopicPartition]) -> None:
        self._end_partitions(stage, set(partitions), "pipeline.revoked")

    def on_lost(self, stage: StageInfo, partitions: list[TopicPartition]) -> None:
        self._end_partitions(stage, set(partitions), "pipeline.lost")

    def on_stage_stop(self, stage: StageInfo) -> None:
        with self._lock:
            left = self._open.pop(stage.name, {})
        _end_all(left.values(), "pipeline.stopped")

    # -- publishing ----------------------------------------------------------------------------

    def before_publish(
        self, topic: str, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> Any:
        if not self._live and not self._configured():
            return None
        attributes = _attributes("send", topic)
        if self._record_keys and key is not None:
            attributes["messaging.kafka.message.key"] = hdr.id_text(key)
        span = self._tracer.start_span(f"send {topic}", kind=SpanKind.PRODUCER,
                                       attributes=attributes)  # fmt: skip
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        if carrier:  # the span's context, in place of any trace header the caller gave
            headers[:] = [h for h in headers if h[0] not in carrier]
            headers.extend((k, v.encode()) for k, v in carrier.items())
        return partial(_sent, span)

    # -- internals -----------------------------------------------------------------------------

    def _configured(self) -> bool:
        """Whether spans are recorded: a provider was given, or one was set globally (the
        API's default, a proxy of a no-op, and the no-op itself do not count)."""
        # Asked when a stage starts and once a second until it holds, never per event (the
        # API reads the environment each time it is asked).
        provider = self._provider or trace.get_tracer_provider()
        self._live = not isinstance(provider, ProxyTracerProvider | NoOpTracerProvider)
        return self._live

    def _open_spans(self, stage: StageInfo) -> dict[Key, Open]:
        spans = self._open.get(stage.name)
        if spans is None:
            with self._lock:
                spans = self._open.setdefault(stage.name, {})
        return spans

    def _start(
        self, stage: StageInfo, key: Key, headers: dict[str, bytes], raw_key: bytes | None,
        event_id: str,
    ) -> Open:  # fmt: skip
        parent = propagate.extract(headers, getter=_GETTER)
        attributes = _attributes("process", key[0])
        attributes["messaging.consumer.group.name"] = stage.group
        attributes["messaging.destination.partition.id"] = str(key[1])
        attributes["messaging.kafka.offset"] = key[2]
        attributes["messaging.message.id"] = event_id
        if self._record_keys and raw_key is not None:
            attributes["messaging.kafka.message.key"] = hdr.id_text(raw_key)
        span = self._tracer.start_span(f"process {key[0]}", context=parent,
                                       kind=SpanKind.CONSUMER, attributes=attributes)  # fmt: skip
        found = (span, trace.set_span_in_context(span, parent))
        spans = self._open_spans(stage)
        spans[key] = found
        if len(spans) > self._max_open:
            with self._lock:
                oldest = next(iter(spans))
                evicted = spans.pop(oldest, None)
            if evicted is not None:
                _end_all([evicted], "pipeline.evicted")
        return found

    def _span_of(self, stage: StageInfo, record: RawRecord) -> Span:
        """The delivery's open span; for a record no handler saw (it did not decode), one
        started now, so its failure and dead letter are traced too."""
        if not self._live:
            return trace.INVALID_SPAN  # records nothing
        found = self._open_spans(stage).get(_key(record))
        if found is None:
            headers = hdr.to_dict(record.headers())
            event_id = hdr.event_id_of(record.headers(), "{}[{}]@{}".format(*_key(record)))
            found = self._start(stage, _key(record), headers, record.key(), event_id)
        return found[0]

    def _end(self, stage: StageInfo, record: RawRecord, event: _Event | None) -> None:
        if event is not None:
            self._span_of(stage, record)  # a dead letter of a record that did not decode
        self._end_key(stage, _key(record), event)

    def _end_key(self, stage: StageInfo, key: Key, event: _Event | None) -> None:
        found = self._open_spans(stage).pop(key, None)
        if found is not None:
            if event is not None:
                found[0].add_event(*event)
            found[0].end()

    def _end_partitions(self, stage: StageInfo, partitions: set[TopicPartition], why: str) -> None:
        spans = self._open_spans(stage)
        with self._lock:
            gone = [k for k in spans if (k[0], k[1]) in partitions]
            ended = [spans.pop(k) for k in gone]
        _end_all(ended, why)


_Event = tuple[str, dict[str, Any]]


class _Current:
    """Makes a process span current around one handler call (it is ended by the outcome)."""

    __slots__ = ("_found", "_token")

    def __init__(self, found: Open) -> None:
        self._found = found
        self._token: object = None

    def __enter__(self) -> None:
        self._token = otel_context.attach(self._found[1])

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:  # fmt: skip
        otel_context.detach(self._token)  # type: ignore[arg-type]
        if exc is not None:
            self._found[0].add_event("pipeline.handler_error", {"error.type": _error_type(exc)})


def _attributes(operation: str, topic: str) -> dict[str, Any]:
    return {
        "messaging.system": "kafka",
        "messaging.operation.name": operation,
        "messaging.operation.type": operation,
        "messaging.destination.name": topic,
    }


def _key(record: RawRecord) -> Key:
    return (record.topic(), record.partition(), record.offset())


def _error_type(error: BaseException) -> str:
    return type(error).__qualname__


def _end_all(found: Iterable[Open], why: str) -> None:
    for span, _ in found:
        span.add_event(why)
        span.end()


def _sent(span: Span, outcome: Delivered | DeliveryError) -> None:
    if isinstance(outcome, Delivered):
        span.set_attribute("messaging.destination.partition.id", str(outcome.partition))
        span.set_attribute("messaging.kafka.offset", outcome.offset)
        span.set_attribute("messaging.message.id", outcome.event_id)
    else:
        span.set_status(StatusCode.ERROR, _error_type(outcome))
        span.set_attribute("error.type", _error_type(outcome))
    span.end()
