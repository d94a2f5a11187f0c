"""Cron schedules on the real broker: each tick fires exactly once across worker processes,
while the owner is killed with -9 and another takes over."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient
from typer.testing import CliRunner

from pipeline import Hook
from pipeline.app import Pipeline
from pipeline.cli import app
from pipeline.config import Settings
from pipeline.scheduler import Fired
from pipeline.schedules import to_ms
from pipeline.schedulestate import read_state, state_topic
from pipeline.transport import kafka
from pipeline.worker import Worker
from tests.integration.kit import (
    WorkerProcess,
    ensure_visible_topics,
    read_to_end,
    settings_env,
    unique_settings,
    wait_until,
    worker_process,
)
from tests.integration.schedule_stages import SCHEDULES, STAGES, TICKS

SPEC = "tests.integration.schedule_stages"
# Ownership moves when a killed owner's session times out: the broker's minimum, to keep the
# test short.
FAST_FAILOVER = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"}


def committed_ticks(settings: Settings) -> list[int]:
    """The ``n`` (tick, epoch seconds) of every committed record, read_committed to the end."""
    return [event.n for _, event in read_to_end(settings, TICKS)]


def owner_client(settings: Settings) -> str | None:
    """The client id of the group member holding the schedules' partition, if any."""
    group = state_topic(settings)
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    try:
        desc: Any = admin.describe_consumer_groups([group])[group].result(10)
    except Exception:
        return None
    for member in desc.members:
        if member.assignment and member.assignment.topic_partitions:
            return str(member.client_id)
    return None


def owner_of(settings: Settings, workers: list[WorkerProcess]) -> WorkerProcess:
    """The worker process that owns the schedules (its client id ends with its pid)."""

    def find() -> WorkerProcess | None:
        client = owner_client(settings)
        for w in workers:
            if w.alive() and client and client.endswith(f"-{w.proc.pid}"):
                return w
        return None

    found: WorkerProcess = wait_until(find, 60, "an owner of the schedules")
    return found


