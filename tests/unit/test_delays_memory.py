"""Delayed events on the in-memory broker and its FakeClock: what a user's test of a delayed
stage sees, instantly (the mover is a built-in stage run by ``TestPipeline`` like any other)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pipeline import Context, Publisher, Settings, Stage, Topic
from pipeline.delays import DelayError
from pipeline.failures import RetryPolicy
from pipeline.queues import status
from pipeline.testing import TestPipeline
from tests.conftest import TEST_SCHEMAS
from tests.integration.app_stages import PINGS, Ping

SETTINGS = Settings(schemas_dir=TEST_SCHEMAS, topic_partitions=3)
REMINDERS = Topic("test.reminders", Ping, key="ping_id", id_field="ping_id", delayed=True)
# (stage, ping id, the broker clock's wall ms when handled, the delay-due-ms header)
SEEN: list[tuple[str, str, int, int]] = []
CLOCK: list[Any] = []


def _note(stage: str, event: Ping, ctx: Context) -> None:
    SEEN.append((stage, event.ping_id, CLOCK[0].wall_ms(), int(ctx.headers["delay-due-ms"])))


class Remind(Stage):
    consumes = REMINDERS
    retry = RetryPolicy(in_process_attempts=1, tiers=())

    def handle(self, event: Ping, ctx: Context) -> None:
        _note("remind", event, ctx)


class Audit(Stage):
    consumes = REMINDERS
    retry = RetryPolicy(in_process_attempts=1, tiers=())

    def handle(self, event: Ping, ctx: Context) -> None:
        _note("audit", event, ctx)


class Schedule(Stage):
    """Emits a reminder ``n`` seconds after each ping."""

    consumes = PINGS
    emits = (REMINDERS,)

    def handle(self, event: Ping, ctx: Context) -> None:
        ctx.emit(REMINDERS, Ping(ping_id=f"later-{event.ping_id}", n=event.n), delay=event.n)


@pytest.fixture(autouse=True)
def _fresh() -> None:
    SEEN.clear()
    CLOCK.clear()


def _pipeline(*stages: type[Stage]) -> TestPipeline:
    t = TestPipeline(stages, SETTINGS)
    CLOCK.append(t.clock)
    return t


def test_a_reminder_delayed_by_24_hours_arrives_then_in_a_test_that_takes_no_time() -> None:
    """The seed's reminder: handled at its due time on the FakeClock, not a millisecond earlier."""
    with _pipeline(Remind) as t:
        start = t.clock.wall_ms()
        t.publish(REMINDERS, Ping(ping_id="r1", n=1), delay=timedelta(hours=24))
        t.run_until_idle(timeout_s=2 * 86_400)
    [(_, ping, handled, due)] = SEEN
    assert (ping, due) == ("r1", start + 86_400_000)
    assert due <= handled < due + 1_000


def test_a_long_delay_never_holds_back_shorter_ones_published_after_it() -> None:
    """Published long first, then shorter ones: each arrives at its own due time, in due order."""
    with _pipeline(Remind) as t:
        for ping, seconds in (("1h", 3600), ("8s", 8), ("2s", 2), ("30s", 30), ("1s", 1)):
            t.publish(REMINDERS, Ping(ping_id=ping, n=seconds), delay=seconds)
        t.run_until_idle(timeout_s=7200)
    assert [s[1] for s in SEEN] == ["1s", "2s", "8s", "30s", "1h"]
    assert all(due <= handled < due + 1_000 for _, _, handled, due in SEEN)


def test_every_group_reading_a_delayed_topic_sees_the_event_once_at_its_due_time() -> None:
    """Delays are per topic: fan-out holds, and one mover moves the event for both groups."""
    with _pipeline(Remind, Audit) as t:
        t.publish(REMINDERS, Ping(ping_id="r1", n=1), delay=5)
        t.run_until_idle(timeout_s=60)
        movers = [p.group for p in t.pipeline.plans if p.group.endswith(".delay")]
    assert sorted(s[0] for s in SEEN) == ["audit", "remind"]
    assert movers == ["test.reminders.delay"]


def test_a_stage_emits_a_delayed_event_with_ctx_emit() -> None:
    """``ctx.emit(..., delay=n)``: due n seconds after the handler's output was produced."""
    with _pipeline(Schedule, Remind) as t:
        start = t.clock.wall_ms()
        t.publish(PINGS, Ping(ping_id="a", n=3))
        t.publish(PINGS, Ping(ping_id="b", n=1))
        t.run_until_idle(timeout_s=60)
    assert [s[1] for s in SEEN] == ["later-b", "later-a"]
    assert [s[3] - start for s in SEEN] == [1_000, 3_000]


def test_a_cancelled_event_is_never_delivered_and_the_others_are() -> None:
    """Cancelled by its id before it is due: dropped by the mover, its tier committed."""
    with _pipeline(Remind) as t:
        start = t.clock.wall_ms()
        t.publish(REMINDERS, Ping(ping_id="keep", n=1), delay=10)
        t.publish(REMINDERS, Ping(ping_id="drop", n=2), delay=10)
        t.run_until(lambda: t.clock.wall_ms() >= start + 3_000)  # both in their tiers
        t.cancel(REMINDERS, "drop")
        t.run_until_idle(timeout_s=60)
    assert [s[1] for s in SEEN] == ["keep"]


