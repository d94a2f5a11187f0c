"""Checking a recorded run: from what was published, delivered, written and emitted to figures.

Pure: takes plain records, no Kafka, no database, no clock. The inputs:

- ``published``: every event the broker acknowledged (good and poison), with its coordinates;
- ``side_effects``: the committed rows of the Effects stage's side-effect table;
- ``deliveries``: one event id per Effects handler call (the delivery files);
- ``dlq`` / ``eos_dlq``: the ``chaos-id`` of every record in each stage's dead-letter topic;
- ``eos_outputs``: the input id of every EosCopy output a ``read_committed`` reader sees.

What each figure measures is said on ``Figures``; the ordering rule is on ``order_violations``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass

SAMPLE = 10  # ids shown per problem in the report


@dataclass(frozen=True, slots=True)
class Published:
    eid: str
    key: str
    seq: int  # per key, in publishing order; -1 for poison
    partition: int
    offset: int
    poison: bool = False


@dataclass(frozen=True, slots=True)
class SideEffect:
    """One committed row of the side-effect table."""

    rank: int  # commit order (see ``chaos.effects``)
    event_id: str
    key: str
    seq: int
    pid: int
    via_retry: bool  # written by a handler call that read the event from a retry topic
    at: float = 0.0  # unix time of the write (for lining up with the fault timeline)


@dataclass(frozen=True, slots=True)
class History:
    published: Sequence[Published]
    side_effects: Sequence[SideEffect]
    deliveries: Sequence[str]
    dlq: Sequence[str]
    eos_outputs: Sequence[str]
    eos_dlq: Sequence[str]


@dataclass(frozen=True, slots=True)
class Figures:
    published: int  # acknowledged events, good and poison
    poison: int  # of which poison
    processed: int  # distinct good ids with at least one side-effect row
    lost: int  # good ids published but without any side-effect row
    duplicate_deliveries: int  # handler calls beyond the first, summed over ids
    redelivered_events: int  # ids the handler saw more than once
    duplicate_side_effects: int  # side-effect rows beyond one per id
    stray_side_effects: int  # rows for ids never published as good events
    dlq_records: int  # records in the Effects DLQ (a poison event may be there twice)
    dlq_equals_poison: bool  # set of Effects DLQ ids == set of published poison ids
    dlq_missing: int  # poison ids not in the Effects DLQ
    dlq_unexpected: int  # Effects DLQ ids that are not poison
    order_violations: int  # see ``order_violations``
    reordered_by_retry: int  # inversions where a retry topic was involved (documented)
    eos_outputs: int  # committed EosCopy outputs
    eos_duplicate_outputs: int  # good ids with more than one committed output
    eos_missing_outputs: int  # good ids with no committed output
    eos_unexpected_outputs: int  # outputs for ids never published as good events
    eos_dlq_equals_poison: bool
    samples: dict[str, list[str]]  # a few offending ids (with coordinates) per problem


def check(history: History) -> Figures:
    good = {p.eid: p for p in history.published if not p.poison}
    poison = {p.eid for p in history.published if p.poison}
    rows = Counter(r.event_id for r in history.side_effects)
    calls = Counter(history.deliveries)
    outputs = Counter(history.eos_outputs)
    lost = sorted(eid for eid in good if eid not in rows)
    dlq = set(history.dlq)
    violations, by_retry = order_violations(history.side_effects)
    samples = {
        "lost": [_where(good[e]) for e in lost[:SAMPLE]],
        "duplicate_side_effects": _over(rows, 1),
        "order_violations": [f"{k} seq {n}->{n + 1}" for k, n in violations[:SAMPLE]],
        "eos_duplicate_outputs": _over(outputs, 1),
        "eos_missing_outputs": [str(r) for r in missing_runs(good.values(), outputs)][:SAMPLE],
        "dlq_missing": sorted(poison - dlq)[:SAMPLE],
        "dlq_unexpected": sorted(dlq - poison)[:SAMPLE],
    }
    return Figures(
        published=len(history.published),
        poison=len(poison),
        processed=sum(1 for eid in good if eid in rows),
        lost=len(lost),
        duplicate_deliveries=sum(n - 1 for n in calls.values()),
        redelivered_events=sum(1 for n in calls.values() if n > 1),
        duplicate_side_effects=sum(n - 1 for n in rows.values()),
        stray_side_effects=sum(n for eid, n in rows.items() if eid not in good),
        dlq_records=len(history.dlq),
        dlq_equals_poison=dlq == poison,
        dlq_missing=len(poison - dlq),
        dlq_unexpected=len(dlq - poison),
        order_violations=len(violations),
        reordered_by_retry=by_retry,
        eos_outputs=len(history.eos_outputs),
        eos_duplicate_outputs=sum(1 for n in outputs.values() if n > 1),
        eos_missing_outputs=sum(1 for eid in good if eid not in outputs),
        eos_unexpected_outputs=sum(n for eid, n in outputs.items() if eid not in good),
        eos_dlq_equals_poison=set(history.eos_dlq) == poison,
        samples={k: v for k, v in samples.items() if v},
    )


def order_violations(side_effects: Iterable[SideEffect]) -> tuple[list[tuple[str, int]], int]:
    """Per-key order of *first* side effects: ``(violations, inversions via a retry topic)``.

    For a key k let F(k, n) be the rank (commit order) of the first side-effect row of k's
    event with sequence number n. A *violation* is a pair (k, n) where events n and n+1 of k
    both have a row, neither first row was written from a retry topic, and
    F(k, n+1) < F(k, n): the effect of n+1 became durable before the effect of n.

    Why redelivery cannot cause one, so that any violation is a bug: k's events sit on one
    partition in seq order, and a consumer handles a partition in offset order. A crash, a
    rebalance or a SIGTERM makes the next owner start again at the committed offset, which is
    never past an unfinished record, so it replays in order; a replayed event whose effect
    already committed finds its id in the idempotency store and its write is rolled back, so
    it adds no row. Even with two owners at once (a zombie whose session expired, and its
    successor) each goes in offset order, and the store serialises claims of one id: whoever
    commits n+1 first handled n before, and that ended either with its own commit of n or by
    finding n claimed, which waits for the claimant's commit. So F(k, n) < F(k, n+1).

    Only retry topics reorder a key (documented: a failed event is retried later while the
    partition moves on). Pairs where either first row came from a retry topic are therefore
    not violations; inverted ones are counted apart. Later (rolled back) redeliveries are not
    rows at all, which is why only first rows are compared: without the store a redelivery
    of n after n+1 would add a second row of n *after* n+1, which is a duplicate, not a
    reordering.
    """
    first: dict[tuple[str, int], SideEffect] = {}
    for row in sorted(side_effects, key=lambda r: r.rank):
        first.setdefault((row.key, row.seq), row)
    seqs: dict[str, list[int]] = defaultdict(list)
    for key, seq in first:
        seqs[key].append(seq)
    violations: list[tuple[str, int]] = []
    by_retry = 0
    for key in sorted(seqs):
        present = set(seqs[key])
        for n in sorted(present):
            if n + 1 not in present:
                continue
            a, b = first[(key, n)], first[(key, n + 1)]
            if b.rank > a.rank:
                continue
            if a.via_retry or b.via_retry:
                by_retry += 1
            else:
                violations.append((key, n))
    return violations, by_retry


@dataclass(frozen=True, slots=True)
class MissingRun:
    """Consecutive good events of one input partition (in offset order) that all lack
    something (an output, say): where a loss or an early-stopping reader shows as a range."""

    partition: int
    first: Published
    last: Published
    count: int

    def __str__(self) -> str:
        f, last = self.first, self.last
        span = f"@{f.offset}" if f is last else f"@{f.offset}..{last.offset}"
        ids = f.eid if f is last else f"{f.eid}..{last.eid}"
        return f"partition {self.partition} {span}: {self.count} event(s) ({ids})"


def missing_runs(good: Iterable[Published], present: Container[str]) -> list[MissingRun]:
    """The good events whose id is not in ``present``, as runs per partition: a run ends at
    the partition's next good event that is present (poison in between does not end it)."""
    by_partition: dict[int, list[Published]] = defaultdict(list)
    for p in good:
        by_partition[p.partition].append(p)
    runs: list[MissingRun] = []
    for partition in sorted(by_partition):
        first: Published | None = None
        last: Published | None = None
        count = 0
        for p in sorted(by_partition[partition], key=lambda e: e.offset):
            if p.eid in present:
                if first is not None and last is not None:
                    runs.append(MissingRun(partition, first, last, count))
                first, count = None, 0
                continue
            first = first or p
            last, count = p, count + 1
        if first is not None and last is not None:
            runs.append(MissingRun(partition, first, last, count))
    return runs


def passed(
    figures: Figures,
    *,
    sigterms_clean: bool,
    published_all: bool,
    failovers_recovered: bool = True,
    reads_complete: bool = True,
) -> bool:
    """The verdict: nothing lost, no duplicate side effect, the DLQ holds exactly the poison,
    exactly one committed EosCopy output per input, every SIGTERM exit clean (code 0 within
    the shutdown timeout), every stage recovered from every node kill (3 nodes), and the
    whole load was published and every topic was read back completely (else the run proves
    nothing)."""
    return (
        published_all
        and reads_complete
        and failovers_recovered
        and figures.lost == 0
        and figures.duplicate_side_effects == 0
        and figures.dlq_equals_poison
        and figures.eos_duplicate_outputs == 0
        and figures.eos_missing_outputs == 0
        and sigterms_clean
    )


def _where(p: Published) -> str:
    return f"{p.eid} ({p.key} seq {p.seq} @ partition {p.partition} offset {p.offset})"


def _over(counts: Counter[str], limit: int) -> list[str]:
    return [f"{eid} x{n}" for eid, n in sorted(counts.items()) if n > limit][:SAMPLE]
