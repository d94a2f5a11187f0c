"""Rate limits as pure logic on a FakeClock (no broker, no sleeping): the token bucket, a
worker's partition share of a group-wide limit, and its rescaling on rebalance."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pytest

from pipeline.clock import FakeClock
from pipeline.keylimit import SWEEP_AT, KeyBuckets
from pipeline.ports import TopicPartition
from pipeline.ratelimit import (
    MIN_BUCKET_S,
    UNKNOWN_COUNTS_HOLD_S,
    GroupShare,
    RateLimit,
    TokenBucket,
    share,
)


def test_a_full_bucket_lets_its_capacity_through_at_once_then_one_per_interval() -> None:
    bucket = TokenBucket(rate=2.0, capacity=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5), "no token: the wait for the next one"
    assert bucket.take(0.25) == pytest.approx(0.25), "half a token refilled meanwhile"
    assert bucket.take(0.5) == 0.0
    assert bucket.take(0.5) == pytest.approx(0.5)


def test_an_idle_bucket_refills_up_to_its_capacity_and_no_further() -> None:
    bucket = TokenBucket(rate=10.0, capacity=5, now=0.0, tokens=0.0)
    assert not bucket.full(0.1)
    assert bucket.full(100.0)
    taken = sum(1 for _ in range(20) if bucket.take(100.0) == 0.0)
    assert taken == 5, "an hour of quiet is still a burst of capacity, not of rate x time"


def test_a_bucket_taken_at_its_pace_passes_exactly_rate_times_time_plus_capacity() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=50.0, capacity=50, now=clock.monotonic())
    passed = 0
    for _ in range(10_000):  # 10 s of asking every millisecond
        if bucket.take(clock.monotonic()) == 0.0:
            passed += 1
        clock.advance(0.001)
    assert passed == pytest.approx(50 + 50 * 10, abs=1)


def test_reserving_goes_into_debt_and_gives_each_excess_call_its_own_later_due_time() -> None:
    bucket = TokenBucket(rate=1.0, capacity=2, now=0.0)
    waits = [bucket.reserve(0.0) for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.0, 1.0, 2.0, 3.0])
    assert bucket.take(2.5) == pytest.approx(1.5), "the debt is paid back before a new call"


def test_a_bucket_with_no_rate_never_has_a_token() -> None:
    bucket = TokenBucket(rate=0.0, capacity=1, now=0.0, tokens=0.0)
    assert bucket.take(1e6) == math.inf


def test_rescaling_keeps_the_unspent_fraction_of_the_bucket() -> None:
    bucket = TokenBucket(rate=10.0, capacity=10, now=0.0)
    for _ in range(5):
        bucket.take(0.0)
    bucket.rescale(rate=20.0, capacity=20, now=0.0)
    assert bucket.tokens == pytest.approx(10.0), "half full stays half full"
    bucket.rescale(rate=5.0, capacity=5, now=0.0)
    assert bucket.tokens == pytest.approx(2.5)
    assert bucket.take(0.0) == 0.0 and bucket.take(0.0) == 0.0
    assert bucket.take(0.0) == pytest.approx(0.1), "half a token short at the new rate"


def test_a_share_is_the_fraction_of_the_counted_topics_partitions_assigned() -> None:
    counts = {"orders": 6, "refunds": 2}
    assert share([("orders", 0), ("orders", 1)], counts) == pytest.approx(2 / 8)
    assert share([("orders", 0), ("refunds", 1), ("other", 0)], counts) == pytest.approx(2 / 8)
    assert share([], counts) == 0.0
    assert share([("orders", 0)], {}) == 0.0


def test_the_shares_of_every_member_of_a_group_add_up_to_one() -> None:
    counts = {"a": 7, "b": 3}
    partitions = [(t, p) for t, n in counts.items() for p in range(n)]
    members = [partitions[i::3] for i in range(3)]
    assert sum(share(m, counts) for m in members) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max": 0}, "max must be an int >= 1"),
        ({"max": 1.5}, "max must be an int >= 1"),
        ({"max": True}, "max must be an int >= 1"),
        ({"max": 10, "per_s": 0}, "per_s must be seconds"),
        ({"max": 10, "per_s": 31 * 86400}, "per_s must be seconds"),
        ({"max": 10, "burst": 0}, "burst must be an int >= 1"),
        ({"max": 10, "key": "customer"}, "key must be a function"),
    ],
)
def test_a_rate_limit_that_cannot_work_is_refused_in_one_line(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        RateLimit(**kwargs)  # type: ignore[arg-type]


def test_the_seed_limit_is_100_a_minute_with_a_burst_of_100() -> None:
    limit = RateLimit(max=100, per_s=60)
    assert limit.rate == pytest.approx(100 / 60) and limit.capacity == 100
    assert not limit.keyed
    assert RateLimit(max=5, per_key=True).keyed and RateLimit(max=5, key=str).keyed


class Counts:
    """The broker's partition counts, as an admin client reads them; ``fail`` makes it raise."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        self.reads: list[list[str]] = []
        self.fail = False

    def __call__(self, topics: Sequence[str]) -> Mapping[str, int]:
        self.reads.append(list(topics))
        if self.fail:
            raise RuntimeError("broker unreachable")
        return {t: self.counts[t] for t in topics if t in self.counts}


