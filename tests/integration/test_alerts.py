"""A stage's alerts on the real broker: failures on command fire the failure-ratio alert once and
it resolves when they leave the window; a held event backs its partition up past
``waiting_above`` (read from the broker off the consume thread) and the alert resolves once the
backlog is committed. With two workers in the group, that backlog fires one alert, from the
worker holding the judge partition; the other never reads the backlog."""

from __future__ import annotations

import asyncio
import threading

from pipeline import Context, Publisher, RetryPolicy, Stage
from pipeline.alerts import Alert, Alerts
from pipeline.alertwatch import AlertWatch
from pipeline.hooks import Hook, StageInfo
from pipeline.worker import Worker
from tests.integration.app_stages import PINGS, Ping
from tests.integration.kit import group_members, prepare, running, unique_settings, wait_until

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


GROUP_RELEASE = threading.Event()


class GroupPager(Hook):
    """What each worker told, and how many ticks each has had."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, str, str]] = []
        self.ticks: dict[str, int] = {}

    def on_alert(self, stage: StageInfo, alert: Alert) -> None:
        self.heard.append((stage.worker_id, "alert", alert.kind))

    def on_resolved(self, stage: StageInfo, alert: Alert) -> None:
        self.heard.append((stage.worker_id, "resolved", alert.kind))

    def on_tick(self, stage: StageInfo, now: float) -> None:
        self.ticks[stage.worker_id] = self.ticks.get(stage.worker_id, 0) + 1


GROUP_PAGER = GroupPager()


class Backlogged(Stage):
    """``hold`` waits for GROUP_RELEASE, backing its partition up; the rest pass."""

    consumes = PINGS
    retry = RetryPolicy(in_process_attempts=1, tiers=())
    concurrency = 4
    alerts = Alerts(waiting_above=4, check_interval_s=0.5)
    hooks = (GROUP_PAGER,)

    async def handle(self, event: Ping, ctx: Context) -> None:
        while event.ping_id == "hold" and not GROUP_RELEASE.is_set():
            await asyncio.sleep(0.05)


def _watch(worker: Worker) -> AlertWatch:
    [runner] = worker.runners
    return next(h for h in runner.hooks.hooks if isinstance(h, AlertWatch))


def test_two_workers_fire_one_backlog_alert_from_the_judge_partitions_holder(
    kafka_bootstrap: str,
) -> None:
    settings = unique_settings(kafka_bootstrap)
    prepare(settings, [Backlogged])
    with running(settings, [Backlogged]) as a, running(settings, [Backlogged]) as b:
        group = a.pipeline.plans[0].group
        wait_until(lambda: group_members(settings, group) == 2, 60, "two members")
        watches = {w.runners[0].hooks.stage.worker_id: _watch(w) for w in (a, b)}
        wait_until(lambda: sum(w.judges_backlog for w in watches.values()) == 1, 30, "one judge")
        [judge] = [wid for wid, w in watches.items() if w.judges_backlog]
        with Publisher(settings) as publisher:
            for i, ping_id in enumerate(["hold"] + [f"behind-{n}" for n in range(9)]):
                publisher.publish(PINGS, Ping(ping_id=ping_id, n=i), key="same")
        wait_until(lambda: GROUP_PAGER.heard, 30, "the waiting alert")
        # Both workers tick on past several check intervals with the backlog still there.
        seen = dict(GROUP_PAGER.ticks)
        wait_until(lambda: all(GROUP_PAGER.ticks[w] >= seen[w] + 3 for w in seen), 30, "ticks")
        GROUP_RELEASE.set()
        wait_until(lambda: len(GROUP_PAGER.heard) >= 2, 30, "waiting resolved")
        [other] = [w for wid, w in watches.items() if wid != judge]
        assert not other.judges_backlog
    assert GROUP_PAGER.heard == [(judge, "alert", "waiting"), (judge, "resolved", "waiting")]
