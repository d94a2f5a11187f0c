"""Rate limits: how many events a stage's handler takes per unit of time, across its group.

``rate_limit = RateLimit(max=100, per_s=60)`` on a stage: at most 100 events a minute for the
whole group, however many workers share it. The pieces here are pure (time is passed in, from
the runner's clock), so they are tested on a ``FakeClock`` without waiting:

- ``TokenBucket``: ``rate`` tokens a second up to ``capacity``; a handler call takes one;
- ``share``: this worker's part of the group's limit, the fraction of the input topics'
  partitions assigned to it (every partition has exactly one owner, so the parts add up to 1);
- ``GroupShare``: a worker's bucket at ``max / per_s * share``, rescaled whenever its
  assignment changes, the partition counts read from the broker (``PartitionCounts``);
- ``Turns``: the worker's partitions served in turn, each partition with records an equal part
  of the worker's rate, so one busy partition cannot take every token while another waits.

The gate (``pipeline.gates.RateLimited``) asks ``GroupShare.take`` before each handler call:
no token means the record's partition is *held* (paused, seeked back to it, resumed when a
token is due), so the consume loop never sleeps and keeps polling; nothing is failed, retried
or dead-lettered for it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.ports import TopicPartition

log = logging.getLogger("pipeline.ratelimit")
# The number of partitions of each named topic, from the broker (an admin call, bounded by its
# client's timeout); raises when the cluster cannot tell.
PartitionCounts = Callable[[Sequence[str]], Mapping[str, int]]
MAX_PERIOD_S = 30 * 24 * 3600.0
# With partition counts unknown (the broker unreachable), records wait this long and ask again.
UNKNOWN_COUNTS_HOLD_S = 1.0
_EPSILON = 1e-9  # float refills: 0.9999999 tokens is a token
# A bucket keeps at least what this long refills, or the tokens that come in while a held
# partition is resumed and fetched again would overflow, and the rate fall short of the limit.
# A hold lasts 0.1 s at least (``gates.MIN_HOLD_S``), but on Kafka the partition's records are
# often back only about a second later (measured with librdkafka 2.16: a 1 s gap after a good
# share of the holds); with a bucket of 0.2 s a limit of 50/s and ``burst=1`` ran at 17/s.
MIN_BUCKET_S = 1.5
DEFERRAL_SUFFIX = ".deferred"
# A partition asking for tokens has its part of the rate for this long after it last took one
# or after its hold ends: a held partition's records are back about a second after it resumes.
TURN_SLACK_S = MIN_BUCKET_S
SWEEP_EVERY_S = 0.5  # how often partitions that stopped asking give their part back


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``max`` handler calls every ``per_s`` seconds, for the stage's whole group.

    ``burst``: how many calls may go at once after a quiet spell (default ``max``, as Bull's
    limiter starts each window with ``max``); 1 spaces calls evenly. A worker's bucket holds
    its share of it, and at least one call and what 1.5 s of its rate adds up to (a held
    partition may be fetched again only a second later, and what the bucket cannot keep
    meanwhile would be lost).

    ``per_key=True`` limits each record key on its own instead, and ``key`` (a function of the
    decoded event, returning something hashable) each value it returns: a busy key's excess is
    deferred, the other keys go on (``pipeline.keylimit``).
    """

    max: int
    per_s: float = 1.0
    burst: int | None = None
    per_key: bool = False
    key: Callable[[Any], Hashable] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max, bool) or not isinstance(self.max, int) or self.max < 1:
            raise ValueError(f"RateLimit: max must be an int >= 1, not {self.max!r}")
        per_s = self.per_s
        if (
            isinstance(per_s, bool)
            or not isinstance(per_s, int | float)
            or not (0 < per_s <= MAX_PERIOD_S)
        ):
            raise ValueError(
                f"RateLimit: per_s must be seconds in (0, {MAX_PERIOD_S:g}], not {per_s!r}"
            )
        burst = self.burst
        if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int)
                                  or burst < 1):  # fmt: skip
            raise ValueError(f"RateLimit: burst must be an int >= 1 or None, not {burst!r}")
        if self.key is not None and not callable(self.key):
            raise ValueError(f"RateLimit: key must be a function of the event, not {self.key!r}")

    @property
    def rate(self) -> float:
        """Calls a second, for the whole group."""
        return self.max / self.per_s

    @property
    def capacity(self) -> int:
        return self.burst if self.burst is not None else self.max

    @property
    def keyed(self) -> bool:
        return self.per_key or self.key is not None


