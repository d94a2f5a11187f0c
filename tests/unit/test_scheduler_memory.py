"""The scheduler on the in-memory broker and a FakeClock: ownership, fencing, catch-up and the
CLI's commands, stepped by the test (no thread, no sleeping)."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from pipeline import Settings
from pipeline.app import Pipeline
from pipeline.errors import ConfigError, TransactionError
from pipeline.scheduler import RETRY_S, Scheduler
from pipeline.schedules import Schedule
from pipeline.schedulestate import paused_record, state_topic, trigger_record
from pipeline.testing import FakeClock, MemoryBroker
from pipeline.testing.producer import MemoryProducer
from pipeline.testing.transport import MemoryTransport
from tests.integration.app_stages import PINGS, Ping

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def ping(tick: datetime) -> Ping:
    return Ping(ping_id=tick.isoformat(), n=int(tick.timestamp()))


EVERY_SECOND = Schedule("every-second", cron="* * * * * *", emit=PINGS, event=ping,
                        catch_up="all")  # fmt: skip


class Rig:
    def __init__(self, *schedules: Schedule, settings: Settings | None = None) -> None:
        self.clock = FakeClock(START)
        self.broker = MemoryBroker(self.clock)
        self.settings = settings or Settings(schemas_dir=SCHEMAS)
        self.transport = MemoryTransport(self.broker, self.settings)
        self.pipeline = Pipeline.build(
            self.settings, transport=self.transport, schedules=schedules or (EVERY_SECOND,)
        )
        self.pipeline.ensure_topics()
        self.workers = 0

    def scheduler(self) -> Scheduler:
        self.workers += 1
        scheduler = self.pipeline.scheduler(f"w{self.workers}", clock=self.clock)
        assert scheduler is not None
        return scheduler

    def pings(self) -> list[int]:
        """``n`` of every committed ping, in log order."""
        binding = self.pipeline.catalog.bind(Ping)
        topic = self.settings.topic(PINGS.name)
        return [self.pipeline.codec.decode(r.value, binding).n
                for r in self.transport.topic_log().read(topic) if r.value]  # fmt: skip

    def command(self, key_value: tuple[bytes, bytes]) -> None:
        producer = self.transport.producer("cli")
        producer.produce(state_topic(self.settings), key_value[1], key_value[0], None,
                         lambda err, _m: None)  # fmt: skip
        producer.flush(1)


def run(clock: FakeClock, schedulers: list[Scheduler], seconds: int, step_s: float = 0.25) -> None:
    for _ in range(round(seconds / step_s)):
        for s in schedulers:
            s.step()
        clock.advance(step_s)


def test_of_three_schedulers_one_owns_and_each_tick_fires_once() -> None:
    rig = Rig()
    schedulers = [rig.scheduler() for _ in range(3)]
    run(rig.clock, schedulers, 10)
    assert sum(s.owner for s in schedulers) == 1
    fired = rig.pings()
    assert fired == list(range(int(START) + 1, int(START) + len(fired) + 1))
    assert len(fired) >= 9


def test_a_crashed_owner_is_replaced_and_no_tick_is_lost_or_doubled() -> None:
    """The owner dies without a word (its group membership vanishes): another takes over from
    the state topic and fires the ticks of the gap, each once (catch_up='all')."""
    rig = Rig()
    schedulers = [rig.scheduler() for _ in range(3)]
    run(rig.clock, schedulers, 5)
    for _ in range(2):
        [owner] = [s for s in schedulers if s.owner]
        rig.broker.crash(owner._consumer)  # type: ignore[arg-type]
        schedulers.remove(owner)
        schedulers.append(rig.scheduler())
        rig.clock.advance(3)  # the gap: nobody owns
        run(rig.clock, schedulers, 5)
    fired = rig.pings()
    assert Counter(fired).most_common(1)[0][1] == 1
    assert fired == list(range(int(START) + 1, int(START) + len(fired) + 1))
    assert fired[-1] >= int(START) + 15


def test_a_fenced_zombie_owner_cannot_fire_a_tick_twice() -> None:
    """An owner that lost the group without knowing (a zombie) keeps stepping; the new owner's
    init_transactions fenced it, so its transaction fails and nothing it wrote is visible."""
    rig = Rig()
    zombie = rig.scheduler()
    run(rig.clock, [zombie], 3)
    assert zombie.owner
    successor = rig.scheduler()
    successor.on_assign([(state_topic(rig.settings), 0)])  # as the group would, after a split
    successor.step()
    rig.clock.advance(1)
    zombie.step()  # due: it tries, and is fenced
    assert not zombie.owner
    run(rig.clock, [successor], 3)
    fired = rig.pings()
    assert sorted(fired) == fired and len(set(fired)) == len(fired)
    assert fired == list(range(int(START) + 1, int(START) + len(fired) + 1))


def test_a_new_schedule_starts_with_the_first_tick_after_it_was_first_seen() -> None:
    rig = Rig()
    rig.clock.advance(0.5)
    s = rig.scheduler()
    run(rig.clock, [s], 2, step_s=0.5)
    assert rig.pings()[0] == int(START) + 1


def test_ticks_missed_while_everything_was_down_follow_catch_up_latest() -> None:
    hourly = Schedule("hourly", cron="0 * * * *", emit=PINGS, event=ping)  # latest by default
    rig = Rig(hourly)
    s = rig.scheduler()
    run(rig.clock, [s], 1)
    s.close()
    rig.clock.advance(5 * 3600 + 600)  # down for five hours and ten minutes
    run(rig.clock, [rig.scheduler()], 1)
    assert rig.pings() == [int(START) + 5 * 3600]


def test_a_paused_schedule_fires_nothing_until_resumed_and_skips_the_paused_ticks() -> None:
    rig = Rig()
    s = rig.scheduler()
    run(rig.clock, [s], 3)
    before = len(rig.pings())
    rig.command(paused_record(EVERY_SECOND.name, True))
    run(rig.clock, [s], 5)
    paused_until = int(rig.clock.time())
    assert len(rig.pings()) <= before + 1  # a tick may fire in the step that reads the command
    rig.command(paused_record(EVERY_SECOND.name, False))
    run(rig.clock, [s], 3)
    after = [n for n in rig.pings() if n > paused_until]
    assert after and after[0] <= paused_until + 1
    assert len(set(rig.pings())) == len(rig.pings())


def test_a_trigger_fires_one_extra_event_once_even_across_a_takeover() -> None:
    hourly = Schedule("hourly", cron="0 * * * *", emit=PINGS, event=ping)
    rig = Rig(hourly)
    s = rig.scheduler()
    run(rig.clock, [s], 1)
    rig.command(trigger_record("hourly", "t1", int(rig.clock.time() * 1000)))
    run(rig.clock, [s], 1)
    rig.broker.crash(s._consumer)  # type: ignore[arg-type]
    run(rig.clock, [rig.scheduler()], 2)
    assert rig.pings() == [int(START) + 1]
    assert [f.trigger_id for f in s.fired] == ["t1"]


def test_a_state_topic_with_more_than_one_partition_is_refused() -> None:
    settings = Settings(schemas_dir=SCHEMAS)
    clock = FakeClock(START)
    broker = MemoryBroker(clock)
    broker.create_topic(state_topic(settings), 3)
    pipeline = Pipeline.build(settings, transport=MemoryTransport(broker, settings),
                              schedules=[EVERY_SECOND])  # fmt: skip
    with pytest.raises(ConfigError, match="needs exactly one"):
        pipeline.ensure_topics()


def test_an_event_function_that_fails_holds_its_schedule_only() -> None:
    """A bug in one schedule's event function is logged and retried; its ticks are not lost
    and the other schedules fire on."""
    calls = {"n": 0}

    def flaky(tick: datetime) -> Ping:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise RuntimeError("not yet")
        return Ping(ping_id="flaky", n=-int(tick.timestamp()))

    broken = Schedule("flaky", cron="* * * * * *", emit=PINGS, event=flaky, catch_up="all")
    rig = Rig(EVERY_SECOND, broken)
    run(rig.clock, [rig.scheduler()], 6)
    fired = rig.pings()
    good = [n for n in fired if n > 0]
    late = sorted(-n for n in fired if n < 0)
    assert good == list(range(int(START) + 1, int(START) + len(good) + 1))
    assert late == list(range(int(START) + 1, int(START) + len(late) + 1))
    assert len(late) >= 3


def test_a_failing_event_function_waits_for_its_retry_instead_of_spinning() -> None:
    """Its tick is past due, but the scheduler waits the retry delay in consume, not zero."""

    def broken(tick: datetime) -> Ping:
        raise RuntimeError("bug")

    rig = Rig(Schedule("broken", cron="* * * * * *", emit=PINGS, event=broken))
    s = rig.scheduler()
    run(rig.clock, [s], 2)
    s.step()  # the tick is due: the function fails again, and is retried in RETRY_S
    assert s.owner and rig.pings() == []
    assert s._wait_s(5.0) == pytest.approx(RETRY_S)


class ClockedStop(threading.Event):
    """The scheduler's stop event, whose waits pass on the FakeClock instead of real time."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock

    def wait(self, timeout: float | None = None) -> bool:
        self.clock.advance(timeout or 0.0)
        return self.is_set()


