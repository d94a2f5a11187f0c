"""Prometheus metrics against the real broker: a worker's /metrics, scraped over HTTP while its
stage runs, counts every event handled and its lag falls to 0; `pipeline run --workers 2
--metrics-port` serves one endpoint summing both workers, and a worker killed with -9 and
restarted neither loses nor doubles the totals."""

from __future__ import annotations

import os
import signal
import socket
import urllib.request
import uuid
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from pipeline import Pipeline, Publisher, Settings, Worker
from pipeline.metrics import serve_worker
from tests.integration.app_stages import PINGS, Echo, Ping
from tests.integration.kit import (
    group_members,
    prepare,
    settings_env,
    unique_settings,
    wait_until,
    worker_process,
)

SPEC = "tests.integration.app_stages"
GROUP = "app_stages.echo"


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the endpoint, by (name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:  # fmt: skip
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def publish(settings: Settings, count: int, tag: str) -> None:
    with Publisher(settings) as publisher:
        for n in range(count):
            publisher.publish(PINGS, Ping(ping_id=f"{tag}{n}", n=n), key=f"k{n}", wait=False)
        publisher.flush()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_worker_endpoint_counts_every_event_and_its_lag_falls_to_zero(
    kafka_bootstrap: str,
) -> None:
    settings = unique_settings(kafka_bootstrap)
    prepare(settings, [Echo])
    publish(settings, 40, "p")  # before the worker: a known backlog
    pipeline, endpoint = serve_worker(Pipeline.build(settings, [Echo]), 0, lag_interval_s=0.5)
    group = settings.topic(GROUP)
    lag = {"consumergroup": group, "topic": settings.topic(PINGS.name)}
    monitor = pipeline.transport.lag_monitor()
    try:
        endpoint.lag.poll(monitor)  # nothing consumes yet: the whole backlog is lag
        assert total(scrape(endpoint.port), "kafka_consumergroup_lag", **lag) == 40
        worker = Worker(pipeline, worker_id=f"test-{uuid.uuid4().hex[:6]}")
        worker.start()
        try:
            done = {"stage": "echo", "group": group}
            wait_until(lambda: total(scrape(endpoint.port), "pipeline_events_completed_total",
                                     **done) == 40, 60, "40 completed")  # fmt: skip
            wait_until(lambda: total(scrape(endpoint.port), "kafka_consumergroup_lag", **lag)
                       == 0, 60, "lag 0")  # fmt: skip
            samples = scrape(endpoint.port)
        finally:
            worker.stop()
            assert worker.join(30)
    finally:
        monitor.close()
        endpoint.close()
        pipeline.close()
    assert total(samples, "pipeline_events_consumed_total", stage="echo") == 40
    # Per partition: each completed event under its record's topic and partition.
    pings = settings.topic(PINGS.name)
    assert total(samples, "pipeline_events_completed_total", stage="echo", topic=pings) == 40
    seen = {dict(ls)["partition"] for (n, ls), v in samples.items()
            if n == "pipeline_events_completed_total" and v > 0}  # fmt: skip
    assert len(seen) > 1 and seen <= {str(p) for p in range(settings.topic_partitions)}
    assert total(samples, "pipeline_handler_duration_seconds_count", stage="echo") == 40
    assert total(samples, "pipeline_events_in_flight", stage="echo") == 0
    assert total(samples, "pipeline_commits_total", stage="echo") >= 1
    assert total(samples, "kafka_consumergroup_lag_sum", **lag) == 0


def test_the_supervisor_endpoint_sums_every_worker_and_survives_a_restart(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = unique_settings(kafka_bootstrap)
    prepare(settings, [Echo])
    port, group = _free_port(), settings.topic(GROUP)
    [plan] = Pipeline.build(settings, [Echo]).plans
    partitions = len(plan.subscriptions) * settings.topic_partitions  # inputs and retry tiers
    completed = {"stage": "echo", "group": group}
    args = ["--metrics-port", str(port)]
    with worker_process(SPEC, settings_env(settings), tmp_path / "w.log", 2, args) as sup:

        def done(n: int) -> bool:
            sup.alive()
            samples = scrape(port)
            lag = total(samples, "kafka_consumergroup_lag_sum", consumergroup=group)
            return total(samples, "pipeline_events_completed_total", **completed) == n and (
                lag == 0 and ("kafka_consumergroup_lag_sum", frozenset(
                    {("consumergroup", group), ("topic", settings.topic(PINGS.name))}
                )) in samples
            )  # fmt: skip

        wait_until(lambda: sup.alive() and group_members(settings, group) == 2, 90, "2 members")
        publish(settings, 40, "a")
        wait_until(lambda: done(40), 60, "40 completed, all committed")
        # Both workers' gauges are in the sum: every partition, between them.
        wait_until(lambda: total(scrape(port), "pipeline_assigned_partitions", **completed)
                   == partitions, 30, "every partition assigned over both workers")  # fmt: skip
        victim = _a_worker(sup.proc.pid)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: f"(pid {victim}) killed by SIGKILL" in sup.output(), 10, "the death")
        assert total(scrape(port), "pipeline_events_completed_total", **completed) == 40
        wait_until(lambda: group_members(settings, group) == 2, 90, "the replacement joined")
        publish(settings, 20, "b")
        wait_until(lambda: done(60), 60, "60 completed: nothing lost, nothing doubled")
        wait_until(lambda: total(scrape(port), "pipeline_assigned_partitions", **completed)
                   == partitions, 30, "the dead worker's gauges dropped")  # fmt: skip
        sup.signal(signal.SIGTERM)
        assert sup.wait(60) == 0, sup.output()


def _a_worker(supervisor: int) -> int:
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    for child in children:
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"pipeline worker" in cmdline:
            return int(child)
    raise AssertionError(f"no worker among {children}")
