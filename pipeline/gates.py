"""The checks a record passes before its handler runs: an ordered chain of small gates.

The Gate protocol (how to add one, say a delay, rate-limit or expiry gate, without touching the
loop):

- ``begin_batch(records)`` is called once per fetched batch, before any ``check`` (a no-op for
  most gates; the deduplicating gate asks the store about the whole batch at once).
- ``check(record, tp, origin)`` is called for each record, in offset order per partition
  (``origin``: a retry-topic record's first coordinates and retry history, else None), and
  returns one of:

  - ``None``: pass, let the next gate (then the handler) have it;
  - a ``Hold``: the record must wait. The runner rewinds its partition to it, pauses it and
    resumes it after ``delay_s`` (``everything``: every assigned partition, each from its first
    unprocessed record): nothing is lost, nothing is retried, the consumer keeps polling;
  - a ``Settled``: the record's fate for this read is decided without its handler, by the gate
    itself: ``DUPLICATE`` (done before: its token begun finished), ``FINISHED`` (finished
    before a rewind), ``DEAD_LETTERED`` (its copy produced, tied to its token) or
    ``HANDED_BACK`` (its partition is held in this batch: it will be read again).

  A gate must not begin a token for a record it lets pass; a settling gate owns the record's
  token. A gate that takes something when it lets a record pass (a rate-limit token, the
  breaker's half-open probe) goes after every gate that can hold or settle the record, so
  nothing it took is spent on a record that is not handled: the breaker's refusal is asked
  first (``BreakerPeek``, which takes nothing), then the limits take their token, then the
  probe is taken (the peek said yes, so it is there). Gates run on the consume loop's thread;
  time comes from the runner's clock.
- ``unspent(record, tp, origin)``: a record this gate let pass was never handled after all (a
  concurrent stage's call dropped before it started, its partition rewound meanwhile); it
  will be read and checked again, so a gate that took something for it gives it back (such a
  gate is asked about every record: it is never ``watched``).

A gate that can only say something while some state of its own is not empty (a partition held
in this batch, kept tokens, refusal verdicts) names those containers in ``watched``: while all
of them are empty the runner does not ask it at all (one ``any`` over the chain's containers per
record instead of a call per gate). Containers must be mutated in place, never replaced.

To add a gate: subclass ``Gate``, and insert it in ``build`` at its place in the order, under
the declaration that enables it. The loop and the executors do not change.

``build`` picks the chain from what the stage enables (karafka's filter selector): a stage
without retry topics, a breaker or an idempotency store carries no gate for them, so its default
path makes no checks for them. Decoding is not a gate: it is the step after the chain.
"""

from __future__ import annotations

from collections.abc import Sequence, Sized
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.breaker import CircuitBreaker, State
from pipeline.hookcalls import Hooks
from pipeline.offsets import OffsetTracker, Token
from pipeline.ports import RawRecord, TopicPartition
from pipeline.retrytopics import Origin

if TYPE_CHECKING:
    from pipeline.commit import TransactionCommitter
    from pipeline.dedupe import Deduper, EventIds
    from pipeline.holds import Holds
    from pipeline.ratelimit import GroupShare
    from pipeline.refusals import Refusals

MIN_HOLD_S = 0.1  # a hold of 0 s would re-fetch and re-hold in a busy loop


@dataclass(frozen=True, slots=True)
class Hold:
    delay_s: float
    everything: bool = False

    def act(self, holds: Holds, tp: TopicPartition, offset: int) -> None:
        """Hold the record's partition (or, ``everything``, every partition) from ``offset``."""
        if self.everything:
            holds.hold_everything(tp, offset, self.delay_s)
        else:
            holds.rewind(tp, offset, self.delay_s)


@dataclass(frozen=True, slots=True)
class Settled:
    outcome: str

    def act(self, holds: Holds, tp: TopicPartition, offset: int) -> None:
        """Nothing: the gate settled the record already."""


