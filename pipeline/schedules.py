"""Cron schedules: declared events emitted at cron ticks, each tick exactly once.

::

    REPORTS = Topic("reports.due", ReportDue)
    SCHEDULES = [
        Schedule("daily-report", cron="0 9 * * *", tz="Europe/Paris", emit=REPORTS,
                 event=lambda tick: ReportDue(day=tick.date())),
    ]

This module is the declaration and the pure tick arithmetic; ``pipeline.scheduler`` fires them
(one owner per cluster, Kafka transactions) and ``pipeline.schedulestate`` is their durable
state. Ticks come from croniter, so its rules hold, daylight saving included (a tick in the
hour a spring-forward skips fires at the first valid time after it; a wall time a fall-back
repeats fires twice, once per UTC instant). A sixth cron field is seconds, as in croniter.

What is due is decided from two instants only, the last tick the state records as handled and
now, so it is computed the same way by whichever worker owns the schedules, on any clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.errors import DeclarationError
from pipeline.events import Event
from pipeline.stage import Topic

log = logging.getLogger("pipeline.schedules")
CatchUp = Literal["latest", "all", "none"]
SCHEDULES_ATTR = "SCHEDULES"
# A schedule that fell this far behind (a per-second cron down for a day) fires at most this
# many ticks per transaction; the rest follow in the next ones. Bounds every step in time.
MAX_TICKS_PER_STEP = 500


def _croniter() -> Any:
    """The ``croniter`` class, loaded with the first schedule declared: a worker without
    schedules imports this module (through ``pipeline``) and never needs it, nor dateutil."""
    from croniter import croniter  # type: ignore[import-untyped]

    return croniter


@dataclass(frozen=True)
class Schedule:
    """``event(tick)`` is emitted to ``emit`` at every tick of ``cron`` in time zone ``tz``.

    ``tick`` is the tick's time as an aware ``datetime`` in ``tz``. ``catch_up`` says what
    happens to ticks that were *missed* (more than ``grace_s`` late when an owner gets to them,
    because every worker was down): ``"all"`` fires each of them, ``"latest"`` (default) fires
    only the newest, ``"none"`` fires none. Ticks less than ``grace_s`` late (a failover between
    workers, say) are never missed: they all fire, whatever the policy.
    """

    name: str
    cron: str
    emit: Topic
    event: Callable[[datetime], Event]
    tz: str = "UTC"
    catch_up: CatchUp = "latest"
    grace_s: float = 60.0

    def __post_init__(self) -> None:
        croniter = _croniter()
        where = f"Schedule {self.name!r}"
        if not self.name or "/" in self.name or self.name != self.name.strip():
            raise DeclarationError(f"{where}: a name is non-empty, without '/' or outer spaces")
        if not isinstance(self.emit, Topic):
            raise DeclarationError(f"{where}: emit= takes a Topic, not {self.emit!r}")
        if not callable(self.event):
            raise DeclarationError(f"{where}: event= takes a function of the tick")
        if not isinstance(self.cron, str) or not croniter.is_valid(self.cron):
            raise DeclarationError(f"{where}: {self.cron!r} is not a cron expression")
        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise DeclarationError(f"{where}: unknown time zone {self.tz!r}") from None
        if self.catch_up not in get_args(CatchUp):
            raise DeclarationError(
                f"{where}: catch_up={self.catch_up!r}; use one of {', '.join(get_args(CatchUp))}"
            )
        if not self.grace_s > 0:
            raise DeclarationError(f"{where}: grace_s must be positive, not {self.grace_s}")

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def next_tick(self, after: datetime) -> datetime:
        """The first tick strictly after ``after`` (any aware datetime), in ``tz``."""
        croniter = _croniter()
        start = after.astimezone(self.zone)
        tick: datetime = croniter(self.cron, start).get_next(datetime)
        return tick

    def ticks(self, after: datetime, until: datetime, limit: int) -> list[datetime]:
        """Ticks in (``after``, ``until``], oldest first, at most ``limit``."""
        croniter = _croniter()
        out: list[datetime] = []
        it = croniter(self.cron, after.astimezone(self.zone))
        while len(out) < limit:
            tick: datetime = it.get_next(datetime)
            if tick > until:
                break
            out.append(tick)
        return out

    def latest_tick(self, at_or_before: datetime) -> datetime:
        """The newest tick at or before ``at_or_before``."""
        croniter = _croniter()
        start = at_or_before.astimezone(self.zone)
        previous: datetime = croniter(self.cron, start).get_prev(datetime)
        following = self.next_tick(previous)
        return following if following <= start else previous


@dataclass(frozen=True, slots=True)
class Due:
    """What one step does for a schedule: fire ``fire`` (oldest first), then record
    ``through`` as handled. Ticks between the old mark and ``through`` not in ``fire`` are
    skipped by the catch-up policy (or because the schedule is paused)."""

    fire: tuple[datetime, ...]
    through: datetime


def due(
    schedule: Schedule,
    handled_through: datetime,
    now: datetime,
    *,
    paused: bool = False,
    limit: int = MAX_TICKS_PER_STEP,
) -> Due | None:
    """The ticks to fire now, after every tick up to ``handled_through`` was handled; None if
    none is due. Pure: the same two instants give the same answer on every worker."""
    first = schedule.next_tick(handled_through)
    if first > now:
        return None
    if paused:  # paused: every tick that comes due is skipped, none is fired later
        return Due((), schedule.latest_tick(now))
    if schedule.catch_up == "all":
        fire = schedule.ticks(handled_through, now, limit)
        return Due(tuple(fire), fire[-1])
    cutoff = now - timedelta(seconds=schedule.grace_s)
    missed: list[datetime] = []
    if first <= cutoff:
        newest_missed = schedule.latest_tick(cutoff)
        if schedule.catch_up == "latest":
            missed = [newest_missed]
        handled_through = newest_missed
    on_time = schedule.ticks(handled_through, now, limit - len(missed))
    fire = missed + on_time
    through = fire[-1] if fire else handled_through
    if fire and missed:
        log.info("schedule %s: missed ticks up to %s, catch_up=%s", schedule.name,
                 missed[-1].isoformat(), schedule.catch_up)  # fmt: skip
    return Due(tuple(fire), through)


def check_schedules(schedules: Sequence[Any], where: str = "schedules") -> tuple[Schedule, ...]:
    """The declarations, refused as a whole if one is not a ``Schedule`` or names repeat."""
    out: list[Schedule] = []
    seen: set[str] = set()
    for s in schedules:
        if not isinstance(s, Schedule):
            raise DeclarationError(f"{where}: {s!r} is not a Schedule")
        if s.name in seen:
            raise DeclarationError(f"{where}: two schedules are named {s.name!r}")
        seen.add(s.name)
        out.append(s)
    return tuple(out)


def load_schedules(spec: str) -> tuple[Schedule, ...]:
    """The ``SCHEDULES`` lists of the modules a ``pipeline run`` spec names, in order."""
    # As registry.load_hooks reads HOOKS: the same parts, the same import errors.
    from pipeline.registry import _import, _parts, module_spec

    found: list[Schedule] = []
    for part in _parts(spec):
        module_name = module_spec(part).partition(":")[0]
        listed: Any = getattr(_import(module_name), SCHEDULES_ATTR, ())
        found.extend(check_schedules(list(listed), f"{module_name}.{SCHEDULES_ATTR}"))
    return check_schedules(list(dict.fromkeys(found)))


def to_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def from_ms(ms: int, schedule: Schedule) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(schedule.zone)
