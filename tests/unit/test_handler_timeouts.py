"""Sync handlers with a timeout: a call that hangs costs its own event a timeout and nothing
more; healthy events behind it run at once; too many hung calls stop the stage."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline import Context, RetryPolicy, Settings, Stage
from pipeline.app import Pipeline
from pipeline.errors import CallAbandoned, TooManyHungCalls
from pipeline.failures import HandlerTimeout
from pipeline.invoke import Invoker
from pipeline.runner import StageRunner
from pipeline.stats import StageStats, counting
from pipeline.stop import StopEvent
from tests.integration.app_stages import PINGS, Ping
from tests.unit.fakes import FakeConsumer, FakeProducer, Record

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
TIMEOUT_S = 0.5  # generous: healthy calls here take microseconds, hung ones block until released


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Hung handlers wait on this; set at the end of every test so no thread outlives it."""
    event = threading.Event()
    yield event
    event.set()


def _await(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def _invoker(handler: Callable[[Ping, Context], None], stats: StageStats) -> Invoker:
    return Invoker(
        "s", handler, False, frozenset(), RetryPolicy(in_process_attempts=1), TIMEOUT_S, "g",
        counting(stats).on_hung_change,
    )  # fmt: skip


def test_healthy_calls_run_at_once_behind_hung_ones(release: threading.Event) -> None:
    """Five calls hang past their timeout (more than the old fixed pool had threads); twenty
    healthy calls after them all run and succeed, and the hung ones are counted until they
    return."""
    ran: list[int] = []

    def handler(event: Ping, ctx: Context) -> None:
        if event.n < 0:
            release.wait()
        ran.append(event.n)

    stats = StageStats("s", "g")
    invoker = _invoker(handler, stats)
    loop = asyncio.new_event_loop()
    try:
        for n in range(-5, 0):
            with pytest.raises(HandlerTimeout):
                loop.run_until_complete(invoker(Ping(ping_id="x", n=n), Record("t", 0, n + 5, b"")))
        assert stats.hung_calls == 5
        for n in range(20):
            loop.run_until_complete(invoker(Ping(ping_id="x", n=n), Record("t", 0, n + 5, b"")))
        assert ran == list(range(20))
        release.set()
        _await(lambda: stats.hung_calls == 0)
    finally:
        invoker.close()
        loop.close()


def test_a_call_past_the_hung_bound_is_refused_without_running(release: threading.Event) -> None:
    started: list[int] = []

    def handler(event: Ping, ctx: Context) -> None:
        started.append(event.n)
        release.wait()

    stats = StageStats("s", "g")
    invoker = _invoker(handler, stats)
    assert invoker._threads is not None
    invoker._threads.max_hung = 2
    loop = asyncio.new_event_loop()
    try:
        for n in range(2):
            with pytest.raises(HandlerTimeout):
                loop.run_until_complete(invoker(Ping(ping_id="x", n=n), Record("t", 0, n, b"")))
        with pytest.raises(TooManyHungCalls):
            loop.run_until_complete(invoker(Ping(ping_id="x", n=2), Record("t", 0, 2, b"")))
        assert started == [0, 1]
    finally:
        invoker.close()
        loop.close()


def test_a_call_running_at_a_stop_is_abandoned_after_the_stop_budget(
    release: threading.Event,
) -> None:
    """Timeout 60 s, stop budget 0.2 s: the stopping stage gives up on the call long before its
    timeout, as CallAbandoned (no retry, no dead letter), not as a HandlerTimeout."""

    def handler(event: Ping, ctx: Context) -> None:
        release.wait()

    stats = StageStats("s", "g")
    invoker = Invoker(
        "s", handler, False, frozenset(), RetryPolicy(), 60.0, "g", counting(stats).on_hung_change
    )
    stop = StopEvent()
    stop.set()
    invoker.stop_event, invoker.stop_budget_s = stop, 0.2
    loop = asyncio.new_event_loop()
    try:
        started = time.monotonic()
        with pytest.raises(CallAbandoned):
            loop.run_until_complete(invoker(Ping(ping_id="x", n=0), Record("t", 0, 0, b"")))
        assert time.monotonic() - started < 30
        assert stats.hung_calls == 1
    finally:
        invoker.close()
        loop.close()


RELEASE = threading.Event()


class HangsAlways(Stage):
    consumes = PINGS
    group = "hangs"
    timeout_s = 0.05
    retry = RetryPolicy(in_process_attempts=1)

    def handle(self, event: Ping, ctx: Context) -> None:
        RELEASE.wait()


def test_too_many_hung_calls_stop_the_stage_and_leave_the_rest_uncommitted() -> None:
    """Every call hangs: the first three time out (their events go to the retry topic), the
    fourth is refused; the stage stops with TooManyHungCalls and commits only up to it."""
    RELEASE.clear()
    pipeline = Pipeline.build(Settings(schemas_dir=SCHEMAS), [HangsAlways])
    plan = pipeline.plans[0]
    binding = plan.inputs[PINGS.name]
    topic = PINGS.name

    def rec(offset: int) -> Record:
        value = pipeline.codec.encode(Ping(ping_id=str(offset), n=offset), binding, topic)
        return Record(topic, 0, offset, value)

    consumer, producer = FakeConsumer(), FakeProducer()
    runner = StageRunner(plan, consumer, producer, pipeline.codec)  # type: ignore[arg-type]
    assert runner._invoke._threads is not None
    runner._invoke._threads.max_hung = 3
    runner.on_assign([(topic, 0)])
    consumer.batches = [[rec(o) for o in range(10)]]
    try:
        with pytest.raises(TooManyHungCalls):
            runner.run()
        assert runner.stats.hung_calls == 3
        assert [t for t, _ in producer.produced] == [f"{plan.group}.retry.1s"] * 3
        assert consumer.commits[-1] == {(topic, 0): 3}
    finally:
        RELEASE.set()
