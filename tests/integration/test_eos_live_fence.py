"""A live fence met mid-transaction, with outputs in flight: the stage's producer is re-created
in place (``pipeline.renewal``) and every input still has exactly one committed output."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import Producer

from pipeline import Publisher
from pipeline.app import Pipeline
from pipeline.commit import TransactionCommitter
from pipeline.worker import Worker
from tests.integration.app_stages import PINGS, EosEcho, Ping
from tests.integration.kit import prepare, unique_settings, wait_until
from tests.integration.test_exactly_once import committed_pong_ids

FIRST, EVENTS = 200, 300  # the rest published after the fence: the stage must meet it


def test_a_live_fence_mid_run_renews_the_producer_and_loses_or_doubles_nothing(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another producer takes the stage's transactional.id while its outputs are in flight
    (paced: 10 ms an event, batches of 20): the leaders refuse them with an old epoch and
    librdkafka's poll raises the fence, which stopped the stage (a raw KafkaException out of
    the loop) before any transaction call could renew it. Events published after the fence
    make the stage meet it however far it had got (poll, commit or begin: each renews)."""
    monkeypatch.setenv("TEST_DELAY_MS", "10")
    settings = unique_settings(kafka_bootstrap, topic_partitions=2, commit_interval_s=0.5,
                               batch_size=20)  # fmt: skip
    prepare(settings, [EosEcho])
    with Publisher(settings) as publisher:
        for i in range(FIRST):
            publisher.publish(PINGS, Ping(ping_id=f"p{i}", n=i), key=f"k{i}", wait=False)
    pipeline = Pipeline.build(settings, [EosEcho])
    worker = Worker(pipeline, worker_id="live-fence")
    worker.start()
    try:
        wait_until(lambda: worker.failed or len(committed_pong_ids(settings, 0.2)) >= 40, 60,
                   "some committed transactions")  # fmt: skip
        runner = worker.runners[0]
        committer = runner._committer
        assert isinstance(committer, TransactionCommitter)
        tid = runner._producer.transactional_id  # type: ignore[attr-defined]
        # The order is the test's: the stage renews only once the usurper's init_transactions
        # has returned. A renewal racing it bumps the epoch back and forth (each fences the
        # other) until the renewal bound stops the stage: that ping-pong is a unit test's
        # (test_producer_renewal), not what this one proves.
        usurped = threading.Event()
        renew = committer._renewer.renew

        def renew_after_usurper(*args: Any) -> bool:
            usurped.wait(60)
            return renew(*args)

        monkeypatch.setattr(committer._renewer, "renew", renew_after_usurper)
        usurper = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": tid,
                            "log_level": 0})  # fmt: skip
        try:
            usurper.init_transactions(30)  # bumps the epoch: the stage's producer is fenced
        finally:
            usurped.set()
        del usurper  # gone: the renewed producer takes the id back
        with Publisher(settings) as publisher:
            for i in range(FIRST, EVENTS):
                publisher.publish(PINGS, Ping(ping_id=f"p{i}", n=i), key=f"k{i}", wait=False)
        wait_until(lambda: worker.failed or len(set(committed_pong_ids(settings, 0.2))) == EVENTS,
                   90, "all outputs, or the stage to stop")  # fmt: skip
        renewals = committer._renewer.budget.taken
    finally:
        worker.stop()
        worker.join(30)
        pipeline.close()
    assert not worker.failed, "the fence stopped the stage"
    assert renewals >= 1, "the stage was never fenced: the test proves nothing"
    ids = committed_pong_ids(settings, 1.0)
    assert len(ids) == EVENTS == len(set(ids)), "each output exactly once"
