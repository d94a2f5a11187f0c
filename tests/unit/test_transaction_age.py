"""Exactly-once: a transaction is committed once it has been open for half the transaction
timeout, in the middle of a batch if need be, so a slow batch is never aborted by the broker."""

from __future__ import annotations

from pipeline import Context, Settings, Stage
from pipeline.clock import FakeClock
from pipeline.testing import TestPipeline
from tests.conftest import TEST_SCHEMAS
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong

CLOCK: list[FakeClock] = []


class SlowEos(Stage):
    """Each event takes one second of the broker's fake clock."""

    consumes = PINGS
    emits = (PONGS,)
    guarantee = "exactly_once"

    def handle(self, event: Ping, ctx: Context) -> None:
        CLOCK[0].advance(1.0)
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="slow"))


def test_a_slow_batch_commits_at_half_the_transaction_timeout_and_hands_back_the_rest() -> None:
    # Pipeline.runner gives transactional producers a 10 s timeout: commit at 5 s open.
    settings = Settings(schemas_dir=TEST_SCHEMAS, topic_partitions=1, commit_interval_s=3600)
    with TestPipeline([SlowEos], settings) as t:
        clock = t.clock
        assert isinstance(clock, FakeClock)
        CLOCK[:] = [clock]
        for n in range(12):
            t.publish(PINGS, Ping(ping_id=f"p{n}", n=n), key="k")
        t.step()  # one batch of 12: five are handled, then the transaction is old enough
        assert t.stats(SlowEos).commits == 1
        assert t.stats(SlowEos).processed == 5
        assert t.lag(SlowEos) == (5, 7), "committed after five; the rest handed back"
        t.run_until_idle()
        pongs = t.outputs(PONGS)
        assert sorted(p.n for p in pongs) == list(range(12)), "every output, exactly once"
        assert t.stats(SlowEos).commits >= 3
