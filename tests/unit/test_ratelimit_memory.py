"""A rate-limited stage run by the real runner on the in-memory broker with a FakeClock (no
Kafka, no sleeping): the limit holds partitions instead of failing anything, it combines with
``concurrency``, and workers of one group share it by their partitions."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from pipeline import (
    BreakerPolicy,
    Context,
    DeclarationError,
    RateLimit,
    RetryPolicy,
    Settings,
    Stage,
    gates,
)
from pipeline.app import Pipeline
from pipeline.clock import FakeClock
from pipeline.queues import status
from pipeline.ratelimit import MIN_BUCKET_S
from pipeline.runner import StageRunner
from pipeline.testing import MemoryBroker, TestPipeline
from pipeline.testing.lockstep import Lockstep
from pipeline.testing.transport import MemoryTransport
from tests.integration.app_stages import PINGS, PONGS, Ping
from tests.unit.memory_rig import SCHEMAS, key_for

PARTITIONS = 6


class Limited(Stage):
    """Five calls a second, a burst of five."""

    consumes = PINGS
    group = "limited"
    rate_limit = RateLimit(max=5, per_s=1)
    clock: FakeClock
    calls: list[tuple[float, int]] = []

    def handle(self, event: Ping, ctx: Context) -> None:
        Limited.calls.append((self.clock.monotonic(), event.n))


class Plain(Stage):
    consumes = PINGS
    group = "plain"

    def handle(self, event: Ping, ctx: Context) -> None:
        pass


class LimitedConcurrent(Stage):
    """The seed's mailer: 5 in flight, 100 a minute."""

    consumes = PINGS
    group = "limited-concurrent"
    concurrency = 5
    rate_limit = RateLimit(max=100, per_s=60)
    clock: FakeClock
    calls: list[tuple[float, int]] = []
    in_flight = 0
    most_in_flight = 0

    async def handle(self, event: Ping, ctx: Context) -> None:
        cls = LimitedConcurrent
        cls.in_flight += 1
        cls.most_in_flight = max(cls.most_in_flight, cls.in_flight)
        cls.calls.append((self.clock.monotonic(), event.n))
        await asyncio.sleep(0)
        cls.in_flight -= 1


class Shared(Stage):
    """Thirty calls a second for the whole group, evenly spaced (a burst of one)."""

    consumes = PINGS
    group = "shared"
    rate_limit = RateLimit(max=30, per_s=1, burst=1)
    clock: FakeClock
    calls: list[tuple[float, int]] = []

    def handle(self, event: Ping, ctx: Context) -> None:
        Shared.calls.append((self.clock.monotonic(), event.n))


def buckets(limit: RateLimit, workers: int = 1) -> float:
    """The tokens ``workers`` equal shares of ``limit`` hold together when full."""
    rate, burst = limit.rate / workers, limit.capacity / workers
    return workers * max(burst, rate * MIN_BUCKET_S, 1.0)


def assert_within_bucket(times: Sequence[float], limit: RateLimit, workers: int = 1) -> None:
    """No stretch of calls went faster than the token buckets allow: j - i + 1 calls between
    t_i and t_j need at most capacity + rate * (t_j - t_i) tokens."""
    times = sorted(times)
    capacity = buckets(limit, workers)
    for i in range(len(times)):
        for j in range(i, len(times)):
            allowed = capacity + limit.rate * (times[j] - times[i]) + 1e-6
            assert j - i + 1 <= allowed, f"calls {i}..{j} within {times[j] - times[i]:.3f}s"


def test_a_limited_stage_holds_its_partition_and_handles_everything_at_the_limit() -> None:
    Limited.calls.clear()
    with TestPipeline([Limited], Settings(schemas_dir=SCHEMAS)) as t:
        Limited.clock = t.clock  # type: ignore[assignment]
        start = t.clock.monotonic()
        for n in range(25):
            t.publish(PINGS, Ping(ping_id=f"p{n}", n=n), key="one-key")
        t.run_until_idle()
        stats = t.stats(Limited)
        assert [n for _, n in Limited.calls] == list(range(25)), "each once, in order"
        assert_within_bucket([at for at, _ in Limited.calls], Limited.rate_limit)
        # A full bucket (7.5: 1.5 s of 5/s), then the rest at 5/s.
        assert Limited.calls[-1][0] - start >= (25 - buckets(Limited.rate_limit)) / 5 - 0.2
        assert (stats.retried, stats.dead_lettered, stats.failed) == (0, 0, 0)
        assert t.dead_letters(Limited) == []
        assert t.lag(Limited) == (25, 0)


