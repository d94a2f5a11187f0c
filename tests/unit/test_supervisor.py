"""The supervisor's restart bookkeeping, on a fake clock: quick deaths back off exponentially
up to a cap, a worker that stayed up starts afresh, and a crash loop is reported once."""

from __future__ import annotations

import logging
import multiprocessing
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess

import pytest

from pipeline.supervisor import RestartPolicy, RestartTracker, Supervisor, describe_exit

POLICY = RestartPolicy(initial_s=1, max_s=30, healthy_after_s=60, loop_deaths=5, loop_window_s=120)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _die_after(tracker: RestartTracker, clock: Clock, uptime_s: float) -> float:
    """The worker ran ``uptime_s`` and died: returns the restart delay (and restarts it)."""
    clock.now += uptime_s
    death = tracker.died()
    clock.now += death.restart_in_s
    tracker.started()
    return death.restart_in_s


def test_quick_deaths_double_the_delay_up_to_the_cap() -> None:
    clock = Clock()
    tracker = RestartTracker(RestartPolicy(loop_deaths=100), clock)
    delays = [_die_after(tracker, clock, 0.5) for _ in range(8)]
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]


def test_a_worker_that_stayed_up_restarts_after_the_initial_delay_again() -> None:
    clock = Clock()
    tracker = RestartTracker(POLICY, clock)
    assert [_die_after(tracker, clock, 1) for _ in range(3)] == [1, 2, 4]
    assert _die_after(tracker, clock, 61) == 1


def test_a_crash_loop_is_reported_once_and_restarts_slow_to_the_cap() -> None:
    clock = Clock()
    tracker = RestartTracker(POLICY, clock)
    deaths = []
    for _ in range(7):
        clock.now += 0.1
        deaths.append(tracker.died())
        clock.now += 0.1  # restarted at once (delays are not the point here)
        tracker.started()
    assert [d.crash_looping for d in deaths] == [False] * 4 + [True] * 3
    assert [d.loop_started for d in deaths] == [False] * 4 + [True, False, False]
    assert all(d.restart_in_s == 30 for d in deaths[4:])


def test_a_crash_looping_worker_that_stays_up_is_no_longer_looping() -> None:
    clock = Clock()
    tracker = RestartTracker(POLICY, clock)
    for _ in range(5):
        _die_after(tracker, clock, 0.1)
    assert tracker.crash_looping
    clock.now += 200
    death = tracker.died()
    assert not death.crash_looping and death.restart_in_s == 1


def test_deaths_spread_wider_than_the_window_are_no_crash_loop() -> None:
    clock = Clock()
    tracker = RestartTracker(RestartPolicy(healthy_after_s=1000, loop_window_s=120), clock)
    for _ in range(10):
        clock.now += 40
        assert not tracker.died().crash_looping  # at most 4 deaths in any 120 s, fewer than 5
        tracker.started()


def test_exit_statuses_are_described_with_signal_names() -> None:
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(-15) == "killed by SIGTERM"
    assert describe_exit(1) == "exited with status 1"
    assert describe_exit(0) == "exited with status 0"


# -- the loop, with real (trivial) processes ---------------------------------------------


def _exits_with(code: int) -> Callable[[int], BaseProcess]:
    ctx = multiprocessing.get_context("spawn")
    return lambda index: ctx.Process(target=sys.exit, args=(code,), name=f"w{index}")


def test_a_worker_exiting_2_stops_the_supervisor_with_2(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "pipeline.supervisor")
    supervisor = Supervisor(_exits_with(2), 2, threading.Event(), shutdown_timeout_s=5)
    assert supervisor.run() == 2
    assert "exited with status 2 (a configuration error" in caplog.text


def test_a_dying_worker_is_restarted_and_its_crash_loop_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "pipeline.supervisor")
    stop = threading.Event()
    policy = RestartPolicy(initial_s=0.01, max_s=0.05, loop_deaths=3, loop_window_s=600)
    supervisor = Supervisor(_exits_with(1), 1, stop, shutdown_timeout_s=5, policy=policy)
    runner = threading.Thread(target=supervisor.run)
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while caplog.text.count("worker 0 started") < 5:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.02)
    finally:
        stop.set()
        runner.join(30)
    assert "worker 0 (pid" in caplog.text and "exited with status 1; restarting it" in caplog.text
    assert caplog.text.count("is crash-looping") == 1
