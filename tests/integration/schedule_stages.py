"""A cron schedule ticking every second, for the scheduler's integration tests (run as
`pipeline run tests.integration.schedule_stages` worker processes)."""

from __future__ import annotations

from datetime import datetime

from pipeline import Context, Schedule, Stage, Topic
from tests.integration.app_stages import Ping

TICKS = Topic("test.ticks", Ping)


def tick_event(tick: datetime) -> Ping:
    return Ping(ping_id=tick.isoformat(), n=int(tick.timestamp()))


class TickSink(Stage):
    """Reads the ticks and does nothing: a pipeline run needs a stage."""

    consumes = TICKS

    def handle(self, event: Ping, ctx: Context) -> None:
        pass


STAGES = [TickSink]
SCHEDULES = [Schedule("every-second", cron="* * * * * *", emit=TICKS, event=tick_event,
                      catch_up="all")]  # fmt: skip
