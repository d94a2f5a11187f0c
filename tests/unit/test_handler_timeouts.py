"""Sync handlers with a timeout: a call that hangs costs its own event a timeout and nothing
more; healthy events behind it run at once; too many hung calls stop the stage."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from pipeline import Context, RetryPolicy, Stage
from pipeline.errors import CallAbandoned, TooManyHungCalls
from pipeline.failures import HandlerTimeout
from pipeline.invoke import Invoker
from pipeline.stats import StageStats, counting
from pipeline.stop import StopEvent
from tests.integration.app_stages import PINGS, Ping
from tests.unit.memory_rig import Rig
from tests.unit.records import record

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
                loop.run_until_complete(invoker(Ping(ping_id="x", n=n), record("t", 0, n + 5)))
        assert stats.hung_calls == 5
        for n in range(20):
            loop.run_until_complete(invoker(Ping(ping_id="x", n=n), record("t", 0, n + 5)))
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
                loop.run_until_complete(invoker(Ping(ping_id="x", n=n), record("t", 0, n)))
        with pytest.raises(TooManyHungCalls):
            loop.run_until_complete(invoker(Ping(ping_id="x", n=2), record("t", 0, 2)))
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
            loop.run_until_complete(invoker(Ping(ping_id="x", n=0), record("t", 0, 0)))
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
    rig = Rig(HangsAlways)
    assert rig.runner._invoke._threads is not None
    rig.runner._invoke._threads.max_hung = 3
    for n in range(10):
        rig.ping(n)
    try:
        with pytest.raises(TooManyHungCalls):
            for _ in range(10):
                rig.step()
        assert rig.runner.stats.hung_calls == 3
        assert rig.copies(f"{rig.plan.group}.retry.1s") == [0, 1, 2]
        assert rig.committed() == {(PINGS.name, 0): 3}
        assert rig.broker.pending(rig.plan.group, PINGS.name) == 7, "3 and after are read again"
    finally:
        RELEASE.set()
