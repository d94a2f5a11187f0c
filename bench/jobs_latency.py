"""Job status on a real broker: lookup latency after warm-up, and how soon a transition is
visible to a lookup (issue 14: p99 <= 20 ms, within 1 s). A phase of ``make bench``
(``jobs_get_p99_ms`` and ``jobs_visible_p99_s`` in its summary), or on its own:

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 .venv/bin/python -m bench.jobs_latency

1. Fill the jobs topic with ``--jobs`` entries (produced as a tracker's writer does), let a
   ``JobView`` catch up, then time ``--lookups`` lookups of random ids two ways: on the view's
   open store (``view.get``, a web app holding a view) and ``pipeline.jobs.get`` (the module
   function a separate process or script calls; it keeps one reader per store file).
2. Run a tracking stage in-process with a view following the topic; publish ``--events``
   events one at a time and, for each, poll the store (every 1 ms) until its job shows
   ``completed``: visibility lag = the moment seen - the job's ``finished_at`` (the worker's
   wall clock: same machine, so the clocks agree), i.e. writer flush + produce + fetch + apply.

Topics get a unique prefix and are deleted at the end. Prints one JSON line with the
percentiles.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from pipeline import Context, Publisher, Stage, jobs
from pipeline.app import Pipeline
from pipeline.config import Settings, load_settings
from pipeline.jobs import JobTracking, JobView
from pipeline.jobs.state import Job, encode
from pipeline.jobs.writer import ensure_jobs_topic
from pipeline.transport import kafka
from pipeline.worker import Worker
from tests.integration.app_stages import PINGS, Ping

ROOT = Path(__file__).resolve().parents[1]


class Tracked(Stage):
    consumes = PINGS
    group = "bench.jobs"
    track_jobs = JobTracking()

    def handle(self, event: Ping, ctx: Context) -> dict[str, int]:
        ctx.progress(50)
        return {"n": event.n}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def fill(settings: Settings, count: int) -> list[str]:
    transport = kafka(settings)
    topic = ensure_jobs_topic(settings, transport)
    producer = transport.producer("bench-fill")
    ids = [str(uuid.uuid4()) for _ in range(count)]
    now = time.time()
    for i, job_id in enumerate(ids):
        job = Job(job_id, "completed", 1, "bench", "bench.in", i % 6, i, result={"i": i},
                  updated_at=now, finished_at=now, expires_at=now + 86_400)  # fmt: skip
        producer.produce(topic, encode(job), job_id.encode(), None, lambda e, m: None)
    producer.flush(60)
    return ids


def time_lookups(settings: Settings, view: JobView, ids: list[str], n: int) -> dict[str, float]:
    rng = random.Random(1)
    held, opened = [], []
    for _ in range(200):  # warm-up: page cache, statement cache
        view.get(rng.choice(ids))
    for _ in range(n):
        job_id = rng.choice(ids)
        t0 = time.perf_counter()
        assert view.get(job_id) is not None
        held.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        assert jobs.get(job_id, settings=settings) is not None
        opened.append((time.perf_counter() - t0) * 1000)
    return {
        "view_get_p50_ms": statistics.median(held),
        "view_get_p99_ms": pct(held, 0.99),
        "jobs_get_p50_ms": statistics.median(opened),
        "jobs_get_p99_ms": pct(opened, 0.99),
    }


def visibility(settings: Settings, view: JobView, events: int) -> dict[str, float]:
    pipeline = Pipeline.build(settings, [Tracked])
    pipeline.ensure_topics()
    worker = Worker(pipeline, worker_id="bench")
    worker.start()
    lags: list[float] = []
    try:
        with Publisher(settings) as publisher:
            for i in range(events):
                delivered = publisher.publish(PINGS, Ping(ping_id=f"p{i}", n=i))
                assert delivered is not None
                deadline = time.monotonic() + 30
                while True:
                    job = view.get(delivered.job_id)
                    if job is not None and job.state == "completed":
                        lags.append(time.time() - (job.finished_at or 0.0))
                        break
                    if time.monotonic() > deadline:
                        raise SystemExit(f"job {delivered.job_id} not completed after 30 s")
                    time.sleep(0.001)
    finally:
        worker.stop()
        worker.join(30)
        pipeline.close()
    warm = lags[5:]  # the first few include the stage's group join
    return {
        "visible_p50_s": statistics.median(warm),
        "visible_p99_s": pct(warm, 0.99),
        "visible_max_s": max(warm),
    }


def measure(bootstrap: str | None, entries: int, lookups: int, events: int) -> dict[str, float]:
    """Both measurements on topics of their own (deleted at the end), in a temporary store."""
    with tempfile.TemporaryDirectory() as tmp:
        overrides: dict[str, object] = {
            "topic_prefix": f"bench-jobs-{uuid.uuid4().hex[:8]}.",
            "schemas_dir": ROOT / "tests" / "schemas",
            "jobs_store": Path(tmp) / "jobs.sqlite3",
            "batch_timeout_s": 0.05,
            "commit_interval_s": 0.5,
        }
        if bootstrap:
            overrides["bootstrap_servers"] = bootstrap
        settings = load_settings(**overrides)
        try:
            return _measure(settings, entries, lookups, events)
        finally:
            admin = kafka(settings).admin()
            admin.delete([t for t in admin.topics() if t.startswith(settings.topic_prefix)])


def _measure(settings: Settings, entries: int, lookups: int, events: int) -> dict[str, float]:
    ids = fill(settings, entries)
    view = JobView(settings)
    t0 = time.perf_counter()
    view.catch_up(120)
    out: dict[str, float] = {"jobs": entries, "catch_up_s": time.perf_counter() - t0}
    view.start()
    try:
        out |= time_lookups(settings, view, ids, lookups)
        out |= visibility(settings, view, events)
        assert view.store.count() == entries + events
    finally:
        view.close()
    return {k: round(v, 4) for k, v in out.items()}


def headline(figures: dict[str, float]) -> dict[str, float]:
    """The bench summary's figures: ``pipeline.jobs.get``'s p99 (target: 20 ms) and how soon a
    transition is visible, p99 (target: 1 s)."""
    return {"jobs_get_p99_ms": figures["jobs_get_p99_ms"],
            "jobs_visible_p99_s": figures["visible_p99_s"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", default=None, help="default: the settings' servers")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--lookups", type=int, default=5_000)
    parser.add_argument("--events", type=int, default=200)
    args = parser.parse_args()
    print(json.dumps(measure(args.bootstrap, args.jobs, args.lookups, args.events)))


if __name__ == "__main__":
    main()
