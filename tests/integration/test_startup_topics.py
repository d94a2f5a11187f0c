"""A worker whose retry and DLQ topics do not exist yet starts fetching while they are made
(``Pipeline.start_topics``), and loses nothing: records it fetched before they existed are
handled only once they do, a failing one goes through its retry tier, a poison one reaches
the DLQ, on the real broker.

The test decides the order: the topics are made only once the stage's consumer has fetched
its first batch, so that batch is certainly in hand before the retry and DLQ topics exist."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import pytest

from pipeline import Context, Publisher, RetryPolicy, Stage
from pipeline.app import Pipeline
from pipeline.kafka import KafkaAdmin, KafkaConsumer
from pipeline.kafka import transport as kafka_transport
from pipeline.ports import RawRecord
from pipeline.worker import Worker
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong
from tests.integration.kit import raw_records, read_topic, unique_settings, wait_until


class FlakyAndPoison(Stage):
    """'flaky' fails its first delivery; 'poison' always fails."""

    consumes = PINGS
    emits = (PONGS,)
    group = "startup"
    retry = RetryPolicy(in_process_attempts=1, tiers=(0.2,))
    calls: ClassVar[list[str]] = []
    first_call: ClassVar[Callable[[], None]] = staticmethod(lambda: None)

    def handle(self, event: Ping, ctx: Context) -> None:
        if not FlakyAndPoison.calls:
            FlakyAndPoison.first_call()
        FlakyAndPoison.calls.append(event.ping_id)
        if event.ping_id == "poison" or FlakyAndPoison.calls == ["flaky"]:
            raise ConnectionError("upstream hiccup")
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="startup"))


def test_records_fetched_before_the_retry_and_dlq_topics_exist_are_not_lost(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    FlakyAndPoison.calls = []
    settings = unique_settings(kafka_bootstrap, topic_partitions=1)
    pipeline = Pipeline.build(settings, [FlakyAndPoison])
    plan = pipeline.plans[0]
    admin = KafkaAdmin(settings)
    admin.create([settings.topic(PINGS.name)])  # only the input exists
    with Publisher(settings) as publisher:
        for n, ping_id in enumerate(("flaky", "poison", "fine")):
            publisher.publish(PINGS, Ping(ping_id=ping_id, n=n))
    fetched = threading.Event()
    seen_then: dict[str, Any] = {}

    class Watching(KafkaConsumer):
        def consume(self, max_records: int, timeout_s: float) -> Sequence[RawRecord]:
            records = super().consume(max_records, timeout_s)
            if records and not fetched.is_set():
                seen_then.update(calls=list(FlakyAndPoison.calls), topics=set(admin.topics()))
                fetched.set()
            return records

    real_ensure = Pipeline.ensure_topics

    def ensure_once_fetched(self: Pipeline, admin_: Any = None, stopping: Any = None) -> list[str]:
        assert fetched.wait(30), "the stage never fetched"
        return real_ensure(self, admin_, stopping)

    at_first_call: set[str] = set()
    monkeypatch.setattr(
        FlakyAndPoison, "first_call", staticmethod(lambda: at_first_call.update(admin.topics()))
    )
    monkeypatch.setattr(kafka_transport, "KafkaConsumer", Watching)
    monkeypatch.setattr(Pipeline, "ensure_topics", ensure_once_fetched)
    topics = pipeline.start_topics()
    assert not topics.done, "the inputs exist: the rest is made while the consumers join"
    worker = Worker(pipeline, worker_id=f"test-{uuid.uuid4().hex[:6]}", topics=topics)
    worker.start()
    try:
        pongs = read_topic(settings, PONGS, count=2, timeout_s=30)
        [dead] = raw_records(settings, plan.dlq_topic, 1, timeout_s=30)
        wait_until(lambda: FlakyAndPoison.calls.count("flaky") == 2, 10, "the retry")
    finally:
        worker.stop()
        assert worker.join(30), "worker did not stop within 30s"
        pipeline.close()
    assert not worker.failed, "a stage crashed"
    own = {plan.dlq_topic, *plan.retry_topics}
    assert seen_then["calls"] == [] and not own & seen_then["topics"], "fetched before they were"
    assert own <= at_first_call, "handled only once they existed"
    assert sorted(p.ping_id for _, p in pongs) == ["fine", "flaky"]
    assert dict(dead.headers())["dlq-original-offset"] == b"1"
    assert FlakyAndPoison.calls.count("poison") == 2, "first delivery + one retry tier"
