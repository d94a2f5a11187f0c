"""Sync handlers that hang: healthy events behind them are still handled at once, and a worker
whose handler hangs forever still exits promptly on SIGTERM (within ``shutdown_timeout_s`` plus a
small grace), the hung event uncommitted."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

from pipeline import Context, Publisher, Stage
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong
from tests.integration.hang_stages import HangsInFlight, HangsPastTimeout
from tests.integration.kit import (
    WorkerProcess,
    committed_total,
    end_offsets,
    marks,
    prepare,
    read_topic,
    running,
    settings_env,
    unique_settings,
    wait_until,
    worker_process,
)

SPEC = "tests.integration.hang_stages"
SHUTDOWN_S = 3.0
# Above the shutdown timeout: leaving the group, closing the clients, a loaded machine.
GRACE_S = 5.0


def _stop_and_time(worker: WorkerProcess) -> tuple[int, float]:
    """SIGTERM, then the exit code and how long the process took to exit."""
    worker.signal(signal.SIGTERM)
    started = time.monotonic()
    code = worker.wait(SHUTDOWN_S + GRACE_S + 30)  # measured below, not by this wait
    return code, time.monotonic() - started


def test_sigterm_during_a_hung_call_exits_in_time_and_leaves_the_event_uncommitted(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The call is within its 120 s timeout when SIGTERM comes: the stage gives it half the
    shutdown timeout, abandons it, commits nothing for it and the process exits 0."""
    settings = unique_settings(kafka_bootstrap, shutdown_timeout_s=SHUTDOWN_S)
    mark_file, log = tmp_path / "marks", tmp_path / "w.log"
    prepare(settings, [HangsInFlight])
    env = settings_env(settings, TEST_MARKS=str(mark_file))
    with worker_process(f"{SPEC}:HangsInFlight", env, log) as worker:
        with Publisher(settings) as publisher:
            publisher.publish(PINGS, Ping(ping_id="stuck", n=1))
        wait_until(lambda: worker.alive() and marks(mark_file), 60, "the handler to start")
        code, took = _stop_and_time(worker)
    assert code == 0, worker.output()
    assert took < SHUTDOWN_S + GRACE_S, f"exited {took:.1f}s after SIGTERM"
    group = settings.topic("hangs-in-flight")
    assert committed_total(settings, group, settings.topic(PINGS.name)) == 0


def test_sigterm_with_an_abandoned_call_still_hanging_exits_in_time(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A call ran past its 0.5 s timeout (its event went to the retry topic) and hangs on in
    its thread: SIGTERM still ends the process within the shutdown timeout plus grace."""
    settings = unique_settings(kafka_bootstrap, shutdown_timeout_s=SHUTDOWN_S)
    mark_file, log = tmp_path / "marks", tmp_path / "w.log"
    prepare(settings, [HangsPastTimeout])
    retry_topic = settings.topic("hangs-past-timeout.retry.60s")
    env = settings_env(settings, TEST_MARKS=str(mark_file))
    with worker_process(f"{SPEC}:HangsPastTimeout", env, log) as worker:
        with Publisher(settings) as publisher:
            publisher.publish(PINGS, Ping(ping_id="stuck", n=1))
        wait_until(lambda: worker.alive() and end_offsets(settings, retry_topic) == 1, 60,
                   "the timed-out event in the retry topic")  # fmt: skip
        code, took = _stop_and_time(worker)
    assert code == 0, worker.output()
    assert took < SHUTDOWN_S + GRACE_S, f"exited {took:.1f}s after SIGTERM"


RELEASE = threading.Event()


class HangsOnSome(Stage):
    consumes = PINGS
    emits = (PONGS,)
    group = "hangs-on-some"
    timeout_s = 0.5

    def handle(self, event: Ping, ctx: Context) -> None:
        if event.ping_id.startswith("hang"):
            RELEASE.wait()
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="sync"))


def test_healthy_events_behind_two_hanging_ones_are_all_handled(kafka_bootstrap: str) -> None:
    """Two events hang on every attempt (3 in-process attempts each, then their retry tier):
    more hung calls than the old 4-thread pool had, yet all 54 healthy events come out."""
    RELEASE.clear()
    settings = unique_settings(kafka_bootstrap, topic_partitions=1)
    try:
        with running(settings, [HangsOnSome]) as worker, Publisher(settings) as publisher:
            for i in range(2):
                publisher.publish(PINGS, Ping(ping_id=f"hang{i}", n=i))
            for i in range(54):
                publisher.publish(PINGS, Ping(ping_id=f"ok{i}", n=i), wait=False)
            pongs = read_topic(settings, PONGS, count=54, timeout_s=60)
            assert sorted(p.ping_id for _, p in pongs) == sorted(f"ok{i}" for i in range(54))
            assert worker.runners[0].stats.hung_calls >= 6
    finally:
        RELEASE.set()
