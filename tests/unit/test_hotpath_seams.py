"""The seams the hot path uses keep their meaning: gates that watch some state are skipped only
while it is empty, and the stats counted once per loop step equal a count per record while a
user's ``on_succeeded`` still hears every record."""

from __future__ import annotations

from typing import Any

from pipeline import gates as g
from pipeline.hookcalls import Hooks
from pipeline.hooks import Hook, StageInfo
from pipeline.stats import StageStats, StatsHook
from pipeline.testing import TestPipeline
from tests.integration.app_stages import PINGS, PONGS, Ping
from tests.unit.memory_rig import Rig
from tests.unit.test_hooks import Answer, _settings


def test_watched_gates_are_left_out_of_the_calm_chains_and_their_state_is_the_live_one() -> None:
    """A plain stage's calm input chain is empty; what it watches is the holds' skip dict, the
    tracker's kept partitions and the refusal verdicts themselves (not copies)."""
    parts = Rig(Answer).runner._parts
    chain = parts.chain
    assert [type(gate) for gate in chain.input_gates] == [g.HeldInBatch, g.Refused]
    assert chain.calm_input_gates == () and chain.calm_gates == ()
    watched = [id(c) for c in chain.watched]
    assert watched == [id(parts.holds.skip), id(parts.tracker.keeping),
                       id(parts.refusals.verdicts)]  # fmt: skip


def test_a_record_of_a_partition_held_in_its_batch_is_still_handed_back() -> None:
    """Once a partition is held in a batch, the gates are asked again: its later records of that
    batch are handed back, not handled."""
    runner = Rig(Answer).runner
    holds, tp = runner._parts.holds, ("test.pings", 0)
    holds.skip[tp] = False  # as a hold of an earlier record of this batch leaves it
    record = _Rec("test.pings", 0, 5)
    assert runner.admit(record) is None
    assert runner._parts.tracker.partitions.get(tp) is None, "no token begun for it"


class _Counting(Hook):
    def __init__(self) -> None:
        self.succeeded: list[int] = []

    def on_succeeded(self, stage: StageInfo, record: Any, ctx: Any) -> None:
        self.succeeded.append(record.offset())


def test_the_stats_count_per_step_what_a_user_hook_hears_per_record() -> None:
    """After every step the stats hold exactly the successes and outputs so far; a user hook's
    on_succeeded is called once per record, as before."""
    hook = _Counting()
    with TestPipeline([Answer], _settings(), hooks=[hook]) as t:
        for n in range(7):
            t.publish(PINGS, Ping(ping_id=f"p{n}", n=n), key=b"k")
        t.run_until_idle()
        stats = t.stats(Answer)
        assert stats.processed == 7 and stats.outputs == 7
        assert sorted(hook.succeeded) == list(range(7))
        assert len(t.outputs(PONGS)) == 7


def test_count_succeeded_is_what_on_succeeded_does_for_that_many_records() -> None:
    """StatsHook's two forms agree; a Hooks of it alone resolves on_succeeded to nothing."""
    one, many = StageStats("s", "g"), StageStats("s", "g")
    stage = StageInfo("s", "g", "w")

    class Ctx:
        outputs = [1, 2]

    for _ in range(3):
        StatsHook(one).on_succeeded(stage, None, Ctx())  # type: ignore[arg-type]
    hooks = Hooks(stage, [StatsHook(many)])
    assert hooks.on_succeeded is None and hooks.count_succeeded is not None
    hooks.count_succeeded(3, 6)
    assert (one.processed, one.outputs) == (many.processed, many.outputs) == (3, 6)


class _Rec:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._coordinates = (topic, partition, offset)

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._coordinates[0]

    def partition(self) -> int:
        return self._coordinates[1]

    def offset(self) -> int:
        return self._coordinates[2]

    def headers(self) -> None:
        return None

    def value(self) -> bytes:
        return b""