def deferral_name(group_id: str) -> str:
    """Where a stage with a per-key limit defers a busy key's excess (``pipeline.keylimit``):
    its group's name (logical or physical) and ``.deferred``."""
    return f"{group_id}{DEFERRAL_SUFFIX}"


class TokenBucket:
    """``rate`` tokens a second, up to ``capacity``; ``now`` is the caller's monotonic time.

    ``take`` never goes below zero (the group-wide limit holds the partition instead);
    ``reserve`` does, so a key's excess calls each get their own later due time, in order.
    """

    __slots__ = ("_at", "capacity", "rate", "tokens")

    def __init__(
        self, rate: float, capacity: float, now: float, tokens: float | None = None
    ) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity if tokens is None else tokens
        self._at = now

    def _refill(self, now: float) -> None:
        elapsed = now - self._at
        if elapsed > 0:
            self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
            self._at = now

    def take(self, now: float) -> float:
        """Take a token: 0.0; or, with none there, the seconds until one is (none taken)."""
        self._refill(now)
        if self.tokens >= 1 - _EPSILON:
            self.tokens -= 1
            return 0.0
        return self.wait_s(now)

    def wait_s(self, now: float) -> float:
        """Seconds until a token is there (0.0: one is)."""
        self._refill(now)
        missing = 1 - self.tokens
        if missing <= _EPSILON:
            return 0.0
        return missing / self.rate if self.rate > 0 else math.inf

    def reserve(self, now: float) -> float:
        """Take a token, in debt if need be: the seconds until it would have been there."""
        self._refill(now)
        wait = 0.0 if self.tokens >= 1 - _EPSILON else (1 - self.tokens) / self.rate
        self.tokens -= 1
        return wait

    def give_back(self, now: float) -> None:
        """Undo a ``take`` whose call never ran (up to ``capacity``: what overflowed meanwhile
        was never the caller's to keep)."""
        self._refill(now)
        self.tokens = min(self.capacity, self.tokens + 1)

    def level(self, now: float) -> float:
        """The tokens there now."""
        self._refill(now)
        return self.tokens

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.capacity - _EPSILON

    def rescale(self, rate: float, capacity: float, now: float, grow: bool = True) -> None:
        """A new rate and capacity; the tokens kept scale with the capacity (a worker that
        takes over half of another's partitions takes half its unspent tokens, not a full
        bucket: the group's burst stays what it was). ``grow=False``: they only shrink."""
        self._refill(now)
        if self.capacity > 0:
            scaled = self.tokens * capacity / self.capacity
            self.tokens = min(capacity, scaled if grow else min(scaled, self.tokens))
        self.rate, self.capacity, self._at = rate, capacity, now


def share(assigned: Iterable[TopicPartition], counts: Mapping[str, int]) -> float:
    """The fraction of the partitions of ``counts``' topics that ``assigned`` holds (0.0 when
    the topics have none). Partitions of other topics are not counted."""
    total = sum(counts.values())
    if total <= 0:
        return 0.0
    mine = sum(1 for topic, partition in assigned if partition < counts.get(topic, 0))
    return mine / total


