"""Dead-letter tooling, the pure part: filters, header rewriting, pacing and counting."""

from __future__ import annotations

from collections import Counter

import pytest

from pipeline import headers as hdr
from pipeline.dlq import (
    Failure,
    RateLimiter,
    ReplayFilter,
    StoredRecord,
    count_by_cause,
    first_retry_topic,
    hex_preview,
    iso,
    parse_instant,
    replay_headers,
    retry_entry_headers,
    summary,
)
from pipeline.errors import DeclarationError

T0 = 1_714_564_800_000  # 2024-05-01T12:00:00Z


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def dead_letter(
    *,
    kind: str = "builtins.ValueError",
    stage: str = "billing",
    key: bytes | None = b"k1",
    last_ms: int = T0,
    extra: tuple[tuple[str, bytes | None], ...] = (),
    offset: int = 7,
) -> StoredRecord:
    headers = (
        ("event-id", b"e-1"),
        *extra,
        ("dlq-original-topic", b"orders.placed"),
        ("dlq-original-partition", b"2"),
        ("dlq-original-offset", b"41"),
        ("dlq-stage", stage.encode()),
        ("dlq-group", b"orders-billing"),
        ("dlq-exception-type", kind.encode()),
        ("dlq-exception-message", b"boom"),
        ("dlq-attempts", b"3"),
        ("dlq-first-failure-ms", str(last_ms - 500).encode()),
        ("dlq-last-failure-ms", str(last_ms).encode()),
    )
    return StoredRecord("orders-billing.dlq", 1, offset, key, b"\xc3\x01body", headers, last_ms)


# -- reading error headers -------------------------------------------------------------------


def test_failure_reads_the_dlq_headers_as_text_and_numbers() -> None:
    """The dlq-* headers come back typed; the original coordinates read topic[partition]@offset."""
    failure = Failure.of(dead_letter())
    assert failure.exception_type == "builtins.ValueError"
    assert failure.attempts == 3 and failure.last_failure_ms == T0
    assert failure.original_coordinates == "orders.placed[2]@41"


def test_failure_of_a_record_without_dlq_headers_is_all_none() -> None:
    """A record someone produced to a DLQ by hand has no failure details, and no crash."""
    record = StoredRecord("x.dlq", 0, 0, None, b"v", (("dlq-attempts", b"many"),), 0)
    failure = Failure.of(record)
    assert failure.original_topic is None and failure.attempts is None


# -- filters ---------------------------------------------------------------------------------


def test_an_empty_filter_matches_everything() -> None:
    """No criteria: every dead letter is replayed."""
    assert ReplayFilter().matches(dead_letter())


@pytest.mark.parametrize("given", ["builtins.ValueError", "ValueError"])
def test_error_type_matches_the_full_name_or_the_class_name(given: str) -> None:
    """--error-type accepts `ValueError` as well as `builtins.ValueError`."""
    assert ReplayFilter(error_type=given).matches(dead_letter())


def test_error_type_does_not_match_a_prefix_or_another_type() -> None:
    """`Error` does not match `ValueError`, and `KeyError` does not match `ValueError`."""
    record = dead_letter()
    assert not ReplayFilter(error_type="Error").matches(record)
    assert not ReplayFilter(error_type="KeyError").matches(record)


def test_key_filter_matches_the_exact_key_bytes() -> None:
    """--key compares the record key byte for byte; a keyless record never matches."""
    assert ReplayFilter(key=b"k1").matches(dead_letter(key=b"k1"))
    assert not ReplayFilter(key=b"k1").matches(dead_letter(key=b"k10"))
    assert not ReplayFilter(key=b"k1").matches(dead_letter(key=None))


def test_time_bounds_apply_to_the_last_failure_since_inclusive_until_exclusive() -> None:
    """--since includes its instant, --until excludes it."""
    record = dead_letter(last_ms=T0)
    assert ReplayFilter(since_ms=T0).matches(record)
    assert not ReplayFilter(since_ms=T0 + 1).matches(record)
    assert ReplayFilter(until_ms=T0 + 1).matches(record)
    assert not ReplayFilter(until_ms=T0).matches(record)


def test_a_time_bound_excludes_records_without_a_failure_time() -> None:
    """Without dlq-last-failure-ms a record cannot be placed in time, so it is not chosen."""
    record = StoredRecord("x.dlq", 0, 0, None, b"v", (), 0)
    assert not ReplayFilter(since_ms=0).matches(record)


