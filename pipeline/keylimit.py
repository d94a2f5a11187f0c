"""Per-key rate limits: a busy key's excess is deferred through the delay tiers, so it never
holds back the other keys of its partition.

``rate_limit = RateLimit(max=10, per_s=60, per_key=True)``: each record key gets its own token
bucket (``key=lambda event: ...``: each value the function returns). A record whose key has a
token goes on to its handler; one whose key has none is not held (that would hold every key of
its partition): its token is *reserved* (the key's bucket goes into debt) and the record is
deferred to when that token is due:

1. a copy of it (same bytes, key and headers) goes to the stage's own deferral topic
   ``<group>.deferred`` through that topic's delay tiers (``pipeline.delays.defer``), tied to
   the record's offset token: its offset is committed only once the copy is acknowledged;
2. the deferral topic's mover (``pipeline.delaymover``, one per rate-limited stage, in the
   same workers) delivers it there when due;
3. the stage reads its deferral topic as one of its inputs; a record from there already holds
   its token and goes straight to its handler.

With priority lanes (``pipeline.lanes``) the deferral topic has the input's lanes: a record of
lane ``k`` is deferred to ``<group>.deferred.p<k>`` (the ``delay-target`` header carries it
through the tiers), which the stage reads in lane ``k``'s group, so it comes back on its own
lane, not ahead of lane 0's records.

A retry of a busy key is not deferred (its copy would lose its retry history): it is handled
when due, and its token counts, so the key's next events wait that much longer. Keyless
records (``per_key=True``) share one bucket.

So nothing is lost, failed, retried or dead-lettered for the limit; only this stage sees the
copy (the input topic's other groups are not affected). Each key's deferred records get due
times one token apart, in arrival order. Limits: the delay tiers deliver within their precision
(about a second late at worst), so two events of one key deferred less than that apart may
swap places; a key's records all go to one partition, so one worker owns a key's bucket (a
``key`` function whose value spans partitions is limited per worker); the buckets live in
memory: after a restart or a rebalance a key starts with a full bucket.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pipeline import delays
from pipeline.clock import Clock
from pipeline.gates import Gate, Settled, Verdict
from pipeline.lanes import lane_topic
from pipeline.offsets import OffsetTracker
from pipeline.ports import RawRecord, TopicPartition
from pipeline.ratelimit import RateLimit, TokenBucket, deferral_name
from pipeline.retrytopics import Origin
from pipeline.stage import Stage, Topic

if TYPE_CHECKING:
    from pipeline.hookcalls import Hooks
    from pipeline.outputs import OutputWriter

log = logging.getLogger("pipeline.ratelimit")
DEFERRED = Settled("deferred")
# Buckets are swept (the full ones dropped: a full bucket is what a new key gets) whenever the
# number of keys doubles past this; memory stays in proportion to the keys active lately.
SWEEP_AT = 10_000


def deferrals(stages: Iterable[type[Stage]]) -> list[Topic]:
    """The deferral topics (logical, ``delayed=True``, with the lanes of the stage's input)
    of the stages with per-key limits: each needs a delay mover, which delivers to its lanes."""
    out = []
    for stage in stages:
        if stage.rate_limit is not None and stage.rate_limit.keyed:
            [read] = stage.input_topics()  # one input topic: checked at declaration
            lanes = read.lanes if read.lanes > 1 else None
            out.append(Topic(deferral_name(stage.group_id()), read.model, delayed=True,
                             priorities=lanes))  # fmt: skip
    return out


class KeyBuckets:
    """A token bucket per key at the limit's full rate (a key lives on one partition, so on
    one worker), made full when a key is first seen."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float]) -> None:
        self._rate, self._capacity = limit.rate, float(limit.capacity)
        self._clock = clock
        self._buckets: dict[Hashable, TokenBucket] = {}
        self._sweep_at = SWEEP_AT

    def __len__(self) -> int:
        return len(self._buckets)

    def admit(self, key: Hashable) -> float:
        """0.0: the key has a token (taken); else the seconds until the token reserved for it
        is due (the bucket goes into debt, so the key's next record is due one token later)."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._sweep_at:
                self._sweep(now)
            bucket = self._buckets[key] = TokenBucket(self._rate, self._capacity, now)
        return bucket.reserve(now)

    def _sweep(self, now: float) -> None:
        full = [k for k, b in self._buckets.items() if b.full(now)]
        for key in full:
            del self._buckets[key]
        self._sweep_at = max(SWEEP_AT, 2 * len(self._buckets))


class KeyRateLimited(Gate):
    """The stage's per-key ``RateLimit``: a record whose key has no token is deferred (see the
    module docstring); records of the deferral topic pass, their token reserved already. Each
    deferral is told to the ``on_rate_limited`` hook, with the delay its copy gets.

    ``lanes``: the lane (1, 2, ...) of each physical input topic below lane 0; a record of one
    is deferred to that lane of the deferral topic."""

    def __init__(
        self, limit: RateLimit, deferral: str, decode: Callable[[RawRecord, Origin | None], Any],
        tracker: OffsetTracker, writer: OutputWriter, clock: Clock, hooks: Hooks,
        lanes: Mapping[str, int] | None = None,
    ) -> None:  # fmt: skip
        self._buckets = KeyBuckets(limit, clock.monotonic)
        self._on_limited = hooks.on_rate_limited
        self._key_of = limit.key
        self._deferral = deferral
        # Where a record of each input topic is deferred to: its lane of the deferral topic.
        self._lanes = {topic: lane_topic(deferral, k) for topic, k in (lanes or {}).items()}
        self._deferrals = frozenset((deferral, *self._lanes.values()))
        self._decode = decode
        self._tracker, self._writer, self._clock = tracker, writer, clock
        self.deferred = 0

    def check(self, record: RawRecord, tp: TopicPartition, origin: Origin | None) -> Verdict:
        if tp[0] in self._deferrals:
            return None  # deferred before: its token was reserved then
        key = self._key(record, origin)
        if key is _UNDECODABLE:
            return None  # the decode step routes its failure
        wait_s = self._buckets.admit(key)
        if wait_s <= 0 or origin is not None:
            # A retry-topic record is never deferred: a copy would lose its retry history (and
            # a failing event could go round for ever). It runs when due; its token counts.
            return None
        now_ms = self._clock.wall_ms()
        target = self._lanes.get(tp[0], self._deferral)  # the record's own lane
        hop = delays.defer(target, now_ms + round(wait_s * 1000), now_ms, record.headers(),
                           base=self._deferral)  # fmt: skip
        token = self._tracker.partition(tp).begin(record.offset(), 1)
        self._writer.copy(record, hop.topic, hop.headers, tp, token)
        self.deferred += 1
        if self._on_limited is not None:
            self._on_limited(tp, record.offset(), wait_s)
        log.debug("%s[%d]@%d deferred %.3fs by its key's rate limit", tp[0], tp[1],
                  record.offset(), wait_s)  # fmt: skip
        return DEFERRED

    def _key(self, record: RawRecord, origin: Origin | None) -> Hashable:
        if self._key_of is None:
            return record.key()
        try:
            event = self._decode(record, origin)
        except Exception:  # the decode step after the gates routes the failure
            return _UNDECODABLE
        try:
            return self._key_of(event)
        except Exception as exc:  # the user's function: limit the record by its record key
            log.warning("%s[%d]@%d: the rate limit's key function raised %s; limited by its "
                        "record key", record.topic(), record.partition(), record.offset(),
                        type(exc).__name__)  # fmt: skip
            return record.key()


_UNDECODABLE = object()
