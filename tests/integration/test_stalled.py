"""A handler that blocks the consume loop is reported stalled, then warned about before the
consumer would leave its group (max.poll.interval.ms), on the real broker."""

from __future__ import annotations

import logging
import threading

import pytest

from pipeline import Context, Publisher, RetryPolicy, Stage
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong
from tests.integration.kit import read_topic, running, unique_settings, wait_until

RELEASE = threading.Event()
POLL_LIMIT_MS = 8000  # the warning is due at 80 %: 6.4 s


class BlocksLoop(Stage):
    consumes = PINGS
    emits = (PONGS,)
    retry = RetryPolicy(in_process_attempts=1, tiers=())
    stall_after_s = 1.0

    def handle(self, event: Ping, ctx: Context) -> None:
        RELEASE.wait(60)
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="blocks"))


def test_a_blocking_handler_is_stalled_then_warned_before_the_poll_limit(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    RELEASE.clear()
    settings = unique_settings(
        kafka_bootstrap,
        topic_partitions=1,
        consumer_config={
            "max.poll.interval.ms": str(POLL_LIMIT_MS),
            "session.timeout.ms": str(POLL_LIMIT_MS),
        },
    )
    messages = lambda: [r.getMessage() for r in caplog.records]  # noqa: E731
    with (
        caplog.at_level(logging.WARNING, logger="pipeline.stalls"),
        running(settings, [BlocksLoop]) as worker,
    ):
        with Publisher(settings) as publisher:
            publisher.publish(PINGS, Ping(ping_id="p0", n=0), key="k")
        wait_until(lambda: any("stalled" in m for m in messages()), what="the stalled line")
        assert worker.runners[0].stats.stalled == 1
        wait_until(
            lambda: any("blocked the consumer" in m for m in messages()),
            timeout_s=30,
            what="the poll-deadline warning",
        )
        RELEASE.set()
        pongs = read_topic(settings, PONGS, count=1)
    assert [pong.ping_id for _, pong in pongs] == ["p0"]
    [stalled] = [m for m in messages() if "stalled" in m]
    assert "@0 stalled: running for" in stalled and "stall_after_s=1" in stalled
