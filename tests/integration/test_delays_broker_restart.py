"""Delayed events survive a broker restart: interleaved delays of 2-10 s published to a private
broker, which is stopped (controlled shutdown) and started again while most are still in the
delay tiers. Every event not cancelled arrives, none before its due time, each at least once
(a move is at-least-once: a duplicate is the same event, with the same event id); the
cancelled one never does.

The broker is the test's own (``chaos.broker.PrivateBroker``, the chaos runner's restartable
one-node cluster, on free ports under the test's tmp dir): restarting the session's broker
would break every other test using it. Its starts cost about 10-20 s each on a loaded box.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from chaos.broker import PrivateBroker
from pipeline import Context, Publisher, RetryPolicy, Settings, Stage, Topic
from pipeline.delays import cancel_topic
from pipeline.kafka import KafkaAdmin
from tests.integration.app_stages import Ping
from tests.integration.kit import (
    group_members,
    read_to_end,
    running,
    unique_settings,
    wait_until,
)
from tests.integration.private_broker import private_broker_at

# Two broker starts on a loaded 2-core box, the delays (10 s at most) and the catch-up after.
pytestmark = pytest.mark.timeout(180)

DELAYED = Topic("test.delayed", Ping, key="ping_id", id_field="ping_id", delayed=True)


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    with private_broker_at(tmp_path, first=29692) as broker:
        yield broker


class Receive(Stage):
    consumes = DELAYED
    group = "receive-delayed-restart"
    retry = RetryPolicy(in_process_attempts=1, tiers=())
    lock: ClassVar[threading.Lock] = threading.Lock()
    got: ClassVar[list[tuple[str, str, int, int]]] = []  # (ping id, event id, handled ms, due)

    def handle(self, event: Ping, ctx: Context) -> None:
        seen = (event.ping_id, ctx.event_id, time.time_ns() // 1_000_000,
                int(ctx.headers["delay-due-ms"]))  # fmt: skip
        with Receive.lock:
            Receive.got.append(seen)


def _ids() -> set[str]:
    with Receive.lock:
        return {g[0] for g in Receive.got}


def test_delayed_events_survive_a_broker_restart(private_broker: PrivateBroker) -> None:
    Receive.got = []
    settings: Settings = unique_settings(private_broker.bootstrap)
    rand = random.Random(13)
    plan = [(f"e{i}", 2 + (i * 7919 % 8000) / 1000) for i in range(40)]  # 2-10 s
    rand.shuffle(plan)
    cancelled = next(p for p, d in plan if 6 < d < 9)  # due well after the restart began
    with running(settings, [Receive]) as worker:
        admin = KafkaAdmin(settings)
        wait_until(lambda: cancel_topic(settings.topic(DELAYED.name)) in admin.topics(), 30,
                   "the cancel topic")  # fmt: skip
        mover = settings.topic(f"{DELAYED.name}.delay")
        wait_until(lambda: group_members(settings, mover) >= 1, 30, "the mover's assignment")
        with Publisher(settings) as publisher:
            for ping_id, delay_s in plan:
                publisher.publish(DELAYED, Ping(ping_id=ping_id, n=0), delay=delay_s, wait=False)
            publisher.flush()
            publisher.cancel(DELAYED, cancelled)
        published = time.time()
        # Mid-way: the first short delays are out, most events still wait in their tiers.
        wait_until(lambda: len(_ids()) >= 2, 30, "the first deliveries")
        stop_ms = time.time_ns() // 1_000_000
        restart_s = private_broker.restart()
        wanted = {p for p, _ in plan} - {cancelled}
        wait_until(lambda: wanted <= _ids(), 60, "every delayed event after the restart")
        # The cancelled one was due within 9 s of its publish: give it a moment to show up
        # wrongly after the last wanted one, then check.
        wait_until(lambda: time.time() > published + 10, 15, "the cancelled one's due time")
        assert not worker.failed, "a stage crashed"
    got = list(Receive.got)
    late = [handled - due for _, _, handled, due in got]
    # Due after the broker began to stop (and none is early): in the delay tiers, or moved and
    # not yet read, while the broker was down.
    pending = len({ping_id for ping_id, _, _, due in got if due > stop_ms})
    print(f"\nbroker restart took {restart_s:.1f} s with {pending} of {len(plan)} pending; "
          f"{len(got)} deliveries of {len(wanted)} events; lateness ms min {min(late)} "
          f"max {max(late)}")  # fmt: skip
    assert min(late) >= 0, f"delivered early: {min(late)} ms"
    assert pending >= 10, "the restart came too late to test the tiers"
    assert {g[0] for g in got} == wanted, "lost, or the cancelled one delivered"
    ids: dict[str, set[str]] = {}
    for ping_id, event_id, _, _ in got:
        ids.setdefault(ping_id, set()).add(event_id)
    assert all(len(v) == 1 for v in ids.values()), "a duplicate with another event id"
    delivered = {r.key() for r, _ in read_to_end(settings, DELAYED)}
    assert cancelled.encode() not in delivered and len(delivered) == len(wanted)