def test_every_tick_fires_exactly_once_while_the_owner_is_killed_twice(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A cron ticking every second for a minute, 3 worker processes, the owner killed with -9
    twice: read read_committed, the ticks from the first to the last are each there exactly
    once, with none missing, including those that came due while nobody owned the schedules."""
    settings = unique_settings(kafka_bootstrap, topic_partitions=1, consumer_config=FAST_FAILOVER)
    pipeline = Pipeline.from_spec(SPEC, settings)
    ensure_visible_topics(pipeline)
    pipeline.close()
    env = settings_env(settings, PIPELINE_CONSUMER_CONFIG=str(FAST_FAILOVER).replace("'", '"'))
    with ExitStack() as stack:
        workers = [
            stack.enter_context(worker_process(SPEC, env, tmp_path / f"w{i}.log")) for i in range(3)
        ]
        all_workers = list(workers)
        kills: list[int] = []
        for _ in range(2):
            owner = owner_of(settings, workers)
            # It fires: at least two ticks after the last kill (or the start).
            floor = max(kills, default=0)
            wait_until(lambda floor=floor: len([n for n in committed_ticks(settings) if n > floor])
                       >= 2, 60, "ticks from the owner")  # fmt: skip
            os.kill(owner.proc.pid, signal.SIGKILL)
            owner.proc.wait(10)
            kills.append(max(committed_ticks(settings)))
            workers.remove(owner)
        last_kill = kills[-1]

        def done() -> bool:  # three ticks from the last owner, and a minute of ticks in all
            ticks = committed_ticks(settings)
            return len([n for n in ticks if n > last_kill]) >= 3 and max(ticks) - min(ticks) >= 60

        wait_until(done, 90, "ticks after the second takeover")
        for w in workers:
            w.signal(signal.SIGTERM)
        for w in workers:
            assert w.wait(30) == 0, w.output()
    took_over = [w for w in all_workers if "schedules: taken over by" in w.output()]
    assert len(took_over) == 3, "each of the three workers owned the schedules in turn"
    ticks = committed_ticks(settings)
    counts = Counter(ticks)
    assert [n for n, c in counts.items() if c > 1] == [], "ticks fired more than once"
    assert sorted(ticks) == list(range(min(ticks), max(ticks) + 1)), "ticks missing"
    assert max(ticks) - min(ticks) >= 60, "a minute of ticks"


def test_the_cli_lists_pauses_triggers_and_resumes_a_running_schedule(
    kafka_bootstrap: str,
) -> None:
    """`pipeline schedules pause` stops the ticks (the owner marks them skipped), `trigger`
    fires one event even while paused, `resume` starts the ticks again, and `list` says so."""
    settings = unique_settings(kafka_bootstrap, topic_partitions=1)
    env = settings_env(settings)
    runner = CliRunner()

    def cli(env: dict[str, str], *args: str) -> Any:  # in-process: no interpreter start-up
        return runner.invoke(app, list(args), env=env)

    pipeline = Pipeline.from_spec(SPEC, settings)
    ensure_visible_topics(pipeline)
    worker = Worker(pipeline, worker_id="cli-test")
    worker.start()
    stages = f"--stages={SPEC}"
    try:
        wait_until(lambda: len(committed_ticks(settings)) >= 2, 60, "the first ticks")
        assert cli(env, "schedules", "pause", "every-second", stages).exit_code == 0
        paused_at = time.time()
        log = kafka(settings).topic_log()

        def skipped_while_paused() -> bool:  # the owner marks ticks handled, fires none
            through = read_state(log, state_topic(settings)).through_ms["every-second"]
            return through / 1000 >= paused_at + 2

        wait_until(skipped_while_paused, 30, "ticks skipped while paused")
        assert max(committed_ticks(settings)) <= paused_at + 1.5
        listed = cli(env, "schedules", "list", stages, "--json")
        assert json.loads(listed.stdout)[0]["state"] == "paused", listed.output

        triggered = cli(env, "schedules", "trigger", "every-second", stages)
        assert triggered.exit_code == 0, triggered.output
        extra = lambda: [e for _, e in read_to_end(settings, TICKS) if "." in e.ping_id]  # noqa: E731
        wait_until(lambda: len(extra()) == 1, 30, "the triggered event")

        assert cli(env, "schedules", "resume", "every-second", stages).exit_code == 0
        resumed_at = time.time()
        wait_until(lambda: max(committed_ticks(settings)) > resumed_at, 30, "ticks again")
    finally:
        worker.stop()
        assert worker.join(30)
        pipeline.close()
    assert not worker.failed
    assert len(extra()) == 1, "a trigger fires once"
    regular = [n for _, e in read_to_end(settings, TICKS) if "." not in e.ping_id
               for n in [e.n]]  # fmt: skip
    assert len(regular) == len(set(regular))


def test_a_zombie_owner_is_fenced_by_the_real_broker_and_fires_nothing_twice(
    kafka_bootstrap: str,
) -> None:
    """Two schedulers both believe they own the schedules (a split brain): the one that took
    over last fenced the other through init_transactions, whose next transaction fails with
    ProducerFencedError; the ticks read read_committed are each there once, none missing."""
    settings = unique_settings(kafka_bootstrap, topic_partitions=1)
    pipeline = Pipeline.from_spec(SPEC, settings)
    ensure_visible_topics(pipeline)
    zombie, successor = pipeline.scheduler("zombie"), pipeline.scheduler("successor")
    assert zombie is not None and successor is not None
    try:
        wait_until(lambda: zombie.step(0.2) or zombie.owner, 60, "the first owner")
        wait_until(lambda: zombie.step(0.2) or len(zombie.fired) >= 2, 30, "its ticks")
        successor.on_assign([(state_topic(settings), 0)])  # as a group split in two would
        wait_until(lambda: successor.step(0.2) or successor.owner, 30, "the second owner")
        wait_until(lambda: zombie.step(0.2) or not zombie.owner, 30, "the zombie fenced")
        fenced_at = len(zombie.fired)
        wait_until(lambda: successor.step(0.2) or len(successor.fired) >= 3, 30, "new ticks")
        assert len(zombie.fired) == fenced_at
    finally:
        zombie.close()
        successor.close()
        pipeline.close()
    ticks = committed_ticks(settings)
    assert len(ticks) == len(set(ticks)), "ticks fired more than once"
    assert sorted(ticks) == list(range(min(ticks), max(ticks) + 1)), "ticks missing"
    fired = [to_ms(f.tick) // 1000 for f in (*zombie.fired, *successor.fired)]
    assert sorted(fired) == sorted(ticks)


class Heard(Hook):
    def __init__(self) -> None:
        self.fired: list[Fired] = []

    def on_schedule_fired(self, fired: Fired) -> None:
        self.fired.append(fired)


def test_the_fired_hook_hears_exactly_the_ticks_committed_on_the_broker(
    kafka_bootstrap: str,
) -> None:
    """``on_schedule_fired`` is told of a tick after its transaction committed: what the hook
    heard is what ``read_committed`` readers see, each tick once."""
    settings = unique_settings(kafka_bootstrap, topic_partitions=1)
    heard = Heard()
    pipeline = Pipeline.build(settings, STAGES, hooks=[heard], schedules=SCHEDULES)
    ensure_visible_topics(pipeline)
    scheduler = pipeline.scheduler("heard")
    assert scheduler is not None
    try:
        wait_until(lambda: scheduler.step(0.2) or len(heard.fired) >= 3, 60, "three ticks")
    finally:
        scheduler.close()
        pipeline.close()
    ticks = committed_ticks(settings)
    assert sorted(to_ms(f.tick) // 1000 for f in heard.fired) == sorted(ticks)
    assert len(ticks) == len(set(ticks)) >= 3
