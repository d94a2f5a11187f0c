"""Non-blocking retries through delayed topics: names and the headers that travel along.

A failed event is republished (original key, value and headers) to ``<group>.retry.<delay>s``
with ``retry-*`` headers saying when it is due, how many attempts it has had, when it first
failed and where it originally came from, and with an ``event-id`` (the one the stage gave the
event if it came without one). The stage's own consumer (same group, so fan-out
peers never see it) reads the retry topic and holds each record until it is due by pausing the
partition, never by sleeping. Pure functions, no Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline import headers as hdr
from pipeline.ports import RawHeaders, RawRecord

PREFIX = "retry-"
ATTEMPT = "retry-attempt"
DUE_MS = "retry-due-ms"
FIRST_FAILURE_MS = "retry-first-failure-ms"
ORIGINAL_TOPIC = "retry-original-topic"
ORIGINAL_PARTITION = "retry-original-partition"
ORIGINAL_OFFSET = "retry-original-offset"
ORIGINAL_TIMESTAMP = "retry-original-timestamp"
LAST_ERROR = "retry-last-error"
MAX_ERROR = 500


def topic_name(group: str, delay_s: float) -> str:
    return f"{group}.retry.{delay_s:g}s"


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an event first entered the stage, and its retry history so far."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    attempts: int = 0  # failed deliveries before this one
    first_failure_ms: int | None = None
    due_ms: int = 0


def origin_of(record: RawRecord, from_retry_topic: bool) -> Origin:
    """The original coordinates: from the retry headers for retry-topic records, else the
    record's own."""
    if from_retry_topic:
        h = {k: v for k, v in (record.headers() or []) if k.startswith(PREFIX) and v is not None}
        try:
            return Origin(
                topic=h[ORIGINAL_TOPIC].decode(),
                partition=int(h[ORIGINAL_PARTITION]),
                offset=int(h[ORIGINAL_OFFSET]),
                timestamp_ms=int(h[ORIGINAL_TIMESTAMP]),
                attempts=int(h[ATTEMPT]),
                first_failure_ms=int(h[FIRST_FAILURE_MS]),
                due_ms=int(h[DUE_MS]),
            )
        except (KeyError, ValueError):
            pass  # not written by us: treat it as a fresh event from that topic
    return Origin(record.topic(), record.partition(), record.offset(), record.timestamp()[1])


def retry_headers(
    record: RawRecord,
    origin: Origin,
    attempts: int,
    due_ms: int,
    first_failure_ms: int,
    error: BaseException,
) -> RawHeaders:
    kept = [(k, v) for k, v in (record.headers() or []) if not k.startswith(PREFIX)]
    message = f"{type(error).__name__}: {error}"[:MAX_ERROR]
    ours = {
        ATTEMPT: str(attempts),
        DUE_MS: str(due_ms),
        FIRST_FAILURE_MS: str(first_failure_ms),
        ORIGINAL_TOPIC: origin.topic,
        ORIGINAL_PARTITION: str(origin.partition),
        ORIGINAL_OFFSET: str(origin.offset),
        ORIGINAL_TIMESTAMP: str(origin.timestamp_ms),
        LAST_ERROR: message,
    }
    return hdr.with_event_id(kept, record) + [(k, v.encode()) for k, v in ours.items()]
