"""A worker's partitions take turns at its rate limit (``ratelimit.Turns``), as pure logic on
a FakeClock: two busy partitions get half the tokens each, whichever is asked first, and the
worker's rate is unchanged; a partition alone gets the whole rate, and one that stops asking
gives its part back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import pytest

from pipeline import Context, Settings, Stage
from pipeline.clock import FakeClock
from pipeline.gates import MIN_HOLD_S
from pipeline.ports import TopicPartition
from pipeline.ratelimit import MIN_BUCKET_S, TURN_SLACK_S, GroupShare, RateLimit
from pipeline.testing import TestPipeline
from tests.integration.app_stages import PINGS, Ping
from tests.unit.memory_rig import SCHEMAS, key_for

A, B = ("in", 0), ("in", 1)
STEP_S = 0.01


def worker(limit: RateLimit, assigned: set[TopicPartition], clock: FakeClock) -> GroupShare:
    return GroupShare(limit, ["in"], [], assigned, lambda t: {"in": 2}, clock.monotonic, "s")


def drain(
    limiter: GroupShare, clock: FakeClock, busy: Sequence[TopicPartition], seconds: float,
    refetch_s: float = 0.0, batch: int = 50,
) -> dict[TopicPartition, int]:  # fmt: skip
    """Each partition with an endless backlog, as the runner asks: every step, the partitions
    in ``busy``'s order (the first one always first), each a batch of records until one is
    held (for its wait, ``MIN_HOLD_S`` at least, then ``refetch_s`` until its records are
    back). Returns the tokens each partition took."""
    taken = dict.fromkeys(busy, 0)
    back_at = dict.fromkeys(busy, clock.monotonic())
    end = clock.monotonic() + seconds
    while clock.monotonic() < end:
        now = clock.monotonic()
        for tp in busy:
            if now < back_at[tp]:
                continue
            for _ in range(batch):
                wait = limiter.take(tp)
                if wait > 0:
                    back_at[tp] = now + max(wait, MIN_HOLD_S) + refetch_s
                    break
                taken[tp] += 1
        clock.advance(STEP_S)
    return taken


@pytest.mark.parametrize("refetch_s", [0.0, 1.0], ids=["at-once", "refetched-a-second-later"])
def test_two_busy_partitions_take_turns_whichever_is_asked_first(refetch_s: float) -> None:
    """Before, the partition asked first after each hold took every token (the other waited
    for ever); now each gets half, and together they still get the worker's whole rate."""
    clock = FakeClock()
    limit = RateLimit(max=20, per_s=1, burst=1)  # the worker has both partitions: 20/s
    limiter = worker(limit, {A, B}, clock)
    first = drain(limiter, clock, [A, B], seconds=5.0, refetch_s=refetch_s)
    # The full bucket at the start (30 tokens: 1.5 s of the rate) went to A, asked first.
    assert sum(first.values()) <= 20 * 5 + 20 * MIN_BUCKET_S + 1, first
    taken = drain(limiter, clock, [A, B], seconds=30.0, refetch_s=refetch_s)
    total = taken[A] + taken[B]
    assert total == pytest.approx(20 * 30, rel=0.02), taken
    assert taken[A] == pytest.approx(total / 2, rel=0.03), taken
    assert taken[B] == pytest.approx(total / 2, rel=0.03), taken


def test_a_partition_alone_gets_the_whole_rate() -> None:
    clock = FakeClock()
    limiter = worker(RateLimit(max=20, per_s=1, burst=1), {A, B}, clock)
    taken = drain(limiter, clock, [B], seconds=30.0)
    assert taken[B] == pytest.approx(20 * 30 + 20 * MIN_BUCKET_S, abs=2)


def test_a_partition_that_stops_asking_gives_its_part_back() -> None:
    """A's backlog ends: within ``TURN_SLACK_S`` (and a sweep) B has the whole rate."""
    clock = FakeClock()
    limiter = worker(RateLimit(max=20, per_s=1, burst=1), {A, B}, clock)
    drain(limiter, clock, [A, B], seconds=10.0)
    assert len(limiter.turns) == 2
    drain(limiter, clock, [B], seconds=TURN_SLACK_S + 1.0)
    assert len(limiter.turns) == 1, "A left"
    taken = drain(limiter, clock, [B], seconds=20.0)
    assert taken[B] == pytest.approx(20 * 20, rel=0.03)


