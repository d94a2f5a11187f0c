"""Prometheus metrics (``pipeline.metrics.Metrics``): the value of each metric after a known
run on the in-memory broker, the lag collector, the oldest-unfinished bookkeeping, and the
worker's HTTP endpoint."""

from __future__ import annotations

import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from pipeline import Context, Idempotency, Pipeline, RetryPolicy, Settings, Stage, Topic
from pipeline.hooks import StageInfo
from pipeline.metrics import LagCollector, Metrics, readers, serve_worker
from pipeline.metrics.age import OldestUnfinished
from pipeline.metrics.hook import MAX_ERROR_TYPES, OTHER
from pipeline.testing import FakeClock, MemoryBroker, MemoryTransport, TestPipeline
from pipeline.testing.log import Record
from tests.conftest import TEST_SCHEMAS
from tests.integration.app_stages import PINGS, PONGS, Ping
from tests.unit.test_hooks import Answer, Flaky, Guarded, InPlace

PINGS_BY_ID = Topic("test.pings", Ping, id_field="ping_id")


def _settings(**values: Any) -> Settings:
    # Committing at every step, as TestPipeline does on its own broker.
    settings = Settings(schemas_dir=TEST_SCHEMAS, **values)
    return settings.model_copy(update={"commit_interval_s": 0.0})


def _rig(*stages: type[Stage]) -> tuple[TestPipeline, Metrics, FakeClock]:
    clock = FakeClock()
    settings = _settings()
    metrics = Metrics(clock=clock)
    transport = MemoryTransport(MemoryBroker(clock), settings)
    return TestPipeline(stages, settings, transport=transport, hooks=[metrics]), metrics, clock


def _value(metrics: Metrics, name: str, stage: type[Stage], **labels: str) -> float | None:
    """The sample of ``name`` for ``stage`` (any group) with ``labels``; None if absent."""
    metrics.flush()
    want = {"stage": stage.stage_name()} | labels
    found = [
        s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == name and want.items() <= s.labels.items()
    ]
    return sum(found) if found else None


def record(topic: str, partition: int, offset: int, timestamp_ms: int = 1) -> Record:
    return Record((topic, partition), offset, None, b"", None, timestamp_ms)


def test_every_event_handled_is_consumed_completed_and_timed_once() -> None:
    """Five pings, each answered: five consumed, completed and timed; none in flight after."""
    t, m, _ = _rig(Answer)
    with t:
        for n in range(5):
            t.publish(PINGS, Ping(ping_id=f"p{n}", n=n), key=f"k{n}")
        t.run_until_idle()
        assert _value(m, "pipeline_events_consumed_total", Answer) == 5
        assert _value(m, "pipeline_events_completed_total", Answer) == 5
        assert _value(m, "pipeline_handler_duration_seconds_count", Answer) == 5
        assert _value(m, "pipeline_handler_duration_seconds_bucket", Answer, le="+Inf") == 5
        assert _value(m, "pipeline_events_in_flight", Answer) == 0
        assert (_value(m, "pipeline_commits_total", Answer) or 0) >= 1
        assert _value(m, "pipeline_commit_failures_total", Answer) in (None, 0)
        assert _value(m, "pipeline_assigned_partitions", Answer) == t.settings.topic_partitions


def test_a_poison_event_fails_once_and_is_dead_lettered_by_error_type() -> None:
    t, m, _ = _rig(Answer)
    with t:
        t.publish(PINGS, Ping(ping_id="poison", n=0), key="k")
        t.publish(PINGS, Ping(ping_id="skip", n=1), key="k")
        t.run_until_idle()
        assert _value(m, "pipeline_events_failed_total", Answer, error="ValueError") == 1
        assert _value(m, "pipeline_events_dead_lettered_total", Answer, error="ValueError") == 1
        assert _value(m, "pipeline_events_skipped_total", Answer) == 1
        assert _value(m, "pipeline_events_completed_total", Answer) in (None, 0)


def test_a_retry_copy_is_counted_in_its_tier_and_an_in_place_retry_as_in_place() -> None:
    Flaky.calls = InPlace.calls = 0
    t, m, _ = _rig(Flaky, InPlace)
    with t:
        t.publish(PINGS, Ping(ping_id="p0", n=0), key="k")
        t.run_until_idle()
        assert _value(m, "pipeline_events_retried_total", Flaky, tier="0") == 1
        assert _value(m, "pipeline_events_completed_total", Flaky) == 1
        assert _value(m, "pipeline_events_retried_total", InPlace, tier="in_place") == 2
        assert _value(m, "pipeline_events_failed_total", InPlace, error="ConnectionError") == 2