def broker_away_until(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock, back_at: float, calls: list[float]
) -> None:
    """init_transactions times out (as librdkafka's, each attempt taking its whole timeout)
    until the broker is back at ``back_at`` on the clock's monotonic time."""
    real = MemoryProducer.init_transactions

    def init_transactions(self: MemoryProducer, timeout_s: float) -> None:
        calls.append(timeout_s)
        left = back_at - clock.monotonic()
        if left > timeout_s:
            clock.advance(timeout_s)
            raise TransactionError("init_transactions: Timed out (_TIMED_OUT)", code="_TIMED_OUT",
                                   retriable=True)  # fmt: skip
        clock.advance(max(left, 0.0))
        real(self, timeout_s)

    monkeypatch.setattr(MemoryProducer, "init_transactions", init_transactions)


def test_an_owner_taking_over_while_the_broker_is_down_waits_then_fires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One take-over waits at most INIT_TIMEOUT_S (the group's consumer is served between two),
    then the next one tries again; once the broker is back the owner fires."""
    rig = Rig()
    calls: list[float] = []
    broker_away_until(monkeypatch, rig.clock, back_at=45.0, calls=calls)
    scheduler = rig.scheduler()
    scheduler.stop_event = ClockedStop(rig.clock)
    scheduler.step()  # assigned, and the first take-over waits its 30 s in vain
    assert not scheduler.owner and 30.0 <= rig.clock.monotonic() < 31.0
    assert max(calls) <= 2.0, "an attempt longer than 2 s: a stop would wait for it"
    run(rig.clock, [scheduler], 20)
    assert scheduler.owner and rig.pings(), "no tick fired once the broker was back"


def test_a_stop_while_taking_over_ends_the_wait_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig()
    calls: list[float] = []
    broker_away_until(monkeypatch, rig.clock, back_at=1_000.0, calls=calls)
    scheduler = rig.scheduler()
    stop = scheduler.stop_event = ClockedStop(rig.clock)
    real_wait = stop.wait

    def wait(timeout: float | None = None) -> bool:
        if len(calls) >= 3:
            stop.set()  # SIGTERM while the owner waits for the broker
        return real_wait(timeout)

    stop.wait = wait  # type: ignore[method-assign]
    scheduler.run()  # returns: the stop ended the wait, and the loop
    assert len(calls) == 3 and rig.clock.monotonic() < 15.0
    assert not scheduler.owner
