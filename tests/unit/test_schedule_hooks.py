"""Each fired cron tick is told to the Pipeline's hooks (``on_schedule_fired``) once, after its
commit, and counted by the Prometheus subscriber as ``pipeline_schedule_fired_total``; where no
hook listens, the scheduler dispatches nothing. In memory, on a FakeClock."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from pipeline import Hook, Settings
from pipeline.app import Pipeline
from pipeline.metrics import Metrics
from pipeline.scheduler import Fired, Scheduler
from pipeline.schedulestate import state_topic, trigger_record
from pipeline.testing import FakeClock, MemoryBroker
from pipeline.testing.transport import MemoryTransport
from tests.unit.test_scheduler_memory import EVERY_SECOND, SCHEMAS, START, run


class Heard(Hook):
    def __init__(self) -> None:
        self.fired: list[Fired] = []

    def on_schedule_fired(self, fired: Fired) -> None:
        self.fired.append(fired)


class Raises(Hook):
    def on_schedule_fired(self, fired: Fired) -> None:
        raise RuntimeError("a broken listener")


class Deaf(Hook):
    def on_tick(self, stage: object, now: float) -> None:
        pass


def schedulers(hooks: Sequence[Hook], count: int) -> tuple[FakeClock, list[Scheduler], Pipeline]:
    clock = FakeClock(START)
    settings = Settings(schemas_dir=SCHEMAS)
    transport = MemoryTransport(MemoryBroker(clock), settings)
    pipeline = Pipeline.build(settings, transport=transport, hooks=hooks,
                              schedules=[EVERY_SECOND])  # fmt: skip
    pipeline.ensure_topics()
    made = [pipeline.scheduler(f"w{i}", clock=clock) for i in range(count)]
    return clock, [s for s in made if s is not None], pipeline


def test_each_fired_tick_is_heard_once_across_schedulers_and_counted() -> None:
    """Three schedulers, one owner: the hooks hear every tick it fired, once, in order, and
    the Prometheus counter of the schedule says as many; a raising hook changes nothing."""
    heard, metrics = Heard(), Metrics(CollectorRegistry())
    clock, three, _ = schedulers([Raises(), heard, metrics], 3)
    run(clock, three, 10)
    fired = [f for s in three for f in s.fired]
    assert len(fired) >= 9
    assert heard.fired == fired, "each tick heard once, after its commit"
    assert all(f.schedule == "every-second" and f.trigger_id is None for f in heard.fired)
    count = metrics.registry.get_sample_value(
        "pipeline_schedule_fired_total", {"schedule": "every-second"}
    )
    assert count == len(fired)


def test_a_manual_trigger_is_heard_with_its_trigger_id() -> None:
    heard = Heard()
    clock, [scheduler], pipeline = schedulers([heard], 1)
    run(clock, [scheduler], 2)
    producer = pipeline.transport.producer("cli")
    key, value = trigger_record("every-second", "t-1", round(clock.time() * 1000))
    producer.produce(state_topic(pipeline.settings), value, key, None, lambda _e, _m: None)
    producer.flush(1)
    run(clock, [scheduler], 1)
    assert [f.trigger_id for f in heard.fired if f.trigger_id] == ["t-1"]


def test_no_listener_no_dispatch() -> None:
    """Without a hook that overrides ``on_schedule_fired`` the scheduler holds no callable:
    a fired tick costs one ``is None`` test."""
    for hooks in ([], [Deaf()]):
        _, [scheduler], _ = schedulers(hooks, 1)
        assert scheduler._on_fired is None
