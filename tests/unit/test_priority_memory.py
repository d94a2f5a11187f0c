"""Priority lanes through the real runner on the in-memory broker (TestPipeline): what a user's
test of a prioritised stage sees, in milliseconds."""

from __future__ import annotations

from typing import ClassVar

import pytest

from pipeline import Context, RateLimit, Settings, Stage, Topic
from pipeline.failures import RetryPolicy
from pipeline.queues import StatusReader
from pipeline.testing import TestPipeline
from tests.conftest import TEST_SCHEMAS
from tests.integration.app_stages import PONGS, Ping, Pong

SETTINGS = Settings(schemas_dir=TEST_SCHEMAS, topic_partitions=2, batch_size=100)
MAIL = Topic("test.pings", Ping, priorities=("welcome", "normal", "marketing"))
NO_RETRIES = RetryPolicy(in_process_attempts=1, tiers=())


class Mailer(Stage):
    """Records the order it handled mail in."""

    consumes = MAIL
    handled: ClassVar[list[str]] = []

    def handle(self, event: Ping, ctx: Context) -> None:
        Mailer.handled.append(event.ping_id)


class AsyncMailer(Stage):
    consumes = MAIL
    concurrency = 8
    handled: ClassVar[list[str]] = []

    async def handle(self, event: Ping, ctx: Context) -> None:
        AsyncMailer.handled.append(event.ping_id)


@pytest.fixture(autouse=True)
def _fresh() -> None:
    Mailer.handled.clear()
    AsyncMailer.handled.clear()


def test_a_welcome_email_jumps_ahead_of_a_marketing_backlog() -> None:
    """Two welcome emails published after 1,000 marketing ones are handled at the next fetch,
    before the 900 marketing emails still waiting."""
    with TestPipeline([Mailer], SETTINGS) as t:
        for n in range(1000):
            t.publish(MAIL, Ping(ping_id=f"m{n}", n=n), priority="marketing")
        t.run_until(lambda: len(Mailer.handled) > 0)
        first = len(Mailer.handled)
        assert first == 100 and all(h.startswith("m") for h in Mailer.handled), "one batch"
        t.publish(MAIL, Ping(ping_id="welcome-1", n=0), priority="welcome")
        t.publish(MAIL, Ping(ping_id="welcome-2", n=0))  # no priority: lane 0, the topic
        t.step()
        assert Mailer.handled[first : first + 2] == ["welcome-1", "welcome-2"]
        t.run_until_idle()
        assert len(Mailer.handled) == 1002
        assert t.lag(Mailer) == (1002, 0)


def test_a_concurrent_stage_takes_the_high_lane_first_too() -> None:
    with TestPipeline([AsyncMailer], SETTINGS) as t:
        for n in range(300):
            t.publish(MAIL, Ping(ping_id=f"m{n}", n=n), priority=2)
        t.run_until(lambda: len(AsyncMailer.handled) > 0)
        t.publish(MAIL, Ping(ping_id="welcome", n=0), priority=0)
        before = len(AsyncMailer.handled)
        t.run_until(lambda: "welcome" in AsyncMailer.handled)
        assert AsyncMailer.handled.index("welcome") - before <= 8, "within one round of slots"
        t.run_until_idle()
        assert len(AsyncMailer.handled) == 301


def test_the_marketing_lane_still_gets_its_share_under_a_welcome_flood() -> None:
    """Default Lanes(): each lower lane is guaranteed 10 % of what the stage takes."""
    with TestPipeline([Mailer], SETTINGS) as t:
        for n in range(2000):
            t.publish(MAIL, Ping(ping_id=f"w{n}", n=n), priority="welcome")
        for n in range(2000):
            t.publish(MAIL, Ping(ping_id=f"m{n}", n=n), priority="marketing")
        t.run_until(lambda: len(Mailer.handled) >= 1000)
        marketing = sum(h.startswith("m") for h in Mailer.handled[:1000])
        assert 80 <= marketing <= 120


class Sorter(Stage):
    """Sends pongs of odd pings to the marketing lane of a laned topic, others to lane 0."""

    consumes = PONGS
    emits = (MAIL,)
    retry = NO_RETRIES

    def handle(self, event: Pong, ctx: Context) -> None:
        lane = "marketing" if event.n % 2 else None
        ctx.emit(MAIL, Ping(ping_id=event.ping_id, n=event.n), priority=lane)


