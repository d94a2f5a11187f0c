"""The alert watch: a hook subscriber judging a stage's Alerts on its ticks, reading the backlog
off the consume thread; in memory with a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline import Context, DeclarationError, RetryPolicy, Settings, Stage
from pipeline.alerts import Alert, Alerts
from pipeline.alertwatch import AlertWatch, BacklogPoller, Reading
from pipeline.hookcalls import Hooks
from pipeline.hooks import Hook, StageInfo
from pipeline.testing import FakeClock, TestPipeline
from tests.conftest import TEST_SCHEMAS
from tests.integration.app_stages import PINGS, Ping

INFO = StageInfo("s", "g", "w")


class Pager(Hook):
    def __init__(self) -> None:
        self.heard: list[tuple[str, str, float]] = []

    def on_alert(self, stage: StageInfo, alert: Alert) -> None:
        self.heard.append(("alert", alert.kind, alert.value))

    def on_resolved(self, stage: StageInfo, alert: Alert) -> None:
        self.heard.append(("resolved", alert.kind, alert.value))


def _watch(alerts: Alerts, readings: list[Reading]) -> tuple[AlertWatch, BacklogPoller, Pager]:
    """A watch whose poller is driven by hand (no thread): ``poll_once`` takes the next reading."""
    clock, pager = FakeClock(), Pager()
    poller = BacklogPoller("s", lambda: readings.pop(0))
    watch = AlertWatch(alerts, clock, poller)
    watch.attach(Hooks(INFO, [pager]))
    return watch, poller, pager


def test_the_backlog_is_judged_from_the_last_reading_and_a_read_is_asked_per_interval() -> None:
    readings: list[Reading] = [(50, 10.0), (150, 20.0), (70, 5.0)]
    watch, poller, pager = _watch(Alerts(waiting_above=100, check_interval_s=10), readings)
    watch.on_tick(INFO, 0.0)  # the first tick asks for a read; no answer yet
    assert poller._wanted.is_set() and pager.heard == []
    poller._wanted.clear()
    poller.poll_once()
    watch.on_tick(INFO, 1.0)  # 50 waiting: below; the next read is due at 10
    assert not poller._wanted.is_set()
    watch.on_tick(INFO, 10.0)
    poller.poll_once()
    watch.on_tick(INFO, 11.0)
    assert pager.heard == [("alert", "waiting", 150)]
    watch.on_tick(INFO, 12.0)  # no new reading: nothing judged again
    poller.poll_once()
    watch.on_tick(INFO, 20.0)
    assert pager.heard[-1] == ("resolved", "waiting", 70)


def test_a_failed_read_makes_the_backlog_unknown_and_nothing_changes() -> None:
    def broken() -> Reading:
        raise OSError("broker down")

    clock, pager = FakeClock(), Pager()
    poller = BacklogPoller("s", broken)
    watch = AlertWatch(Alerts(waiting_above=0), clock, poller)
    watch.attach(Hooks(INFO, [pager]))
    watch.rules.backlog(5, None, at=0)  # firing
    poller.poll_once()
    watch.on_tick(INFO, 1.0)
    assert pager.heard == [] and poller.take() is None


def test_a_stage_with_alerts_fires_and_resolves_its_failure_ratio_in_memory() -> None:
    class Flaky(Stage):
        consumes = PINGS
        retry = RetryPolicy(in_process_attempts=1, tiers=())
        alerts = Alerts(failure_ratio_above=0.5, window_s=10, min_events=4)

        def handle(self, event: Ping, ctx: Context) -> None:
            if event.ping_id.startswith("fail"):
                raise ValueError("failing on command")

    pager = Pager()
    with TestPipeline([Flaky], Settings(schemas_dir=TEST_SCHEMAS), hooks=[pager]) as t:
        for i in range(4):
            t.publish(PINGS, Ping(ping_id=f"fail-{i}", n=i))
        t.run_until(lambda: bool(pager.heard), timeout_s=5)
        assert pager.heard == [("alert", "failure_ratio", 1.0)]
        assert t.stats(Flaky).alerts == 1
        assert isinstance(t.clock, FakeClock)
        t.clock.advance(11)  # the failures leave the window
        for i in range(10):
            t.publish(PINGS, Ping(ping_id=f"ok-{i}", n=i))
        t.run_until(lambda: len(pager.heard) == 2, timeout_s=5)
        assert pager.heard[1] == ("resolved", "failure_ratio", 0.0)


def test_alerts_must_be_an_alerts_declaration() -> None:
    with pytest.raises(DeclarationError, match="`alerts` must be an Alerts"):

        class Wrong(Stage):
            consumes = PINGS
            alerts: Any = {"waiting_above": 10}

            def handle(self, event: Ping, ctx: Context) -> None:
                pass


JUDGE = ("in", 0)


def _member(readings: list[Reading]) -> tuple[AlertWatch, BacklogPoller, Pager]:
    """One group member's watch of a stage whose judge partition is ``JUDGE``."""
    clock, pager = FakeClock(), Pager()
    poller = BacklogPoller("s", lambda: readings.pop(0))
    watch = AlertWatch(Alerts(waiting_above=100, check_interval_s=1), clock, poller, judge=JUDGE)
    watch.attach(Hooks(INFO, [pager]))
    return watch, poller, pager