def test_an_undelivered_output_is_a_retriable_produce_error() -> None:
    t, m, _ = _rig(Answer)
    with t:
        t.broker.fail_deliveries(t.settings.topic(PONGS.name), 1)
        t.publish(PINGS, Ping(ping_id="p0", n=0), key="k")
        t.run_until_idle()
        assert _value(m, "pipeline_produce_errors_total", Answer, kind="retriable") == 1
        assert _value(m, "pipeline_events_completed_total", Answer) == 1


def test_refused_commits_are_counted() -> None:
    t, m, _ = _rig(Answer)
    with t:
        t.broker.fail_commits(t.pipeline.plans[0].group, 2)
        t.publish(PINGS, Ping(ping_id="p0", n=0), key="k")
        t.run_until_idle()
        assert _value(m, "pipeline_commit_failures_total", Answer) == 2


def test_the_breaker_state_is_one_for_the_current_state_only() -> None:
    Guarded.down = True
    t, m, _ = _rig(Guarded)
    with t:
        t.publish(PINGS, Ping(ping_id="p0", n=0), key="k")
        t.run_until_idle()
        states = {s: _value(m, "pipeline_breaker_state", Guarded, state=s) for s in
                  ("closed", "half-open", "open")}  # fmt: skip
    assert states == {"closed": 1, "half-open": 0, "open": 0}


def test_a_duplicate_is_counted_and_not_completed_again(tmp_path: Path) -> None:
    class Once(Stage):
        consumes = PINGS
        retry = RetryPolicy(in_process_attempts=1, tiers=())
        idempotency = Idempotency(url=f"sqlite:///{tmp_path}/done.db")

        def handle(self, event: Ping, ctx: Context) -> None:
            pass

    t, m, _ = _rig(Once)
    with t:
        for _ in range(2):
            t.publish(PINGS_BY_ID, Ping(ping_id="p0", n=0), key="k")
            t.run_until_idle()
        assert _value(m, "pipeline_events_duplicates_total", Once) == 1
        assert _value(m, "pipeline_events_completed_total", Once) == 1


def test_error_type_labels_are_capped_and_the_rest_counted_as_other() -> None:
    m = Metrics()
    errors = [type(f"E{i}", (Exception,), {})() for i in range(MAX_ERROR_TYPES + 5)]
    stage = Answer
    info = _info(stage)
    for error in errors:
        m.on_failed(info, record("t", 0, 0), error, 1, False)
    assert _value(m, "pipeline_events_failed_total", stage, error=OTHER) == 5
    assert _value(m, "pipeline_events_failed_total", stage, error="E0") == 1


def _info(stage: type[Stage]) -> Any:
    from pipeline.hooks import StageInfo

    return StageInfo(stage.stage_name(), "g", "w")


def test_the_oldest_unfinished_age_is_its_first_records_until_a_commit_covers_it() -> None:
    age = OldestUnfinished()
    age.fetched([record("t", 0, 10, timestamp_ms=1_000), record("t", 0, 11, timestamp_ms=1_500),
                 record("t", 1, 5, timestamp_ms=2_000)])  # fmt: skip
    assert age.ages(now_ms=4_000) == {("t", 0): 3_000, ("t", 1): 2_000}
    age.committed({("t", 0): 12})
    assert age.ages(now_ms=5_000) == {("t", 0): 0, ("t", 1): 3_000}, "done: back to 0"
    age.forget([("t", 1)])
    assert age.ages(now_ms=6_000) == {("t", 1): 0}
    assert age.ages(now_ms=7_000) == {}, "a 0 is reported once, then the partition is let go"


def test_the_age_gauge_is_the_held_events_wait_and_falls_to_zero_once_committed() -> None:
    """An event fetched 30 s after it was written fails and is held for an in-place retry:
    its partition's oldest unfinished event is 30 s old until it is done and committed."""
    InPlace.calls = 0
    t, m, clock = _rig(InPlace)
    with t:
        sent = t.publish(PINGS, Ping(ping_id="p0", n=0), key="k")
        clock.advance(30)
        t.step()
        labels = {"topic": sent.topic, "partition": str(sent.partition)}
        assert InPlace.calls == 1
        assert _value(m, "pipeline_oldest_unfinished_age_seconds", InPlace, **labels) == 30
        t.run_until_idle()
        assert _value(m, "pipeline_oldest_unfinished_age_seconds", InPlace, **labels) == 0