def test_every_criterion_must_hold() -> None:
    """Type and key together: a record matching only one of them is skipped."""
    chosen = ReplayFilter(error_type="ValueError", key=b"k1")
    assert chosen.matches(dead_letter(key=b"k1"))
    assert not chosen.matches(dead_letter(key=b"k2"))
    assert not chosen.matches(dead_letter(kind="builtins.KeyError", key=b"k1"))


# -- header rewriting ------------------------------------------------------------------------


def test_replay_headers_keep_the_originals_in_order_byte_for_byte() -> None:
    """Original headers (repeated keys, None values and binary bytes included) survive in
    order; every dlq-* and retry-* header is dropped; the replay headers are appended."""
    originals = (
        ("traceparent", b"00-abc-01"),
        ("blob", b"\x00\xff\xfe"),
        ("tag", b"a"),
        ("nothing", None),
        ("tag", b"b"),
        ("retry-attempt", b"2"),
        ("retry-due-ms", b"123"),
    )
    headers = replay_headers(dead_letter(extra=originals, offset=7), now_ms=T0 + 9)
    assert headers == [
        ("event-id", b"e-1"),
        ("traceparent", b"00-abc-01"),
        ("blob", b"\x00\xff\xfe"),
        ("tag", b"a"),
        ("nothing", None),
        ("tag", b"b"),
        ("replay-count", b"1"),
        ("replayed-at-ms", str(T0 + 9).encode()),
        ("replayed-from", b"orders-billing.dlq[1]@7"),
    ]


def test_replay_count_increments_and_old_replay_headers_are_replaced() -> None:
    """A record replayed before carries replay-count=2 next time, and one of each header."""
    earlier = (
        ("replay-count", b"1"),
        ("replayed-at-ms", b"1"),
        ("replayed-from", b"orders-billing.dlq[0]@0"),
    )
    headers = replay_headers(dead_letter(extra=earlier), now_ms=T0)
    names = [k for k, _ in headers]
    assert dict(headers)["replay-count"] == b"2"
    assert names.count("replay-count") == names.count("replayed-from") == 1
    assert dict(headers)["replayed-from"] == b"orders-billing.dlq[1]@7"


def test_an_unreadable_replay_count_starts_again_at_one() -> None:
    """A replay-count we did not write (not a number) is replaced by 1, not a crash."""
    headers = replay_headers(dead_letter(extra=(("replay-count", b"lots"),)), now_ms=T0)
    assert dict(headers)["replay-count"] == b"1"


# -- pacing ----------------------------------------------------------------------------------


def test_rate_limiter_spaces_records_one_over_rate_apart() -> None:
    """At 4 per second, records reserved at the same instant wait 0, 0.25, 0.5 and 0.75 s."""
    clock = FakeClock()
    limiter = RateLimiter(4, clock=clock)
    assert [limiter.reserve() for _ in range(4)] == pytest.approx([0.0, 0.25, 0.5, 0.75])


def test_rate_limiter_refills_with_time_up_to_the_burst() -> None:
    """After a long idle spell only `burst` records go at once; the next one waits."""
    clock = FakeClock()
    limiter = RateLimiter(10, burst=3, clock=clock)
    clock.now += 60
    assert [limiter.reserve() for _ in range(4)] == pytest.approx([0, 0, 0, 0.1])


def test_rate_limiter_never_exceeds_its_rate_over_a_window() -> None:
    """Sending as soon as allowed, 5/s for 10 s (fake time) sends at most 5 * 10 + burst."""
    clock = FakeClock()
    limiter = RateLimiter(5, clock=clock)
    start, sent = clock.now, 0
    while True:
        clock.now += limiter.reserve()
        if clock.now - start >= 10:
            break
        sent += 1
    assert 49 <= sent <= 51


def test_rate_limiter_rejects_a_non_positive_rate() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)


# -- counting --------------------------------------------------------------------------------


def test_dead_letters_are_counted_by_stage_and_exception_type() -> None:
    """`dlq list` groups by (stage, type); records without headers count as (unknown)."""
    records = [
        dead_letter(),
        dead_letter(),
        dead_letter(kind="pipeline.errors.BadMagicError"),
        dead_letter(stage="shipping"),
        StoredRecord("x.dlq", 0, 0, None, b"v", (), 0),
    ]
    assert count_by_cause(records) == Counter(
        {
            ("billing", "builtins.ValueError"): 2,
            ("billing", "pipeline.errors.BadMagicError"): 1,
            ("shipping", "builtins.ValueError"): 1,
            ("(unknown)", "(unknown)"): 1,
        }
    )


