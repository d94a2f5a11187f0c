"""Stages whose sync handler hangs forever, for the shutdown tests (`pipeline run` workers).

Each handler first appends the event's id to the file named by TEST_MARKS, so a test can wait
until the call has started."""

from __future__ import annotations

import threading

from pipeline import Context, RetryPolicy, Stage
from tests.integration.app_stages import PINGS, Ping, _mark

NEVER = threading.Event()  # nothing sets it: the handler's call never returns


class HangsInFlight(Stage):
    """Its call is still within its timeout when the worker is asked to stop."""

    consumes = PINGS
    group = "hangs-in-flight"
    timeout_s = 120.0

    def handle(self, event: Ping, ctx: Context) -> None:
        _mark(ctx, event)
        NEVER.wait()


class HangsPastTimeout(Stage):
    """Its call runs past its timeout and is abandoned (the event goes to a retry topic that
    is not due for a minute), and hangs on in its thread while the worker runs and stops."""

    consumes = PINGS
    group = "hangs-past-timeout"
    timeout_s = 0.5
    retry = RetryPolicy(in_process_attempts=1, tiers=(60.0,))

    def handle(self, event: Ping, ctx: Context) -> None:
        _mark(ctx, event)
        NEVER.wait()


STAGES = [HangsInFlight, HangsPastTimeout]
