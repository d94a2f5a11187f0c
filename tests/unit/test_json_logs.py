"""PIPELINE_LOG_FORMAT=json: one JSON object per line with stage, group, coordinates, event id
and trace id where known, and never a payload (nor an exception message, which may quote one)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from pipeline import Context, RetryPolicy, Settings, Stage
from pipeline.errors import ConfigError
from pipeline.jsonlogs import JsonFormatter, structured
from pipeline.logs import setup_logging
from pipeline.testing import TestPipeline
from tests.conftest import TEST_SCHEMAS
from tests.integration.app_stages import PINGS, Ping
from tests.tracekit import SECRET, in_memory

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
log = logging.getLogger("tests.handler")


class Chatty(Stage):
    consumes = PINGS
    retry = RetryPolicy(in_process_attempts=1, tiers=())

    def handle(self, event: Ping, ctx: Context) -> None:
        log.info("handling")
        if event.n < 0:
            raise ValueError(f"bad ping {event.ping_id}")  # quotes the payload


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """The root logger writes JSON lines into the returned buffer for the test."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def _parsed(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_handlers_line_carries_its_stage_coordinates_event_id_and_trace(
    lines: io.StringIO,
) -> None:
    assert structured()
    with TestPipeline([Chatty], Settings(schemas_dir=TEST_SCHEMAS)) as t:
        sent = t.publish(PINGS, Ping(ping_id="p", n=1), headers={"traceparent": TRACEPARENT})
        t.run_until_idle()
        group = t.pipeline.plans[0].group
    (line,) = [x for x in _parsed(lines) if x["message"] == "handling"]
    assert line["logger"] == "tests.handler" and line["level"] == "INFO"
    assert (line["stage"], line["group"]) == ("chatty", group)
    assert (line["topic"], line["partition"], line["offset"]) == (
        sent.topic, sent.partition, sent.offset,
    )  # fmt: skip
    assert line["event_id"] == dict(sent.headers)["event-id"].decode()  # type: ignore[union-attr]
    assert line["trace_id"] == "0af7651916cd43dd8448eb211c80319c"


def test_with_tracing_on_the_line_carries_the_process_spans_ids(lines: io.StringIO) -> None:
    tracing, exporter = in_memory()
    with TestPipeline([Chatty], Settings(schemas_dir=TEST_SCHEMAS), hooks=[tracing]) as t:
        t.publish(PINGS, Ping(ping_id="p", n=1))
        t.run_until_idle()
    (span,) = exporter.get_finished_spans()
    (line,) = [x for x in _parsed(lines) if x["message"] == "handling"]
    assert line["trace_id"] == f"{span.context.trace_id:032x}"
    assert line["span_id"] == f"{span.context.span_id:016x}"


def test_no_line_carries_the_payload_even_when_the_error_quotes_it(lines: io.StringIO) -> None:
    with TestPipeline([Chatty], Settings(schemas_dir=TEST_SCHEMAS)) as t:
        t.publish(PINGS, Ping(ping_id=SECRET, n=-1))
        t.run_until_idle()
        assert len(t.dead_letters(Chatty)) == 1
    parsed = _parsed(lines)
    assert any("dead-lettered" in str(x["message"]) for x in parsed)
    assert SECRET not in lines.getvalue()


def test_an_exception_is_logged_with_its_type_and_frames_not_its_message(
    lines: io.StringIO,
) -> None:
    try:
        raise KeyError(SECRET)
    except KeyError:
        log.exception("lookup failed", extra={"topic": "t", "partition": 3, "offset": 7})
    (line,) = _parsed(lines)
    assert line["exc_type"] == "KeyError" and "test_json_logs.py" in str(line["stack"])
    assert (line["topic"], line["partition"], line["offset"]) == ("t", 3, 7)
    assert SECRET not in lines.getvalue()


def test_an_unknown_format_is_refused_with_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_LOG_FORMAT", "yaml")
    with pytest.raises(ConfigError, match="must be one of text, json"):
        setup_logging()
