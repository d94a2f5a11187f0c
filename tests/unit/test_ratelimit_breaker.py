"""A rate limit and a breaker on one stage, by the real runner on the memory broker with a
FakeClock: a record the breaker holds (open, or its probe in flight) takes no token of the
limit, group-wide or per key, and a record the limit holds takes no probe."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence

import pytest

from pipeline import BreakerPolicy, Context, RateLimit, RetryPolicy, Stage
from pipeline.breaker import CircuitBreaker, State
from pipeline.gates import RateLimited
from pipeline.keylimit import KeyRateLimited
from pipeline.ratelimit import GroupShare, TokenBucket
from tests.integration.app_stages import PINGS, Ping
from tests.unit.memory_rig import Rig

COOLDOWN_S = 5.0


class Guarded(Stage):
    """Two calls a second for the group, and a breaker that opens at the first failure."""

    consumes = PINGS
    group = "limited-guarded"
    rate_limit = RateLimit(max=2, per_s=1)
    breaker = BreakerPolicy(failure_threshold=1, cooldown_s=COOLDOWN_S)
    handled: list[int] = []

    def handle(self, event: Ping, ctx: Context) -> None:
        Guarded.handled.append(event.n)


class GuardedPerKey(Guarded):
    group = "limited-guarded-per-key"
    rate_limit = RateLimit(max=2, per_s=1, per_key=True)


def one_partition(topics: Sequence[str]) -> dict[str, int]:
    return {topic: 1 for topic in topics}


def rig(stage: type[Stage]) -> Rig:
    Guarded.handled.clear()
    return Rig(stage, partition_counts=one_partition)


def parts(r: Rig) -> tuple[CircuitBreaker, GroupShare]:
    breaker, gate = r.runner._breaker, r.runner._parts.chain.rate_limit
    assert breaker is not None and isinstance(gate, RateLimited)
    assert isinstance(gate.limiter, GroupShare)
    return breaker, gate.limiter


def tokens(bucket: TokenBucket, r: Rig) -> float:
    """The bucket's tokens now (refilled up to the fake clock's time)."""
    bucket.full(r.clock.monotonic())
    return bucket.tokens


def test_a_record_held_by_the_open_breaker_takes_no_token() -> None:
    with rig(Guarded) as r:
        breaker, limiter = parts(r)
        r.ping(0)
        r.step()
        assert Guarded.handled == [0]
        before = tokens(limiter.bucket, r)
        breaker.record_failure()  # the dependency is down: open for the cooldown
        r.ping(1)
        r.step()
        assert Guarded.handled == [0] and (PINGS.name, 0) in r.consumer.paused
        assert tokens(limiter.bucket, r) == pytest.approx(before), "no token for a held record"
        r.clock.advance(COOLDOWN_S + 0.1)
        r.step()  # resumed: the record probes, and takes its token now
        assert Guarded.handled == [0, 1] and breaker.state is State.CLOSED
        refilled = min(limiter.bucket.capacity, before + (COOLDOWN_S + 0.1) * 2)
        assert tokens(limiter.bucket, r) == pytest.approx(refilled - 1)


def test_a_record_held_while_the_probe_is_in_flight_takes_no_token() -> None:
    with rig(Guarded) as r:
        breaker, limiter = parts(r)
        r.ping(0)
        r.step()
        breaker.record_failure()
        r.clock.advance(COOLDOWN_S)
        assert breaker.allow() and breaker.state is State.HALF_OPEN  # a probe, out elsewhere
        before = tokens(limiter.bucket, r)
        r.ping(1)
        r.step()
        assert Guarded.handled == [0] and (PINGS.name, 0) in r.consumer.paused
        assert tokens(limiter.bucket, r) == pytest.approx(before), "no token for a held record"


def test_a_record_the_limit_holds_takes_no_probe() -> None:
    with rig(Guarded) as r:
        breaker, limiter = parts(r)
        r.ping(0)
        r.step()
        breaker.record_failure()
        r.clock.advance(COOLDOWN_S)  # the cooldown is over: the next record may probe
        tokens(limiter.bucket, r)
        limiter.bucket.tokens = 0.0  # spent (by other records)
        r.ping(1)
        r.step()
        assert Guarded.handled == [0] and (PINGS.name, 0) in r.consumer.paused
        assert r.runner._parts.chain.breaker is not None
        assert not r.runner._parts.chain.breaker.busy, "held by the limit: no probe taken"
        r.clock.advance(1.0)  # a token is due
        r.step()
        assert Guarded.handled == [0, 1] and breaker.state is State.CLOSED, "it probed"


def test_a_record_held_by_the_open_breaker_takes_no_token_of_its_key() -> None:
    with rig(GuardedPerKey) as r:
        breaker = r.runner._breaker
        [gate] = [g for g in r.runner._parts.chain.gates if isinstance(g, KeyRateLimited)]
        assert breaker is not None
        r.ping(0, key=b"k")
        r.step()
        assert Guarded.handled == [0]
        bucket = gate._buckets._buckets[b"k"]
        before = tokens(bucket, r)
        breaker.record_failure()
        r.ping(1, key=b"k")
        r.step()
        assert Guarded.handled == [0] and (PINGS.name, 0) in r.consumer.paused
        assert tokens(bucket, r) == pytest.approx(before), "no token for a held record"
        assert gate.deferred == 0, "held with its partition, not deferred"
        r.clock.advance(COOLDOWN_S + 0.1)
        r.step()
        assert Guarded.handled == [0, 1] and breaker.state is State.CLOSED



class GuardedConcurrent(Stage):
    """Four in flight, ten calls a second, and a breaker that opens at the first failure.
    Ping 0 (key ``a``) fails; ping 1 (key ``b``) runs until the test releases it, pings 2
    and 3 (key ``b``) wait behind it for their key."""

    consumes = PINGS
    group = "limited-guarded-concurrent"
    concurrency = 4
    rate_limit = RateLimit(max=10, per_s=1)
    breaker = BreakerPolicy(failure_threshold=1, cooldown_s=COOLDOWN_S)
    retry = RetryPolicy(in_process_attempts=1)
    calls: list[int] = []
    failing = True
    released = False

    async def handle(self, event: Ping, ctx: Context) -> None:
        cls = GuardedConcurrent
        cls.calls.append(event.n)
        if event.n == 0 and cls.failing:
            raise ConnectionError("the dependency is down")
        while event.n == 1 and not cls.released:
            await asyncio.sleep(0.001)  # the loop runs only inside the runner's steps


@contextlib.contextmanager
def releasing(cls: type[GuardedConcurrent]) -> Iterator[None]:
    """Ping 1 is released on the way out, even after a failed assertion: the shutdown would
    wait for it."""
    try:
        yield
    finally:
        cls.released = True


def spent(limiter: GroupShare, r: Rig) -> tuple[float, float]:
    """The tokens taken from the worker's bucket (full when the first record came) and from
    the partition's turn (which began with the worker's tokens); the fake clock stands still,
    so nothing refills."""
    [turn] = limiter.turns._buckets.values()
    start = limiter.bucket.capacity
    return start - tokens(limiter.bucket, r), start - tokens(turn, r)


def test_calls_a_breaker_hold_drops_before_they_start_give_their_tokens_back() -> None:
    # The four records are admitted at once, a token each. Ping 0 fails and opens the breaker,
    # whose hold rewinds the partition while ping 1 runs: pings 2 and 3, waiting for their key,
    # never start. They will be read again and take a token then, so the tokens they took now
    # are given back: the bucket pays only for the calls that ran.
    cls = GuardedConcurrent
    cls.calls.clear()
    cls.failing, cls.released = True, False
    with Rig(cls, partition_counts=one_partition) as r, releasing(cls):
        breaker, limiter = parts(r)
        for n, key in enumerate((b"a", b"b", b"b", b"b")):
            r.ping(n, key=key)
        r.step(3)  # admitted; ping 0 failed and the breaker holds everything; ping 1 runs
        assert breaker.state is State.OPEN and (PINGS.name, 0) in r.consumer.paused
        assert cls.calls == [0, 1]
        cls.released = True
        r.step(2)  # ping 1 ends (its result dropped); pings 2 and 3 are dropped unstarted
        assert cls.calls == [0, 1]
        assert spent(limiter, r) == pytest.approx((2, 2)), "a token per call that ran"
        cls.failing = False
        r.clock.advance(COOLDOWN_S)
        for _ in range(5):  # the probe closes the breaker (the rest held meanwhile); the rest
            r.clock.advance(0.1)
            r.step(2)
        assert breaker.state is State.CLOSED and sorted(cls.calls[2:]) == [0, 1, 2, 3]