def test_ctx_emit_with_a_priority_writes_that_lane() -> None:
    with TestPipeline([Sorter, Mailer], SETTINGS) as t:
        for n in range(4):
            t.publish(PONGS, Pong(ping_id=f"p{n}", n=n, handled_by="t"))
        t.run_until_idle()
        assert sorted(e.ping_id for e in t.outputs(MAIL, "marketing")) == ["p1", "p3"]
        assert sorted(e.ping_id for e in t.outputs(MAIL, 0)) == ["p0", "p2"]
        assert sorted(Mailer.handled) == ["p0", "p1", "p2", "p3"]


def test_emitting_to_a_lane_the_topic_lacks_dead_letters_the_input() -> None:
    class Wrong(Stage):
        consumes = PONGS
        emits = (MAIL,)
        retry = NO_RETRIES

        def handle(self, event: Pong, ctx: Context) -> None:
            ctx.emit(MAIL, Ping(ping_id=event.ping_id, n=event.n), priority="urgent")

    with TestPipeline([Wrong], SETTINGS) as t:
        t.publish(PONGS, Pong(ping_id="p", n=0, handled_by="t"))
        t.run_until_idle()
        [dead] = t.dead_letters(Wrong)
        assert "no priority 'urgent'" in dead.failure.exception_message


class Flaky(Stage):
    """Fails every marketing mail once: its retry copy comes back, from the retry topic."""

    consumes = MAIL
    retry = RetryPolicy(in_process_attempts=1, tiers=(1.0,))
    failed: ClassVar[set[str]] = set()

    def handle(self, event: Ping, ctx: Context) -> None:
        if event.ping_id not in Flaky.failed:
            Flaky.failed.add(event.ping_id)
            raise ConnectionError("smtp down")
        Mailer.handled.append(event.ping_id)


def test_a_lane_record_that_fails_is_retried_and_keeps_nothing_else_waiting() -> None:
    with TestPipeline([Flaky], SETTINGS) as t:
        t.publish(MAIL, Ping(ping_id="m", n=0), priority="marketing")
        t.publish(MAIL, Ping(ping_id="w", n=0))
        t.run_until_idle()
        assert sorted(Mailer.handled) == ["m", "w"]
        assert t.stats(Flaky).retried == 2
        assert t.dead_letters(Flaky) == []


def test_status_counts_waiting_per_lane() -> None:
    """pipeline status: each lane's waiting records, read in the lane's own group."""
    with TestPipeline([Mailer], SETTINGS) as t:
        for n in range(5):
            t.publish(MAIL, Ping(ping_id=f"m{n}", n=n), priority="marketing")
        t.publish(MAIL, Ping(ping_id="w", n=0))
        reader = StatusReader(t.settings, t.pipeline.plans, transport=t.transport)  # type: ignore[arg-type]
        with reader:
            before = reader.read().stage("mailer")
            t.run_until_idle()
            after = reader.read().stage("mailer")
    assert (before.waiting, before.lanes) == (6, (1, 0, 5))
    assert (after.waiting, after.lanes, after.committed) == (0, (0, 0, 0), 6)


def test_publishing_to_a_priority_the_topic_lacks_is_refused() -> None:
    with TestPipeline([Mailer], SETTINGS) as t, pytest.raises(ValueError, match="no priority"):
        t.publish(MAIL, Ping(ping_id="x", n=0), priority=3)


DELAYED_MAIL = Topic("test.reminders", Ping, delayed=True, priorities=3)


class Reminder(Stage):
    """Notes the lane and the broker's wall clock of each reminder it handles."""

    consumes = DELAYED_MAIL
    retry = NO_RETRIES
    seen: ClassVar[list[tuple[str, str, int]]] = []
    clock: ClassVar[list[object]] = []

    def handle(self, event: Ping, ctx: Context) -> None:
        now = self.clock[0].wall_ms()  # type: ignore[attr-defined]
        Reminder.seen.append((event.ping_id, ctx.topic, now - int(ctx.headers["delay-due-ms"])))


class Reschedule(Stage):
    """Emits each pong as a reminder 5 s later, on the lane its n names."""

    consumes = PONGS
    emits = (DELAYED_MAIL,)
    retry = NO_RETRIES

    def handle(self, event: Pong, ctx: Context) -> None:
        reminder = Ping(ping_id=event.ping_id, n=event.n)
        ctx.emit(DELAYED_MAIL, reminder, delay=5, priority=event.n)


