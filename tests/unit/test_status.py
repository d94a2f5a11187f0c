"""Queue counts from the broker's offsets (``pipeline.status()``), on the in-memory broker with a
fake clock; the live columns from a pluggable source, and the Prometheus text they are read
from."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from pipeline import BreakerPolicy, Context, DeadLetter, RetryPolicy, Settings, Stage
from pipeline.livemetrics import Live, LiveCounts, PrometheusSource, parse
from pipeline.queues import StatusReader, status
from pipeline.testing import FakeClock, TestPipeline
from tests.conftest import TEST_SCHEMAS
from tests.integration.app_stages import PINGS, Ping


class Sorter(Stage):
    """``dead`` is dead-lettered, ``later`` goes to an hour-long retry tier, the rest pass."""

    consumes = PINGS
    retry = RetryPolicy(in_process_attempts=1, tiers=(3600.0,))
    breaker = BreakerPolicy(failure_threshold=100)

    def handle(self, event: Ping, ctx: Context) -> None:
        if event.ping_id == "dead":
            raise DeadLetter("not wanted")
        if event.ping_id == "later":
            raise ValueError("try again later")


@pytest.fixture
def t() -> Iterator[TestPipeline]:
    with TestPipeline([Sorter], Settings(schemas_dir=TEST_SCHEMAS)) as harness:
        yield harness


def _reader(t: TestPipeline, live: object = None) -> StatusReader:
    return StatusReader(t.settings, t.pipeline.plans, transport=t.transport, live=live,  # type: ignore[arg-type]
                        clock=t.clock)  # fmt: skip


def test_a_backlog_is_counted_and_aged_with_no_worker_having_run(t: TestPipeline) -> None:
    for i in range(5):
        t.publish(PINGS, Ping(ping_id=f"p{i}", n=i))
    assert isinstance(t.clock, FakeClock)
    t.clock.advance(42)
    with _reader(t) as reader:
        s = reader.read().stage("sorter")
    assert (s.waiting, s.committed, s.delayed, s.dead_lettered) == (5, 0, 0, 0)
    assert s.oldest_waiting_s == pytest.approx(42, abs=0.01)
    assert (s.active, s.completed, s.failed, s.breaker) == (None, None, None, None)
    assert sum(p.waiting for p in s.partitions) == 5 and s.missing_topics == ()


def test_delayed_and_dead_letters_are_counted_once_the_stage_settled_them(t: TestPipeline) -> None:
    for ping_id in ("ok1", "later", "dead", "ok2"):
        t.publish(PINGS, Ping(ping_id=ping_id, n=0))

    def settled() -> bool:
        s = status([Sorter], t.settings, transport=t.transport)
        return s.stage("sorter").waiting == 0 and s.stage("sorter").delayed == 1

    t.run_until(settled, timeout_s=30)
    s = status([Sorter], t.settings, transport=t.transport).stage("sorter")
    assert (s.waiting, s.committed, s.delayed, s.dead_lettered) == (0, 4, 1, 1)
    assert s.oldest_waiting_s is None


class FakeLive:
    def __init__(self, live: Live | None) -> None:
        self.live = live

    def describe(self) -> str:
        return "fake"

    def read(self) -> Live:
        if self.live is None:
            raise OSError("metrics at http://nowhere: refused")
        return self.live


def test_the_live_columns_come_from_the_source_and_are_unknown_when_it_fails(
    t: TestPipeline,
) -> None:
    group = t.pipeline.plans[0].group
    live = FakeLive({("sorter", group): LiveCounts(3, 120, 4, "open")})
    with _reader(t, live) as reader:
        read = reader.read()
    s = read.stage("sorter")
    assert (s.active, s.completed, s.failed, s.breaker) == (3, 120, 4, "open")
    assert read.live == "fake" and read.live_error is None
    with _reader(t, FakeLive(None)) as reader:
        read = reader.read()
    assert read.stage("sorter").active is None and read.live_error is not None
    assert "refused" in read.live_error


METRICS = """# HELP pipeline_events_in_flight Handler calls running now.
# TYPE pipeline_events_in_flight gauge
pipeline_events_in_flight{stage="sorter",group="g"} 2.0
pipeline_events_completed_total{stage="sorter",group="g"} 10.0
pipeline_events_completed_created{stage="sorter",group="g"} 1.7e9
pipeline_events_failed_total{stage="sorter",group="g",error="ValueError"} 3.0
pipeline_events_failed_total{stage="sorter",group="g",error="Boom \\"quoted\\""} 1.0
pipeline_breaker_state{stage="sorter",group="g",state="closed"} 1.0
pipeline_breaker_state{stage="sorter",group="g",state="open"} 0.0
"""


def test_prometheus_text_is_parsed_with_its_labels() -> None:
    samples = parse(METRICS)
    assert ("pipeline_events_in_flight", {"stage": "sorter", "group": "g"}, 2.0) in samples
    errors = {s[1].get("error") for s in samples if s[0] == "pipeline_events_failed_total"}
    assert errors == {"ValueError", 'Boom "quoted"'}


def test_two_endpoints_are_summed_and_the_worst_breaker_state_wins() -> None:
    second = METRICS.replace('state="open"} 0.0', 'state="open"} 1.0')
    servers = [_serve(METRICS), _serve(second)]
    try:
        urls = [f"http://127.0.0.1:{s.server_port}/metrics" for s in servers]
        live = PrometheusSource(urls).read()
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()
    assert live[("sorter", "g")] == LiveCounts(4, 20, 8, "open")


def test_an_endpoint_that_cannot_be_reached_is_an_oserror_naming_it() -> None:
    with pytest.raises(OSError, match=r"metrics at http://127\.0\.0\.1:9/metrics"):
        PrometheusSource(["http://127.0.0.1:9/metrics"], timeout_s=1).read()


def _serve(text: str) -> HTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = text.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
