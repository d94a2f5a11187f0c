"""Exactly-once stages: outputs and input offsets commit together in Kafka transactions."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer

from pipeline import Publisher, Topic
from pipeline.app import Pipeline
from pipeline.config import Settings
from pipeline.worker import Worker
from tests.integration.app_stages import PINGS, PONGS, EosEcho, Ping
from tests.integration.kit import (
    prepare,
    settings_env,
    unique_settings,
    wait_until,
    worker_process,
)

SPEC = "tests.integration.app_stages:EosEcho"
OFFSET_BEGINNING = -2
PACE_MS = 20  # per event, in the first worker only


def committed_pong_ids(
    settings: Settings, timeout_s: float = 1.0, pongs: Topic[Any] = PONGS
) -> list[str]:
    """Every pong a read_committed consumer sees, from the start of the topic (``pongs``, or
    another topic of ``Pong``). Partitions are assigned directly (no group join), so this is
    quick enough to poll."""
    from confluent_kafka import TopicPartition

    pipeline = Pipeline.build(settings)
    binding = pipeline.catalog.bind(pongs.model)
    topic = settings.topic(pongs.name)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"committed-{uuid.uuid4()}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    ids: list[str] = []
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        tps = [TopicPartition(topic, p) for p in partitions]
        # Read up to the end as it is now, not forever: outputs keep arriving while we look.
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        seen = dict.fromkeys(partitions, 0)
        idle = 0.0
        while idle < timeout_s and any(seen[p] < ends[p] for p in partitions):
            batch: list[Any] = consumer.consume(500, 0.1)
            idle = idle + 0.1 if not batch else 0.0
            for m in batch:
                if m.error() is None:
                    seen[m.partition()] = m.offset() + 1
                    ids.append(pipeline.codec.decode(m.value(), binding).ping_id)
    finally:
        consumer.close()
    return ids


def test_a_worker_killed_mid_transaction_leaves_exactly_one_output_per_input(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """SIGKILL in the middle of a run: the open transaction is aborted by the broker, the next
    worker resumes from the last committed transaction, and read_committed consumers see each
    input's output exactly once."""
    settings = unique_settings(kafka_bootstrap, topic_partitions=3, commit_interval_s=0.3)
    prepare(settings, [EosEcho])
    with Publisher(settings) as publisher:
        for i in range(1500):
            publisher.publish(PINGS, Ping(ping_id=f"p{i}", n=i), key=f"k{i}", wait=False)
    # Paced: the first worker needs at least 1500 x PACE_MS = 30 s for the whole input, so the
    # kill lands mid-run however slowly the test notices its first 150 outputs (at 5 ms a loaded
    # machine could let it finish first, and nothing would be in flight at the kill).
    # Batches of 50 (1 s at that pace) keep each transaction far inside its 10 s timeout.
    env = settings_env(settings, TEST_DELAY_MS=str(PACE_MS), PIPELINE_BATCH_SIZE="50")
    with worker_process(SPEC, env, tmp_path / "w1.log") as first:
        wait_until(lambda: first.alive() and len(committed_pong_ids(settings, 0.2)) >= 150, 60,
                   "some committed transactions")  # fmt: skip
        first.kill()
    assert len(set(committed_pong_ids(settings, 0.2))) < 1500, "killed after it had finished"
    with worker_process(SPEC, settings_env(settings), tmp_path / "w2.log") as second:
        wait_until(lambda: len(set(committed_pong_ids(settings, 0.2))) == 1500, 90, "all outputs")
        assert second.alive()
        ids = committed_pong_ids(settings)
    duplicates = [i for i, n in Counter(ids).items() if n > 1]
    assert duplicates == [], f"{len(duplicates)} inputs have more than one committed output"
    assert len(ids) == 1500


def test_a_batch_slower_than_the_transaction_timeout_does_not_crash_the_worker(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """400 waiting events at 25 ms each (10 s for one fetched batch) against a 4 s transaction
    timeout: the stage commits each transaction at half the timeout and goes on, instead of
    being aborted by the broker and fenced (which stopped the worker before)."""
    monkeypatch.setenv("TEST_DELAY_MS", "25")
    monkeypatch.setattr("pipeline.app.TRANSACTION_TIMEOUT_S", 4.0)
    settings = unique_settings(kafka_bootstrap, topic_partitions=3, commit_interval_s=60)
    prepare(settings, [EosEcho])
    with Publisher(settings) as publisher:
        for i in range(400):
            publisher.publish(PINGS, Ping(ping_id=f"p{i}", n=i), key=f"k{i}", wait=False)
    pipeline = Pipeline.build(settings, [EosEcho])
    worker = Worker(pipeline, worker_id="slow-batch")
    worker.start()
    try:
        wait_until(lambda: worker.failed or len(set(committed_pong_ids(settings, 0.2))) == 400,
                   90, "all outputs, or the stage to crash")  # fmt: skip
        commits = worker.runners[0].stats.commits
    finally:
        worker.stop()
        worker.join(30)
        pipeline.close()
    assert not worker.failed, "the stage crashed (fenced: its transaction timed out)"
    assert commits >= 3, "commit_interval_s is 60: only the transaction's age made them commit"
    ids = committed_pong_ids(settings, 1.0)
    assert len(ids) == 400 == len(set(ids)), "each output exactly once"
