"""Tracking stages the job-status integration tests run, in-process or as `pipeline run`
worker processes (topic names are logical; every test has its own PIPELINE_TOPIC_PREFIX).

A handler that must be caught mid-way waits for a gate: a file named ``<ping id>.go`` (or
``<ping id>.<n>.go`` for its n-th handling) in the directory ``TEST_GATES`` names, so the test
controls when it finishes. Each handling is marked in ``TEST_MARKS`` (as app_stages does).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pipeline import Context, RetryPolicy, Stage, Topic
from pipeline.jobs import JobTracking
from tests.integration.app_stages import PINGS, Ping

LATER = Topic("test.later", Ping, key="ping_id", delayed=True)
GATE_WAIT_S = 60.0  # a gate never opened fails the handler rather than hang the test


def _handled(ctx: Context, event: Ping) -> int:
    """Mark this handling; how many handlings of this ping the marks file holds now."""
    path = os.environ.get("TEST_MARKS")
    if not path:
        return 1
    with open(path, "a") as marks:
        marks.write(f"{event.ping_id} {ctx.event_id} pid-{os.getpid()}\n")
    return sum(line.split()[0] == event.ping_id for line in Path(path).read_text().splitlines())


def _wait_for_gate(event: Ping, nth: int) -> None:
    gates = os.environ.get("TEST_GATES")
    if not gates:
        return
    names = (f"{event.ping_id}.go", f"{event.ping_id}.{nth}.go")
    deadline = time.monotonic() + GATE_WAIT_S
    while not any((Path(gates) / name).exists() for name in names):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate of {event.ping_id} never opened")
        time.sleep(0.02)


class Square(Stage):
    """Reports 50 % and waits at its gate (pings with n > 0 only), then returns n² as the
    job's result."""

    consumes = PINGS
    track_jobs = JobTracking(retention_s=3600)
    retry = RetryPolicy(in_process_attempts=1, tiers=(0.2,))
    # The kill -9 test needs a completed job whose offset is not committed yet.
    group = "job_stages.square"

    def handle(self, event: Ping, ctx: Context) -> dict[str, int]:
        nth = _handled(ctx, event)
        ctx.progress(50, "half way")
        if event.n > 0:
            _wait_for_gate(event, nth)
        return {"square": event.n * event.n}


class AlwaysFails(Stage):
    """Fails every delivery: one retry tier, then the dead-letter topic."""

    consumes = PINGS
    track_jobs = JobTracking()
    retry = RetryPolicy(in_process_attempts=1, tiers=(0.2,))

    def handle(self, event: Ping, ctx: Context) -> None:
        raise ConnectionError(f"smtp refused ping {event.ping_id}")


class Later(Stage):
    """Handles pings published with a delay."""

    consumes = LATER
    track_jobs = JobTracking()

    def handle(self, event: Ping, ctx: Context) -> int:
        return event.n


class Relay(Stage):
    """Passes each ping on to ``LATER``, due in 2 s: a follow-up job that starts delayed."""

    consumes = PINGS
    emits = (LATER,)
    track_jobs = JobTracking()

    def handle(self, event: Ping, ctx: Context) -> None:
        ctx.emit(LATER, event, delay=2.0)


STAGES = [Square]
