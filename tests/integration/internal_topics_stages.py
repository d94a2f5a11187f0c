"""A delayed topic and a schedule: the stages module of the `pipeline topics create --stages`
test, whose cancel and schedule-state topics must have one partition."""

from __future__ import annotations

from pipeline import Context, Schedule, Stage, Topic
from tests.integration.app_stages import Ping
from tests.integration.schedule_stages import tick_event

LATER = Topic("test.later", Ping, key="ping_id", id_field="ping_id", delayed=True)


class Later(Stage):
    consumes = LATER

    def handle(self, event: Ping, ctx: Context) -> None:
        pass


STAGES = [Later]
SCHEDULES = [Schedule("hourly", cron="0 * * * *", emit=LATER, event=tick_event)]
