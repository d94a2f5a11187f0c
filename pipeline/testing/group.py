"""Consumer groups: members, generations, the assignment and who owns what, and the
group's committed offsets.

A partition has at most one owner at a time. A partition moving from one member to another
is released by the old owner only after its revoke callback has returned (so a commit made in
``on_revoke`` lands before the new owner reads the committed offset), and the new owner takes
it at its next ``consume`` after that, as in Kafka's rebalance protocols. The sequence of
callbacks each member hears was checked against librdkafka 2.x with the Kafka adapter's
configuration (cooperative-sticky): a join, a close, a crash. A member that never
calls ``consume`` again holds its partitions until it is closed or crashed: there is no
``max.poll.interval.ms`` here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import count

from pipeline.ports import TopicPartition
from pipeline.testing.assignors import ASSIGNORS

Step = tuple[str, list[TopicPartition]]  # ("revoke" | "assign", partitions)
_ids = count(1)


def matches(subscription: list[str], topic: str) -> bool:
    """A subscription names topics, or patterns starting with ``^`` as librdkafka's do."""
    return any(re.match(s, topic) if s.startswith("^") else s == topic for s in subscription)


@dataclass(eq=False)
class Member:
    group_id: str
    member_id: str
    subscription: list[str]
    target: set[TopicPartition] = field(default_factory=set)
    owned: set[TopicPartition] = field(default_factory=set)
    generation: int = -1  # the generation this member last joined
    awaiting: bool = False  # eager: revoked, not yet given its new share
    pending_assign: bool = False  # cooperative: revoked, its assign of this round to come
    alive: bool = True


class Group:
    def __init__(self, group_id: str, strategy: str) -> None:
        if strategy not in ASSIGNORS:
            raise ValueError(f"unknown assignor {strategy!r}; one of {sorted(ASSIGNORS)}")
        self.group_id = group_id
        self.strategy = strategy
        self._assignor, self.cooperative = ASSIGNORS[strategy]
        self.members: dict[str, Member] = {}
        self.owners: dict[TopicPartition, Member] = {}
        self.committed: dict[TopicPartition, int] = {}
        self.generation = 0

    def join(self, subscription: list[str], counts: Mapping[str, int]) -> Member:
        # Zero-padded sequence: members sort in join order, as the assignors expect.
        member = Member(self.group_id, f"member-{next(_ids):06d}", list(subscription))
        self.members[member.member_id] = member
        self.rebalance(counts)
        return member

    def leave(self, member: Member, counts: Mapping[str, int]) -> None:
        """The member is gone (closed or crashed): its partitions are free now."""
        member.alive = False
        self.members.pop(member.member_id, None)
        self.release(member, set(member.owned))
        self.rebalance(counts)

    def subscribes(self, topic: str) -> bool:
        return any(matches(m.subscription, topic) for m in self.members.values())

    def rebalance(self, counts: Mapping[str, int]) -> None:
        """A new generation: every member rejoins at its next ``consume``."""
        self.generation += 1
        if not self.members:
            return
        subs = {
            m.member_id: [t for t in counts if matches(m.subscription, t)]
            for m in self.members.values()
        }
        owned = {m.member_id: set(m.owned) for m in self.members.values()}
        target = self._assignor(subs, counts, owned)
        for member in self.members.values():
            member.target = target[member.member_id]

    def release(self, member: Member, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            if self.owners.get(tp) is member:
                del self.owners[tp]
        member.owned -= partitions

    def revoked(self, member: Member, partitions: set[TopicPartition]) -> None:
        """``member``'s revoke callback has returned. Cooperative: the member rejoins, which
        starts another round for everyone (where the new owners take the partitions)."""
        self.release(member, partitions)
        if self.cooperative and member.alive:
            self.generation += 1

    def next_step(self, member: Member) -> Step | None:
        """What ``member``'s listener must be told next, if anything. A revoke takes effect
        when ``revoked`` is called after the callback; an assign takes effect at once.

        As librdkafka: cooperative, every round tells each member its incremental assign
        (empty if it gains nothing), after its revoke if it loses any; eager, a member is
        revoked everything, then assigned its whole share once every old owner let go."""
        if member.pending_assign:  # the second half of a round whose revoke was served
            member.pending_assign = False
            return self._claim(member, self._free(member))
        if member.generation < self.generation:
            member.generation = self.generation
            if self.cooperative:
                return self._cooperative_round(member)
            member.awaiting = True
            if member.owned:
                return ("revoke", sorted(member.owned))
        if not member.awaiting or self._free(member) != member.target - member.owned:
            return None  # eager: all at once, when every old owner has given up its part
        member.awaiting = False
        return self._claim(member, self._free(member))

    def has_step(self, member: Member) -> bool:
        """Whether ``next_step`` would tell ``member`` something now (it changes nothing)."""
        if member.pending_assign or member.generation < self.generation:
            return True
        return member.awaiting and self._free(member) == member.target - member.owned

    def _cooperative_round(self, member: Member) -> Step:
        revoke = member.owned - member.target
        if revoke:
            member.pending_assign = True
            return ("revoke", sorted(revoke))
        return self._claim(member, self._free(member))

    def _free(self, member: Member) -> set[TopicPartition]:
        """What ``member`` should have and nobody owns any more."""
        return {tp for tp in member.target - member.owned if tp not in self.owners}

    def _claim(self, member: Member, partitions: set[TopicPartition]) -> Step:
        for tp in partitions:
            self.owners[tp] = member
        member.owned |= partitions
        return ("assign", sorted(partitions))
