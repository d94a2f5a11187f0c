"""Job status on the in-memory broker, as a user's test sees it: a tracking stage run by
``TestPipeline``, its jobs read back through a ``JobView`` on the same broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import Context, DeadLetter, Stage, Topic
from pipeline.jobs import JobTracking, JobView, get
from pipeline.jobs.result import RESULT_MAX_BYTES
from pipeline.testing import TestPipeline
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


class Square(Stage):
    """Reports progress half way and returns the square of ``n`` as the job's result."""

    consumes = PINGS
    group = "jobs.square"
    track_jobs = JobTracking()

    def handle(self, event: Ping, ctx: Context) -> dict[str, int]:
        ctx.progress(50, "half way")
        return {"square": event.n * event.n}


class EmitsAndResults(Stage):
    """Emits a pong and sets the result with ``ctx.result``: completed once the pong is acked."""

    consumes = PINGS
    emits = (PONGS,)
    group = "jobs.emits"
    track_jobs = JobTracking()

    def handle(self, event: Ping, ctx: Context) -> None:
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="memory"))
        ctx.result("sent")


class Poison(Stage):
    """Always fails with a permanent error: the job ends dead-lettered with the reason."""

    consumes = PINGS
    group = "jobs.poison"
    track_jobs = JobTracking()

    def handle(self, event: Ping, ctx: Context) -> None:
        raise DeadLetter("no such mailbox")


class TooBig(Stage):
    consumes = PINGS
    group = "jobs.toobig"
    track_jobs = JobTracking()

    def handle(self, event: Ping, ctx: Context) -> str:
        return "x" * (RESULT_MAX_BYTES + 1)


LATER_PONGS = Topic("test.later_pongs", Pong, delayed=True)


class EmitsLater(Stage):
    """Emits a pong due in 60 s: a follow-up job that is ``delayed`` until it is handled."""

    consumes = PINGS
    emits = (LATER_PONGS,)
    group = "jobs.emits_later"
    track_jobs = JobTracking()

    def handle(self, event: Ping, ctx: Context) -> None:
        ctx.emit(LATER_PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="x"), delay=60)


class HandlesLater(Stage):
    consumes = LATER_PONGS
    group = "jobs.handles_later"
    track_jobs = JobTracking()

    def handle(self, event: Pong, ctx: Context) -> str:
        return f"late {event.ping_id}"


def _delay_tiered(t: TestPipeline) -> list[Any]:
    tiers = [n for n in t.broker.topics() if n.startswith(f"{LATER_PONGS.name}.delay.")]
    return [r for n in tiers for r in t.records(n)]


def _settings(tmp_path: Path):  # type: ignore[no-untyped-def]
    from pipeline import Settings

    return Settings(schemas_dir=SCHEMAS, jobs_store=tmp_path / "jobs.sqlite3")


def _view(t: TestPipeline) -> JobView:
    view = JobView(t.settings, transport=t.transport.inner, clock=t.clock)
    view.catch_up(timeout_s=5)
    return view


def test_a_handler_s_return_value_and_progress_are_its_job_s_status(tmp_path: Path) -> None:
    """A tracking stage's job is completed with the handler's return value and last progress."""
    with TestPipeline([Square], _settings(tmp_path)) as t:
        stored = t.publish(PINGS, Ping(ping_id="p1", n=7))
        t.run_until_idle()
        view = _view(t)
        job = view.get(_event_id(stored))
        assert job is not None
        assert (job.state, job.result, job.progress, job.note) == (
            "completed",
            {"square": 49},
            50.0,
            "half way",
        )
        assert (job.attempt, job.stage, job.topic) == (1, "square", "test.pings")
        assert job.started_at is not None and job.finished_at is not None
        view.close()
        # Any process reads the same store: the module-level lookup.
        assert get(job.id, settings=t.settings) == job


def test_a_job_with_outputs_completes_with_its_ctx_result(tmp_path: Path) -> None:
    with TestPipeline([EmitsAndResults], _settings(tmp_path)) as t:
        stored = t.publish(PINGS, Ping(ping_id="p1", n=1))
        t.run_until_idle()
        with _view(t) as view:
            job = view.get(_event_id(stored))
        assert job is not None and (job.state, job.result) == ("completed", "sent")
        assert [p.ping_id for p in t.outputs(PONGS)] == ["p1"]


