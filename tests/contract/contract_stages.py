"""Stages of the contract scenarios. Side effects a scenario observes beyond topics go to
``CALLS`` (the process is the test's own: the harness runs the stages in it)."""

from __future__ import annotations

from collections import Counter

from pipeline import BreakerPolicy, Context, RetryPolicy, Stage
from tests.integration.app_stages import PINGS, PONGS, SEEN, Ping, Pong, Seen

NO_RETRIES = RetryPolicy(in_process_attempts=1, tiers=())
CALLS: Counter[str] = Counter()  # handler calls per ping_id, over every stage and worker
DEPENDENCY_UP = [True]


class Answer(Stage):
    """A pong for every ping; ``poison`` cannot be answered and is not retried."""

    consumes = PINGS
    emits = (PONGS,)
    retry = NO_RETRIES

    def handle(self, event: Ping, ctx: Context) -> None:
        CALLS[event.ping_id] += 1
        if event.ping_id == "poison":
            raise ValueError(f"cannot answer {event.ping_id}")
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="answer"))


class Audit(Stage):
    """A second group on the same input: it sees every ping too."""

    consumes = PINGS
    emits = (SEEN,)
    retry = NO_RETRIES

    def handle(self, event: Ping, ctx: Context) -> None:
        ctx.emit(SEEN, Seen(stage="audit", ping_id=event.ping_id))


class Billing(Stage):
    consumes = PINGS
    emits = (SEEN,)
    retry = NO_RETRIES

    def handle(self, event: Ping, ctx: Context) -> None:
        ctx.emit(SEEN, Seen(stage="billing", ping_id=event.ping_id))


class Flaky(Stage):
    """Fails the first delivery of every ping; the retry tier's delivery succeeds."""

    consumes = PINGS
    emits = (PONGS,)
    retry = RetryPolicy(in_process_attempts=1, tiers=(1.0,))

    def handle(self, event: Ping, ctx: Context) -> None:
        CALLS[event.ping_id] += 1
        if CALLS[event.ping_id] == 1:
            raise ConnectionError("first delivery fails")
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="flaky"))


class Guarded(Stage):
    """Its dependency is down at first: the breaker holds the stage instead of spending the
    event, and the probe after the cooldown succeeds."""

    consumes = PINGS
    emits = (PONGS,)
    retry = NO_RETRIES
    breaker = BreakerPolicy(failure_threshold=1, cooldown_s=1.0)

    def handle(self, event: Ping, ctx: Context) -> None:
        CALLS[event.ping_id] += 1
        if not DEPENDENCY_UP[0]:
            DEPENDENCY_UP[0] = True  # back by the probe
            raise ConnectionError("dependency down")
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="guarded"))
