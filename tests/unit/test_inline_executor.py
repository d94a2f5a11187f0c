"""The inline executor treats a CancelledError that an async handler raises itself as the
keyed executor does: a failure routed like any other, not the end of the stage."""

from __future__ import annotations

import asyncio

from pipeline import Context, RetryPolicy, Stage
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong
from tests.unit.memory_rig import Rig

TP = (PINGS.name, 0)


class CancelsItself(Stage):
    consumes = PINGS
    emits = (PONGS,)
    group = "cancels-itself"
    retry = RetryPolicy(in_process_attempts=1, tiers=(1.0,))

    async def handle(self, event: Ping, ctx: Context) -> None:
        if event.n == 0:
            raise asyncio.CancelledError()  # e.g. a client library's own cancelled call
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="inline"))


def test_a_handler_raising_cancelled_error_fails_its_event_and_the_stage_goes_on() -> None:
    with Rig(CancelsItself) as rig:
        rig.ping(0)
        rig.ping(1)
        rig.step(2)
        assert rig.copies(rig.plan.retry_topics[0]) == [0], "event 0 went to its retry topic"
        assert [p.n for p in rig.pongs()] == [1], "and the stage went on with event 1"
        assert rig.committed() == {TP: 2}
