"""A rate limit and a breaker on one stage, by the real runner on the memory broker with a
FakeClock: a record the breaker holds (open, or its probe in flight) takes no token of the
limit, group-wide or per key, and a record the limit holds takes no probe."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from pipeline import BreakerPolicy, Context, RateLimit, Stage
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
