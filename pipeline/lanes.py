"""Priority lanes: names, the share policy, and the pure share book the consumer set keeps.

A topic declared with ``priorities=3`` (or named levels) is three topics, one per lane::

    EMAILS = Topic("emails", Email, priorities=3)     # emails, emails.p1, emails.p2
    EMAILS = Topic("emails", Email, priorities=("transactional", "normal", "bulk"))

Lane 0 is the highest (as in Bull) and is the base topic itself, so a producer that knows nothing
of lanes (another service, ``pipeline publish``) writes lane 0. Lane ``k`` is ``<topic>.p<k>``;
a consuming stage reads it in group ``<group>.p<k>``, with a consumer of its own per lane, so a
backlog prefetched on a low lane never sits in front of a high lane's records.

**Starvation.** The consumer takes the highest lane with records first, except that every lower
lane is guaranteed ``Lanes.min_share`` of the records the stage takes while that lane has a
backlog (default 10 % each): a lane that was passed over is *owed* its share of what was taken
and served first at the next fetch, up to its share of one batch. ``min_share=0`` is strict
priority (a busy high lane can starve the lower ones, as in Bull).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.errors import DeclarationError

# Each lane is a topic and, in every worker, a consumer (and a group): a handful is plenty.
MAX_LANES = 8
DEFAULT_MIN_SHARE = 0.1
_LEVEL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")


def lane_topic(topic: str, lane: int) -> str:
    """The physical topic of ``lane`` of ``topic`` (lane 0 is the topic itself)."""
    return topic if lane == 0 else f"{topic}.p{lane}"


def lane_group(group: str, lane: int) -> str:
    """The consumer group a stage reads ``lane`` of its inputs in (lane 0: the stage's group)."""
    return group if lane == 0 else f"{group}.p{lane}"


def levels(priorities: int | tuple[str, ...] | None, where: str) -> tuple[str, ...]:
    """The level names of a ``Topic(priorities=...)`` declaration, highest first (``("0",
    "1", "2")`` for ``3``); ``()`` for a topic without lanes. Raises DeclarationError."""
    if priorities is None:
        return ()
    if isinstance(priorities, bool) or not isinstance(priorities, int | tuple):
        raise DeclarationError(
            f"{where}: priorities must be a number of lanes (2-{MAX_LANES}) or a tuple of level "
            f"names, highest first, not {priorities!r}"
        )
    if isinstance(priorities, int):
        if not 1 <= priorities <= MAX_LANES:
            raise DeclarationError(
                f"{where}: priorities={priorities} is out of range: 1 to {MAX_LANES} lanes"
            )
        return tuple(str(i) for i in range(priorities)) if priorities > 1 else ()
    bad = [n for n in priorities if not (isinstance(n, str) and _LEVEL_NAME.match(n))]
    if bad or not 1 <= len(priorities) <= MAX_LANES or len(set(priorities)) != len(priorities):
        raise DeclarationError(
            f"{where}: priorities must be 1 to {MAX_LANES} distinct level names (a letter, "
            f"then letters, digits, _ or -), highest first, not {priorities!r}"
        )
    return priorities if len(priorities) > 1 else ()


def lane_of(names: tuple[str, ...], priority: int | str | None, where: str) -> int:
    """The lane index a ``priority=`` argument means: an index (0 highest) or a level name;
    None is lane 0. Raises ValueError, naming the levels, for anything else."""
    if priority is None or priority == 0:
        return 0
    if isinstance(priority, str) and priority in names:
        return names.index(priority)
    count = max(len(names), 1)
    if isinstance(priority, int) and not isinstance(priority, bool) and 0 <= priority < count:
        return priority
    if not names:
        known = "0 only (declare the topic with priorities=N for lanes)"
    elif names[0].isdigit():
        known = f"0 to {count - 1}"
    else:
        known = f"0 to {count - 1} or one of {', '.join(names)}"
    raise ValueError(f"{where}: no priority {priority!r}; it takes {known}")


@dataclass(frozen=True, slots=True)
class Lanes:
    """How a stage shares its fetches among the lanes of its inputs (``Stage.lanes``).

    ``min_share``: the share of the records taken that each lane below the top is guaranteed
    while it has a backlog; one number for every lower lane, or one per lower lane (lane 1
    first). The shares together must leave some room for lane 0 (their sum below 1). 0 is strict
    priority: lower lanes get only what higher ones leave.
    """

    min_share: float | tuple[float, ...] = DEFAULT_MIN_SHARE

    def __post_init__(self) -> None:
        shares = self.min_share if isinstance(self.min_share, tuple) else (self.min_share,)
        if not shares or not all(_is_share(s) for s in shares):
            raise DeclarationError(
                f"Lanes(min_share={self.min_share!r}): each share is a number in [0, 1)"
            )

    def shares(self, lanes: int) -> tuple[float, ...]:
        """One share per lane, lane 0's first (always 0: it is served first anyway)."""
        given = self.min_share
        lower = given if isinstance(given, tuple) else (given,) * (lanes - 1)
        if len(lower) != lanes - 1:
            raise DeclarationError(
                f"Lanes(min_share={given!r}) gives {len(lower)} shares for {lanes - 1} lower lanes"
            )
        if sum(lower) >= 1:
            raise DeclarationError(
                f"Lanes(min_share={given!r}): the lower lanes' shares add up to {sum(lower):g} "
                f"of {lanes} lanes; they must leave room for lane 0 (sum below 1)"
            )
        return (0.0, *lower)


def _is_share(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1


class ShareBook:
    """What each lane is owed, from what the fetches took: pure, no clock, no I/O.

    Each fetch (``record``) adds ``share * taken in all`` to every lower lane's credit and
    takes off what that lane got. A lane that was asked for records and came back short has no
    backlog: its credit goes (nothing is banked while idle, so it never bursts back in). The
    credit is capped at the lane's share of one batch (at least one record), so paying a lane
    back never takes a whole batch from the lanes above it.
    """

    def __init__(self, shares: Sequence[float]) -> None:
        self._shares = tuple(shares)
        self._credit = [0.0] * len(shares)

    def owed(self, room: int) -> list[int]:
        """Records each lane is to be offered first, out of ``room``; higher lanes first."""
        out = []
        for credit in self._credit:
            n = min(math.floor(credit), room)
            out.append(n)
            room -= n
        return out

    def record(self, room: int, asked: Sequence[int], taken: Sequence[int], total: int) -> None:
        """After a fetch of ``room``: what each lane was asked for (0: not asked) and gave, and
        the ``total`` taken (lanes and retries alike)."""
        for lane, share in enumerate(self._shares):
            if share == 0:
                continue
            if asked[lane] > taken[lane]:  # it gave all it had: no backlog, nothing owed
                self._credit[lane] = 0.0
                continue
            credit = self._credit[lane] + share * total - taken[lane]
            self._credit[lane] = min(max(credit, 0.0), max(1.0, share * room))

    @property
    def credit(self) -> tuple[float, ...]:
        return tuple(self._credit)
