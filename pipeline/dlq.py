"""Dead-letter topics, the pure part: reading the ``dlq-*`` error headers, choosing which records
to replay, rewriting their headers, pacing a replay, and counting for ``pipeline dlq list``.

Nothing here talks to Kafka: records arrive as ``StoredRecord`` values, read by a transport's
``TopicLogPort`` (on Kafka ``pipeline.kafka.topics_io``), so everything below is tested without
a broker.

A replayed record carries the original key, value and headers byte for byte and in order, minus
every ``dlq-*`` header (the failure it had is over) and every ``retry-*`` header (attempts start
again), plus ``replay-count`` (incremented on every replay), ``replayed-at-ms`` and
``replayed-from`` (``topic[partition]@offset`` of the dead letter it came from). Its
``event-id`` is the dead letter's, which its stage set if the event came without one; a dead
letter written before stages did so gets the id its stage gave it (from its original
coordinates), so the stage's idempotency store recognises the replayed event.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from pipeline import headers as hdr
from pipeline.deadletter import PREFIX as DLQ_PREFIX
from pipeline.errors import DeclarationError

DLQ_SUFFIX = ".dlq"
RETRY_PREFIX = "retry-"
REPLAY_COUNT = "replay-count"
REPLAYED_AT_MS = "replayed-at-ms"
REPLAYED_FROM = "replayed-from"
_REPLAY_HEADERS = (REPLAY_COUNT, REPLAYED_AT_MS, REPLAYED_FROM)
UNKNOWN = "(unknown)"
MAX_DIGITS = 20  # "-" and the 19 digits of an int64

Header = tuple[str, bytes | None]


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A record as it is stored in a topic; independent of any Kafka client."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]
    timestamp_ms: int

    @property
    def coordinates(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    @property
    def job_id(self) -> str:
        """Its ``event-id`` (the id job status is found by, as ``Delivered.job_id``), or for a
        record without one, the id derived from its coordinates, as a stage derives it."""
        return hdr.event_id_of(self.headers, self.coordinates)


@dataclass(frozen=True, slots=True)
class Failure:
    """What the ``dlq-*`` headers of a dead letter say. Missing headers are None."""

    original_topic: str | None
    original_partition: int | None
    original_offset: int | None
    original_timestamp_ms: int | None
    stage: str | None
    group: str | None
    exception_type: str | None
    exception_message: str | None
    traceback: str | None
    attempts: int | None
    first_failure_ms: int | None
    last_failure_ms: int | None

    @classmethod
    def of(cls, record: StoredRecord) -> Failure:
        text = _error_headers(record)

        def number(name: str) -> int | None:
            return _integer(text.get(name))

        return cls(
            original_topic=text.get("original-topic"),
            original_partition=number("original-partition"),
            original_offset=number("original-offset"),
            original_timestamp_ms=number("original-timestamp"),
            stage=text.get("stage"),
            group=text.get("group"),
            exception_type=text.get("exception-type"),
            exception_message=text.get("exception-message"),
            traceback=text.get("traceback"),
            attempts=number("attempts"),
            first_failure_ms=number("first-failure-ms"),
            last_failure_ms=number("last-failure-ms"),
        )

    @property
    def original_coordinates(self) -> str:
        return f"{self.original_topic}[{self.original_partition}]@{self.original_offset}"


def _integer(value: str | None) -> int | None:
    """A decimal integer (ASCII digits, optional minus sign, at most an int64), or None: header
    values come from any producer, and ``str.isdigit`` alone also accepts digits ``int`` does
    not (superscripts) and lengths it refuses."""
    if value is None or len(value) > MAX_DIGITS:
        return None
    digits = value.removeprefix("-")
    return int(value) if digits.isascii() and digits.isdigit() else None


def _error_headers(record: StoredRecord) -> dict[str, str]:
    """``dlq-*`` headers without the prefix, as text; the last one wins if repeated."""
    return {
        k[len(DLQ_PREFIX) :]: v.decode(errors="replace")
        for k, v in record.headers
        if k.startswith(DLQ_PREFIX) and v is not None
    }


# -- choosing records ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplayFilter:
    """Which dead letters to replay; every criterion given must hold.

    ``error_type`` matches the full exception type (``builtins.ValueError``) or its last part
    (``ValueError``). ``since_ms`` (inclusive) and ``until_ms`` (exclusive) bound the last failure
    time; a record without one does not match a time bound.
    """

    error_type: str | None = None
    key: bytes | None = None
    since_ms: int | None = None
    until_ms: int | None = None

    def matches(self, record: StoredRecord) -> bool:
        failure = Failure.of(record)
        return (
            self._type_matches(failure.exception_type)
            and (self.key is None or record.key == self.key)
            and self._time_matches(failure.last_failure_ms)
        )

    def _type_matches(self, exception_type: str | None) -> bool:
        if self.error_type is None:
            return True
        if exception_type is None:
            return False
        return self.error_type in (exception_type, exception_type.rsplit(".", 1)[-1])

    def _time_matches(self, at_ms: int | None) -> bool:
        if self.since_ms is None and self.until_ms is None:
            return True
        if at_ms is None:
            return False
        after_start = self.since_ms is None or at_ms >= self.since_ms
        return after_start and (self.until_ms is None or at_ms < self.until_ms)


# -- rewriting headers -----------------------------------------------------------------------


def replay_headers(record: StoredRecord, now_ms: int) -> list[Header]:
    """The headers a replayed copy of ``record`` is published with (see the module docstring)."""
    count = _replay_count(record.headers) + 1
    kept = [
        (k, v)
        for k, v in record.headers
        if not k.startswith((DLQ_PREFIX, RETRY_PREFIX)) and k not in _REPLAY_HEADERS
    ]
    return [
        *kept,
        *_first_sight_id(record, kept),
        (REPLAY_COUNT, str(count).encode()),
        (REPLAYED_AT_MS, str(now_ms).encode()),
        (REPLAYED_FROM, record.coordinates.encode()),
    ]


def _first_sight_id(record: StoredRecord, kept: list[Header]) -> list[Header]:
    """For a dead letter without an ``event-id`` (written before dead letters carried the id
    their stage gave them), that id: the one of its original coordinates."""
    if hdr.has_event_id(kept):
        return []
    failure = Failure.of(record)
    partition, offset = failure.original_partition, failure.original_offset
    if not failure.original_topic or partition is None or offset is None:
        return []
    if partition < 0 or offset < 0:  # coordinates its stage could not read
        return []
    return [(hdr.EVENT_ID, hdr.id_from_coordinates(failure.original_coordinates).encode())]


def first_retry_topic(group: str | None, topics: Iterable[str]) -> str | None:
    """The stage's shortest-delay retry topic (``<group>.retry.<delay>s``), if it has any."""
    if not group:
        return None
    prefix = f"{group}.retry."
    delays = {}
    for topic in topics:
        label = topic[len(prefix) :] if topic.startswith(prefix) else ""
        try:
            delays[topic] = float(label.removesuffix("s")) if label.endswith("s") else None
        except ValueError:
            continue
    found = [(d, t) for t, d in delays.items() if d is not None]
    return min(found)[1] if found else None


