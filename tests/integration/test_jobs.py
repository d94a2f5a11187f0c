"""Job status against the real broker: transitions seen through lookups, retries and the dead
letter, a worker killed with SIGKILL, and several workers on one stage."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer

from pipeline import Publisher, jobs
from pipeline.config import Settings
from pipeline.jobs import Job, JobsQueued, JobStore, JobView
from pipeline.jobs.state import decode
from pipeline.testing import murmur2_partition
from tests.integration.app_stages import PINGS, Ping
from tests.integration.job_stages import LATER, AlwaysFails, Later, Relay, Square
from tests.integration.kit import (
    ROOT,
    group_members,
    marks,
    prepare,
    running,
    settings_env,
    unique_settings,
    wait_until,
    worker_process,
)

SPEC = "tests.integration.job_stages"


def _settings(bootstrap: str, tmp_path: Path, **overrides: Any) -> Settings:
    return unique_settings(bootstrap, jobs_store=tmp_path / "jobs.sqlite3", **overrides)


def _job(view: JobView, job_id: str, **wanted: Any) -> Job | None:
    """The view's job if every field has the wanted value (for wait_until), else None."""
    job = view.get(job_id)
    if job is None or any(getattr(job, k) != v for k, v in wanted.items()):
        return None
    return job


def _entries(settings: Settings, job_id: str) -> list[Job | None]:
    """Every entry of ``job_id`` on the jobs topic so far, in order (None: a tombstone)."""
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers,
                         "group.id": f"reader-{uuid.uuid4()}", "auto.offset.reset": "earliest",
                         "enable.partition.eof": True})  # fmt: skip
    topic = jobs.jobs_topic(settings)
    parts = len(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    consumer.subscribe([topic])
    out: list[Job | None] = []
    ended: set[int] = set()
    try:
        wait_until(lambda: _read(consumer, job_id, out, ended) >= parts, 30, "the jobs topic")
    finally:
        consumer.close()
    return out


def _read(consumer: Consumer, job_id: str, out: list[Job | None], ended: set[int]) -> int:
    for msg in consumer.consume(500, 0.2):
        if msg.error() is not None:
            ended.add(msg.partition())  # the end of a partition, for now
        elif msg.key() == job_id.encode():
            out.append(None if msg.value() is None else decode(msg.value()))
    return len(ended)


def test_a_job_is_seen_waiting_then_active_at_50_percent_then_completed_with_its_result(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Published with no worker up: waiting; a worker takes it: active at 50 % (its handler
    held at its gate); the gate opens: completed with the handler's return value. The
    module-level lookup reads the same store from any process."""
    settings = _settings(kafka_bootstrap, tmp_path)
    monkeypatch.setenv("TEST_GATES", str(tmp_path))
    prepare(settings, [Square])
    with JobView(settings) as view, JobsQueued(settings, topics=[PINGS]) as queued, \
            Publisher(settings, hooks=[queued]) as publisher:  # fmt: skip
        delivered = publisher.publish(PINGS, Ping(ping_id="p1", n=7))
        assert delivered is not None
        job_id = delivered.job_id
        waiting = wait_until(lambda: _job(view, job_id, state="waiting"), 30, "waiting")
        assert (waiting.topic, waiting.offset) == (delivered.topic, delivered.offset)
        with running(settings, [Square]):
            active = wait_until(lambda: _job(view, job_id, state="active", progress=50.0),
                                60, "active at 50 %")  # fmt: skip
            assert (active.attempt, active.note, active.stage) == (1, "half way", "square")
            assert active.worker is not None and active.worker.startswith("test-")
            (tmp_path / "p1.go").touch()
            done = wait_until(lambda: _job(view, job_id, state="completed"), 30, "completed")
        assert done.result == {"square": 49}
        assert done.created_at is not None and done.started_at is not None
        assert done.finished_at is not None and done.expires_at == done.finished_at + 3600
    assert jobs.get(job_id, settings=settings) == done
    # The command line reads the same store; --sync reads the topic into a fresh one first.
    env = settings_env(settings, PIPELINE_JOBS_STORE=str(settings.jobs_store))
    assert json.loads(_cli(env, "job", job_id, "--json")) == done.to_dict()
    listed = json.loads(_cli(env | {"PIPELINE_JOBS_STORE": str(tmp_path / "cli.sqlite3")},
                             "jobs", "--stage", "square", "--state", "completed", "--json",
                             "--sync"))  # fmt: skip
    assert [j["id"] for j in listed] == [job_id]


def _cli(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "pipeline", *args], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_job_published_with_a_delay_is_delayed_then_completed(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """``delay=``: delayed (in a delay tier) until due, then handled and completed."""
    settings = _settings(kafka_bootstrap, tmp_path)
    prepare(settings, [Later])
    with JobView(settings) as view, JobsQueued(settings, topics=[LATER]) as queued, \
            Publisher(settings, hooks=[queued]) as publisher:  # fmt: skip
        delivered = publisher.publish(LATER, Ping(ping_id="later", n=3), delay=2.0)
        assert delivered is not None
        delayed = wait_until(lambda: _job(view, delivered.job_id, state="delayed"), 30,
                             "delayed")  # fmt: skip
        assert delayed.topic == settings.topic(LATER.name)
        with running(settings, [Later]):
            done = wait_until(lambda: _job(view, delivered.job_id, state="completed"), 60,
                              "completed")  # fmt: skip
    assert (done.result, done.attempt, done.topic) == (3, 1, settings.topic(LATER.name))
    assert done.started_at is not None and done.created_at is not None
    assert done.started_at >= done.created_at + 1.0  # not before it was due (2 s, 1 s slack)


def test_a_stage_s_delayed_output_is_a_job_delayed_then_completed(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A tracking stage emits with ``delay=``: the follow-up job (the output's own id, its
    ``parent-id`` the input's) is written ``delayed`` once stored, then completed when due."""
    settings = _settings(kafka_bootstrap, tmp_path)
    prepare(settings, [Relay, Later])
    with JobView(settings) as view, running(settings, [Relay, Later]), \
            Publisher(settings) as publisher:  # fmt: skip
        delivered = publisher.publish(PINGS, Ping(ping_id="relayed", n=4))
        assert delivered is not None
        wait_until(lambda: _job(view, delivered.job_id, state="completed"), 60, "relayed")
        done = wait_until(lambda: next(iter(view.find("later", "completed", 1)), None), 60,
                          "the follow-up completed")  # fmt: skip
    assert (done.result, done.topic) == (4, settings.topic(LATER.name))
    # Two writers (the relay's tracker, then the handler's): the delayed entry is on the topic
    # whatever the order they reached it in, and a late one is dropped by readers.
    entries = [e for e in _entries(settings, done.id) if e is not None]
    delayed = [e for e in entries if e.state == "delayed"]
    assert [(e.topic, e.attempt) for e in delayed] == [(settings.topic(LATER.name), 1)]


def test_a_failing_job_retries_under_a_new_attempt_and_ends_dead_lettered(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """One retry tier: the second delivery is attempt 2; after it the job is dead-lettered
    with the handler's error, and its entries on the topic never go back."""
    settings = _settings(kafka_bootstrap, tmp_path)
    prepare(settings, [AlwaysFails])
    with JobView(settings) as view, running(settings, [AlwaysFails]), Publisher(settings) as pub:
        delivered = pub.publish(PINGS, Ping(ping_id="bad", n=1))
        assert delivered is not None
        dead = wait_until(lambda: _job(view, delivered.job_id, state="dead-lettered"), 60,
                          "dead-lettered")  # fmt: skip
    assert dead.attempt == 2
    assert dead.error == "ConnectionError: smtp refused ping bad"
    entries = [e for e in _entries(settings, delivered.job_id) if e is not None]
    orders = [e.order for e in entries]
    assert orders == sorted(orders), "written in order, never backwards"
    assert {(e.state, e.attempt) for e in entries} >= {("dead-lettered", 2)}


def test_status_survives_a_worker_killed_with_sigkill(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Worker 1 completes p1 (offset not committed yet) and is killed mid-p2. Worker 2 handles
    both again: p1's redelivery writes ``active`` under the same attempt, which no view shows
    (it stays completed); p2 goes from worker 1's active to worker 2's completed."""
    settings = _settings(kafka_bootstrap, tmp_path)
    mark_file = tmp_path / "marks"
    (tmp_path / "p1.1.go").touch()  # p1's first handling passes; its second waits
    env = settings_env(settings, TEST_MARKS=str(mark_file), TEST_GATES=str(tmp_path))
    slow_commits = env | {"PIPELINE_COMMIT_INTERVAL_S": "600"}
    prepare(settings, [Square])
    with JobView(settings) as view, Publisher(settings) as publisher:
        d1 = publisher.publish(PINGS, Ping(ping_id="p1", n=1), key="k")
        d2 = publisher.publish(PINGS, Ping(ping_id="p2", n=1), key="k")  # after p1, in order
        assert d1 is not None and d2 is not None
        with worker_process(SPEC, slow_commits, tmp_path / "w1.log") as first:
            wait_until(lambda: first.alive() and _job(view, d1.job_id, state="completed"), 60,
                       "p1 completed by worker 1")  # fmt: skip
            held = wait_until(lambda: _job(view, d2.job_id, state="active"), 30, "p2 active")
            first.kill()
        with worker_process(SPEC, env, tmp_path / "w2.log") as second:
            again = wait_until(lambda: second.alive() and _redelivered_active(settings, d1.job_id),
                               60, "worker 2's active entry for p1")  # fmt: skip
            assert again.worker != held.worker and again.attempt == 1
            fresh = JobView(settings, store=JobStore(tmp_path / "fresh.sqlite3"))
            fresh.catch_up(30)  # read past worker 2's active entry
            assert fresh.get(d1.job_id).state == "completed"  # type: ignore[union-attr]
            fresh.close()
            assert view.get(d1.job_id).state == "completed"  # type: ignore[union-attr]
            (tmp_path / "p1.2.go").touch()
            (tmp_path / "p2.go").touch()
            done = wait_until(lambda: _job(view, d2.job_id, state="completed"), 60, "p2 done")
            second.signal(signal.SIGTERM)
            assert second.wait(30) == 0, second.output()
    assert done.worker == again.worker and done.result == {"square": 1}
    assert [m[0] for m in marks(mark_file)].count("p1") == 2


def _redelivered_active(settings: Settings, job_id: str) -> Job | None:
    entries = [e for e in _entries(settings, job_id) if e is not None]
    first_worker = entries[0].worker if entries else None
    return next((e for e in entries if e.state == "active" and e.worker != first_worker), None)


def test_jobs_of_a_stage_with_two_workers_are_all_tracked(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Two workers share the stage's partitions; each records the jobs it handles, and the
    view holds every job, completed, from both."""
    settings = _settings(kafka_bootstrap, tmp_path)
    prepare(settings, [Square])
    keys = _one_key_per_partition(settings.topic_partitions)
    with JobView(settings) as view, running(settings, [Square]), running(settings, [Square]):
        group = settings.topic(Square.group_id())
        wait_until(lambda: group_members(settings, group) == 2, 60, "two workers assigned")
        with Publisher(settings) as publisher:
            sent = [publisher.publish(PINGS, Ping(ping_id=f"p{i}", n=0), key=k)
                    for i, k in enumerate(keys)]  # fmt: skip
        ids = [d.job_id for d in sent if d is not None]
        wait_until(lambda: all(_job(view, i, state="completed") for i in ids), 60, "all done")
        found = [view.get(i) for i in ids]
        listed = view.find(stage="square", state="completed", limit=100)
    assert len({j.worker for j in found if j is not None}) == 2
    assert {j.result["square"] for j in found if j is not None} == {0}
    assert sorted(j.id for j in listed) == sorted(ids)


def _one_key_per_partition(partitions: int) -> list[str]:
    keys: dict[int, str] = {}
    n = 0
    while len(keys) < partitions:
        keys.setdefault(murmur2_partition(f"k{n}".encode(), partitions), f"k{n}")
        n += 1
    return [keys[p] for p in range(partitions)]