DUPLICATE = Settled("duplicate")
FINISHED = Settled("finished")
DEAD_LETTERED = Settled("dead_lettered")
HANDED_BACK = Settled("handed_back")
HAND_BACK = Hold(0.0)  # re-read the partition from this record at the next step
WAIT_FOR_BROKER = Hold(1.0, everything=True)  # then the pending transaction call is resumed
Verdict = Hold | Settled | None


class Gate:
    """The base of every gate: passes everything. ``retry_records_only``: the gate is about
    retry-topic records, and is not asked about the stage's input records at all."""

    retry_records_only = False
    # None: asked about every record. Else: passes every record while these are all empty.
    watched: tuple[Sized, ...] | None = None

    def begin_batch(self, records: Sequence[RawRecord]) -> None:
        pass

    def check(self, record: RawRecord, tp: TopicPartition, origin: Origin | None) -> Verdict:
        return None

    def unspent(self, record: RawRecord, tp: TopicPartition, origin: Origin | None) -> None:
        pass


class HeldInBatch(Gate):
    """A record of a partition held earlier in this batch is handed back (read again later)."""

    def __init__(self, holds: Holds) -> None:
        self._holds = holds
        self._skip = holds.skip  # the same dict, cleared per batch
        self.watched = (self._skip,)

    def check(self, record: RawRecord, tp: TopicPartition, origin: Origin | None) -> Verdict:
        if tp in self._skip:
            self._holds.skipped(record, tp)
            return HANDED_BACK
        return None


class Deduplicate(Gate):
    """An event the idempotency store has seen done is not handled again (one query a batch).
    The id of the record it let pass last is ``event_id`` (recorded as done once committed)."""

    def __init__(self, tracker: OffsetTracker, hooks: Hooks) -> None:
        self._tracker = tracker
        self._on_duplicate = hooks.on_duplicate
        self.deduper: Deduper | None = None  # set once the runner opened the store
        self._ids: EventIds | None = None
        self.event_id: str | None = None

    def begin_batch(self, records: Sequence[RawRecord]) -> None:
        deduper = self.deduper
        self._ids = deduper.ids_not_done(records) if deduper is not None else None

    def check(self, record: RawRecord, tp: TopicPartition, origin: Origin | None) -> Verdict:
        if self._ids is None:
            self.event_id = None
            return None
        offset = record.offset()
        self.event_id = self._ids.get((tp, offset))
        if self.event_id is not None:
            return None
        self._tracker.partition(tp).begin(offset, 0)  # done: finished at once
        if self._on_duplicate is not None:
            self._on_duplicate(record)
        return DUPLICATE


class RetryDue(Gate):
    """A retry-topic record is held until its due time; records there are in due order, so the
    whole partition waits."""

    retry_records_only = True

    def __init__(self, holds: Holds) -> None:
        self._holds = holds

    def check(self, record: RawRecord, tp: TopicPartition, origin: Origin | None) -> Verdict:
        if origin is None:  # not from a retry topic
            return None
        wait_s = self._holds.wait_s(origin)
        return Hold(wait_s) if wait_s > 0 else None


class Refused(Gate):
    """After a rewind: a record that had finished is finished again, one whose output can never
    be produced is dead-lettered (``pipeline.refusals``)."""

    def __init__(self, refusals: Refusals, tracker: OffsetTracker) -> None:
        self._refusals = refusals
        self._tracker = tracker
        self.watched = (tracker.keeping, refusals.verdicts)

    def check(self, record: RawRecord, tp: TopicPartition, origin: Origin | None) -> Verdict:
        if not (self._tracker.keeping or self._refusals.verdicts):
            return None
        outcome = self._refusals.settled(record, tp, origin)
        if outcome is None:
            return None
        return FINISHED if outcome == "finished" else DEAD_LETTERED


