"""What happens to work in flight when a worker dies or is asked to stop."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from pipeline import Publisher
from pipeline.kafka import LagMonitor
from tests.integration.app_stages import PINGS, PONGS, Echo, Ping
from tests.integration.kit import (
    group_members,
    marks,
    prepare,
    read_topic,
    settings_env,
    unique_settings,
    wait_until,
    worker_process,
)

SPEC = "tests.integration.app_stages"
GROUP = "app_stages.echo"


def test_event_is_redelivered_when_its_worker_dies_before_outputs_are_acked(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A worker killed (SIGKILL) after handling an event but before the broker acknowledged
    its output did not commit it: the next worker handles it again and the output appears."""
    settings = unique_settings(kafka_bootstrap)
    mark_file = tmp_path / "marks"
    # The producer holds outputs for a minute, so the kill lands between handle and ack.
    held = settings_env(
        settings,
        TEST_MARKS=str(mark_file),
        PIPELINE_PRODUCER_CONFIG=json.dumps({"linger.ms": "60000"}),
    )
    prepare(settings, [Echo])
    with worker_process(SPEC, held, tmp_path / "w1.log") as first:
        wait_until(
            lambda: first.alive() and group_members(settings, settings.topic(GROUP)),
            60,
            "the first worker to join",
        )
        with Publisher(settings) as publisher:
            publisher.publish(PINGS, Ping(ping_id="doomed", n=1))
        wait_until(lambda: first.alive() and marks(mark_file), 60, "the first worker to handle it")
        assert read_topic(settings, PONGS, count=1, timeout_s=1) == [], "output escaped early"
        first.kill()
    [(_, _, first_pid)] = marks(mark_file)

    normal = settings_env(settings, TEST_MARKS=str(mark_file))
    with worker_process(SPEC, normal, tmp_path / "w2.log") as second:
        pongs = read_topic(settings, PONGS, count=1, timeout_s=60)
        second.signal(signal.SIGTERM)
        assert second.wait(30) == 0, second.output()
    handled = marks(mark_file)
    assert [m[0] for m in handled] == ["doomed", "doomed"]
    assert handled[1][2] != first_pid
    assert handled[0][1] == handled[1][1], "the redelivered event kept its event id"
    assert [p.ping_id for _, p in pongs] == ["doomed"]


def test_sigterm_finishes_work_in_flight_commits_and_exits_zero(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """SIGTERM while outputs are still lingering in the producer: the worker waits for their
    acknowledgement, commits, leaves the group and exits 0; nothing is left uncommitted."""
    settings = unique_settings(kafka_bootstrap)
    mark_file = tmp_path / "marks"
    env = settings_env(
        settings,
        TEST_MARKS=str(mark_file),
        PIPELINE_PRODUCER_CONFIG=json.dumps({"linger.ms": "3000"}),
    )
    prepare(settings, [Echo])
    with worker_process(SPEC, env, tmp_path / "w.log") as worker:
        with Publisher(settings) as publisher:
            for i in range(30):
                publisher.publish(PINGS, Ping(ping_id=f"p{i}", n=i), wait=False)
        wait_until(lambda: worker.alive() and len(marks(mark_file)) == 30, 60, "30 events handled")
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0, worker.output()
    assert "received SIGTERM" in worker.output()
    assert len(read_topic(settings, PONGS, count=30, timeout_s=30)) == 30
    monitor = LagMonitor(settings)
    try:
        done, lag = monitor.lag(settings.topic(GROUP), [settings.topic(PINGS.name)])
    finally:
        monitor.close()
    assert (done, lag) == (30, 0)


def test_workers_stop_when_their_supervisor_is_killed(kafka_bootstrap: str, tmp_path: Path) -> None:
    """`pipeline run --workers 2` killed with -9: its children notice, shut down gracefully and
    leave the group, rather than run on as orphans nobody supervises."""
    settings = unique_settings(kafka_bootstrap)
    log = tmp_path / "w.log"
    group = settings.topic(GROUP)
    with worker_process(SPEC, settings_env(settings), log, workers=2) as w:
        wait_until(lambda: w.alive() and group_members(settings, group) == 2, 60, "two members")
        w.kill()
        wait_until(lambda: log.read_text().count("is gone: shutting down") == 2, 30,
                   "both children saw their supervisor go")  # fmt: skip
        wait_until(lambda: group_members(settings, group) == 0, 30, "the children left the group")
        wait_until(lambda: log.read_text().count(": stopped") >= 2, 30, "graceful stops")