def a_share(
    limit: RateLimit, assigned: set[TopicPartition], counts: Counts, clock: FakeClock
) -> GroupShare:
    return GroupShare(limit, ["in"], ["in.retry.1s"], assigned, counts, clock.monotonic, "s")


def test_a_worker_with_a_third_of_the_partitions_passes_a_third_of_the_rate() -> None:
    clock = FakeClock()
    assigned = {("in", 0), ("in", 1)}
    limiter = a_share(RateLimit(max=60, per_s=1), assigned, Counts({"in": 6}), clock)
    passed = 0
    for _ in range(10_000):  # 10 s
        if limiter.take() == 0.0:
            passed += 1
        clock.advance(0.001)
    assert limiter.share == pytest.approx(1 / 3)
    # Its bucket holds 1.5 s of its 20/s (more than its third of the burst): 30, then 20/s.
    assert passed == pytest.approx(20 * MIN_BUCKET_S + 20 * 10, abs=1)


def test_the_share_is_recomputed_after_a_rebalance_and_counts_are_read_only_when_needed() -> None:
    clock = FakeClock()
    assigned = {("in", 0)}
    counts = Counts({"in": 4, "in.retry.1s": 4})
    limiter = a_share(RateLimit(max=4, per_s=100, burst=1), assigned, counts, clock)
    assert limiter.take() == 0.0 and limiter.share == pytest.approx(1 / 4)
    assert limiter.take() == pytest.approx(100.0), "1 a 100 s: the next token in 100 s"

    assigned.update({("in", 1), ("in", 2), ("in", 3)})  # the others left the group
    limiter.changed()
    clock.advance(25)  # a quarter token refilled at the old rate, then 4 a 100 s from now
    assert limiter.take() == pytest.approx(0.75 * 25) and limiter.share == 1.0
    assert counts.reads == [["in", "in.retry.1s"]], "the counts were known: not read again"

    assigned.add(("in", 4))  # a fifth partition was added to the topic
    limiter.changed()
    clock.advance(1)
    limiter.take()
    assert counts.reads[-1] == ["in"] and limiter.share == pytest.approx(1.0)


def test_a_bucket_keeps_at_least_what_its_shortest_hold_refills() -> None:
    """A held partition may be fetched again a second later: a bucket of one token at 100/s
    would lose 99 tokens meanwhile."""
    clock = FakeClock()
    limiter = a_share(RateLimit(max=100, per_s=1, burst=1), {("in", 0)}, Counts({"in": 1}), clock)
    limiter.take()
    assert limiter.bucket.capacity == pytest.approx(100 * MIN_BUCKET_S)


def test_a_worker_with_only_retry_partitions_takes_its_share_of_the_retry_topics() -> None:
    clock = FakeClock()
    assigned = {("in.retry.1s", 0)}
    counts = Counts({"in": 2, "in.retry.1s": 2})
    limiter = a_share(RateLimit(max=10, per_s=1), assigned, counts, clock)
    assert limiter.take() == 0.0 and limiter.share == pytest.approx(0.5)