def test_summary_totals_per_topic_and_overall() -> None:
    """The --json form lists every topic (empty ones too) with its causes and totals."""
    data = summary(
        {
            "b.dlq": Counter({("s", "builtins.KeyError"): 2, ("s", "builtins.ValueError"): 1}),
            "a.dlq": Counter(),
        }
    )
    assert data == {
        "topics": [
            {"topic": "a.dlq", "total": 0, "causes": []},
            {
                "topic": "b.dlq",
                "total": 3,
                "causes": [
                    {"stage": "s", "exception_type": "builtins.KeyError", "count": 2},
                    {"stage": "s", "exception_type": "builtins.ValueError", "count": 1},
                ],
            },
        ],
        "total": 3,
    }


# -- times and previews ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["2024-05-01T12:00:00Z", "2024-05-01T12:00:00", "2024-05-01T14:00:00+02:00"]
)
def test_iso_times_are_utc_unless_they_name_an_offset(text: str) -> None:
    assert parse_instant(text, "--since") == T0


def test_a_bad_time_is_a_usage_error_naming_the_option() -> None:
    with pytest.raises(DeclarationError, match="--until: 'yesterday'"):
        parse_instant("yesterday", "--until")


def test_times_are_shown_as_utc_iso() -> None:
    assert iso(T0 + 5) == "2024-05-01T12:00:00.005+00:00"


def test_hex_preview_shows_at_most_the_limit_and_the_full_length() -> None:
    """Poison bytes are previewed, never dumped: 64 bytes at most, then the total size."""
    assert hex_preview(b"\x00\x01") == "00 01"
    preview = hex_preview(bytes(range(100)))
    assert preview.startswith("00 01 02") and preview.endswith("… (100 bytes)")
    assert len(preview.split("…")[0].split()) == 64


def test_replay_enters_through_the_shortest_retry_topic_of_the_failing_group() -> None:
    topics = ["g.retry.10s", "g.retry.1s", "g.retry.0.5s", "gg.retry.0.1s", "g.dlq", "g.retry.xs"]
    assert first_retry_topic("g", topics) == "g.retry.0.5s"
    assert first_retry_topic("h", topics) is None
    assert first_retry_topic(None, topics) is None


def test_retry_entry_headers_make_the_event_due_now_with_no_attempts() -> None:
    record = StoredRecord(
        topic="g.dlq", partition=0, offset=5, key=b"k", value=b"v", timestamp_ms=1,
        headers=[("dlq-original-topic", b"orders"), ("dlq-original-partition", b"2"),
                 ("dlq-original-offset", b"41"), ("dlq-original-timestamp", b"1700"),
                 ("dlq-group", b"g")],
    )  # fmt: skip
    headers = dict(retry_entry_headers(Failure.of(record), now_ms=9000))
    assert headers["retry-attempt"] == b"0" and headers["retry-due-ms"] == b"9000"
    assert headers["retry-original-topic"] == b"orders"
    assert (headers["retry-original-partition"], headers["retry-original-offset"]) == (b"2", b"41")
    assert headers["retry-original-timestamp"] == b"1700"


@pytest.mark.parametrize("count", [b"\xff", b"9" * 5000, b"-3", "\u00b2".encode(), b""])
def test_a_garbled_replay_count_starts_again_at_one(count: bytes) -> None:
    headers = replay_headers(dead_letter(extra=(("replay-count", count),)), now_ms=T0)
    assert dict(headers)["replay-count"] == b"1"


@pytest.mark.parametrize("bad", [b"\xff", b"9" * 5000, "\u00b2".encode(), b"-", b"4x"])
def test_a_garbled_dlq_number_reads_as_unknown(bad: bytes) -> None:
    record = dead_letter(extra=(("dlq-attempts", bad), ("dlq-original-offset", bad)))
    failure = Failure.of(record)  # the extra headers come first: the later good ones win
    assert (failure.attempts, failure.original_offset) == (3, 41)
    alone = StoredRecord("g.dlq", 0, 0, None, None, (("dlq-attempts", bad),), T0)
    assert Failure.of(alone).attempts is None


def test_a_legacy_dead_letter_without_an_id_is_replayed_with_the_id_its_stage_gave_it() -> None:
    """Dead letters written before copies carried the id: the replay adds the id the stage
    derived from the original coordinates (orders.placed[2]@41), the id it first saw."""
    record = dead_letter()
    legacy = StoredRecord(record.topic, record.partition, record.offset, record.key,
                          record.value, record.headers[1:], record.timestamp_ms)  # fmt: skip
    headers = replay_headers(legacy, now_ms=T0)
    expected = hdr.id_from_coordinates("orders.placed[2]@41").encode()
    assert [v for k, v in headers if k == "event-id"] == [expected]
    assert [v for k, v in replay_headers(record, T0) if k == "event-id"] == [b"e-1"]
