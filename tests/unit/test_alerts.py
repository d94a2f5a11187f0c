"""Alert thresholds: hysteresis, the failure window and the declaration's checks, on a fake
clock (no Kafka, no sleeping)."""

from __future__ import annotations

import pytest

from pipeline.alerts import Alert, AlertRules, Alerts, FailureWindow, Threshold
from pipeline.clock import FakeClock
from pipeline.errors import DeclarationError


def test_a_threshold_fires_once_above_and_resolves_once_at_its_hysteresis_line() -> None:
    t = Threshold("waiting", 10_000, resolve_below=0.8)
    assert t.update(10_000, at=1) is None  # at the line is not above it
    assert t.update(10_001, at=2) == ("alert", Alert("waiting", 10_001, 10_000, 2))
    assert t.update(12_000, at=3) is None  # still firing: not again
    assert t.update(9_000, at=4) is None  # below the threshold, above the resolve line
    assert t.update(10_500, at=5) is None  # back up: no second alert
    assert t.update(8_000, at=6) == ("resolved", Alert("waiting", 8_000, 10_000, 6))
    assert t.update(7_000, at=7) is None
    assert t.update(10_001, at=8) is not None  # a new crossing fires again


def test_an_unknown_value_neither_fires_nor_resolves() -> None:
    t = Threshold("oldest_waiting", 300)
    assert t.update(None, at=1) is None and not t.firing
    t.update(301, at=2)
    assert t.update(None, at=3) is None and t.firing


def test_a_zero_threshold_fires_on_any_and_resolves_at_none() -> None:
    t = Threshold("waiting", 0)
    assert t.update(0, at=1) is None
    assert t.update(1, at=2) is not None
    assert t.update(0, at=3) == ("resolved", Alert("waiting", 0, 0, 3))


def test_the_failure_window_forgets_outcomes_older_than_window_s() -> None:
    clock, window = FakeClock(), FailureWindow(window_s=10)
    window.add(clock.monotonic(), failed=True)
    window.add(clock.monotonic(), failed=False)
    clock.advance(5)
    window.add(clock.monotonic(), failed=True)
    assert window.counts(clock.monotonic()) == (1, 2)
    clock.advance(6)  # the first second's bucket is now more than 10 s old
    assert window.counts(clock.monotonic()) == (0, 1)
    clock.advance(10)
    assert window.counts(clock.monotonic()) == (0, 0)


def _failures(rules: AlertRules, clock: FakeClock, ok: int, failed: int) -> None:
    for _ in range(ok):
        rules.window.add(clock.monotonic(), failed=False)
    for _ in range(failed):
        rules.window.add(clock.monotonic(), failed=True)


def test_the_failure_ratio_is_judged_once_the_window_holds_min_events() -> None:
    clock = FakeClock()
    rules = AlertRules(Alerts(failure_ratio_above=0.05, window_s=60, min_events=10))
    _failures(rules, clock, ok=0, failed=3)  # 100 %, but only 3 outcomes
    assert rules.failure_ratio(clock.monotonic(), clock.time()) == []
    _failures(rules, clock, ok=7, failed=0)  # 3 of 10 = 30 %
    [(kind, alert)] = rules.failure_ratio(clock.monotonic(), clock.time())
    assert kind == "alert" and alert.kind == "failure_ratio" and alert.value == pytest.approx(0.3)
    assert rules.failure_ratio(clock.monotonic(), clock.time()) == []  # once


def test_a_failure_alert_resolves_when_the_ratio_falls_back() -> None:
    clock = FakeClock()
    rules = AlertRules(Alerts(failure_ratio_above=0.05, window_s=60, min_events=10))
    _failures(rules, clock, ok=5, failed=5)
    assert rules.failure_ratio(clock.monotonic(), clock.time())[0][0] == "alert"
    clock.advance(30)
    _failures(rules, clock, ok=100, failed=4)  # 9 of 110 = 8.2 %: above, still firing
    assert rules.failure_ratio(clock.monotonic(), clock.time()) == []
    clock.advance(31)  # the 5 failures leave the window: 4 of 104 = 3.8 %, at 0.8 x 5 % or less
    [(kind, alert)] = rules.failure_ratio(clock.monotonic(), clock.time())
    assert kind == "resolved" and alert.value == pytest.approx(4 / 104)


def test_a_failure_alert_resolves_when_the_window_empties_but_not_while_sparse() -> None:
    clock = FakeClock()
    rules = AlertRules(Alerts(failure_ratio_above=0.5, window_s=10, min_events=4))
    _failures(rules, clock, ok=0, failed=4)
    assert rules.failure_ratio(clock.monotonic(), clock.time())[0][0] == "alert"
    clock.advance(8)
    _failures(rules, clock, ok=0, failed=1)
    clock.advance(3)  # the 4 failures are gone; 1 outcome left: too few to judge
    assert rules.failure_ratio(clock.monotonic(), clock.time()) == []
    clock.advance(10)  # nothing in the window: the condition is over
    assert rules.failure_ratio(clock.monotonic(), clock.time())[0][0] == "resolved"


def test_backlog_alerts_fire_and_resolve_independently() -> None:
    rules = AlertRules(Alerts(waiting_above=100, oldest_waiting_above_s=60))
    assert [c[1].kind for c in rules.backlog(150, 10.0, at=1)] == ["waiting"]
    assert [c[1].kind for c in rules.backlog(150, 90.0, at=2)] == ["oldest_waiting"]
    assert rules.backlog(None, None, at=3) == []  # the broker did not answer
    changes = rules.backlog(0, None, at=4)  # drained: nothing waits, so nothing is old
    assert [(c[0], c[1].kind) for c in changes] == [
        ("resolved", "waiting"),
        ("resolved", "oldest_waiting"),
    ]


def test_an_alerts_declaration_is_checked_when_made() -> None:
    Alerts(waiting_above=0, failure_ratio_above=0.0)
    with pytest.raises(DeclarationError, match="failure_ratio_above must be in"):
        Alerts(failure_ratio_above=5)
    with pytest.raises(DeclarationError, match="waiting_above must be an int >= 0"):
        Alerts(waiting_above=-1)
    with pytest.raises(DeclarationError, match="window_s must be a number > 0"):
        Alerts(window_s=0)
    with pytest.raises(DeclarationError, match="min_events must be an int > 0"):
        Alerts(min_events=True)


def test_an_alert_describes_itself_without_payloads() -> None:
    assert Alert("waiting", 12_000, 10_000, 0).describe() == (
        "12000 events waiting (threshold 10000)"
    )
    assert "12.5% of deliveries failed" in Alert("failure_ratio", 0.125, 0.05, 0).describe()
