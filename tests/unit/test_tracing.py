"""OpenTelemetry tracing as a hook, on the in-memory broker: spans after the messaging
conventions, one connected trace along a chain, outcomes as span events, no payloads."""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import NoOpTracerProvider, SpanKind, StatusCode

from pipeline import Context, RetryPolicy, Settings, Stage
from pipeline.publisher import Publisher
from pipeline.testing import TestPipeline
from pipeline.tracing import Tracing
from tests.conftest import TEST_SCHEMAS
from tests.integration.app_stages import PINGS, PONGS, SEEN, Ping
from tests.tracekit import CHAIN, SECRET, assert_one_connected_chain, in_memory

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _publisher(t: TestPipeline, hooks: Any) -> Publisher:
    p = t.pipeline
    return Publisher(t.settings, p.catalog, p.codec, p.announce, transport=t.transport,
                     hooks=hooks)  # fmt: skip


def test_a_published_event_through_three_stages_is_one_connected_trace() -> None:
    tracing, exporter = in_memory()
    with TestPipeline(CHAIN, Settings(schemas_dir=TEST_SCHEMAS), hooks=[tracing]) as t:
        with _publisher(t, [tracing]) as publisher:
            publisher.publish(PINGS, Ping(ping_id=SECRET, n=1), key="k1")
        t.run_until_idle()
        topics = [t.settings.topic(x.name) for x in (PINGS, PONGS, SEEN)]
        group = t.pipeline.plans[0].group
    spans = exporter.get_finished_spans()
    assert_one_connected_chain(spans, topics)
    send = next(s for s in spans if s.kind is SpanKind.PRODUCER)
    first = next(s for s in spans if s.name == f"process {topics[0]}")
    assert first.kind is SpanKind.CONSUMER
    attrs = dict(first.attributes or {})
    assert attrs["messaging.system"] == "kafka"
    assert attrs["messaging.destination.name"] == topics[0]
    assert attrs["messaging.consumer.group.name"] == group
    sent = dict(send.attributes or {})
    for name in ("messaging.destination.partition.id", "messaging.kafka.offset"):
        assert attrs[name] == sent[name], name
    assert "messaging.kafka.message.key" not in attrs, "keys only when asked for"


def test_outputs_carry_the_process_span_not_a_copy_of_the_inputs_header() -> None:
    tracing, exporter = in_memory()
    with TestPipeline(CHAIN[:1], Settings(schemas_dir=TEST_SCHEMAS), hooks=[tracing]) as t:
        t.publish(PINGS, Ping(ping_id="p", n=1), headers={"traceparent": TRACEPARENT})
        t.run_until_idle()
        out = dict(t.records(PONGS)[0].headers)
    (span,) = exporter.get_finished_spans()
    assert span.parent is not None and span.parent.span_id == 0xB7AD6B7169203331
    ours = f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-01".encode()
    assert out["traceparent"] == ours


class Fails(Stage):
    consumes = PINGS
    retry = RetryPolicy(in_process_attempts=2, tiers=(1.0,))

    def handle(self, event: Ping, ctx: Context) -> None:
        raise ValueError(f"cannot handle {event.ping_id}")  # a message quoting the payload


def test_retries_and_dead_letters_are_span_events_without_the_error_message() -> None:
    tracing, exporter = in_memory()
    with TestPipeline([Fails], Settings(schemas_dir=TEST_SCHEMAS), hooks=[tracing]) as t:
        t.publish(PINGS, Ping(ping_id=SECRET, n=1), key="k", headers={"traceparent": TRACEPARENT})
        t.run_until_idle()
        assert len(t.dead_letters(Fails)) == 1
    first, second = sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0)
    assert [e.name for e in first.events] == [
        "pipeline.handler_error", "pipeline.handler_error", "pipeline.failed", "pipeline.retry",
    ]  # fmt: skip
    assert first.events[-1].attributes == {"pipeline.attempt": 1, "pipeline.retry.tier": 0}
    assert second.name.startswith("process ") and ".retry." in second.name
    # The retry copy keeps the original headers: both deliveries are children of its producer.
    assert first.parent == second.parent and first.parent is not None
    assert first.parent.span_id == 0xB7AD6B7169203331
    assert [e.name for e in second.events][-1] == "pipeline.dead_letter"
    assert second.status.status_code is StatusCode.ERROR
    for span in (first, second):
        assert SECRET not in repr(span.to_json())


def test_keys_are_recorded_only_when_configured() -> None:
    tracing, exporter = in_memory()
    tracing._record_keys = True
    with TestPipeline(CHAIN[:1], Settings(schemas_dir=TEST_SCHEMAS), hooks=[tracing]) as t:
        t.publish(PINGS, Ping(ping_id="p", n=1), key="customer-9")
        t.run_until_idle()
    (span,) = exporter.get_finished_spans()
    assert span.attributes["messaging.kafka.message.key"] == "customer-9"  # type: ignore[index]


def test_without_a_recording_provider_the_hook_leaves_the_inputs_context_on_the_outputs() -> None:
    tracing = Tracing(NoOpTracerProvider())
    with TestPipeline(CHAIN[:1], Settings(schemas_dir=TEST_SCHEMAS), hooks=[tracing]) as t:
        t.publish(PINGS, Ping(ping_id="p", n=1), headers={"traceparent": TRACEPARENT})
        t.run_until_idle()
        out = dict(t.records(PONGS)[0].headers)
    assert out["traceparent"] == TRACEPARENT.encode()
    assert tracing._open == {}