def test_the_lag_collector_reads_each_group_per_partition_under_kafka_exporter_names() -> None:
    t, _, _ = _rig(Answer)
    with t:
        for n in range(3):
            t.publish(PINGS, Ping(ping_id=f"p{n}", n=n), key="same")
        groups = readers(t.pipeline.plans)
        lag = LagCollector(t.transport.lag_monitor, groups)
        registry = CollectorRegistry()
        registry.register(lag)
        lag.poll(t.transport.lag_monitor())
        group = t.pipeline.plans[0].group
        topic = t.settings.topic(PINGS.name)
        assert (
            registry.get_sample_value(
                "kafka_consumergroup_lag_sum", {"consumergroup": group, "topic": topic}
            )
            == 3
        )
        t.run_until_idle()
        lag.poll(t.transport.lag_monitor())
        samples = [s for f in registry.collect() if f.name == "kafka_consumergroup_lag"
                   for s in f.samples if s.labels["consumergroup"] == group]  # fmt: skip
        assert len(samples) == t.settings.topic_partitions
        assert all(s.value == 0 for s in samples)


def test_the_worker_endpoint_serves_the_stage_metrics_and_the_lag_over_http() -> None:
    settings = _settings()
    transport = MemoryTransport(MemoryBroker(FakeClock()), settings)
    pipeline = Pipeline.build(settings, [Answer], transport)
    pipeline.ensure_topics()
    served, endpoint = serve_worker(pipeline, 0)
    try:
        assert endpoint.metrics is not None and endpoint.metrics in served.hooks
        endpoint.lag.poll(transport.lag_monitor())
        body = urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=10)
        text = body.read().decode()
    finally:
        endpoint.close()
    assert "kafka_consumergroup_lag_sum{" in text
    assert "# TYPE pipeline_events_completed_total counter" in text


