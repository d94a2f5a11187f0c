"""On the real broker, an event published with tracing on and handled by a 3-stage chain of
in-process stages is one connected trace: send, then process at each stage, each the child of
the one before (the outputs carry each process span's context)."""

from __future__ import annotations

import uuid

from pipeline.app import Pipeline
from pipeline.publisher import Publisher
from pipeline.worker import Worker
from tests.integration.app_stages import PINGS, PONGS, SEEN, Ping
from tests.integration.kit import unique_settings, wait_until
from tests.tracekit import CHAIN, SECRET, assert_one_connected_chain, in_memory


def test_a_chain_of_three_stages_is_one_connected_trace(kafka_bootstrap: str) -> None:
    settings = unique_settings(kafka_bootstrap)
    tracing, exporter = in_memory()
    pipeline = Pipeline.build(settings, CHAIN, hooks=[tracing])
    pipeline.ensure_topics()
    worker = Worker(pipeline, worker_id=f"test-{uuid.uuid4().hex[:6]}")
    worker.start()
    try:
        with Publisher(settings, hooks=[tracing]) as publisher:
            publisher.publish(PINGS, Ping(ping_id=SECRET, n=1), key="k1")
        wait_until(lambda: len(exporter.get_finished_spans()) >= 4, 60, "four spans")
    finally:
        worker.stop()
        assert worker.join(30), "worker did not stop within 30s"
        pipeline.close()
    assert not worker.failed
    topics = [settings.topic(t.name) for t in (PINGS, PONGS, SEEN)]
    assert_one_connected_chain(exporter.get_finished_spans(), topics)
