"""Priority lanes on the real broker: high-priority events published behind a backlog on the
low lane are handled at once, ahead of it, and nothing of either lane is lost or doubled."""

from __future__ import annotations

import threading
import time
from typing import ClassVar

from pipeline import Context, Publisher, RetryPolicy, Stage, Topic
from pipeline.app import Pipeline
from pipeline.queues import StatusReader
from tests.integration.app_stages import Ping
from tests.integration.kit import (
    group_members,
    prepare,
    running,
    unique_settings,
    wait_until,
)

BACKLOG = 4000
URGENT = 5
MAIL = Topic("test.pings", Ping, priorities=3)


class Mailer(Stage):
    """A 2 ms handler (while ``slow`` is set), recording how many low-lane events it had
    handled when each urgent one came."""

    consumes = MAIL
    group = "mailer"
    retry = RetryPolicy(in_process_attempts=1, tiers=())
    lock = threading.Lock()
    slow = threading.Event()
    seen: ClassVar[dict[str, int]] = {}  # ping_id -> times handled
    low_before: ClassVar[dict[str, int]] = {}  # urgent ping_id -> low-lane handled before it

    def handle(self, event: Ping, ctx: Context) -> None:
        if self.slow.is_set():
            time.sleep(0.002)
        with self.lock:
            self.seen[event.ping_id] = self.seen.get(event.ping_id, 0) + 1
            if not event.ping_id.startswith("low"):
                self.low_before[event.ping_id] = self.low_handled()

    @classmethod
    def low_handled(cls) -> int:
        return sum(1 for p in cls.seen if p.startswith("low"))


def test_urgent_events_overtake_a_low_lane_backlog(kafka_bootstrap: str) -> None:
    Mailer.seen.clear()
    Mailer.low_before.clear()
    Mailer.slow.set()
    settings = unique_settings(kafka_bootstrap, batch_size=100)
    prepare(settings, [Mailer])
    with Publisher(settings) as publisher:
        for n in range(BACKLOG):
            publisher.publish(MAIL, Ping(ping_id=f"low{n}", n=n), key=f"k{n}", priority=2,
                              wait=False)  # fmt: skip
        publisher.flush()
        [plan] = Pipeline.build(settings, [Mailer]).plans
        with StatusReader(settings, [plan]) as reader:  # pipeline status, per lane
            assert reader.read().stage("mailer").lanes == (0, 0, BACKLOG)
        with running(settings, [Mailer]):
            wait_until(lambda: Mailer.low_handled() >= 200, 60, "the backlog to be draining")
            at_publish = Mailer.low_handled()
            for n in range(URGENT):
                publisher.publish(MAIL, Ping(ping_id=f"urgent{n}", n=n), key=f"u{n}")
                publisher.publish(MAIL, Ping(ping_id=f"mid{n}", n=n), key=f"u{n}", priority=1)
            wait_until(lambda: len(Mailer.low_before) == 2 * URGENT, 60, "the urgent events")
            # FIFO would have handled the whole backlog first; these came after a batch or so.
            # The margin is relative: a slower machine drains the backlog slower too.
            remaining = BACKLOG - at_publish
            for ping_id, low in Mailer.low_before.items():
                assert low - at_publish < remaining / 2, (ping_id, low, at_publish)
            Mailer.slow.clear()  # the point is made: drain the rest fast
            wait_until(lambda: len(Mailer.seen) == BACKLOG + 2 * URGENT, 60, "every event")
            with StatusReader(settings, [plan]) as reader:
                wait_until(lambda: reader.read().stage("mailer").lanes == (0, 0, 0), 30,
                           "every lane's group to commit")  # fmt: skip
    assert set(Mailer.seen.values()) == {1}, "an event was handled twice"


class Counter(Stage):
    """Counts every event it handles, whichever worker and lane."""

    consumes = MAIL
    group = "counter"
    retry = RetryPolicy(in_process_attempts=1, tiers=())
    lock = threading.Lock()
    seen: ClassVar[dict[str, int]] = {}

    def handle(self, event: Ping, ctx: Context) -> None:
        with self.lock:
            self.seen[event.ping_id] = self.seen.get(event.ping_id, 0) + 1


def test_two_workers_share_every_lane_and_handle_each_event_once(kafka_bootstrap: str) -> None:
    """Each lane is balanced in its own group: with two workers, both hold partitions of every
    lane, and every event of every lane is handled once."""
    Counter.seen.clear()
    settings = unique_settings(kafka_bootstrap)
    prepare(settings, [Counter])
    groups = [settings.topic(g) for g in ("counter", "counter.p1", "counter.p2")]
    with running(settings, [Counter]), running(settings, [Counter]):
        wait_until(lambda: all(group_members(settings, g) == 2 for g in groups), 60,
                   "both workers in every lane's group")  # fmt: skip
        with Publisher(settings) as publisher:
            for n in range(300):
                publisher.publish(MAIL, Ping(ping_id=f"e{n}", n=n), key=f"k{n}",
                                  priority=n % 3, wait=False)  # fmt: skip
            publisher.flush()
        wait_until(lambda: len(Counter.seen) == 300, 60, "every event")
    assert set(Counter.seen.values()) == {1}, "an event was handled twice"
