"""Cron ticks, catch-up policies and daylight saving: pure arithmetic, no clock, no broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from pipeline.errors import DeclarationError
from pipeline.schedules import Due, Schedule, check_schedules, due, from_ms, to_ms
from tests.integration.app_stages import PINGS, Ping

PARIS = ZoneInfo("Europe/Paris")


def ping(tick: datetime) -> Ping:
    return Ping(ping_id=tick.isoformat(), n=0)


def sched(cron: str = "0 9 * * *", **kw: object) -> Schedule:
    return Schedule(kw.pop("name", "s"), cron=cron, emit=PINGS, event=ping, **kw)  # type: ignore[arg-type]


def paris(*args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=PARIS, fold=fold)  # type: ignore[misc]


def test_a_daily_schedule_ticks_at_nine_in_its_own_time_zone() -> None:
    """09:00 Europe/Paris is 08:00 UTC in winter and 07:00 UTC in summer."""
    s = sched(tz="Europe/Paris")
    winter = s.next_tick(datetime(2026, 1, 10, 12, tzinfo=UTC))
    summer = s.next_tick(datetime(2026, 7, 10, 12, tzinfo=UTC))
    assert winter == paris(2026, 1, 11, 9) and winter.astimezone(UTC).hour == 8
    assert summer == paris(2026, 7, 11, 9) and summer.astimezone(UTC).hour == 7


def test_a_sixth_field_ticks_every_second() -> None:
    """croniter's convention: a sixth field is the seconds."""
    s = sched("* * * * * *")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert s.ticks(start, start + timedelta(seconds=3), 10) == [
        start + timedelta(seconds=n) for n in (1, 2, 3)
    ]


def test_a_tick_in_the_hour_spring_forward_skips_fires_at_the_first_valid_time() -> None:
    """On 29 March 2026 Paris skips 02:00-03:00: 02:30 fires at 03:00 that day, once."""
    s = sched("30 2 * * *", tz="Europe/Paris")
    ticks = s.ticks(paris(2026, 3, 28, 12), paris(2026, 3, 30, 12), 10)
    assert ticks == [paris(2026, 3, 29, 3, 0), paris(2026, 3, 30, 2, 30)]


def test_a_wall_time_fall_back_repeats_fires_twice_once_per_instant() -> None:
    """On 25 October 2026 Paris lives 02:00-03:00 twice: 02:30 fires at both instants, an hour
    apart, and then the next day."""
    s = sched("30 2 * * *", tz="Europe/Paris")
    ticks = s.ticks(paris(2026, 10, 24, 12), paris(2026, 10, 26, 12), 10)
    first, second = paris(2026, 10, 25, 2, 30), paris(2026, 10, 25, 2, 30, fold=1)
    assert [t.astimezone(UTC) for t in ticks] == [
        first.astimezone(UTC),
        second.astimezone(UTC),
        paris(2026, 10, 26, 2, 30).astimezone(UTC),
    ]
    assert second - first == timedelta(0) and to_ms(second) - to_ms(first) == 3_600_000


def test_ticks_resume_from_a_stored_instant_across_the_repeated_hour() -> None:
    """What is stored is milliseconds since the epoch: from the first 02:30 the next tick is
    the second one, from the second it is the next day (never the same one again)."""
    s = sched("30 2 * * *", tz="Europe/Paris")
    first = from_ms(to_ms(paris(2026, 10, 25, 2, 30)), s)
    second = s.next_tick(first)
    assert to_ms(second) - to_ms(first) == 3_600_000
    assert s.next_tick(from_ms(to_ms(second), s)) == paris(2026, 10, 26, 2, 30)


def test_nothing_is_due_before_the_next_tick() -> None:
    s = sched("0 * * * *")
    last = datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert due(s, last, last + timedelta(minutes=59, seconds=59)) is None


@pytest.mark.parametrize("policy", ["all", "latest", "none"])
def test_a_tick_less_late_than_the_grace_fires_whatever_the_policy(policy: str) -> None:
    """A failover of a few seconds is not an outage: every tick in it fires."""
    s = sched("* * * * * *", catch_up=policy, grace_s=60)
    last = datetime(2026, 1, 1, tzinfo=UTC)
    plan = due(s, last, last + timedelta(seconds=12))
    assert plan is not None and len(plan.fire) == 12
    assert plan.through == last + timedelta(seconds=12)


def test_catch_up_all_fires_every_missed_tick_in_order() -> None:
    s = sched("0 * * * *", catch_up="all")
    last = datetime(2026, 1, 1, 0, tzinfo=UTC)
    plan = due(s, last, last + timedelta(hours=5, minutes=30))
    assert plan == Due(tuple(last + timedelta(hours=h) for h in range(1, 6)),
                       last + timedelta(hours=5))  # fmt: skip


def test_catch_up_all_is_bounded_per_step_and_continues_in_the_next() -> None:
    s = sched("* * * * * *", catch_up="all")
    last = datetime(2026, 1, 1, tzinfo=UTC)
    now = last + timedelta(hours=1)
    plan = due(s, last, now, limit=500)
    assert plan is not None and len(plan.fire) == 500
    rest = due(s, plan.through, now, limit=5000)
    assert rest is not None and len(rest.fire) == 3600 - 500 and rest.through == now


def test_catch_up_latest_fires_only_the_newest_missed_tick() -> None:
    """Down for five hours (grace 60 s): one catch-up event for 05:00, not five."""
    s = sched("0 * * * *", catch_up="latest")
    last = datetime(2026, 1, 1, 0, tzinfo=UTC)
    plan = due(s, last, last + timedelta(hours=5, minutes=30))
    assert plan == Due((last + timedelta(hours=5),), last + timedelta(hours=5))


def test_catch_up_none_skips_missed_ticks_and_marks_them_handled() -> None:
    s = sched("0 * * * *", catch_up="none")
    last = datetime(2026, 1, 1, 0, tzinfo=UTC)
    plan = due(s, last, last + timedelta(hours=5, minutes=30))
    assert plan == Due((), last + timedelta(hours=5))


def test_catch_up_latest_with_on_time_ticks_fires_the_newest_missed_and_the_on_time() -> None:
    """Per second, grace 10 s, 30 s behind: the tick at 20 s stands for the missed ones, and
    the ten within the grace fire each."""
    s = sched("* * * * * *", catch_up="latest", grace_s=10)
    last = datetime(2026, 1, 1, tzinfo=UTC)
    plan = due(s, last, last + timedelta(seconds=30))
    assert plan is not None
    assert [int((t - last).total_seconds()) for t in plan.fire] == list(range(20, 31))


def test_a_paused_schedule_skips_the_ticks_that_come_due() -> None:
    s = sched("0 * * * *", catch_up="all")
    last = datetime(2026, 1, 1, 0, tzinfo=UTC)
    plan = due(s, last, last + timedelta(hours=2, minutes=1), paused=True)
    assert plan == Due((), last + timedelta(hours=2))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "0 99 * * *"}, "not a cron expression"),
        ({"tz": "Mars/Olympus"}, "unknown time zone"),
        ({"catch_up": "some"}, "catch_up='some'"),
        ({"grace_s": 0}, "grace_s must be positive"),
        ({"name": "a/b"}, "without '/'"),
    ],
)
def test_a_bad_declaration_is_refused_with_one_clear_line(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(DeclarationError, match=message):
        sched(**kwargs)  # type: ignore[arg-type]


def test_two_schedules_with_one_name_are_refused() -> None:
    with pytest.raises(DeclarationError, match="two schedules are named 's'"):
        check_schedules([sched(), sched("* * * * *")])
