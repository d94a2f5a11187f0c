"""A job's status and the rule that keeps it from going backwards (pure: no I/O, no clock).

A job is one event a tracking stage handles, identified by its ``event-id`` (what ``publish``
returns). Its states::

    waiting / delayed ──► active ──► completed
                            │  ▲
                            ▼  │ (a new attempt)
                         retrying ──► … ──► failed ──► dead-lettered

Every entry belongs to a delivery ``attempt`` (1 = the first). Entries are ordered by
``(attempt, rank of the state)``; ``merge`` accepts an entry only if it is not behind the one
held, so transitions that arrive late (another worker's, a writer's retry) or twice (a
redelivered event after a crash, which is handled again under the same attempt number) never
move a job back: a completed job does not show ``active`` again unless a new attempt starts.
Within one attempt, an entry of the same rank replaces the held one (progress 30 → 50; the
same attempt taken over by another worker after a rebalance).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, get_args

State = Literal["waiting", "delayed", "active", "retrying", "failed", "completed", "dead-lettered"]
STATES: tuple[State, ...] = get_args(State)
RANK: dict[str, int] = {
    "waiting": 0,
    "delayed": 0,
    "active": 1,
    "retrying": 2,
    "failed": 3,
    "completed": 4,
    "dead-lettered": 4,
}
FINISHED = frozenset({"failed", "completed", "dead-lettered"})
ERROR_MAX_CHARS = 500


@dataclass(frozen=True, slots=True)
class Job:
    """One job's status. Times are wall-clock seconds (``time.time()``); ``result`` is the
    JSON value the handler gave (``ctx.result`` or its return value)."""

    id: str
    state: State
    attempt: int = 1
    stage: str | None = None
    topic: str | None = None  # where the event was first stored
    partition: int | None = None
    offset: int | None = None
    progress: float | None = None
    note: str | None = None
    result: Any = None
    error: str | None = None  # "ExceptionType: message", cut at ERROR_MAX_CHARS
    worker: str | None = None
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float | None = None
    expires_at: float | None = None  # a job view removes the entry after this

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def order(self) -> tuple[int, int]:
        return self.attempt, RANK[self.state]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_FIELDS = frozenset(f.name for f in fields(Job))
# What a later entry of the same job inherits when it does not know it (a worker does not know
# when the publisher stored the event; a completed entry carries its attempt's start).
_INHERITED = ("stage", "topic", "partition", "offset", "created_at")
_SAME_ATTEMPT = ("started_at", "progress", "note", "worker")


def merge(held: Job | None, new: Job) -> Job | None:
    """The job's status after ``new`` arrives, or None when ``new`` is behind ``held`` (it is
    dropped: a job never goes backwards)."""
    if held is None:
        return new
    if new.order < held.order:
        return None
    filled: dict[str, Any] = {n: getattr(held, n) for n in _INHERITED if getattr(new, n) is None}
    if held.created_at is not None and new.created_at is not None:
        # The earliest known: a delayed event's record is written again when it is due.
        filled["created_at"] = min(held.created_at, new.created_at)
    if new.attempt == held.attempt:
        filled |= {n: getattr(held, n) for n in _SAME_ATTEMPT if getattr(new, n) is None}
    return replace(new, **filled) if filled else new


def summarise(error: BaseException) -> str:
    """``"Type: message"`` of ``error``, short enough for a status line (never a payload:
    messages of this framework's errors name coordinates, not data)."""
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= ERROR_MAX_CHARS else text[: ERROR_MAX_CHARS - 1] + "…"


def encode(job: Job) -> bytes:
    return json.dumps(job.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()


def decode(raw: bytes) -> Job:
    """A job entry from the jobs topic; ``ValueError`` if it is not one (unknown fields of a
    newer writer are ignored)."""
    data = json.loads(raw)
    if not isinstance(data, dict) or data.get("state") not in RANK or not data.get("id"):
        raise ValueError("not a job entry")
    known = {k: v for k, v in data.items() if k in _FIELDS}
    job = Job(**known)
    if not isinstance(job.attempt, int) or isinstance(job.attempt, bool):
        raise ValueError("a job entry's attempt is not an integer")
    return job
