"""Dead-letter records: the original key, value and headers byte for byte, plus error headers.

Error headers all start with ``dlq-``. A record dead-lettered a second time (after a replay)
has its previous ``dlq-*`` headers replaced, not piled up; retry bookkeeping (``retry-*``) is
dropped too, and the original coordinates are those of the event's first appearance, so a
replay sends it back to the stage's input topic. A record that came without an ``event-id``
gets the one the stage gave it, so a replay keeps the event's id.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass

from pipeline import headers as hdr
from pipeline import retrytopics
from pipeline.clock import SYSTEM, Clock
from pipeline.ports import RawHeaders, RawRecord
from pipeline.retrytopics import Origin

PREFIX = "dlq-"
MAX_MESSAGE = 1_000
MAX_TRACEBACK = 4_000


@dataclass(frozen=True, slots=True)
class DeadLetterSource:
    stage: str
    group: str
    topic: str  # the DLQ topic


def dlq_topic(group: str) -> str:
    return f"{group}.dlq"


def headers_for(
    record: RawRecord,
    source: DeadLetterSource,
    exc: BaseException,
    origin: Origin,
    attempts: int,
    first_failure_ms: int | None = None,
    clock: Clock = SYSTEM,
) -> RawHeaders:
    now_ms = clock.wall_ms()
    kept = [
        (k, v)
        for k, v in (record.headers() or [])
        if not k.startswith(PREFIX) and not k.startswith(retrytopics.PREFIX)
    ]
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    error = {
        "original-topic": origin.topic,
        "original-partition": str(origin.partition),
        "original-offset": str(origin.offset),
        "original-timestamp": str(origin.timestamp_ms),
        "stage": source.stage,
        "group": source.group,
        "exception-type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "exception-message": _clip(str(exc), MAX_MESSAGE),
        "traceback": _clip(tb, MAX_TRACEBACK, keep_end=True),
        "attempts": str(attempts),
        "first-failure-ms": str(first_failure_ms or now_ms),
        "last-failure-ms": str(now_ms),
    }
    ours = [(PREFIX + k, v.encode()) for k, v in error.items()]
    return hdr.with_event_id(kept, record) + ours


def _clip(text: str, limit: int, *, keep_end: bool = False) -> str:
    if len(text) <= limit:
        return text
    # The end of a traceback (the raising frame) is the useful part.
    return "…" + text[-limit:] if keep_end else text[:limit] + "…"
