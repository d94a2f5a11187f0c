"""Stalled handlers: the detector on a fake clock, and the watch reporting a real blocked call
(hook, log line, counter) without changing the event's fate."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from pipeline import Context, DeclarationError, Pipeline, RetryPolicy, Settings, Stage
from pipeline.clock import FakeClock
from pipeline.hooks import Hook, StageInfo
from pipeline.publisher import Publisher
from pipeline.stalls import StallDetector, StallWatch, stall_after
from pipeline.testing import MemoryBroker, MemoryTransport
from pipeline.worker import Worker
from tests.conftest import TEST_SCHEMAS
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong
from tests.unit.records import record


def test_a_call_is_reported_once_when_it_passes_stall_after() -> None:
    detector = StallDetector(stall_after_s=30.0)
    r = record("t", 0, 7)
    assert detector.check([r], now=100.0) == []
    assert detector.check([r], now=129.0) == []
    [notice] = detector.check([r], now=130.5)
    assert (notice.record, notice.kind, notice.running_s) == (r, "stalled", 30.5)
    assert detector.check([r], now=200.0) == [], "once per call"


def test_a_new_call_starts_its_own_clock_and_ended_calls_are_forgotten() -> None:
    detector = StallDetector(stall_after_s=10.0)
    first, second = record("t", 0, 1), record("t", 0, 2)
    detector.check([first], now=0.0)
    detector.check([second], now=9.0)  # first ended, second began
    assert detector.check([second], now=15.0) == [], "second has run 6 s, not 15"
    assert [n.record for n in detector.check([second], now=19.0)] == [second]
    assert detector.check([first], now=19.5) == [], "first again is a new call"


def test_a_blocking_call_is_warned_about_before_the_poll_limit_once() -> None:
    detector = StallDetector(stall_after_s=30.0, poll_limit_s=300.0)
    r = record("t", 0, 0)
    detector.check([r], now=0.0)
    assert [n.kind for n in detector.check([r], now=31.0)] == ["stalled"]
    assert detector.check([r], now=239.0) == []
    assert [n.kind for n in detector.check([r], now=240.0)] == ["poll_deadline"]
    assert detector.check([r], now=299.0) == []


def test_without_a_poll_limit_there_is_no_poll_warning() -> None:
    detector = StallDetector(stall_after_s=1.0)
    r = record("t", 0, 0)
    detector.check([r], now=0.0)
    assert [n.kind for n in detector.check([r], now=1000.0)] == ["stalled"]


def test_stall_after_defaults_to_half_the_timeout_or_30_seconds() -> None:
    assert stall_after(None, None) == 30.0
    assert stall_after(None, 10.0) == 5.0
    assert stall_after(None, 200.0) == 30.0
    assert stall_after(2.0, 10.0) == 2.0


def test_the_watch_logs_the_poll_deadline_with_coordinates(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, told = FakeClock(), []
    r = record("t", 3, 42)
    watch = StallWatch("s", lambda: [r], StallDetector(5.0, 100.0), clock,
                       lambda rec, s: told.append((rec, s)), poll_limit_s=100.0)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="pipeline.stalls"):
        watch.look()
        clock.advance(6)
        watch.look()
        clock.advance(80)
        watch.look()
    assert told == [(r, 6.0)]
    messages = [rec.getMessage() for rec in caplog.records]
    assert any("t[3]@42 stalled" in m for m in messages)
    assert any("t[3]@42 has blocked the consumer for 86s" in m for m in messages)


@pytest.mark.parametrize("value", [0, -1, 241, "5", True])
def test_stall_after_must_be_a_sensible_number(value: object) -> None:
    with pytest.raises(DeclarationError, match="stall_after_s"):

        class Bad(Stage):
            consumes = PINGS
            stall_after_s = value  # type: ignore[assignment]

            def handle(self, event: Ping, ctx: Context) -> None:
                pass


# -- a real blocked call, in a worker on the memory broker ------------------------------------

RELEASE = threading.Event()


class Heard(Hook):
    def __init__(self) -> None:
        self.stalled: list[tuple[str, str, float]] = []

    def on_stalled(self, stage: StageInfo, record: Any, running_s: float) -> None:
        where = f"{record.topic()}[{record.partition()}]@{record.offset()}"
        self.stalled.append((stage.name, where, running_s))


class Blocks(Stage):
    consumes = PINGS
    emits = (PONGS,)
    retry = RetryPolicy(in_process_attempts=1, tiers=())
    stall_after_s = 0.3

    def handle(self, event: Ping, ctx: Context) -> None:
        RELEASE.wait(60)
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="blocks"))


class BlocksAsync(Stage):
    consumes = PINGS
    emits = (PONGS,)
    retry = RetryPolicy(in_process_attempts=1, tiers=())
    stall_after_s = 0.3
    concurrency = 2

    async def handle(self, event: Ping, ctx: Context) -> None:
        while not RELEASE.is_set():
            await asyncio.sleep(0.01)
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="blocks"))


def _await(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.parametrize("stage", [Blocks, BlocksAsync])
def test_a_blocked_handler_is_reported_stalled_and_still_completes(stage: type[Stage]) -> None:
    RELEASE.clear()
    heard = Heard()
    settings = Settings(schemas_dir=TEST_SCHEMAS)
    broker = MemoryBroker()
    pipeline = Pipeline.build(settings, [stage], MemoryTransport(broker, settings), hooks=[heard])
    pipeline.ensure_topics()
    with Publisher(settings, pipeline.catalog, pipeline.codec, pipeline.announce,
                   transport=pipeline.transport) as publisher:  # fmt: skip
        publisher.publish(PINGS, Ping(ping_id="p0", n=0), key="k")
    worker = Worker(pipeline, worker_id="w1")
    worker.start()
    try:
        _await(lambda: bool(heard.stalled), "the stalled report")
        [(name, where, running_s)] = heard.stalled
        assert name == stage.stage_name() and running_s >= 0.3
        assert where.startswith("test.pings[") and where.endswith("]@0")
        assert worker.runners[0].stats.stalled == 1
        RELEASE.set()
        _await(lambda: worker.runners[0].stats.processed == 1, "the handler to complete")
        assert heard.stalled == [(name, where, running_s)], "reported once"
    finally:
        RELEASE.set()
        worker.stop()
        assert worker.join(30)
    assert len(broker.records(settings.topic(PONGS.name))) == 1