def retry_entry_headers(failure: Failure, now_ms: int) -> list[Header]:
    """``retry-*`` headers that let a replayed event enter its stage through a retry topic:
    due now, no attempts yet, decoded with its original topic's schema."""
    values = {
        "retry-attempt": "0",
        "retry-due-ms": str(now_ms),
        "retry-first-failure-ms": str(now_ms),
        "retry-original-topic": failure.original_topic or "",
        "retry-original-partition": str(failure.original_partition or 0),
        "retry-original-offset": str(failure.original_offset or 0),
        "retry-original-timestamp": str(failure.original_timestamp_ms or now_ms),
    }
    return [(k, v.encode()) for k, v in values.items()]


def _replay_count(headers: Iterable[Header]) -> int:
    counts = [v for k, v in headers if k == REPLAY_COUNT and v is not None]
    # An unreadable count (not written by us) counts as no previous replay.
    count = _integer(counts[-1].decode("ascii", "replace")) if counts else None
    return count if count is not None and count >= 0 else 0


# -- pacing ----------------------------------------------------------------------------------


class RateLimiter:
    """A token bucket: on average at most ``rate`` records per second, bursts of ``burst``.

    ``reserve()`` takes a token and returns how many seconds to wait before sending. Tokens may
    go negative (a debt), so records reserved in a row are spaced ``1 / rate`` apart.
    """

    def __init__(
        self, rate: float, burst: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._tokens = burst
        self._last = clock()

    def reserve(self) -> float:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate


# -- counting --------------------------------------------------------------------------------


@dataclass(slots=True)
class ReplayTally:
    matched: int = 0
    replayed: int = 0
    skipped: int = 0  # by the filter
    failed: int = 0

    def line(self) -> str:
        return (
            f"matched={self.matched} replayed={self.replayed} "
            f"skipped={self.skipped} failed={self.failed}"
        )


def count_by_cause(records: Iterable[StoredRecord]) -> Counter[tuple[str, str]]:
    """Dead letters per (stage, exception type)."""
    counts: Counter[tuple[str, str]] = Counter()
    for record in records:
        failure = Failure.of(record)
        counts[(failure.stage or UNKNOWN, failure.exception_type or UNKNOWN)] += 1
    return counts


def summary(by_topic: dict[str, Counter[tuple[str, str]]]) -> dict[str, object]:
    """The machine-readable form of ``pipeline dlq list``."""
    topics = [
        {
            "topic": topic,
            "total": sum(counts.values()),
            "causes": [
                {"stage": stage, "exception_type": kind, "count": n}
                for (stage, kind), n in sorted(counts.items())
            ],
        }
        for topic, counts in sorted(by_topic.items())
    ]
    return {"topics": topics, "total": sum(sum(c.values()) for c in by_topic.values())}


# -- reading and showing values --------------------------------------------------------------


def parse_instant(text: str, option: str) -> int:
    """An ISO 8601 time (UTC unless it names an offset) as epoch milliseconds."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise DeclarationError(
            f"{option}: {text!r} is not an ISO 8601 time (e.g. 2024-05-01T12:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def iso(ms: int | None) -> str:
    if ms is None:
        return UNKNOWN
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def hex_preview(data: bytes | None, limit: int = 64) -> str:
    if data is None:
        return "(no value)"
    shown = data[:limit].hex(" ")
    return f"{shown} … ({len(data)} bytes)" if len(data) > limit else shown


def show_key(key: bytes | None, limit: int = 200) -> str:
    if key is None:
        return "(none)"
    try:
        text = key.decode()
    except UnicodeDecodeError:
        return "hex:" + hex_preview(key, limit)
    return repr(text) if text.isprintable() and len(text) <= limit else "hex:" + hex_preview(key)


def tail(text: str | None, lines: int) -> str:
    if not text:
        return UNKNOWN
    return "\n".join(text.rstrip().splitlines()[-lines:])
