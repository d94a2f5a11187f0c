"""Point-to-point sharing within a group, and fan-out across groups."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pipeline import Publisher
from tests.integration.app_stages import PINGS, PONGS, SEEN, FanOutA, FanOutB, FanOutC, Ping
from tests.integration.kit import (
    group_members,
    read_topic,
    running,
    settings_env,
    unique_settings,
    wait_until,
    worker_process,
)


def test_two_workers_share_a_group_and_handle_each_event_once(kafka_bootstrap: str, tmp_path: Path) -> None:
    """`pipeline run --workers 2` splits the partitions; every event is handled by exactly one
    of the two processes, and both take part."""
    settings = unique_settings(kafka_bootstrap)
    env = settings_env(settings, TEST_DELAY_MS="2")
    with worker_process("tests.integration.app_stages", env, tmp_path / "w.log", workers=2) as w:
        group = settings.topic("app_stages.echo")
        wait_until(lambda: w.alive() and group_members(settings, group) == 2, 60, "two members with partitions")
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
