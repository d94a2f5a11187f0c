"""A worker whose topics are made while its consumers join (``Pipeline.start_topics``), on the
real broker, when that goes wrong: a refused CreateTopics is ``pipeline run``'s one error (not
a stage that runs on without its retry/DLQ topics and schemas), and a stop while the first
batch waits for the topics is bounded by the shutdown, not by the job, and loses nothing.

The tests decide the order: the refused job fails before or after the runners are made as it
may (both end in the same error), and the held job ends only when the test says."""

from __future__ import annotations

import signal
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from pipeline import Publisher
from pipeline import worker as worker_module
from pipeline.app import Pipeline
from pipeline.errors import KafkaError
from pipeline.kafka import KafkaAdmin, KafkaConsumer
from pipeline.kafka import transport as kafka_transport
from pipeline.ports import RawRecord
from pipeline.worker import RunOptions, Worker
from tests.integration.app_stages import PINGS, PONGS, Echo, Ping
from tests.integration.kit import read_topic, unique_settings


def test_a_create_topics_refusal_is_pipeline_runs_error_not_a_stage_running_on(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inputs exist, so the rest is made on the job's thread; the broker refuses it (a
    replication factor above its broker count): ``run_workers`` raises that error, which the
    CLI prints in one line, and returns within the shutdown."""
    settings = unique_settings(kafka_bootstrap, topic_partitions=1, topic_replication=99)
    one_replica = settings.model_copy(update={"topic_replication": 1})
    KafkaAdmin(one_replica).create([settings.topic(PINGS.name)])  # the input only
    monkeypatch.setattr(worker_module, "exit_within", lambda code: code)  # no forced exit
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(KafkaError, match="REPLICATION"):
            worker_module.run_workers(
                "tests.integration.app_stages", settings, 1, RunOptions(None, None)
            )
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def test_a_stop_while_the_first_batch_waits_for_the_topics_is_bounded_and_loses_nothing(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stage fetched its first batch; its topics are still being made (held by the
    test) when the worker is stopped: it stops within the shutdown, hands nothing out and
    commits nothing, and once the topics exist a new worker handles every record."""
    settings = unique_settings(kafka_bootstrap, topic_partitions=1)
    pipeline = Pipeline.build(settings, [Echo])
    KafkaAdmin(settings).create([settings.topic(PINGS.name)])
    with Publisher(settings) as publisher:
        for n in range(3):
            publisher.publish(PINGS, Ping(ping_id=f"p{n}", n=n))
    fetched, release = threading.Event(), threading.Event()

    class Watching(KafkaConsumer):
        def consume(self, max_records: int, timeout_s: float) -> Sequence[RawRecord]:
            records = super().consume(max_records, timeout_s)
            if records:
                fetched.set()
            return records

    real_ensure = Pipeline.ensure_topics

    def ensure_when_released(self: Pipeline, admin_: Any = None, stopping: Any = None) -> list[str]:
        assert release.wait(60), "the test never released the job"
        return real_ensure(self, admin_, stopping)

    monkeypatch.setattr(kafka_transport, "KafkaConsumer", Watching)
    monkeypatch.setattr(Pipeline, "ensure_topics", ensure_when_released)
    topics = pipeline.start_topics()
    worker = Worker(pipeline, worker_id=f"test-{uuid.uuid4().hex[:6]}", topics=topics)
    worker.start()
    try:
        assert fetched.wait(30), "the stage never fetched"
        worker.stop()
        assert worker.join(settings.shutdown_timeout_s), "the stop waited for the topics job"
        assert not worker.failed and not topics.done
        assert worker.runners[0].stats.processed == 0, "nothing handed out"
    finally:
        release.set()
        worker.stop()
        worker.join(30)
    with pytest.raises(KafkaError, match="worker stopped"):
        topics.wait()  # it made no request after the stop: the new worker makes the topics
    assert topics.join(30), "the job's thread ran on"
    again = Worker(pipeline, worker_id=f"test-{uuid.uuid4().hex[:6]}")
    again.start()
    try:
        pongs = read_topic(settings, PONGS, count=3, timeout_s=30)
    finally:
        again.stop()
        assert again.join(30), "worker did not stop within 30s"
        pipeline.close()
    assert sorted(p.ping_id for _, p in pongs) == ["p0", "p1", "p2"], "none lost"