def test_a_crashed_mover_is_replaced_and_nothing_delayed_is_lost() -> None:
    """The mover's worker dies with records held in its tiers: the next one delivers them."""
    with _pipeline(Remind) as t:
        for n in range(1, 6):
            t.publish(REMINDERS, Ping(ping_id=f"r{n}", n=n), delay=n * 2)
        t.run_until(lambda: len(SEEN) >= 2, timeout_s=60)
        mover = next(p.stage for p in t.pipeline.plans if p.group.endswith(".delay"))
        t.crash(mover)
        t.run_until_idle(timeout_s=60)
    assert sorted({s[1] for s in SEEN}) == [f"r{n}" for n in range(1, 6)]


def test_a_record_in_a_tier_without_our_headers_is_dead_lettered_by_the_mover() -> None:
    """Nothing is lost: a foreign record in a tier topic goes to ``<topic>.delay.dlq``."""
    with _pipeline(Remind) as t:
        t.publish(Topic("test.reminders.delay.1s", Ping), Ping(ping_id="stray", n=1))
        t.run_until_idle(timeout_s=60)
        mover = next(p.stage for p in t.pipeline.plans if p.group.endswith(".delay"))
        assert len(t.dead_letters(mover)) == 1
    assert SEEN == []


def test_a_delay_on_an_undelayed_topic_or_out_of_range_is_refused() -> None:
    """A clear error before anything is written."""
    with _pipeline(Remind) as t:
        with pytest.raises(DelayError, match="not declared delayed=True"):
            t.publish(PINGS, Ping(ping_id="x", n=1), delay=5)
        with pytest.raises(DelayError, match="from 1 s to 30 days"):
            t.publish(REMINDERS, Ping(ping_id="x", n=1), delay=timedelta(days=40))


def test_pipeline_status_counts_events_waiting_in_the_delay_tiers_as_delayed() -> None:
    """The ``delayed`` figure of the stage that reads the topic: 2 waiting, then 0 delivered."""
    with _pipeline(Remind) as t:
        t.publish(REMINDERS, Ping(ping_id="a", n=1), delay=30)
        t.publish(REMINDERS, Ping(ping_id="b", n=1), delay=timedelta(days=2))
        t.run_until(lambda: t.clock.wall_ms() > 0)  # the mover joins and holds its tiers
        assert status([Remind], SETTINGS, transport=t.transport).stage("remind").delayed == 2
        t.run_until_idle(timeout_s=3 * 86_400)
        assert status([Remind], SETTINGS, transport=t.transport).stage("remind").delayed == 0
    assert [s[1] for s in SEEN] == ["a", "b"]


def test_the_publisher_writes_a_delayed_event_to_its_tier_and_a_cancel_to_the_cancel_topic() -> (
    None
):
    """``publish(delay=)`` (sync and async) and ``cancel`` on any transport: the tier record
    carries the due time on the publisher's clock, the cancel is keyed by the event id."""
    with _pipeline(Remind) as t:
        with Publisher(t.settings, transport=t.transport) as publisher:
            before = int(time.time() * 1000)
            where = publisher.publish(REMINDERS, Ping(ping_id="p1", n=1), delay=90)
            assert where is not None and where.topic == "test.reminders.delay.64s"
            at = datetime.now(UTC) + timedelta(hours=2)
            done = asyncio.run(
                publisher.publish_async(REMINDERS, Ping(ping_id="p2", n=1), deliver_at=at)
            )
            assert done.topic == "test.reminders.delay.4096s"
            publisher.cancel(REMINDERS, "p1")
            with pytest.raises(DelayError, match="delayed=True"):
                publisher.publish(PINGS, Ping(ping_id="x", n=1), delay=5)
        [stored] = t.records("test.reminders.delay.64s")
        due = int(dict(stored.headers)["delay-due-ms"] or b"0")
        assert before + 90_000 <= due <= int(time.time() * 1000) + 90_000
        [cancel] = t.records("test.reminders.delay.cancel")
        assert cancel.key == b"p1"


class BadDelay(Stage):
    """Emits with a delay out of range: ping n=0 (half a second), n=1 (a past deliver_at)."""

    consumes = PINGS
    emits = (REMINDERS,)

    def handle(self, event: Ping, ctx: Context) -> None:
        if event.n == 0:
            ctx.emit(REMINDERS, Ping(ping_id="x", n=0), delay=0.5)
        else:
            past = datetime.fromtimestamp(CLOCK[0].time() - 60, tz=UTC)
            ctx.emit(REMINDERS, Ping(ping_id="x", n=1), deliver_at=past)


def test_a_bad_delay_in_ctx_emit_dead_letters_the_input_at_once() -> None:
    """A programming error, not a transient one: no retries, the input parked with the reason."""
    with _pipeline(BadDelay, Remind) as t:
        t.publish(PINGS, Ping(ping_id="a", n=0))
        t.publish(PINGS, Ping(ping_id="b", n=1))
        t.run_until_idle()
        failures = [d.failure for d in t.dead_letters(BadDelay)]
        assert [f.exception_type for f in failures] == ["pipeline.delays.DelayError"] * 2
        assert [f.attempts for f in failures] == [1, 1]
        assert t.records("test.reminders.delay.0.25s") == []
    assert SEEN == []
