"""Point-to-point sharing within a group, and fan-out across groups."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest

from pipeline import Context, Publisher
from tests.integration.app_stages import PINGS, PONGS, SEEN, Echo, FanOutA, FanOutB, FanOutC, Ping
from tests.integration.kit import (
    group_members,
    prepare,
    read_to_end,
    read_topic,
    running,
    settings_env,
    unique_settings,
    wait_until,
    worker_process,
)


def test_two_workers_share_a_group_and_handle_each_event_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """`pipeline run --workers 2` splits the partitions; every event is handled by exactly one
    of the two processes, and both take part."""
    settings = unique_settings(kafka_bootstrap)
    env = settings_env(settings, TEST_DELAY_MS="2")
    with worker_process("tests.integration.app_stages", env, tmp_path / "w.log", workers=2) as w:
        group = settings.topic("app_stages.echo")
        wait_until(
            lambda: w.alive() and group_members(settings, group) == 2,
            60,
            "two members with partitions",
        )
        with Publisher(settings) as publisher:
            for i in range(400):
                publisher.publish(PINGS, Ping(ping_id=f"p{i}", n=i), key=f"k{i}", wait=False)
        pongs = read_topic(settings, PONGS, count=400, timeout_s=60)
        assert w.proc.poll() is None, w.output()
    per_ping = Counter(p.ping_id for _, p in pongs)
    assert len(per_ping) == 400
    assert set(per_ping.values()) == {1}, "an event was handled twice"
    assert len({p.handled_by for _, p in pongs}) == 2, "one worker did all the work"


def test_three_groups_on_one_topic_each_get_every_event(kafka_bootstrap: str) -> None:
    """Stages in different groups on the same topic each receive all events (pub/sub)."""
    settings = unique_settings(kafka_bootstrap)
    with running(settings, [FanOutA, FanOutB, FanOutC]), Publisher(settings) as publisher:
        for i in range(60):
            publisher.publish(PINGS, Ping(ping_id=f"p{i}", n=i), wait=False)
        publisher.flush()
        seen = read_topic(settings, SEEN, count=180, timeout_s=60)
    by_stage = Counter(s.stage for _, s in seen)
    assert by_stage == {"a": 60, "b": 60, "c": 60}
    assert len({(s.stage, s.ping_id) for _, s in seen}) == 180


class PacedEcho(Echo):
    """Echo that slows to one event per PACE_S once it has handled UNPACED events, until the test
    says the newcomer has partitions: the first worker cannot drain the backlog before the second
    joins, however the machine is loaded (the pace bounds it, no luck involved)."""

    group = "paced-echo"
    handled = 0
    newcomer_assigned = threading.Event()

    def handle(self, event: Ping, ctx: Context) -> None:
        cls = type(self)
        cls.handled += 1
        if cls.handled > UNPACED and not cls.newcomer_assigned.is_set():
            cls.newcomer_assigned.wait(PACE_S)
        super().handle(event, ctx)


UNPACED = 50
PACE_S = 0.1  # 550 paced events: a join has 55 s before the first worker could drain them


def test_a_worker_joining_mid_stream_causes_no_duplicates(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second member joins while the first is busy: the first commits what it finished when
    its partitions are revoked, so the newcomer starts exactly there and nothing is redone."""
    monkeypatch.setattr(PacedEcho, "handled", 0)
    monkeypatch.setattr(PacedEcho, "newcomer_assigned", threading.Event())
    # Periodic commits are made rare, so only the commit on revoke can prevent duplicates.
    settings = unique_settings(
        kafka_bootstrap, topic_partitions=6, batch_size=20, commit_interval_s=60
    )
    prepare(settings, [PacedEcho])
    with Publisher(settings) as publisher:
        for i in range(600):
            publisher.publish(PINGS, Ping(ping_id=f"p{i}", n=i), key=f"k{i}", wait=False)
    with running(settings, [PacedEcho]) as first:
        wait_until(lambda: first.runners[0].stats.processed >= 50, 30, "the first worker to start")
        with running(settings, [PacedEcho]) as second:
            newcomer = second.runners[0].stats
            wait_until(lambda: newcomer.assigned > 0, 60, "the newcomer's partitions")
            PacedEcho.newcomer_assigned.set()
            read_topic(settings, PONGS, count=600, timeout_s=60)
    # Both stopped: nothing more is written, so reading to the end counts every pong, extras
    # included (a re-read with a short timeout could miss records on a slow machine).
    pongs = read_to_end(settings, PONGS)
    per_ping = Counter(p.ping_id for _, p in pongs)
    assert [k for k, n in per_ping.items() if n > 1] == [], "events handled twice"
    assert len(per_ping) == 600
    assert second.runners[0].stats.processed > 0, "the newcomer never got a partition"
