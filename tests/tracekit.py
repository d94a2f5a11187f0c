"""A 3-stage chain and an in-memory span exporter, for the tracing tests (memory and real
broker): pings -> Answer -> pongs -> Note -> seen -> Last."""

from __future__ import annotations

import itertools

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pipeline import Context, RetryPolicy, Stage
from pipeline.tracing import Tracing
from tests.integration.app_stages import PINGS, PONGS, SEEN, Ping, Pong, Seen

SECRET = "payload-secret-7f3a"  # in every event's ping_id: must never reach a span


class Answer(Stage):
    consumes = PINGS
    emits = (PONGS,)
    retry = RetryPolicy(in_process_attempts=1, tiers=())

    def handle(self, event: Ping, ctx: Context) -> None:
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="answer"))


class Note(Stage):
    consumes = PONGS
    emits = (SEEN,)
    retry = RetryPolicy(in_process_attempts=1, tiers=())

    def handle(self, event: Pong, ctx: Context) -> None:
        ctx.emit(SEEN, Seen(stage="note", ping_id=event.ping_id))


class Last(Stage):
    consumes = SEEN
    retry = RetryPolicy(in_process_attempts=1, tiers=())

    def handle(self, event: Seen, ctx: Context) -> None:
        pass


CHAIN = (Answer, Note, Last)


def in_memory() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider), exporter


def assert_one_connected_chain(spans: tuple[ReadableSpan, ...], topics: list[str]) -> None:
    """``spans`` are ``send topics[0]`` then ``process`` of each topic in turn, each the
    child of the one before, all in one trace; and no payload in any of them."""
    by_name = {s.name: s for s in spans}
    names = [f"send {topics[0]}"] + [f"process {t}" for t in topics]
    assert sorted(by_name) == sorted(names), [s.name for s in spans]
    chain = [by_name[n] for n in names]
    assert len({s.context.trace_id for s in chain}) == 1, "one trace"
    assert chain[0].parent is None
    for parent, child in itertools.pairwise(chain):
        assert child.parent is not None and child.parent.span_id == parent.context.span_id
    for span in spans:
        text = repr(dict(span.attributes or {})) + repr([e.attributes for e in span.events])
        assert SECRET not in text