def test_a_revoked_partition_leaves_its_turn_at_the_next_rebalance() -> None:
    clock = FakeClock()
    assigned = {A, B}
    limiter = worker(RateLimit(max=20, per_s=1, burst=1), assigned, clock)
    drain(limiter, clock, [A, B], seconds=5.0)
    assigned.discard(A)
    limiter.changed()
    clock.advance(1.0)
    limiter.take(B)
    assert len(limiter.turns) == 1 and limiter.share == pytest.approx(0.5)


class Mailer(Stage):
    """Five calls a second for the worker's two partitions."""

    consumes = PINGS
    group = "turns"
    rate_limit = RateLimit(max=5, per_s=1)
    clock: FakeClock
    calls: ClassVar[list[tuple[float, str]]] = []

    def handle(self, event: Ping, ctx: Context) -> None:
        Mailer.calls.append((self.clock.monotonic(), event.ping_id))


def test_the_runner_serves_a_workers_partitions_in_turn_at_its_limit() -> None:
    """Two partitions with 30 events each behind one limit, on the memory broker: past the
    full bucket at the start, while both have events, each second goes half to each (before,
    the memory broker's order gave one 4 of a second's 6 now and then), at the limit."""
    Mailer.calls.clear()
    settings = Settings(schemas_dir=SCHEMAS, topic_partitions=2)
    with TestPipeline([Mailer], settings) as t:
        Mailer.clock = t.clock  # type: ignore[assignment]
        start = t.clock.monotonic()
        for partition in (0, 1):
            for n in range(30):
                key = key_for(partition, 2).decode()
                t.publish(PINGS, Ping(ping_id=f"{partition}/{n}", n=n), key=key)
        t.run_until_idle(timeout_s=60)
    assert len(Mailer.calls) == 60, "each event once"

    def second(s: int, partition: int) -> int:
        return sum(1 for at, ping_id in Mailer.calls
                   if ping_id.startswith(f"{partition}/") and s <= at - start < s + 1)  # fmt: skip

    for s in range(1, 8):  # past the full bucket, before the first partition runs dry
        calls = (second(s, 0), second(s, 1))
        assert abs(calls[0] - calls[1]) <= 1, f"second {s}: {calls}"
    done = max(at for at, _ in Mailer.calls) - start
    assert done == pytest.approx((60 - 7.5) / 5, abs=1.0), "a full bucket, then 5/s"


def many(n: int, limit: RateLimit, clock: FakeClock) -> tuple[GroupShare, list[TopicPartition]]:
    """A worker with all ``n`` partitions of its input."""
    tps = [("in", p) for p in range(n)]
    share = GroupShare(limit, ["in"], [], set(tps), lambda t: {"in": n}, clock.monotonic, "s")
    return share, tps


def test_many_partitions_with_small_parts_still_get_the_whole_rate_refetched_a_second_later() -> (
    None
):
    """Ten partitions share 10 calls a second (a part of 1/s each) and each one's records are
    back a second after its hold ends, as on Kafka: the worker still makes its 10 calls a
    second (a part's bucket keeps what comes in meanwhile; with room for 1.5 tokens it ran at
    6.7/s)."""
    clock = FakeClock()
    limiter, tps = many(10, RateLimit(max=10, per_s=1), clock)
    drain(limiter, clock, tps, seconds=10.0, refetch_s=1.0)
    taken = drain(limiter, clock, tps, seconds=60.0, refetch_s=1.0)
    assert sum(taken.values()) == pytest.approx(10 * 60, rel=0.03), taken
    assert min(taken.values()) == pytest.approx(60, rel=0.1), taken


def test_a_big_burst_does_not_let_the_partitions_asked_first_take_every_turn() -> None:
    """100 calls a minute for twelve busy partitions (the burst: the whole minute's 100): in no
    minute does a partition go without its turn, and once the first full bucket is spent each
    gets its part (each partition joining with a full bucket of its own, the ones asked first
    took the worker's tokens while three partitions waited over a minute)."""
    clock = FakeClock()
    limiter, tps = many(12, RateLimit(max=100, per_s=60), clock)
    first = drain(limiter, clock, tps, seconds=60.0, refetch_s=0.3)
    assert min(first.values()) >= 3, first
    for _ in range(2):
        taken = drain(limiter, clock, tps, seconds=60.0, refetch_s=0.3)
        assert sum(taken.values()) == pytest.approx(100, abs=3), taken
        for tp in tps:
            assert taken[tp] == pytest.approx(100 / 12, abs=2), taken
