"""During a dependency outage the circuit breaker pauses the stage: no retries burned, no DLQ
growth, nothing lost once the dependency is back."""

from __future__ import annotations

import time
from collections import Counter
from typing import ClassVar

from pipeline import BreakerPolicy, CircuitBreaker, Context, Publisher, RetryPolicy, Stage
from pipeline.kafka import LagMonitor
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong
from tests.integration.kit import end_offsets, read_topic, running, unique_settings, wait_until


class Dependency:
    """A fake downstream service that can be switched off."""

    def __init__(self) -> None:
        self.down = True
        self.calls = 0

    def call(self) -> None:
        self.calls += 1
        if self.down:
            raise ConnectionError("service unavailable")


class StageBreaker(Stage):
    consumes = PINGS
    emits = (PONGS,)
    group = "stage-breaker"
    retry = RetryPolicy(in_process_attempts=1, tiers=(0.5,))
    breaker = BreakerPolicy(failure_threshold=3, cooldown_s=0.5, max_cooldown_s=1.0)
    service: ClassVar[Dependency] = Dependency()

    def handle(self, event: Ping, ctx: Context) -> None:
        self.service.call()
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="stage-breaker"))


DEPENDENCY = CircuitBreaker("fake-service", BreakerPolicy(failure_threshold=2, cooldown_s=0.5))


class DependencyBreaker(Stage):
    consumes = PINGS
    emits = (PONGS,)
    group = "dependency-breaker"
    retry = RetryPolicy(in_process_attempts=1, tiers=(0.5,))
    service: ClassVar[Dependency] = Dependency()

    def handle(self, event: Ping, ctx: Context) -> None:
        with DEPENDENCY:
            self.service.call()
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="dep-breaker"))


def _outage_then_recovery(kafka_bootstrap: str, stage: type[Stage], service: Dependency) -> None:
    service.down, service.calls = True, 0
    settings = unique_settings(kafka_bootstrap, topic_partitions=2)
    group, pings = settings.topic(stage.group or ""), settings.topic(PINGS.name)
    with running(settings, [stage]) as worker, Publisher(settings) as publisher:
        runner = worker.runners[0]
        for i in range(40):
            publisher.publish(PINGS, Ping(ping_id=f"p{i}", n=i), key=f"k{i}", wait=False)
        publisher.flush()
        wait_until(lambda: service.calls >= 2, 30, "the outage to be noticed")
        time.sleep(3)  # the outage lasts a while: that is the scenario under test
        calls_during_outage = service.calls
        service.down = False
        pongs = read_topic(settings, PONGS, count=40, timeout_s=60)
        monitor = LagMonitor(settings)
        try:
            wait_until(lambda: monitor.lag(group, [pings])[1] == 0, 30, "the input to drain")
        finally:
            monitor.close()
        dlq = end_offsets(settings, runner.plan.dlq_topic)
    assert dlq == 0, "the outage reached the dead-letter topic"
    assert Counter(p.ping_id for _, p in pongs) == Counter(f"p{i}" for i in range(40))
    # Without a breaker 40 events x 2 deliveries would have been tried; with it, a handful of
    # failures open the circuit and then only probes reach the dependency.
    assert calls_during_outage <= 12, f"{calls_during_outage} calls hit a dependency that was down"


def test_stage_breaker_pauses_the_stage_during_an_outage_and_drains_after(
    kafka_bootstrap: str,
) -> None:
    _outage_then_recovery(kafka_bootstrap, StageBreaker, StageBreaker.service)


def test_a_handlers_dependency_breaker_pauses_the_stage_too(kafka_bootstrap: str) -> None:
    _outage_then_recovery(kafka_bootstrap, DependencyBreaker, DependencyBreaker.service)