class Turns:
    """The worker's partitions served in turn: each partition that asks for tokens gets an
    equal part of the worker's rate and capacity, in a bucket of its own (a record passes when
    both the worker's bucket and its partition's have a token). A partition that stops asking
    (no records left, or not back ``TURN_SLACK_S`` after its hold ended) gives its part back
    to the others, so one partition alone gets the whole rate. Pure: ``now`` is passed in."""

    __slots__ = ("_buckets", "_capacity", "_next_sweep", "_rate", "_until")

    def __init__(self) -> None:
        self._buckets: dict[TopicPartition, TokenBucket] = {}
        self._until: dict[TopicPartition, float] = {}  # asking until then
        self._rate, self._capacity = 0.0, 1.0
        self._next_sweep = -math.inf

    def __len__(self) -> int:
        return len(self._buckets)

    def resize(self, rate: float, capacity: float, now: float,
               assigned: Collection[TopicPartition]) -> None:  # fmt: skip
        """The worker's rate or assignment changed: partitions no longer ours leave."""
        self._rate, self._capacity = rate, capacity
        for tp in [tp for tp in self._buckets if tp not in assigned]:
            del self._buckets[tp], self._until[tp]
        self._rescale(now)

    def wait_s(self, tp: TopicPartition, now: float, pool: float) -> float:
        """Seconds until ``tp``'s part has a token (0.0: it has; nothing taken). ``pool``: the
        worker's tokens now, of which a partition that starts asking gets its part."""
        if now >= self._next_sweep:
            self._sweep(now)
        bucket = self._buckets.get(tp)
        if bucket is None:  # it starts asking: the others' parts shrink
            bucket = self._buckets[tp] = TokenBucket(0.0, 1.0, now)
            self._until[tp] = now + TURN_SLACK_S
            self._rescale(now, fresh=tp, pool=pool)
        return bucket.wait_s(now)

    def took(self, tp: TopicPartition, now: float) -> None:
        self._buckets[tp].take(now)
        self._until[tp] = now + TURN_SLACK_S

    def gave_back(self, tp: TopicPartition, now: float) -> None:
        bucket = self._buckets.get(tp)
        if bucket is not None:  # else its part went back to the others already
            bucket.give_back(now)

    def held(self, tp: TopicPartition, now: float, wait_s: float) -> None:
        self._until[tp] = now + wait_s + TURN_SLACK_S  # it asks again once its hold ends

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + SWEEP_EVERY_S
        gone = [tp for tp, until in self._until.items() if until < now]
        left = 0.0  # what the leaving parts had not spent goes to the others
        for tp in gone:
            left += self._buckets.pop(tp).level(now)
            del self._until[tp]
        if gone:
            self._rescale(now)
            for bucket in self._buckets.values():
                bucket.tokens = min(bucket.capacity, bucket.tokens + left / len(self._buckets))

    def _rescale(self, now: float, fresh: TopicPartition | None = None, pool: float = 0.0) -> None:
        """The parts: a token more than what ``MIN_BUCKET_S`` refills (a hold ends when one
        token is there, and what comes in until the partition's records are back must not
        overflow). The parts' tokens add up to the worker's at most (a newcomer gets its part
        of the worker's tokens, a part that grows gets none), or the partitions asked first
        would take the worker's tokens with tokens of their own while the others wait."""
        if not self._buckets:
            return
        n = len(self._buckets)
        rate = self._rate / n
        capacity = max(self._capacity / n, 1.0 + rate * MIN_BUCKET_S)
        for tp, bucket in self._buckets.items():
            if tp == fresh:
                tokens = min(capacity, max(pool, 0.0) / n)
                self._buckets[tp] = TokenBucket(rate, capacity, now, tokens=tokens)
            else:
                bucket.rescale(rate, capacity, now, grow=False)