class TransactionAge(Gate):
    """Exactly-once: once the open transaction is old enough to commit (``overdue``), the rest
    of the batch is handed back (its partitions re-read from here) so the transaction commits
    at this step, well inside the broker's transaction timeout, however slow the handler.
    While no transaction can begin (``waiting``: a commit or abort pending while the broker is
    away) every partition is held for a moment, as an open breaker holds them."""

    def __init__(self, committer: TransactionCommitter) -> None:
        self._committer = committer

    def check(self, record: RawRecord, tp: TopicPartition, origin: Origin | None) -> Verdict:
        committer = self._committer
        if committer.overdue:
            return HAND_BACK
        return WAIT_FOR_BROKER if committer.waiting else None


class RateLimited(Gate):
    """The stage's group-wide ``RateLimit``: with no token for the record, its partition is
    held until one is due (``pipeline.ratelimit``). Nothing is failed or retried for it.

    It takes a token when it lets a record pass, so it comes after every gate that settles or
    holds records for other reasons (an open breaker's refusal included: ``BreakerPeek``), and
    before the breaker's probe is taken, which then cannot fail. Each hold is told to the
    ``on_rate_limited`` hook (resolved here: nothing is called when nobody listens)."""

    def __init__(self, limiter: GroupShare, hooks: Hooks) -> None:
        self.limiter = limiter
        self._take = limiter.take
        self._on_limited = hooks.on_rate_limited

    def check(self, record: RawRecord, tp: TopicPartition, origin: Origin | None) -> Verdict:
        wait_s = self._take(tp)  # the partitions take turns (``ratelimit.Turns``)
        if wait_s <= 0:
            return None
        hold_s = max(wait_s, MIN_HOLD_S)
        if self._on_limited is not None:
            self._on_limited(tp, record.offset(), hold_s)
        return Hold(hold_s)

    def unspent(self, record: RawRecord, tp: TopicPartition, origin: Origin | None) -> None:
        self.limiter.give_back(tp)  # re-read, it takes a token again

    def changed(self) -> None:
        self.limiter.changed()


def _breaker_hold(breaker: CircuitBreaker) -> Hold:
    """Everything waits for the cooldown (or, a probe in flight, for a moment)."""
    return Hold(max(breaker.remaining_s(), MIN_HOLD_S), everything=True)


class BreakerPeek(Gate):
    """Before a rate limit: a record the breaker would refuse (open, or its probe in flight) is
    held here, before a token of the limit is taken for it; nothing is taken from the breaker.
    Only a stage with both carries it."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker

    def check(self, record: RawRecord, tp: TopicPartition, origin: Origin | None) -> Verdict:
        breaker = self._breaker
        return None if breaker.would_allow() else _breaker_hold(breaker)


class Breaker(Gate):
    """The stage's breaker: while it is open everything is held until the cooldown ends; half
    open, exactly one record (the probe) goes through.

    The probe protocol lives here, for every executor: while the probe is in flight nothing
    else is fetched (``busy``); its outcome ends it (``ended``); a probe whose result is dropped
    (its partition rewound, revoked or lost) is released so the next record probes instead."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker
        self._probe: tuple[TopicPartition, int] | None = None  # (partition, offset)

    @property
    def busy(self) -> bool:
        return self._probe is not None

    def check(self, record: RawRecord, tp: TopicPartition, origin: Origin | None) -> Verdict:
        breaker = self.breaker
        if not breaker.allow():
            return _breaker_hold(breaker)
        if breaker.state is State.HALF_OPEN:
            self._probe = (tp, record.offset())  # allow() let exactly this one through
        return None

    def succeeded(self, tp: TopicPartition, token: Token) -> None:
        self.breaker.record_success()
        self.ended(tp, token)

    def ended(self, tp: TopicPartition, token: Token) -> None:
        """The record has an outcome (the router fed the breaker its failure, or not)."""
        if self._probe == (tp, token.offset):
            self._probe = None

    def dropped(self, tp: TopicPartition, token: Token) -> None:
        """The record's result is dropped (rewound, revoked): it says nothing."""
        if self._probe == (tp, token.offset):
            self._release()

    def forget(self, partitions: list[TopicPartition]) -> None:
        if self._probe is not None and self._probe[0] in partitions:
            self._release()

    def _release(self) -> None:
        self._probe = None
        self.breaker.cancel_probe()


