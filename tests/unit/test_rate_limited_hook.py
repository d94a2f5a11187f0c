"""A rate limit's holds and deferrals are counted: the ``on_rate_limited`` hook hears each one
(the partition and offset held, and for how long), ``StageStats.rate_limited`` counts them and
so does ``pipeline_rate_limited_total{stage,group,topic}``; with no listener nothing is called.
In memory, on a FakeClock: no Kafka, no sleeping."""

from __future__ import annotations

from pipeline import Context, RateLimit, Settings, Stage
from pipeline.clock import FakeClock
from pipeline.gates import MIN_HOLD_S, RateLimited
from pipeline.hookcalls import Hooks
from pipeline.hooks import StageInfo
from pipeline.metrics import Metrics
from pipeline.ratelimit import deferral_name
from pipeline.testing import MemoryBroker, MemoryTransport, TestPipeline
from tests.hookkit import Recorder
from tests.integration.app_stages import PINGS, Ping
from tests.unit.memory_rig import SCHEMAS


class GroupLimited(Stage):
    """Five calls a second for the group, a burst of one."""

    consumes = PINGS
    group = "hook-limited"
    rate_limit = RateLimit(max=5, per_s=1, burst=1)
    handled: list[tuple[int, int]] = []  # (partition, offset)

    def handle(self, event: Ping, ctx: Context) -> None:
        GroupLimited.handled.append((ctx.partition, ctx.offset))


class KeyLimited(Stage):
    """Two calls a second per record key."""

    consumes = PINGS
    group = "hook-per-key"
    rate_limit = RateLimit(max=2, per_s=1, per_key=True)
    handled: list[str] = []

    def handle(self, event: Ping, ctx: Context) -> None:
        KeyLimited.handled.append(event.ping_id)


def _rig(stage: type[Stage], **settings: int) -> tuple[TestPipeline, Recorder, Metrics]:
    clock = FakeClock()
    base = Settings(schemas_dir=SCHEMAS, **settings)
    recorder, metrics = Recorder(), Metrics(clock=clock)
    transport = MemoryTransport(MemoryBroker(clock), base)
    pipeline = TestPipeline([stage], base, transport=transport, hooks=[recorder, metrics])
    return pipeline, recorder, metrics


def _rate_limited_total(metrics: Metrics, stage: type[Stage]) -> dict[str, float]:
    metrics.flush()
    return {
        s.labels["topic"]: s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == "pipeline_rate_limited_total" and s.labels["stage"] == stage.stage_name()
    }


def test_each_hold_of_a_group_limit_is_heard_counted_and_exported() -> None:
    GroupLimited.handled.clear()
    t, recorder, metrics = _rig(GroupLimited, topic_partitions=1)
    with t:
        for n in range(10):
            t.publish(PINGS, Ping(ping_id=f"p{n}", n=n), key="one-key")
        t.run_until_idle(timeout_s=60)
        assert len(GroupLimited.handled) == 10, "held, never lost"
        heard = recorder.of("rate_limited")
        assert heard, "a burst of one at 5/s holds the partition"
        for _, stage, tp, offset, delay_s in heard:
            assert stage == GroupLimited.stage_name() and tp == (PINGS.name, 0)
            assert MIN_HOLD_S <= delay_s <= 1.0, "about a token's time (0.2 s), never 0"
            assert (0, offset) in GroupLimited.handled, "the held record is handled later"
        assert t.stats(GroupLimited).rate_limited == len(heard)
        assert _rate_limited_total(metrics, GroupLimited) == {PINGS.name: len(heard)}
        stats = t.stats(GroupLimited)
        assert (stats.failed, stats.retried, stats.dead_lettered) == (0, 0, 0)


def test_each_deferral_of_a_busy_key_is_heard_once_with_its_delay() -> None:
    KeyLimited.handled.clear()
    t, recorder, metrics = _rig(KeyLimited, topic_partitions=1)
    with t:
        for n in range(6):
            t.publish(PINGS, Ping(ping_id=f"busy/{n}", n=n), key="busy")
        t.publish(PINGS, Ping(ping_id="calm/0", n=0), key="calm")
        t.run_until_idle(timeout_s=60)
        assert sorted(KeyLimited.handled) == sorted([f"busy/{n}" for n in range(6)] + ["calm/0"])
        heard = recorder.of("rate_limited")
        # Two at once (the burst), the four others deferred one token (0.5 s) apart.
        assert [offset for *_, offset, _ in heard] == [2, 3, 4, 5]
        delays = [delay_s for *_, delay_s in heard]
        assert delays == sorted(delays) and delays[-1] - delays[0] == 1.5
        assert all(tp == (PINGS.name, 0) for _, _, tp, _, _ in heard), "the inputs only"
        assert t.stats(KeyLimited).rate_limited == 4
        totals = _rate_limited_total(metrics, KeyLimited)
        assert totals == {PINGS.name: 4}
        assert deferral_name(KeyLimited.group) not in totals, "a deferred copy passes"


def test_nothing_is_called_when_no_hook_listens() -> None:
    hooks = Hooks(StageInfo("s", "g", "w"), ())
    assert hooks.on_rate_limited is None

    class Limiter:
        def take(self, tp: object = None) -> float:
            return 0.5

    gate = RateLimited(Limiter(), hooks)  # type: ignore[arg-type]
    assert gate._on_limited is None
    verdict = gate.check(None, ("t", 0), None)  # type: ignore[arg-type]
    assert verdict is not None and verdict.delay_s == 0.5  # type: ignore[union-attr]