def test_the_grafana_dashboard_queries_only_metrics_we_export() -> None:
    import json
    import re

    root = Path(__file__).resolve().parents[2]
    dashboard = json.loads((root / "dashboards" / "pipeline.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    used = set(re.findall(r"\b(?:pipeline|kafka_consumergroup)_[a-z_]+\b", exprs))
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    exported = {
        family.name + suffix
        for family in Metrics().registry.collect()
        for suffix in suffixes[family.type]
    } | {"kafka_consumergroup_lag", "kafka_consumergroup_lag_sum"}
    assert used and used <= exported, used - exported


def test_a_stalled_call_is_counted_from_the_watch_thread() -> None:
    import threading

    m = Metrics()
    watch = threading.Thread(target=m.on_stalled, args=(_info(Answer), record("t", 0, 0), 31.0))
    watch.start()
    watch.join()
    assert _value(m, "pipeline_events_stalled_total", Answer) == 1


def test_a_handler_call_is_in_flight_while_it_runs_and_timed_after_either_way() -> None:
    """Alone, Metrics wraps the handler itself (``wrap_handler``); beside another
    ``around_handler`` hook, through its ``around_handler``: the same counts."""
    from contextlib import nullcontext

    from pipeline.hookcalls import Hooks
    from pipeline.hooks import Hook

    class Other(Hook):
        def around_handler(self, stage: Any, event: Any, ctx: Any) -> Any:
            return nullcontext()

    for others in ((), (Other(),)):
        m = Metrics()
        info = _info(Answer)
        seen: list[float | None] = []

        def handler(event: Any, ctx: Any, m: Metrics = m, seen: list[Any] = seen) -> None:
            seen.append(_value(m, "pipeline_events_in_flight", Answer))

        wrapped = Hooks(info, [m, *others]).wrap(handler, is_async=False)
        assert (wrapped.__name__ == "timed") is (not others)
        wrapped(None, object())
        assert seen == [1]
        assert _value(m, "pipeline_events_in_flight", Answer) == 0
        assert _value(m, "pipeline_handler_duration_seconds_count", Answer) == 1


def test_pipeline_status_reads_the_live_columns_from_a_worker_endpoint() -> None:
    """``pipeline status --metrics URL`` (``PrometheusSource``) understands what we serve."""
    from pipeline.livemetrics import PrometheusSource

    settings = _settings()
    transport = MemoryTransport(MemoryBroker(FakeClock()), settings)
    pipeline = Pipeline.build(settings, [Answer], transport)
    _, endpoint = serve_worker(pipeline, 0)
    try:
        assert endpoint.metrics is not None
        info = StageInfo("answer", "g", "w")
        for _ in range(3):
            endpoint.metrics.on_completed(info, record("t", 0, 0))
        endpoint.metrics.on_failed(info, record("t", 0, 1), ValueError(), 1, False)
        endpoint.metrics.on_breaker_change(info, "closed", "open")
        endpoint.metrics.flush()
        live = PrometheusSource([f"http://127.0.0.1:{endpoint.port}/metrics"]).read()
    finally:
        endpoint.close()
    counts = live[("answer", "g")]
    assert (counts.active, counts.completed, counts.failed, counts.breaker) == (0, 3, 1, "open")


def test_per_event_counters_carry_the_records_topic_and_partition() -> None:
    """Events spread over partitions are consumed and completed under each one's labels."""
    t, m, _ = _rig(Answer)
    with t:
        sent = [t.publish(PINGS, Ping(ping_id=f"p{n}", n=n), key=f"k{n}") for n in range(12)]
        t.run_until_idle()
        per = Counter((s.topic, str(s.partition)) for s in sent)
        assert len(per) >= 2, "the keys must spread for this test to mean anything"
        for (topic, partition), n in per.items():
            where = {"topic": topic, "partition": partition}
            assert _value(m, "pipeline_events_consumed_total", Answer, **where) == n
            assert _value(m, "pipeline_events_completed_total", Answer, **where) == n


def test_an_assigned_partitions_series_exist_from_zero_and_keep_counting_after_a_revoke() -> None:
    """Children are bound on assign (a series at 0), written before they are let go on revoke,
    and an outcome that comes after the revoke is still counted."""
    m, info = Metrics(), _info(Answer)
    m.on_assign(info, [("t", 0), ("t", 1)])
    one = {"topic": "t", "partition": "1"}
    assert _value(m, "pipeline_events_completed_total", Answer, **one) == 0
    m.on_completed(info, record("t", 1, 0))
    m.on_revoke(info, [("t", 1)])
    assert _value(m, "pipeline_events_completed_total", Answer, **one) == 1
    m.on_completed(info, record("t", 1, 1))
    assert _value(m, "pipeline_events_completed_total", Answer, **one) == 2


def test_failures_carry_the_topic_and_error_but_not_the_partition() -> None:
    m, info = Metrics(), _info(Answer)
    for partition in range(3):
        m.on_failed(info, record("t", partition, 0), ValueError(), 1, False)
    m.flush()
    [(labels, value)] = [
        (s.labels, s.value)
        for family in m.registry.collect()
        for s in family.samples
        if s.name == "pipeline_events_failed_total"
    ]
    assert labels == {"stage": "answer", "group": "g", "topic": "t", "error": "ValueError"}
    assert value == 3


def test_the_breaker_state_is_closed_from_the_stage_start_before_any_move() -> None:
    """A stage with a breaker shows it closed as soon as it runs; one without shows none."""
    Guarded.down = False
    t, m, _ = _rig(Guarded, Answer)
    with t:
        t.step()
        states = {s: _value(m, "pipeline_breaker_state", Guarded, state=s) for s in
                  ("closed", "half-open", "open")}  # fmt: skip
        assert states == {"closed": 1, "half-open": 0, "open": 0}
        assert _value(m, "pipeline_breaker_state", Answer) is None


def test_alerts_are_counted_by_kind_and_shown_firing_until_resolved() -> None:
    from pipeline.alerts import Alert

    m, info = Metrics(), _info(Answer)
    m.on_alert(info, Alert("waiting", 12_000, 10_000, 0.0))
    assert _value(m, "pipeline_alerts_total", Answer, kind="waiting") == 1
    assert _value(m, "pipeline_alert_firing", Answer, kind="waiting") == 1
    m.on_resolved(info, Alert("waiting", 7_000, 10_000, 60.0))
    assert _value(m, "pipeline_alert_firing", Answer, kind="waiting") == 0
    assert _value(m, "pipeline_alerts_total", Answer, kind="waiting") == 1