@dataclass(slots=True)
class Chain:
    """The gates of one stage, in order, and the few the runner talks to by name."""

    gates: tuple[Gate, ...]  # for retry-topic records
    input_gates: tuple[Gate, ...]  # for the stage's input records
    batch_gates: tuple[Gate, ...]
    dedupe: Deduplicate | None
    breaker: Breaker | None
    rate_limit: RateLimited | None = None
    # What ``watched`` gates watch, all of them; and both chains without those gates, for the
    # records met while every one of them is empty.
    watched: tuple[Sized, ...] = ()
    calm_gates: tuple[Gate, ...] = ()
    calm_input_gates: tuple[Gate, ...] = ()
    spending: tuple[Gate, ...] = ()  # the gates that give something back (``unspent``)

    def unspent(self, record: RawRecord, tp: TopicPartition, origin: Origin | None) -> None:
        """``record`` passed the chain but its handler never ran: each gate that took
        something for it gives it back."""
        for gate in self.spending:
            if origin is not None or not gate.retry_records_only:
                gate.unspent(record, tp, origin)


def build(
    holds: Holds,
    tracker: OffsetTracker,
    refusals: Refusals,
    hooks: Hooks,
    *,
    retry_topics: frozenset[str],
    breaker: CircuitBreaker | None,
    idempotent: bool,
    transaction: TransactionCommitter | None = None,
    extra: Sequence[Gate] = (),
    rate_limit: GroupShare | None = None,
    key_limit: Gate | None = None,
) -> Chain:
    """The chain for what the stage enables, in this order: a partition held in this batch, a
    transaction old enough to commit, a duplicate, a retry not yet due, a record settled by a
    refusal, the ``extra`` gates a built-in stage brings (a delay mover's), an open breaker or
    a probe in flight (asked here only before a rate limit), no token of the rate limit
    (group-wide, or the key's: ``pipeline.keylimit``), the breaker (its probe taken)."""
    gates: list[Gate] = [HeldInBatch(holds)]
    if transaction is not None:
        gates.append(TransactionAge(transaction))
    dedupe = Deduplicate(tracker, hooks) if idempotent else None
    if dedupe is not None:
        gates.append(dedupe)
    if retry_topics:
        gates.append(RetryDue(holds))
    gates.append(Refused(refusals, tracker))
    gates.extend(extra)
    if breaker is not None and (rate_limit is not None or key_limit is not None):
        gates.append(BreakerPeek(breaker))  # no token for a record the breaker holds
    limit_gate = RateLimited(rate_limit, hooks) if rate_limit is not None else None
    if limit_gate is not None:
        gates.append(limit_gate)
    if key_limit is not None:
        gates.append(key_limit)
    breaker_gate = Breaker(breaker) if breaker is not None else None
    if breaker_gate is not None:
        gates.append(breaker_gate)
    batch = tuple(g for g in gates if type(g).begin_batch is not Gate.begin_batch)
    inputs = tuple(g for g in gates if not g.retry_records_only)
    watched = tuple(c for g in gates if g.watched is not None for c in g.watched)
    calm = tuple(g for g in gates if g.watched is None)
    calm_inputs = tuple(g for g in inputs if g.watched is None)
    spending = tuple(g for g in gates if type(g).unspent is not Gate.unspent)
    return Chain(tuple(gates), inputs, batch, dedupe, breaker_gate, limit_gate, watched, calm,
                 calm_inputs, spending)  # fmt: skip
