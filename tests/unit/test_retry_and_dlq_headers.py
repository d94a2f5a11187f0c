"""Headers that travel with retried and dead-lettered events."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pipeline import headers as hdr
from pipeline.deadletter import DeadLetterSource, headers_for
from pipeline.retrytopics import (
    DUE_SLACK_MS,
    Origin,
    delay_of,
    origin_of,
    retry_headers,
    topic_name,
)


@dataclass
class Rec:
    """A stand-in for a consumed record (the RawRecord protocol)."""

    t: str = "orders"
    p: int = 2
    o: int = 41
    h: list[tuple[str, bytes | None]] = field(default_factory=lambda: [("trace", b"abc")])
    ts: int = 1_700_000_000_000

    def topic(self) -> str:
        return self.t

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o

    def key(self) -> bytes | None:
        return b"k"

    def value(self) -> bytes | None:
        return b"v"

    def headers(self) -> list[tuple[str, bytes | None]]:
        return self.h

    def timestamp(self) -> tuple[int, int]:
        return (1, self.ts)

    def error(self) -> None:
        return None


def test_retry_topics_are_named_after_the_group_and_delay() -> None:
    assert topic_name("video.transcode", 10) == "video.transcode.retry.10s"
    assert topic_name("g", 0.5) == "g.retry.0.5s"


def test_a_retry_record_carries_its_history_and_keeps_the_original_headers() -> None:
    rec = Rec()
    origin = origin_of(rec, from_retry_topic=False)
    headers = retry_headers(rec, origin, attempts=1, due_ms=5000, first_failure_ms=4000,
                            error=ConnectionError("boom"))  # fmt: skip
    assert headers[0] == ("trace", b"abc")
    retried = Rec(t="g.retry.1s", p=0, o=7, h=list(headers))
    again = origin_of(retried, from_retry_topic=True)
    assert again == Origin("orders", 2, 41, 1_700_000_000_000, attempts=1,
                           first_failure_ms=4000, due_ms=5000)  # fmt: skip


def test_a_second_retry_replaces_the_previous_retry_headers() -> None:
    rec = Rec()
    first = retry_headers(rec, origin_of(rec, False), 1, 5000, 4000, ValueError("a"))
    second_rec = Rec(t="g.retry.1s", h=list(first))
    second = retry_headers(second_rec, origin_of(second_rec, True), 2, 9000, 4000, ValueError("b"))
    names = [k for k, _ in second]
    assert names.count("retry-attempt") == 1
    assert dict(second)["retry-attempt"] == b"2"
    assert dict(second)["retry-original-offset"] == b"41"


def test_a_record_without_our_retry_headers_counts_as_fresh() -> None:
    rec = Rec(t="g.retry.1s", h=[("retry-attempt", b"x")])
    assert origin_of(rec, from_retry_topic=True).attempts == 0


def test_dead_letter_headers_name_the_original_coordinates_not_the_retry_topic() -> None:
    rec = Rec()
    history = retry_headers(rec, origin_of(rec, False), 3, 1, 1, OSError("x"))
    retried = Rec(t="g.retry.60s", p=0, o=3, h=list(history))
    origin = origin_of(retried, from_retry_topic=True)
    try:
        raise ValueError("final straw")
    except ValueError as exc:
        headers = headers_for(retried, DeadLetterSource("st", "grp", "grp.dlq"), exc, origin, 4, 1)
    d = dict(headers)
    assert d["dlq-original-topic"] == b"orders" and d["dlq-original-offset"] == b"41"
    assert d["dlq-attempts"] == b"4" and d["dlq-exception-type"] == b"builtins.ValueError"
    assert b"final straw" in d["dlq-traceback"]
    assert not any(k.startswith("retry-") for k, _ in headers)
    assert headers[0] == ("trace", b"abc")


def test_a_second_trip_to_the_dlq_replaces_the_error_headers() -> None:
    rec = Rec()
    src = DeadLetterSource("st", "grp", "grp.dlq")
    first = headers_for(rec, src, ValueError("one"), origin_of(rec, False), 1)
    replayed = Rec(h=list(first))
    second = headers_for(replayed, src, KeyError("two"), origin_of(replayed, False), 1)
    names = [k for k, _ in second]
    assert names.count("dlq-exception-type") == 1
    assert dict(second)["dlq-exception-type"] == b"builtins.KeyError"


# -- event ids of records that came without one ----------------------------------------------


def test_retry_and_dead_letter_copies_carry_the_id_a_header_less_record_was_given() -> None:
    """A record from a producer that set no event-id: both copies carry the id of its
    coordinates, so the retry-topic copy and a replay keep the id the stage gave it."""
    rec = Rec(h=[("trace", b"abc")])
    given = hdr.event_id_of(rec.h, "orders[2]@41")
    retry = retry_headers(rec, origin_of(rec, False), 1, 5000, 4000, OSError("x"))
    dead = headers_for(
        rec, DeadLetterSource("st", "g", "g.dlq"), OSError("x"), origin_of(rec, False), 1
    )
    for headers in (retry, dead):
        assert [v for k, v in headers if k == "event-id"] == [given.encode()]
    retried = Rec(t="g.retry.1s", p=0, o=3, h=list(retry))
    assert hdr.event_id_of(retried.h, "g.retry.1s[0]@3") == given


def test_copies_of_a_record_with_an_id_keep_it_unchanged() -> None:
    rec = Rec(h=[("event-id", b"\xff\xfe"), ("trace", b"abc")])
    retry = retry_headers(rec, origin_of(rec, False), 1, 5000, 4000, OSError("x"))
    assert [(k, v) for k, v in retry if not k.startswith("retry-")] == rec.h


# -- garbled retry headers -------------------------------------------------------------------


def retry_copy(**changed: bytes) -> Rec:
    """A copy in ``g.retry.1s`` written at T (1_700_000_000_000) by us, with ``changed`` headers
    (names without the ``retry-`` prefix, underscores for dashes) replaced."""
    rec = Rec()
    headers = dict(
        retry_headers(rec, origin_of(rec, False), 2, rec.ts + 1000, rec.ts - 50, OSError())
    )
    for name, value in changed.items():
        headers["retry-" + name.replace("_", "-")] = value
    return Rec(t="g.retry.1s", p=0, o=3, h=list(headers.items()))


@pytest.mark.parametrize(
    "bad", [b"", b"\xff", b"x1", b"-3", b"1.5", b"9" * 5000, "\u00b2".encode()]
)
def test_a_garbled_retry_number_degrades_instead_of_raising(bad: bytes) -> None:
    """Not an integer, negative, empty, not UTF-8 or too long: the attempt count is unknown
    (0, the ladder starts again), the event is due now, the coordinates are unknown (-1)."""
    origin = origin_of(retry_copy(attempt=bad, due_ms=bad, original_offset=bad,
                                  first_failure_ms=bad), from_retry_topic=True)  # fmt: skip
    assert origin == Origin("orders", 2, -1, 1_700_000_000_000, attempts=0,
                            first_failure_ms=None, due_ms=0)  # fmt: skip


def test_the_other_retry_headers_survive_one_garbled_value() -> None:
    origin = origin_of(retry_copy(original_partition=b"\xff"), from_retry_topic=True)
    assert (origin.topic, origin.partition, origin.offset, origin.attempts) == ("orders", -1, 41, 2)


@pytest.mark.parametrize("bad", [b"\xff\xfe", b""])
def test_an_unreadable_original_topic_makes_the_record_a_fresh_event_of_the_retry_topic(
    bad: bytes,
) -> None:
    """Without its original topic the schema is unknown: the record is dead-lettered as
    undecodable (the runner finds no input binding for the retry topic)."""
    origin = origin_of(retry_copy(original_topic=bad), from_retry_topic=True)
    assert (origin.topic, origin.attempts, origin.due_ms) == ("g.retry.1s", 0, 0)


def test_a_due_time_beyond_the_topics_delay_is_clipped_to_it() -> None:
    """A garbled far-future due time must not hold the partition for centuries: a copy in
    ``g.retry.1s`` is due at most 1 s (plus a little slack) after it was written."""
    origin = origin_of(retry_copy(due_ms=b"9999999999999"), from_retry_topic=True)
    assert origin.due_ms == 1_700_000_000_000 + 1000 + DUE_SLACK_MS
    assert origin_of(retry_copy(), from_retry_topic=True).due_ms == 1_700_000_001_000


@pytest.mark.parametrize(
    ("topic", "delay"),
    [("p.g.retry.1s", 1.0), ("g.retry.0.5s", 0.5), ("g.retry.1e+06s", 1e6), ("g.retry.xs", None),
     ("orders", None), ("g.retry.infs", None), ("g.retry.-1s", None)],
)  # fmt: skip
def test_the_delay_is_read_from_the_retry_topics_name(topic: str, delay: float | None) -> None:
    assert delay_of(topic) == delay