class GroupShare:
    """One worker's part of a group-wide ``RateLimit``.

    The share is over the stage's *input* topics: every input partition has one owner in the
    group, so the workers' rates add up to the limit. Retry-topic records take tokens from the
    same bucket (a retry calls the handler too). A worker that holds retry partitions but no
    input partition (more workers than input partitions) takes its share of the retry topics'
    partitions instead, so its retries are never held forever; while such retries flow the
    group can go over the limit by that share.

    Assignment changes are noted (``changed``) and acted on at the next ``take``, outside the
    rebalance callback: the partition counts are read then, only for topics not known yet or
    where an assigned partition proves the count grew (partitions are only ever added).

    Within the worker, partitions take turns (``Turns``): a record passes only if its
    partition's part of the rate has a token too.
    """

    def __init__(
        self,
        limit: RateLimit,
        inputs: Collection[str],
        retry_topics: Collection[str],
        assigned: Collection[TopicPartition],
        counts: PartitionCounts,
        clock: Callable[[], float],
        name: str = "",
    ) -> None:
        self.limit = limit
        self._inputs = tuple(inputs)
        self._retries = tuple(retry_topics)
        self._assigned = assigned  # the runner's own set: read, never changed here
        self._read_counts = counts
        self._clock = clock
        self._name = name
        self._counts: dict[str, int] = {}
        self._stale = True
        self._warned = False
        self._next_read = -math.inf  # after a failed read, not again before this
        self.share = 0.0
        self.bucket = TokenBucket(0.0, 1.0, clock(), tokens=0.0)
        self.turns = Turns()
        self._started = False  # the first share fills the bucket; later ones rescale it

    def changed(self) -> None:
        """The assignment changed: recompute the share at the next ``take``."""
        self._stale = True

    def take(self, tp: TopicPartition | None = None) -> float:
        """0.0: a call may go now (its token taken); else the seconds to hold the record.
        ``tp``: the record's partition, served in turn with the others (None: not)."""
        now = self._clock()
        if self._stale and not self._recompute(now):
            return UNKNOWN_COUNTS_HOLD_S
        bucket = self.bucket
        if tp is None:
            wait = bucket.take(now)
        else:
            wait = max(bucket.wait_s(now), self.turns.wait_s(tp, now, bucket.tokens))
            if wait <= 0:
                bucket.take(now)
                self.turns.took(tp, now)
                return 0.0
            if wait != math.inf:
                self.turns.held(tp, now, wait)
        return wait if wait != math.inf else UNKNOWN_COUNTS_HOLD_S  # nothing assigned now

    def give_back(self, tp: TopicPartition | None = None) -> None:
        """A token ``take`` gave for a call that never ran: a concurrent stage's call dropped
        while it waited for its key (its partition rewound by a breaker's hold, say). Its
        record is read again and takes a token then; kept, this one would be spent twice and
        the stage run below its limit. ``tp``: as given to ``take``."""
        now = self._clock()
        self.bucket.give_back(now)
        if tp is not None:
            self.turns.gave_back(tp, now)

    def _recompute(self, now: float) -> bool:
        if now < self._next_read:
            return False  # each read may take the admin client's timeout: not per record
        try:
            self._refresh_counts()
        except Exception as exc:  # the admin client's own errors: the broker may be away
            # From after the read: a read that timed out after longer than the hold must not
            # be followed by another one at the very next record.
            self._next_read = self._clock() + UNKNOWN_COUNTS_HOLD_S
            if not self._warned:
                log.warning("%s: cannot read partition counts for the rate limit (%s); "
                            "holding records meanwhile", self._name, exc)  # fmt: skip
                self._warned = True
            return False
        self._warned = self._stale = False
        assigned = list(self._assigned)
        inputs = {t: self._counts.get(t, 0) for t in self._inputs}
        part = share(assigned, inputs)
        if part == 0 and self._retries:
            part = share(assigned, {t: self._counts.get(t, 0) for t in self._retries})
        self._set_share(part, now)
        return True

    def _set_share(self, part: float, now: float) -> None:
        limit = self.limit
        rate = limit.rate * part
        capacity = max(limit.capacity * part, rate * MIN_BUCKET_S, 1.0)
        if not self._started and part > 0:
            self.bucket = TokenBucket(rate, capacity, now)  # full, as after a quiet spell
            self._started = True
        else:
            self.bucket.rescale(rate, capacity, now)
        self.turns.resize(rate, capacity, now, self._assigned)
        if part != self.share:
            log.info("%s: rate limit share %.3f of %g/s: %.3g calls/s",
                     self._name, part, limit.rate, rate)  # fmt: skip
        self.share = part

    def _refresh_counts(self) -> None:
        known = self._counts
        wanted = [t for t in (*self._inputs, *self._retries) if t not in known]
        for topic, partition in list(self._assigned):
            if topic in known and partition >= known[topic] and topic not in wanted:
                wanted.append(topic)  # an assigned partition proves the topic grew
        if wanted:
            found = self._read_counts(wanted)
            known.update({t: n for t, n in found.items() if t in wanted})
        # A topic just created can be missing from metadata for a moment: a share computed
        # without it would be wrong until the next rebalance, so it is read again instead.
        missing = [t for t in self._inputs if t not in known]
        missing += [t for t, p in self._assigned if p >= known.get(t, 0) and t in wanted]
        if missing:
            raise LookupError(f"no partition count for {', '.join(sorted(set(missing)))} yet")