def test_a_rate_limit_combines_with_concurrency_five_in_flight_and_100_a_minute() -> None:
    cls = LimitedConcurrent
    cls.calls.clear()
    cls.most_in_flight = 0
    with TestPipeline([cls], Settings(schemas_dir=SCHEMAS)) as t:
        cls.clock = t.clock  # type: ignore[assignment]
        for n in range(130):
            t.publish(PINGS, Ping(ping_id=f"p{n}", n=n), key=f"k{n % 7}")
        t.run_until_idle(timeout_s=120)
        assert sorted(n for _, n in cls.calls) == list(range(130))
        assert cls.most_in_flight <= 5
        times = sorted(at for at, _ in cls.calls)
        assert_within_bucket(times, cls.rate_limit)
        assert times[-1] - times[0] >= 30 * 60 / 100 - 1e-6, "100 at once, then 30 at 100/min"
        assert t.stats(cls).retried == 0 and t.dead_letters(cls) == []


class Group:
    """``workers`` runners of one stage in one group on a memory broker, stepped in turn."""

    def __init__(self, stage: type[Stage], workers: int) -> None:
        self.clock = FakeClock()
        self.broker = MemoryBroker(self.clock, default_partitions=PARTITIONS)
        settings = Settings(schemas_dir=SCHEMAS).model_copy(update={"commit_interval_s": 0.0})
        self.pipeline = Pipeline.build(settings, [stage], MemoryTransport(self.broker, settings))
        self.pipeline.ensure_topics()
        self.plan = self.pipeline.plans[0]
        self.runners: list[StageRunner] = []
        self.stepped: list[Lockstep] = []
        for i in range(workers):
            self.add(f"w{i}")

    def add(self, worker: str) -> None:
        runner = self.pipeline.runner(self.plan, worker, clock=self.clock)
        self.runners.append(runner)
        self.stepped.append(Lockstep(runner, worker, 30.0))

    def stop(self, index: int) -> None:
        self.stepped.pop(index).stop(30.0)
        self.runners.pop(index)

    def publish(self, count: int) -> None:
        producer = self.broker.producer()
        binding = self.plan.inputs[PINGS.name]
        for n in range(count):
            value = self.pipeline.codec.encode(Ping(ping_id=f"p{n}", n=n), binding, PINGS.name)
            key = key_for(n % PARTITIONS, PARTITIONS, n // PARTITIONS)  # evenly spread
            producer.produce(PINGS.name, value, key, None, lambda _e, _m: None)
        producer.flush(1)

    def round(self, advance_s: float = 0.01) -> None:
        for stepped in self.stepped:
            stepped.step()
        self.clock.advance(advance_s)

    def shares(self) -> list[float]:
        limiters = [r._parts.chain.rate_limit for r in self.runners]
        return [limiter.limiter.share for limiter in limiters if limiter is not None]

    def close(self) -> None:
        for stepped in self.stepped:
            stepped.stop(30.0)


def test_three_workers_share_a_group_limit_by_their_partitions() -> None:
    Shared.calls.clear()
    group = Group(Shared, workers=3)
    Shared.clock = group.clock
    try:
        for _ in range(5):
            group.round()  # everyone joins; the group settles before any record is there
        group.publish(240)
        for _ in range(240):  # 12 s on the fake clock: 240 calls at 30/s take 8
            group.round(0.05)
            if len(Shared.calls) == 240:
                break
        assert sorted(n for _, n in Shared.calls) == list(range(240)), "each once"
        assert group.shares() == pytest.approx([1 / 3] * 3)
        times = sorted(at for at, _ in Shared.calls)
        steady = times[60:230]  # past the full buckets (45 between the three)
        rate = (len(steady) - 1) / (steady[-1] - steady[0])
        assert rate == pytest.approx(30, rel=0.1)
        assert_within_bucket(times, Shared.rate_limit, workers=3)
    finally:
        group.close()


def test_a_worker_left_alone_takes_the_whole_limit_after_the_rebalance() -> None:
    Shared.calls.clear()
    group = Group(Shared, workers=2)
    Shared.clock = group.clock
    try:
        for _ in range(5):
            group.round()
        group.publish(200)
        for _ in range(10):
            group.round(0.05)
        assert group.shares() == pytest.approx([0.5, 0.5])
        group.stop(1)  # leaves the group: its partitions go to w0
        before = len(Shared.calls)
        for _ in range(200):
            group.round(0.05)
            if len(Shared.calls) == 200:
                break
        assert group.shares() == [1.0]
        assert sorted(n for _, n in Shared.calls) == list(range(200)), "nothing lost"
        # w0's, the only worker left: past what its bucket held, at the whole limit.
        after = sorted(at for at, _ in Shared.calls[before + 50 :])
        rate = (len(after) - 1) / (after[-1] - after[0])
        assert rate == pytest.approx(30, rel=0.15), "the whole limit, not its old half"
    finally:
        group.close()


class LimitedWithBreaker(Limited):
    group = "limited-breaker"
    breaker = BreakerPolicy()


def test_only_a_limited_stage_carries_the_rate_gate_and_it_comes_before_the_breaker() -> None:
    broker = MemoryBroker(FakeClock())
    settings = Settings(schemas_dir=SCHEMAS)
    stages = [Limited, LimitedWithBreaker, Plain]
    pipeline = Pipeline.build(settings, stages, MemoryTransport(broker, settings))
    chains = {plan.name: pipeline.runner(plan, "w1")._parts.chain for plan in pipeline.plans}
    kinds = {name: [type(g) for g in chain.gates] for name, chain in chains.items()}
    assert gates.RateLimited not in kinds["plain"]
    assert kinds["limited"][-1] is gates.RateLimited
    # The breaker's refusal is asked before a token is taken, its probe taken after.
    assert kinds["limited_with_breaker"][-3:] == [gates.BreakerPeek, gates.RateLimited,
                                                  gates.Breaker]  # fmt: skip
    assert gates.BreakerPeek not in kinds["limited"]


def test_a_rate_limit_that_is_not_a_rate_limit_is_refused_at_declaration() -> None:
    with pytest.raises(DeclarationError, match="`rate_limit` must be a RateLimit"):

        class Wrong(Stage):
            consumes = PINGS
            rate_limit = 100  # type: ignore[assignment]

            def handle(self, event: Ping, ctx: Context) -> None:
                pass


class PerKey(Stage):
    """Two calls a second per record key."""

    consumes = PINGS
    group = "per-key"
    rate_limit = RateLimit(max=2, per_s=1, per_key=True)
    clock: FakeClock
    calls: list[tuple[float, str]] = []

    def handle(self, event: Ping, ctx: Context) -> None:
        PerKey.calls.append((self.clock.monotonic(), event.ping_id))


def test_a_busy_key_is_deferred_and_never_holds_back_the_other_keys_of_its_partition() -> None:
    PerKey.calls.clear()
    settings = Settings(schemas_dir=SCHEMAS, topic_partitions=1)  # every key on one partition
    with TestPipeline([PerKey], settings) as t:
        PerKey.clock = t.clock  # type: ignore[assignment]
        start = t.clock.monotonic()
        for n in range(10):
            t.publish(PINGS, Ping(ping_id=f"busy/{n}", n=n), key="busy")
        for name in "abcde":  # behind the busy key's excess, on the same partition
            t.publish(PINGS, Ping(ping_id=f"{name}/0", n=0), key=name)
        t.run_until_idle(timeout_s=60)
        at = {ping_id: when - start for when, ping_id in PerKey.calls}
        assert len(PerKey.calls) == len(at) == 15, "each event once"
        assert all(at[f"{name}/0"] < 0.5 for name in "abcde"), "the other keys went on at once"
        busy = [(when, p) for when, p in PerKey.calls if p.startswith("busy/")]
        assert [p for _, p in busy] == [f"busy/{n}" for n in range(10)], "in order"
        # Two at once (the burst), then one every half second: the ninth after 4 s.
        assert busy[-1][0] - start >= 4.0 - 1e-6
        assert_within_bucket([when for when, _ in busy], PerKey.rate_limit)
        stats = t.stats(PerKey)
        assert (stats.retried, stats.dead_lettered, stats.failed) == (0, 0, 0)
        assert t.dead_letters(PerKey) == []
        assert t.lag(PerKey) == (15 + 8, 0), "the inputs and the 8 deferred copies committed"


def test_pipeline_status_counts_a_busy_keys_deferred_events_as_delayed() -> None:
    """A busy key's excess, waiting in its deferral topic's delay tiers, is neither lost from
    view nor waiting: ``pipeline status`` counts it as ``delayed``, then 0 once handled."""
    PerKey.calls.clear()
    settings = Settings(schemas_dir=SCHEMAS, topic_partitions=1)
    with TestPipeline([PerKey], settings) as t:
        PerKey.clock = t.clock  # type: ignore[assignment]
        for n in range(6):
            t.publish(PINGS, Ping(ping_id=f"busy/{n}", n=n), key="busy")
        t.run_until(lambda: t.lag(PerKey) == (6, 0))  # the inputs committed, 4 deferred
        deferred = status([PerKey], settings, transport=t.transport).stage("per_key")
        assert (deferred.waiting, deferred.delayed) == (0, 4)
        t.run_until_idle(timeout_s=60)
        done = status([PerKey], settings, transport=t.transport).stage("per_key")
        assert (done.waiting, done.delayed, len(PerKey.calls)) == (0, 0, 6)


class PerCustomer(PerKey):
    """Limited per value of a key function of the event (its n), whatever the record key."""

    group = "per-customer"
    rate_limit = RateLimit(max=1, per_s=10, key=lambda event: event.n % 2)


def test_a_key_function_limits_each_value_it_returns() -> None:
    PerKey.calls.clear()
    with TestPipeline([PerCustomer], Settings(schemas_dir=SCHEMAS, topic_partitions=1)) as t:
        PerKey.clock = t.clock  # type: ignore[assignment]
        for n in range(4):
            t.publish(PINGS, Ping(ping_id=f"p{n}", n=n), key=f"k{n}")
        t.run_until_idle(timeout_s=60)
        at = dict((p, when) for when, p in PerKey.calls)
        assert sorted(at) == ["p0", "p1", "p2", "p3"]
        assert at["p0"] == at["p1"], "odd and even each had a token at once"
        assert at["p2"] - at["p0"] >= 10 - 1e-6 and at["p3"] - at["p1"] >= 10 - 1e-6


def test_a_per_key_limit_needs_one_input_topic() -> None:
    with pytest.raises(DeclarationError, match="per-key `rate_limit` needs a stage with one"):

        class TwoInputs(Stage):
            consumes = (PINGS, PONGS)
            rate_limit = RateLimit(max=1, per_key=True)

            def handle(self, event: Ping, ctx: Context) -> None:
                pass


class LimitedExactlyOnce(Limited):
    group = "limited-eos"
    guarantee = "exactly_once"


def test_a_per_key_limit_on_an_exactly_once_stage_needs_an_idempotency_store() -> None:
    """A deferred copy returns through at-least-once moves: without deduplication by event id,
    a moved-twice copy would be handled (and its outputs committed) twice."""
    with pytest.raises(DeclarationError, match="without an idempotency store"):

        class PerKeyExactlyOnce(PerKey):
            group = "per-key-eos"
            guarantee = "exactly_once"


@pytest.mark.parametrize("stage", [LimitedExactlyOnce])
def test_an_exactly_once_stage_is_limited_the_same_way(stage: type[Stage]) -> None:
    Limited.calls.clear()
    PerKey.calls.clear()
    settings = Settings(schemas_dir=SCHEMAS, topic_partitions=1)
    with TestPipeline([stage], settings) as t:
        Limited.clock = PerKey.clock = t.clock  # type: ignore[assignment]
        for n in range(12):
            t.publish(PINGS, Ping(ping_id=f"p{n}", n=n), key="one-key")
        t.run_until_idle(timeout_s=60)
        calls = Limited.calls or PerKey.calls
        assert len(calls) == 12
        limit = stage.rate_limit
        assert limit is not None
        assert_within_bucket([at for at, _ in calls], limit)
        assert t.dead_letters(stage) == [] and t.stats(stage).retried == 0


class PerKeyFlaky(Stage):
    """One call per key every 10 s; the first event fails once."""

    consumes = PINGS
    group = "per-key-flaky"
    rate_limit = RateLimit(max=1, per_s=10, per_key=True)
    retry = RetryPolicy(in_process_attempts=1, tiers=(1.0,))  # to the retry topic at once
    clock: FakeClock
    calls: list[tuple[float, int]] = []
    failed: set[int] = set()

    def handle(self, event: Ping, ctx: Context) -> None:
        if event.n == 0 and event.n not in self.failed:
            self.failed.add(event.n)
            raise ConnectionError("down")
        PerKeyFlaky.calls.append((self.clock.monotonic(), event.n))


def test_a_retry_of_a_busy_key_is_handled_when_due_not_deferred() -> None:
    cls = PerKeyFlaky
    cls.calls.clear()
    cls.failed.clear()
    with TestPipeline([cls], Settings(schemas_dir=SCHEMAS, topic_partitions=1)) as t:
        cls.clock = t.clock  # type: ignore[assignment]
        start = t.clock.monotonic()
        for n in range(3):
            t.publish(PINGS, Ping(ping_id=f"p{n}", n=n), key="busy")
        t.run_until_idle(timeout_s=120)
        at = {n: when - start for when, n in cls.calls}
        assert sorted(at) == [0, 1, 2]
        assert at[0] < 5, "the retry ran at its 1 s tier, not behind the key's deferrals"
        assert at[1] >= 10 - 1e-6 and at[2] >= 20 - 1e-6
        assert t.stats(cls).retried == 1 and t.dead_letters(cls) == []