def test_a_delayed_event_is_delivered_to_its_lane_when_due() -> None:
    """Delays and lanes combine: one set of delay tiers, each event delivered to its lane,
    not before its due time; from a publisher and from ctx.emit alike."""
    Reminder.seen.clear()
    with TestPipeline([Reminder, Reschedule], SETTINGS) as t:
        Reminder.clock[:] = [t.clock]
        t.publish(DELAYED_MAIL, Ping(ping_id="low", n=0), priority=2, delay=3)
        t.publish(DELAYED_MAIL, Ping(ping_id="top", n=0), delay=3)
        t.publish(PONGS, Pong(ping_id="mid", n=1, handled_by="t"))
        t.run_until_idle()
    lanes = {ping: topic.rsplit(".", 1)[-1] for ping, topic, _ in Reminder.seen}
    assert lanes == {"low": "p2", "top": "reminders", "mid": "p1"}
    assert all(late >= 0 for _, _, late in Reminder.seen), "none early"


class LimitedMailer(Stage):
    """One email per customer (record key) every 10 s; an email whose id says so always
    fails (retried once, then dead-lettered). Notes the topic each email was read from."""

    consumes = MAIL
    group = "limited-mailer"
    rate_limit = RateLimit(max=1, per_s=10, per_key=True)
    retry = RetryPolicy(in_process_attempts=1, tiers=(1.0,))
    seen: ClassVar[list[tuple[str, str]]] = []

    def handle(self, event: Ping, ctx: Context) -> None:
        LimitedMailer.seen.append((event.ping_id, ctx.topic))
        if event.ping_id == "doomed":
            raise ConnectionError("smtp down")


def test_a_deferred_marketing_email_comes_back_on_the_marketing_lane() -> None:
    """A busy customer's second marketing email is deferred by the per-key limit to the
    deferral topic's marketing lane and read there (in the lane's own group): the welcome
    emails waiting when it comes back go first, as for any marketing email."""
    LimitedMailer.seen.clear()
    deferral = "limited-mailer.deferred"
    with TestPipeline([LimitedMailer], SETTINGS) as t:
        t.publish(MAIL, Ping(ping_id="m1", n=0), key="busy", priority="marketing")
        t.publish(MAIL, Ping(ping_id="m2", n=0), key="busy", priority="marketing")
        t.run_until(lambda: bool(t.records(f"{deferral}.p2")), max_steps=5_000)
        assert t.records(deferral) == [], "not on lane 0 of the deferral topic"
        for n in range(5):
            t.publish(MAIL, Ping(ping_id=f"w{n}", n=n), key=f"new-{n}", priority="welcome")
        t.run_until_idle()
        order = [p for p, _ in LimitedMailer.seen]
        assert order[0] == "m1" and order[-1] == "m2", "the welcome emails first"
        assert sorted(order[1:-1]) == [f"w{n}" for n in range(5)]
        assert dict(LimitedMailer.seen)["m2"] == f"{deferral}.p2"
        assert t.lag(LimitedMailer) == (1 + 1 + 5 + 1, 0), "inputs and the copy, committed"
        reader = StatusReader(t.settings, t.pipeline.plans, transport=t.transport)  # type: ignore[arg-type]
        with reader:
            assert reader.read().stage("limited_mailer").lanes == (0, 0, 0)


def test_a_lane_record_that_fails_keeps_its_lane_through_retries_deferred_or_not() -> None:
    """The retry path keeps the lane: a marketing email that fails is retried, then
    dead-lettered, with its lane as its origin (what decoding the retry, the dead letter and
    ``pipeline dlq replay`` go by); a deferred one with its deferral lane, not lane 0."""
    LimitedMailer.seen.clear()
    with TestPipeline([LimitedMailer], SETTINGS) as t:
        t.publish(MAIL, Ping(ping_id="m1", n=0), key="busy", priority="marketing")
        t.publish(MAIL, Ping(ping_id="doomed", n=0), key="busy", priority="marketing")
        t.publish(MAIL, Ping(ping_id="doomed", n=1), key="calm", priority="marketing")
        t.run_until_idle()
        read_from = [topic for ping, topic in LimitedMailer.seen if ping == "doomed"]
        assert sorted(read_from) == sorted(["limited-mailer.deferred.p2", "test.pings.p2",
                                           *["limited-mailer.retry.1s"] * 2])  # fmt: skip
        origins = sorted(d.failure.original_topic or "" for d in t.dead_letters(LimitedMailer))
        assert origins == ["limited-mailer.deferred.p2", "test.pings.p2"]
        assert t.stats(LimitedMailer).retried == 2
