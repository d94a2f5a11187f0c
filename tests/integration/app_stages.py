"""Stages the integration tests run, in-process or as `pipeline run` worker processes.

Topic names are logical; every test runs with its own PIPELINE_TOPIC_PREFIX, so no two tests
share a topic or a group. Side effects a test must observe go to Kafka topics (or, for the
crash tests, to an append-only file named by TEST_MARKS).
"""

from __future__ import annotations

import os
import time

from pipeline import Context, Event, Stage, Topic


class Ping(Event, schema="test.Ping"):
    ping_id: str
    n: int


class PingV2(Event, schema="test.Ping"):
    """The next version of Ping: one added field with a default (a compatible change)."""

    ping_id: str
    n: int
    priority: int = 0


class Pong(Event, schema="test.Pong"):
    ping_id: str
    n: int
    handled_by: str


class Seen(Event, schema="test.Seen"):
    stage: str
    ping_id: str


PINGS = Topic("test.pings", Ping)
PINGS_V2 = Topic("test.pings", PingV2)
PONGS = Topic("test.pongs", Pong)
SEEN = Topic("test.seen", Seen)


def _me() -> str:
    return f"pid-{os.getpid()}"


def _mark(ctx: Context, event: Ping) -> None:
    path = os.environ.get("TEST_MARKS")
    if path:
        with open(path, "a") as marks:
            marks.write(f"{event.ping_id} {ctx.event_id} {_me()}\n")


class Echo(Stage):
    """Answers every ping with a pong naming the process that handled it."""

    consumes = PINGS
    emits = (PONGS,)

    def handle(self, event: Ping, ctx: Context) -> None:
        _mark(ctx, event)
        delay_ms = float(os.environ.get("TEST_DELAY_MS", "0"))
        if delay_ms:
            time.sleep(delay_ms / 1000)
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by=_me()))


class AsyncEcho(Stage):
    consumes = PINGS
    emits = (PONGS,)
    group = "async-echo"

    async def handle(self, event: Ping, ctx: Context) -> None:
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="async"))


class EchoV2(Stage):
    """A reader deployed with the newer Ping schema."""

    consumes = PINGS_V2
    emits = (PONGS,)
    group = "echo-v2"

    def handle(self, event: PingV2, ctx: Context) -> None:
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.priority, handled_by="v2"))


def _seen_stage(letter: str) -> type[Stage]:
    class FanOut(Stage):
        consumes = PINGS
        emits = (SEEN,)
        group = f"fanout-{letter}"
        name = f"fanout_{letter}"

        def handle(self, event: Ping, ctx: Context) -> None:
            ctx.emit(SEEN, Seen(stage=letter, ping_id=event.ping_id))

    FanOut.__qualname__ = FanOut.__name__ = f"FanOut{letter.upper()}"
    return FanOut


FanOutA, FanOutB, FanOutC = (_seen_stage(x) for x in "abc")

STAGES = [Echo]


class EosEcho(Stage):
    """Echo, exactly once: outputs and input offsets commit in one Kafka transaction."""

    consumes = PINGS
    emits = (PONGS,)
    group = "eos-echo"
    guarantee = "exactly_once"

    def handle(self, event: Ping, ctx: Context) -> None:
        delay_ms = float(os.environ.get("TEST_DELAY_MS", "0"))
        if delay_ms:
            time.sleep(delay_ms / 1000)
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by=_me()))