def test_unknown_partition_counts_hold_records_and_are_asked_again_a_second_later() -> None:
    clock = FakeClock()
    counts = Counts({"in": 2})
    counts.fail = True
    limiter = a_share(RateLimit(max=10, per_s=1), {("in", 0)}, counts, clock)
    assert limiter.take() == UNKNOWN_COUNTS_HOLD_S
    assert limiter.take() == UNKNOWN_COUNTS_HOLD_S
    assert len(counts.reads) == 1, "not one admin call per record"
    counts.fail = False
    clock.advance(UNKNOWN_COUNTS_HOLD_S)
    assert limiter.take() == 0.0 and limiter.share == pytest.approx(0.5)


def test_a_topic_missing_from_metadata_is_asked_for_again_rather_than_counted_as_empty() -> None:
    clock = FakeClock()
    counts = Counts({})  # the input topic was just created: not in metadata yet
    limiter = a_share(RateLimit(max=10, per_s=1), {("in", 0)}, counts, clock)
    assert limiter.take() == UNKNOWN_COUNTS_HOLD_S
    counts.counts["in"] = 2
    clock.advance(UNKNOWN_COUNTS_HOLD_S)
    assert limiter.take() == 0.0 and limiter.share == pytest.approx(0.5)


def test_a_worker_with_nothing_assigned_holds_rather_than_waits_forever() -> None:
    clock = FakeClock()
    limiter = a_share(RateLimit(max=10, per_s=1), set(), Counts({"in": 2}), clock)
    assert limiter.take() == UNKNOWN_COUNTS_HOLD_S


def test_each_key_has_its_own_bucket_and_its_excess_gets_due_times_one_token_apart() -> None:
    clock = FakeClock()
    keys = KeyBuckets(RateLimit(max=2, per_s=1, per_key=True), clock.monotonic)
    assert [keys.admit(b"busy") for _ in range(5)] == pytest.approx([0, 0, 0.5, 1.0, 1.5])
    assert keys.admit(b"quiet") == 0.0, "another key is not held back"
    clock.advance(1.5)
    assert keys.admit(b"busy") == pytest.approx(0.5), "behind the deferred ones, in order"


def test_key_buckets_forget_full_buckets_once_there_are_many_keys() -> None:
    clock = FakeClock()
    keys = KeyBuckets(RateLimit(max=1, per_s=1, per_key=True), clock.monotonic)
    for n in range(SWEEP_AT):
        keys.admit(n)
    clock.advance(1)  # every bucket is full again: as good as new
    keys.admit(b"busy")
    keys.admit(b"busy")  # in debt: kept
    assert len(keys) == 1
    keys.admit("new")
    assert len(keys) == 2


def test_a_count_read_that_times_out_is_not_followed_by_another_at_the_next_record() -> None:
    """The admin call may take its whole timeout (longer than the hold): the next read is due
    a hold after the failed read ended, not after it began."""
    clock = FakeClock()
    counts = Counts({"in": 2})
    counts.fail = True
    real = counts.__call__

    class Slow:
        def __call__(self, topics: Sequence[str]) -> Mapping[str, int]:
            clock.advance(15.0)  # the admin client's timeout
            return real(topics)

    limiter = a_share(RateLimit(max=10, per_s=1), {("in", 0)}, Slow(), clock)  # type: ignore[arg-type]
    for _ in range(5):
        assert limiter.take() == UNKNOWN_COUNTS_HOLD_S
    assert len(counts.reads) == 1, "one timed-out read, then a hold, not one per record"


def test_a_token_given_back_can_be_taken_again_but_never_overfills_the_bucket() -> None:
    bucket = TokenBucket(rate=1.0, capacity=2, now=0.0)
    assert bucket.take(0.0) == 0.0 and bucket.take(0.0) == 0.0
    assert bucket.take(0.0) > 0, "empty"
    bucket.give_back(0.0)
    assert bucket.take(0.0) == 0.0, "the token given back"
    bucket.give_back(5.0)  # refilled to its capacity meanwhile
    assert bucket.level(5.0) == pytest.approx(2.0)


def test_a_share_given_back_a_token_gives_it_to_the_worker_and_the_partitions_turn() -> None:
    clock = FakeClock()
    tp = ("in", 0)
    limiter = a_share(RateLimit(max=2, per_s=1, burst=1), {tp}, Counts({"in": 1}), clock)
    while limiter.take(tp) == 0.0:
        pass  # spend the bucket (and the partition's turn) at once
    limiter.give_back(tp)
    assert limiter.take(tp) == 0.0, "passes again: both buckets had their token back"
    assert limiter.take(tp) > 0