def test_an_output_names_its_parent_so_a_chain_can_be_followed(tmp_path: Path) -> None:
    """Each output carries its input's id as ``parent-id``; ``correlation-id`` is the chain's
    first event."""
    with TestPipeline([EmitsAndResults], _settings(tmp_path)) as t:
        stored = t.publish(PINGS, Ping(ping_id="p1", n=1))
        t.run_until_idle()
        [pong] = t.records(PONGS)
        headers = dict(pong.headers)
        assert headers["parent-id"] == _event_id(stored).encode()
        assert headers["correlation-id"] == _event_id(stored).encode()
        assert headers["event-id"] != headers["parent-id"]


def test_a_poison_event_s_job_is_dead_lettered_with_the_reason(tmp_path: Path) -> None:
    with TestPipeline([Poison], _settings(tmp_path)) as t:
        stored = t.publish(PINGS, Ping(ping_id="p1", n=1))
        t.run_until_idle()
        view = _view(t)
        job = view.get(_event_id(stored))
        view.close()
        assert job is not None and job.state == "dead-lettered"
        assert job.error is not None and "no such mailbox" in job.error


def test_a_result_over_the_limit_dead_letters_the_event_with_a_clear_error(
    tmp_path: Path,
) -> None:
    with TestPipeline([TooBig], _settings(tmp_path)) as t:
        stored = t.publish(PINGS, Ping(ping_id="p1", n=1))
        t.run_until_idle()
        [dead] = t.dead_letters(TooBig)
        assert dead.failure.exception_type == "pipeline.errors.ResultError"
        view = _view(t)
        job = view.get(_event_id(stored))
        view.close()
        assert job is not None and job.state == "dead-lettered"
        assert f"at most {RESULT_MAX_BYTES} bytes" in (job.error or "")


def _event_id(stored: object) -> str:
    headers = dict(stored.headers)  # type: ignore[attr-defined]
    return headers["event-id"].decode()


def test_a_stage_s_delayed_output_is_a_delayed_job_until_it_is_handled(tmp_path: Path) -> None:
    """``ctx.emit(delay=60)`` in a tracking stage: the follow-up job, found by the output's own
    id, is ``delayed`` (for its topic) once the output is stored, then completed when due."""
    with TestPipeline([EmitsLater, HandlesLater], _settings(tmp_path)) as t:
        stored = t.publish(PINGS, Ping(ping_id="p1", n=1))
        t.run_until(lambda: bool(_delay_tiered(t)), what="the pong in a delay tier")
        [tiered] = _delay_tiered(t)
        follow_up = dict(tiered.headers)["event-id"].decode()  # type: ignore[union-attr]
        with _view(t) as view:
            parent, later = view.get(_event_id(stored)), view.get(follow_up)
            assert parent is not None and parent.state == "completed"
            assert later is not None
            assert (later.state, later.topic, later.offset) == ("delayed", LATER_PONGS.name, None)
            assert later.expires_at is not None  # if no tracking stage ever takes it
            t.run_until_idle(timeout_s=300)  # on the fake clock: the delay comes due at once
            view.catch_up(timeout_s=5)
            done = view.get(follow_up)
        assert done is not None
        assert (done.state, done.stage, done.result) == ("completed", "handles_later", "late p1")
        assert done.expires_at != later.expires_at


def test_a_record_the_harness_published_names_its_job_id(tmp_path: Path) -> None:
    """``TestPipeline.publish(...).job_id`` is what the job is found by, as ``Delivered.job_id``
    is for ``Publisher.publish``."""
    with TestPipeline([Square], _settings(tmp_path)) as t:
        stored = t.publish(PINGS, Ping(ping_id="p1", n=3))
        t.run_until_idle()
        with _view(t) as view:
            job = view.get(stored.job_id)
        assert stored.job_id == _event_id(stored)
        assert job is not None and (job.state, job.result) == ("completed", {"square": 9})
