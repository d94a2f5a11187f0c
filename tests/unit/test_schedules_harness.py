"""TestPipeline runs cron schedules on its FakeClock: a daily schedule is tested in
milliseconds, with the stage that consumes what it emits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from pipeline import Schedule, Settings
from pipeline.testing import TestPipeline
from tests.integration.app_stages import Ping
from tests.integration.schedule_stages import TICKS, TickSink

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
PARIS = ZoneInfo("Europe/Paris")


def report_due(tick: datetime) -> Ping:
    return Ping(ping_id=tick.date().isoformat(), n=tick.hour)


DAILY = Schedule("daily-report", cron="0 9 * * *", tz="Europe/Paris", emit=TICKS,
                 event=report_due)  # fmt: skip


def test_a_daily_report_is_due_at_nine_paris_time_once_a_day() -> None:
    with TestPipeline([TickSink], Settings(schemas_dir=SCHEMAS), schedules=[DAILY]) as t:
        t.run_until_idle()
        assert t.outputs(TICKS) == []
        now = datetime.fromtimestamp(t.clock.time(), UTC)
        nine = DAILY.next_tick(now)
        t.clock.advance((nine - now).total_seconds() + 0.5)  # type: ignore[attr-defined]
        t.run_until_idle()
        t.clock.advance(timedelta(days=1).total_seconds())  # type: ignore[attr-defined]
        t.run_until_idle()
        reports = t.outputs(TICKS)
        assert [(r.ping_id, r.n) for r in reports] == [
            (nine.date().isoformat(), 9),
            ((nine + timedelta(days=1)).date().isoformat(), 9),
        ]
        assert t.stats(TickSink).processed == 2  # the stage handled both
        assert t.scheduler is not None and len(t.scheduler.fired) == 2
