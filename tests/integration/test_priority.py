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
from tests.integration.kit import prepare, running, unique_settings, wait_until

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
