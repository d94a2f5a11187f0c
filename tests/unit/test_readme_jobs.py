"""The README's "Job status" example on the in-memory broker: the status endpoint's logic
(without FastAPI, which is not a dependency), and ``JobsQueued``'s ``waiting``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pipeline import Context, Settings, Stage, Topic
from pipeline.jobs import JobsQueued, JobTracking, JobView
from pipeline.publisher import Delivered
from pipeline.testing import FakeClock, MemoryBroker, TestPipeline
from pipeline.testing.transport import MemoryTransport
from tests.integration.app_stages import PINGS, Ping

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


class SendEmail(Stage):
    consumes = PINGS
    group = "readme.send_email"
    track_jobs = JobTracking(retention_s=86_400)

    async def handle(self, event: Ping, ctx: Context) -> dict[str, str]:
        ctx.progress(50, "rendered")
        return {"message_id": f"m-{event.ping_id}"}


def test_the_status_endpoint_answers_id_state_progress_and_result(tmp_path: Path) -> None:
    settings = Settings(schemas_dir=SCHEMAS, jobs_store=tmp_path / "jobs.sqlite3")
    with TestPipeline([SendEmail], settings) as t:
        stored = t.publish(PINGS, Ping(ping_id="e1", n=1))
        t.run_until_idle()
        view = JobView(settings, transport=t.transport.inner, clock=t.clock)
        view.catch_up(5)

        async def job_status(job_id: str) -> dict[str, object] | None:  # the README's endpoint
            job = await view.get_async(job_id)
            if job is None:
                return None  # FastAPI: raise HTTPException(404, ...)
            return {"id": job.id, "state": job.state, "progress": job.progress,
                    "result": job.result}  # fmt: skip

        job_id = dict(stored.headers)["event-id"].decode()  # type: ignore[union-attr]
        assert asyncio.run(job_status(job_id)) == {
            "id": job_id, "state": "completed", "progress": 50.0,
            "result": {"message_id": "m-e1"}}  # fmt: skip
        assert asyncio.run(job_status("no-such-job")) is None
        view.close()


def test_jobs_queued_writes_waiting_once_the_broker_has_the_event(tmp_path: Path) -> None:
    """The Publisher hook: a delivered event is ``waiting`` (``delayed`` when published with a
    delay, to a delay tier of the tracked topic)."""
    clock = FakeClock()
    settings = Settings(schemas_dir=SCHEMAS, jobs_store=tmp_path / "jobs.sqlite3")
    transport = MemoryTransport(MemoryBroker(clock), settings)
    urgent = Topic("test.urgent", Ping, priorities=2)
    with JobsQueued(settings, topics=[PINGS, urgent], transport=transport,
                    clock=clock) as queued:  # fmt: skip
        assert queued.before_publish("other.topic", None, []) is None  # not tracked
        assert queued.before_publish("test.urgent.p1", None, []) is not None  # a lane of it
        watch = queued.before_publish(settings.topic(PINGS.name), None, [])
        assert watch is not None
        watch(Delivered("test.pings", 2, 17, "job-1"))
        # Published with delay=: stored in a delay tier, for the tracked topic.
        tier = [("delay-target", settings.topic(PINGS.name).encode())]
        later = queued.before_publish("test.pings.delay.60s", None, tier)
        assert later is not None
        later(Delivered("test.pings.delay.60s", 0, 3, "job-2"))
    view = JobView(settings, transport=transport, clock=clock)
    view.catch_up(5)
    job, delayed = view.get("job-1"), view.get("job-2")
    view.close()
    assert job is not None
    assert (job.state, job.attempt, job.topic, job.partition, job.offset) == (
        "waiting", 1, "test.pings", 2, 17)  # fmt: skip
    assert job.created_at == clock.time()
    assert delayed is not None
    assert (delayed.state, delayed.topic, delayed.offset) == ("delayed", "test.pings", None)
