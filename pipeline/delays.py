"""Delayed events: the tiers, due times and headers of a record on its way to its topic.

A delayed event for topic ``T`` does not go to ``T`` at once: it goes to one of ``T``'s *delay
tiers*, the topics ``T.delay.<hold>s`` (``TIERS_S``: 0.25 s, then times 4 up to 65536 s ≈ 18 h). A
record written to a tier at ``now`` is released from it at ``min(due, now + hold)``: every
record of a tier partition waits the same hold, so release times follow the offsets (up to the
spread of the writers' clocks, and of due times under the smallest hold), and the mover can
hold the partition until its head is released, without sleeping and without head-of-line
blocking between delays (a 4 s delay never waits behind a 1 h one: they are in other tiers).

At each release the record hops greedily: to the largest tier whose hold fits in what is left
of its delay, from the hop's real time (a late hop is absorbed by the next ones), or, once it is
due, to its target topic (``TARGET`` header; ``T`` for a published event). The last hop drops
the ``delay-*`` headers but ``DUE`` (when it was due, for measuring lateness); the ``event-id``
travels unchanged, so a hop repeated after a crash is a duplicate consumers can drop.

``defer`` is the one entry point for writers (publisher, ``ctx.emit(delay=)``, a gate deferring
a record through the same mechanism): it returns the tier topic and the headers to write with.
The mover is ``pipeline.delaymover``. Pure functions of the clock's wall time in ms.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pipeline.errors import DeclarationError
from pipeline.ports import RawHeaders

# Holds of the tiers, in seconds. Each record stays at most one hold (≈ 18 h) in a tier, far
# below Kafka's default 7-day retention; a 30-day delay hops about 60 times.
TIERS_S: tuple[float, ...] = (0.25, 1, 4, 16, 64, 256, 1024, 4096, 16384, 65536)
MIN_DELAY_S = 1.0
MAX_DELAY_S = 30 * 24 * 3600.0
DUE = "delay-due-ms"  # when the event is due (wall ms); kept on the delivered record
TIER_DUE = "delay-tier-due-ms"  # when it leaves the tier it is in
TARGET = "delay-target"  # the physical topic it is delivered to when due
PREFIX = "delay-"
SUFFIX = ".delay."
CANCEL_SUFFIX = ".delay.cancel"
SLACK_MS = 1_000  # writer clocks differ: a tier due time may be this much past a hold
MAX_DIGITS = 19


class DelayError(DeclarationError, ValueError):
    """A delay outside 1 s .. 30 days, both ``delay`` and ``deliver_at`` given, or a topic not
    declared ``delayed=True``."""


def tier_topic(base: str, hold_s: float) -> str:
    return f"{base}{SUFFIX}{hold_s:g}s"


def tier_topics(base: str) -> list[str]:
    """Every tier topic of ``base`` (a physical or logical topic name), shortest hold first."""
    return [tier_topic(base, h) for h in TIERS_S]


def cancel_topic(base: str) -> str:
    """Where cancellations of ``base``'s delayed events go (key: the event id)."""
    return f"{base}{CANCEL_SUFFIX}"


def hold_of(topic: str) -> float | None:
    """The hold a tier topic is named after, or None if ``topic`` is no tier topic."""
    _, sep, label = topic.rpartition(SUFFIX)
    if not sep or not label.endswith("s"):
        return None
    try:
        hold = float(label[:-1])
    except ValueError:
        return None
    return hold if hold in TIERS_S else None


def pick_tier(remaining_ms: int) -> float:
    """The largest hold that fits in ``remaining_ms``; the smallest when none does (the record
    then leaves it at its due time, under a quarter of a second later)."""
    fits = [h for h in TIERS_S if h * 1000 <= remaining_ms]
    return fits[-1] if fits else TIERS_S[0]


@dataclass(frozen=True, slots=True)
class Hop:
    """Where a delayed record goes next: ``topic`` (a tier, or its target when ``final``)."""

    topic: str
    headers: list[tuple[str, bytes]]
    final: bool
    tier_due_ms: int = 0


def defer(
    target: str, due_ms: int, now_ms: int, headers: RawHeaders = None, *, base: str | None = None
) -> Hop:
    """The first hop of a record due at ``due_ms`` for physical topic ``target``, through the
    tiers of ``base`` (default ``target``; a mover runs for a base topic declared
    ``delayed=True``). ``headers``: the record's own; earlier ``delay-*`` ones are replaced.
    Already due: still one hop through the smallest tier (released at once), so every delayed
    record reaches its target through a mover, in one order."""
    kept = [(k, v) for k, v in headers or () if not k.startswith(PREFIX) and v is not None]
    return _to_tier(base or target, target, due_ms, now_ms, kept)