def _tick(watch: AlertWatch, poller: BacklogPoller, now: float) -> None:
    """A tick, then the read it asked for (if any), then a tick that judges it."""
    watch.on_tick(INFO, now)
    if poller._wanted.is_set():
        poller._wanted.clear()
        poller.poll_once()
    watch.on_tick(INFO, now + 0.5)


def test_only_the_member_holding_the_judge_partition_reads_and_judges_the_backlog() -> None:
    """Two workers of one group, a backlog of 500: one alert, from the holder of partition 0
    of the first input; the other never reads the broker."""
    judge, judge_poller, judge_pager = _member([(500, 9.0)])
    other, other_poller, other_pager = _member([])  # a read would pop from an empty list
    judge.on_assign(INFO, [JUDGE, ("in", 2)])
    other.on_assign(INFO, [("in", 1), ("in", 3)])
    _tick(judge, judge_poller, 0.0)
    _tick(other, other_poller, 0.0)
    assert judge_pager.heard == [("alert", "waiting", 500)]
    assert other_pager.heard == []
    assert not other.judges_backlog and not other_poller._wanted.is_set()


def test_the_judge_role_moves_with_its_partition_and_the_new_judge_starts_afresh() -> None:
    """The judge partition moves while the alert fires: the old judge stops judging without a
    word (no false "resolved"), the new one fires once for the backlog still there."""
    old, old_poller, old_pager = _member([(500, 9.0)])
    new, new_poller, new_pager = _member([(450, 9.0), (60, 1.0)])
    old.on_assign(INFO, [JUDGE])
    _tick(old, old_poller, 0.0)
    old.on_revoke(INFO, [JUDGE])
    new.on_assign(INFO, [JUDGE])
    _tick(old, old_poller, 1.0)
    _tick(new, new_poller, 1.0)
    _tick(new, new_poller, 2.0)
    assert old_pager.heard == [("alert", "waiting", 500)]
    assert new_pager.heard == [("alert", "waiting", 450), ("resolved", "waiting", 60)]
    assert not old.judges_backlog and not old.rules._waiting.firing  # type: ignore[union-attr]


def test_every_member_judges_its_own_failure_ratio() -> None:
    """Failures are not in the broker: a worker not holding the judge partition still fires on
    what it sees."""
    clock, pager = FakeClock(), Pager()
    watch = AlertWatch(Alerts(failure_ratio_above=0.5, min_events=2), clock, None, judge=JUDGE)
    watch.attach(Hooks(INFO, [pager]))
    watch.on_assign(INFO, [("in", 1)])
    for _ in range(2):
        watch.on_failed(INFO, None, ValueError(), 1, False)  # type: ignore[arg-type]
    watch.on_tick(INFO, 1.0)
    assert pager.heard == [("alert", "failure_ratio", 1.0)]


def test_a_stages_judge_partition_is_partition_0_of_its_first_input() -> None:
    from pipeline.alertwatch import watch
    from pipeline.testing import MemoryBroker, MemoryTransport

    class Backlogged(Stage):
        consumes = PINGS
        alerts = Alerts(waiting_above=10)

        def handle(self, event: Ping, ctx: Context) -> None:
            pass

    settings = Settings(schemas_dir=TEST_SCHEMAS, topic_prefix="x.")
    with TestPipeline([Backlogged], settings) as t:
        [plan] = t.pipeline.plans
        transport = MemoryTransport(MemoryBroker(FakeClock()), settings)
        found = watch(plan, settings, transport, FakeClock())
        assert found is not None and found._judge == ("x.test.pings", 0)


def test_a_read_left_from_an_earlier_judge_role_is_not_judged_when_the_role_comes_back() -> None:
    """A read still running when the role moved away ends later; if the role comes back, that
    stale answer is dropped and a fresh read is asked for."""
    watch, poller, pager = _member([(500, 9.0)])
    watch.on_assign(INFO, [JUDGE])
    watch.on_tick(INFO, 0.0)  # asks for a read
    watch.on_revoke(INFO, [JUDGE])
    poller._wanted.clear()
    poller.poll_once()  # the read ends after the revoke
    watch.on_assign(INFO, [JUDGE])
    watch.on_tick(INFO, 1.0)
    assert pager.heard == [] and poller._wanted.is_set()
