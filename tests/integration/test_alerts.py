"""A stage's alerts on the real broker: failures on command fire the failure-ratio alert once and
it resolves when they leave the window; a held event backs its partition up past
``waiting_above`` (read from the broker off the consume thread) and the alert resolves once the
backlog is committed."""

from __future__ import annotations

import asyncio
import threading

from pipeline import Context, Publisher, RetryPolicy, Stage
from pipeline.alerts import Alert, Alerts
from pipeline.hooks import Hook, StageInfo
from tests.integration.app_stages import PINGS, Ping
from tests.integration.kit import prepare, running, unique_settings, wait_until

RELEASE = threading.Event()


class Pager(Hook):
    def __init__(self) -> None:
        self.heard: list[tuple[str, str]] = []

    def on_alert(self, stage: StageInfo, alert: Alert) -> None:
        self.heard.append(("alert", alert.kind))

    def on_resolved(self, stage: StageInfo, alert: Alert) -> None:
        self.heard.append(("resolved", alert.kind))


PAGER = Pager()


class OnCommand(Stage):
    """``fail-*`` fails (straight to the DLQ); ``hold`` waits for RELEASE; the rest pass."""

    consumes = PINGS
    retry = RetryPolicy(in_process_attempts=1, tiers=())
    concurrency = 4  # the loop (and its ticks) goes on while ``hold`` waits
    alerts = Alerts(waiting_above=4, failure_ratio_above=0.5, window_s=2, min_events=3,
                    check_interval_s=0.5)  # fmt: skip
    hooks = (PAGER,)

    async def handle(self, event: Ping, ctx: Context) -> None:
        if event.ping_id.startswith("fail"):
            raise ValueError("failing on command")
        while event.ping_id == "hold" and not RELEASE.is_set():
            await asyncio.sleep(0.05)


def test_alerts_fire_once_and_resolve_on_the_real_broker(kafka_bootstrap: str) -> None:
    settings = unique_settings(kafka_bootstrap)
    prepare(settings, [OnCommand])
    with running(settings, [OnCommand]), Publisher(settings) as publisher:
        for i in range(4):
            publisher.publish(PINGS, Ping(ping_id=f"fail-{i}", n=i), key=f"k{i}")
        wait_until(lambda: ("resolved", "failure_ratio") in PAGER.heard, 30, "ratio resolved")
        assert PAGER.heard == [("alert", "failure_ratio"), ("resolved", "failure_ratio")]

        # One key, so one partition: everything behind the held event stays uncommitted.
        for i, ping_id in enumerate(["hold"] + [f"behind-{n}" for n in range(9)]):
            publisher.publish(PINGS, Ping(ping_id=ping_id, n=i), key="same")
        wait_until(lambda: ("alert", "waiting") in PAGER.heard, 30, "the waiting alert")
        RELEASE.set()
        wait_until(lambda: ("resolved", "waiting") in PAGER.heard, 30, "waiting resolved")
    assert PAGER.heard[2:] == [("alert", "waiting"), ("resolved", "waiting")]