def next_hop(base: str, target: str, due_ms: int, now_ms: int, headers: RawHeaders) -> Hop:
    """Where a record released from a tier of ``base`` goes: its target once due, else the
    tier that fits what is left."""
    kept = [(k, v) for k, v in headers or () if not k.startswith(PREFIX) and v is not None]
    if due_ms <= now_ms:
        return Hop(target, [*kept, (DUE, str(due_ms).encode())], final=True)
    return _to_tier(base, target, due_ms, now_ms, kept)


def _to_tier(
    base: str, target: str, due_ms: int, now_ms: int, kept: list[tuple[str, bytes]]
) -> Hop:
    hold = pick_tier(due_ms - now_ms)
    tier_due = min(due_ms, now_ms + int(hold * 1000))
    ours = [(DUE, str(due_ms).encode()), (TIER_DUE, str(tier_due).encode()),
            (TARGET, target.encode())]  # fmt: skip
    return Hop(tier_topic(base, hold), [*kept, *ours], final=False, tier_due_ms=tier_due)


@dataclass(frozen=True, slots=True)
class Delayed:
    """What a tier record's headers say."""

    due_ms: int
    tier_due_ms: int
    target: str


def read(headers: RawHeaders, topic: str, written_ms: int) -> Delayed | None:
    """The delay headers of a record of tier ``topic``, or None if they are missing or garbled
    (not written by us: the mover dead-letters it). A tier due time later than the tier's hold
    allows is clipped to it, so a garbled value cannot hold the partition longer than a hold."""
    h = {k: v for k, v in headers or () if k.startswith(PREFIX) and v is not None}
    due, tier_due, target = _count(h.get(DUE)), _count(h.get(TIER_DUE)), h.get(TARGET)
    if due is None or tier_due is None or not target:
        return None
    try:
        target_name = target.decode()
    except UnicodeDecodeError:
        return None
    hold = hold_of(topic)
    if hold is not None and written_ms > 0:
        tier_due = min(tier_due, written_ms + int(hold * 1000) + SLACK_MS)
    return Delayed(due, tier_due, target_name)


def _count(raw: bytes | None) -> int | None:
    if raw is None or not raw.isdigit() or len(raw) > MAX_DIGITS:
        return None
    return int(raw)


def due_ms(
    now_ms: int, delay: timedelta | float | None = None, deliver_at: datetime | None = None
) -> int:
    """The due time of a delay given as ``delay`` (a timedelta or seconds) or ``deliver_at``
    (an aware datetime; a naive one is taken as local time, as ``datetime.timestamp`` does).
    ``DelayError`` unless exactly one is given and it lies 1 s .. 30 days ahead."""
    if (delay is None) == (deliver_at is None):
        raise DelayError("give either delay= or deliver_at=, not both")
    if deliver_at is not None:
        if not isinstance(deliver_at, datetime):
            raise DelayError(f"deliver_at must be a datetime, not {type(deliver_at).__name__}")
        seconds = deliver_at.timestamp() - now_ms / 1000
    elif isinstance(delay, timedelta):
        seconds = delay.total_seconds()
    elif isinstance(delay, int | float) and not isinstance(delay, bool):
        seconds = float(delay)
    else:
        raise DelayError(f"delay must be a timedelta or seconds, not {type(delay).__name__}")
    if not MIN_DELAY_S <= seconds <= MAX_DELAY_S:
        raise DelayError(f"a delay must be from {MIN_DELAY_S:g} s to 30 days; got {seconds:.3f} s")
    return now_ms + round(seconds * 1000)


def relative(
    topic: Any, delay: timedelta | float | None, deliver_at: datetime | None
) -> tuple[int | None, int | None]:
    """``ctx.emit``'s delay, checked without a clock: (delay ms, None) for ``delay``, (None,
    due wall ms) for ``deliver_at`` (its range is checked by ``fix_due`` on the writer's)."""
    if not getattr(topic, "delayed", False):
        raise DelayError(f"topic {topic.name!r} is not declared delayed=True")
    if deliver_at is not None and delay is None:
        if not isinstance(deliver_at, datetime):
            raise DelayError(f"deliver_at must be a datetime, not {type(deliver_at).__name__}")
        return None, round(deliver_at.timestamp() * 1000)
    return due_ms(0, delay, deliver_at), None


def fix_due(later: tuple[int | None, int | None], now_ms: int) -> int:
    """The due time of an emitted delay, on the writer's clock (``DelayError`` if out of
    range)."""
    delay_ms, at_ms = later
    if delay_ms is not None:
        return now_ms + delay_ms
    assert at_ms is not None
    return due_ms(now_ms, (at_ms - now_ms) / 1000)
