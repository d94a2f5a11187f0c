"""Partition assignors, as Kafka's: ``range``, ``roundrobin`` and ``cooperative-sticky``.

Each maps the members (id -> subscribed topics, ids in join order) and the topics' partition
counts to a target assignment. The first two are used with the eager protocol (every member
gives up everything, then takes its new share); ``cooperative-sticky`` keeps what a member owns
where the balance allows, and only the partitions that move are revoked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pipeline.ports import TopicPartition

Subscriptions = Mapping[str, list[str]]  # member id -> topics
Counts = Mapping[str, int]  # topic -> partitions
Owned = Mapping[str, set[TopicPartition]]
Assignment = dict[str, set[TopicPartition]]
Assignor = Callable[[Subscriptions, Counts, Owned], Assignment]


def _subscribers(members: Subscriptions, topic: str) -> list[str]:
    return sorted(m for m, topics in members.items() if topic in topics)


def range_assign(members: Subscriptions, counts: Counts, _owned: Owned) -> Assignment:
    """Per topic, contiguous ranges; the first members get one more when it does not divide."""
    out: Assignment = {m: set() for m in members}
    for topic in sorted({t for ts in members.values() for t in ts if t in counts}):
        subs = _subscribers(members, topic)
        share, extra = divmod(counts[topic], len(subs))
        start = 0
        for i, member in enumerate(subs):
            size = share + (1 if i < extra else 0)
            out[member].update((topic, p) for p in range(start, start + size))
            start += size
    return out


def roundrobin_assign(members: Subscriptions, counts: Counts, _owned: Owned) -> Assignment:
    """Every topic-partition in order, dealt to the subscribed members in turn."""
    out: Assignment = {m: set() for m in members}
    order = sorted(members)
    turn = 0
    for topic in sorted({t for ts in members.values() for t in ts if t in counts}):
        for partition in range(counts[topic]):
            while topic not in members[order[turn % len(order)]]:
                turn += 1
            out[order[turn % len(order)]].add((topic, partition))
            turn += 1
    return out


def sticky_assign(members: Subscriptions, counts: Counts, owned: Owned) -> Assignment:
    """Balanced, keeping owned partitions: at most ``total % n`` members hold one more than
    the others; the rest is dealt to the least loaded member that subscribes to the topic."""
    valid = {(t, p) for t in counts for p in range(counts[t]) if _subscribers(members, t)}
    floor, ceil_slots = divmod(len(valid), max(len(members), 1))
    out: Assignment = {m: set() for m in members}
    taken: set[TopicPartition] = set()
    by_size = sorted(members, key=lambda m: (-len(owned.get(m, ())), m))
    for member in by_size:
        mine = owned.get(member, set())
        keep = sorted(tp for tp in mine if tp in valid and tp[0] in members[member])
        quota = floor + 1 if ceil_slots and len(keep) > floor else floor
        ceil_slots -= 1 if quota > floor else 0
        out[member] = set(keep[:quota])
        taken |= out[member]
    for tp in sorted(valid - taken):
        subs = _subscribers(members, tp[0])
        least = min(subs, key=lambda m: (len(out[m]), m))
        out[least].add(tp)
    return out


ASSIGNORS: dict[str, tuple[Assignor, bool]] = {
    # name -> (assignor, cooperative protocol)
    "range": (range_assign, False),
    "roundrobin": (roundrobin_assign, False),
    "cooperative-sticky": (sticky_assign, True),
}
