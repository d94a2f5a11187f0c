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
MAX_DIGITS = 19  # an int64
DUE_SLACK_MS = 1_000  # the failure time a due time counts from is a little before the write


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
    record's own. Never raises: header values come from any producer that can write to the
    topic, so each is read on its own and a garbled one degrades (see ``_from_headers``)."""
    if from_retry_topic:
        h = {k: v for k, v in (record.headers() or []) if k.startswith(PREFIX) and v is not None}
        topic = _text(h.get(ORIGINAL_TOPIC))
        if topic:
            return _from_headers(record, topic, h)
        # Not written by us: treat it as a fresh event from that topic (whose schema the stage
        # does not know, so it is dead-lettered as undecodable, with its bytes).
    return Origin(record.topic(), record.partition(), record.offset(), record.timestamp()[1])


def _from_headers(record: RawRecord, topic: str, h: dict[str, bytes]) -> Origin:
    """What a garbled (not an integer, negative, empty) value becomes: coordinates -1
    (unknown), the original timestamp the copy's own; attempts 0 (unknown: the retry ladder
    starts again, bounded, as every copy we write carries a clean count); no first failure;
    due now. A due time later than the retry topic's delay allows is clipped to it, so a
    garbled value cannot hold the partition for longer than one delay."""
    written_ms = record.timestamp()[1]
    due_ms = _count(h.get(DUE_MS), 0)
    delay_s = delay_of(record.topic())
    if delay_s is not None and written_ms > 0:
        due_ms = min(due_ms, written_ms + int(delay_s * 1000) + DUE_SLACK_MS)
    return Origin(
        topic=topic,
        partition=_count(h.get(ORIGINAL_PARTITION), -1),
        offset=_count(h.get(ORIGINAL_OFFSET), -1),
        timestamp_ms=_count(h.get(ORIGINAL_TIMESTAMP), written_ms),
        attempts=_count(h.get(ATTEMPT), 0),
        first_failure_ms=_maybe_count(h.get(FIRST_FAILURE_MS)),
        due_ms=due_ms,
    )


def delay_of(topic: str) -> float | None:
    """The delay in seconds a retry topic is named after (``<group>.retry.<delay>s``)."""
    _, sep, label = topic.rpartition(".retry.")
    if not sep or not label.endswith("s"):
        return None
    try:
        delay = float(label[:-1])
    except ValueError:
        return None
    return delay if 0 <= delay < float("inf") else None


def _count(raw: bytes | None, default: int) -> int:
    count = _maybe_count(raw)
    return default if count is None else count


def _maybe_count(raw: bytes | None) -> int | None:
    """A non-negative decimal integer header (ASCII digits only), or None."""
    if raw is None or not raw.isdigit() or len(raw) > MAX_DIGITS:
        return None
    return int(raw)


def _text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return None


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
