"""Delayed events, the pure part: tier decomposition, due times, headers and the bounds of a
delay, on a fixed clock (``pipeline.delays``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from pipeline import delays
from pipeline.clock import FakeClock
from pipeline.delaymover import Cancellations
from pipeline.delays import TIERS_S, DelayError, defer, next_hop, pick_tier
from pipeline.dlq import StoredRecord
from pipeline.errors import DeclarationError, KafkaError, TopicNotFoundError

NOW = 1_700_000_000_000


def _walk(delay_ms: int, hop_latency_ms: int = 0) -> tuple[list[float], int]:
    """Hop a record from ``defer`` to its target, each hop made ``hop_latency_ms`` after the
    tier released it: the holds it went through and the time it reached the target."""
    hop = defer("t", NOW + delay_ms, NOW)
    holds, now = [], NOW
    for _ in range(200):
        if hop.final:
            return holds, now
        hold = delays.hold_of(hop.topic)
        assert hold is not None
        holds.append(hold)
        now = hop.tier_due_ms + hop_latency_ms
        seen = delays.read(hop.headers, hop.topic, 0)
        assert seen is not None
        hop = next_hop("t", seen.target, seen.due_ms, now, hop.headers)
    raise AssertionError("no delivery after 200 hops")


def test_the_tier_picked_is_the_largest_hold_that_fits_else_the_smallest() -> None:
    """Greedy: the largest hold not longer than what is left; under the smallest, the smallest."""
    assert pick_tier(100) == 0.25
    assert pick_tier(999) == 0.25
    assert pick_tier(1_000) == 1
    assert pick_tier(3_999) == 1
    assert pick_tier(4_000) == 4
    assert pick_tier(10**12) == TIERS_S[-1]


@pytest.mark.parametrize("delay_ms", [1_000, 2_500, 7_999, 60_000, 86_400_000, 30 * 86_400_000])
def test_a_record_reaches_its_target_exactly_at_its_due_time(delay_ms: int) -> None:
    """With instant hops the last one happens at the due time, never before, never after."""
    _, delivered = _walk(delay_ms)
    assert delivered == NOW + delay_ms


def test_late_hops_are_absorbed_by_the_next_ones() -> None:
    """Hops 300 ms late each: a long delay still arrives within one hop's lateness of its due
    time, because every hop counts what is left from its real time."""
    _, delivered = _walk(3_600_000, hop_latency_ms=300)
    assert NOW + 3_600_000 <= delivered <= NOW + 3_600_000 + 300


def test_a_thirty_day_delay_takes_a_bounded_number_of_hops_each_within_a_day() -> None:
    """Every tier stay is at most the largest hold (about 18 h, under Kafka's retention)."""
    holds, _ = _walk(30 * 86_400_000)
    assert len(holds) < 80
    assert max(holds) == TIERS_S[-1] < 86_400


def test_a_tier_releases_at_its_hold_or_the_due_time_whichever_is_first() -> None:
    """Release times in a tier follow write times (fixed hold) except under the smallest hold,
    where they are the due times: records of a tier partition are in release order up to that."""
    hop = defer("t", NOW + 10_000, NOW)
    assert (hop.topic, hop.tier_due_ms) == ("t.delay.4s", NOW + 4_000)
    hop = defer("t", NOW + 600, NOW)
    assert (hop.topic, hop.tier_due_ms) == ("t.delay.0.25s", NOW + 250)
    hop = defer("t", NOW + 100, NOW)
    assert (hop.topic, hop.tier_due_ms) == ("t.delay.0.25s", NOW + 100)


def test_the_last_hop_keeps_the_records_headers_and_the_due_time_only() -> None:
    """The event id and the user's headers travel; the tier's own headers are dropped on
    delivery, but for ``delay-due-ms`` (to measure lateness by)."""
    hop = defer("t", NOW + 5_000, NOW, [("event-id", b"e1"), ("x", b"y")])
    final = next_hop("t", "t", NOW + 5_000, NOW + 5_000, hop.headers)
    assert final.final and final.topic == "t"
    assert final.headers == [("event-id", b"e1"), ("x", b"y"), (delays.DUE, b"1700000005000")]


def test_garbled_or_foreign_delay_headers_are_not_read() -> None:
    """Headers not written by us are refused (the mover dead-letters such a record), and a
    tier due time beyond the tier's hold is clipped to it."""
    assert delays.read([("event-id", b"e")], "t.delay.1s", NOW) is None
    assert delays.read([(delays.DUE, b"x"), (delays.TIER_DUE, b"1"), (delays.TARGET, b"t")],
                       "t.delay.1s", NOW) is None  # fmt: skip
    far = [(delays.DUE, b"9" * 18), (delays.TIER_DUE, b"9" * 18), (delays.TARGET, b"t")]
    seen = delays.read(far, "t.delay.1s", NOW)
    assert seen is not None and seen.tier_due_ms == NOW + 1_000 + delays.SLACK_MS


def test_delays_between_one_second_and_thirty_days_are_accepted() -> None:
    """timedelta, seconds or a datetime; the due time is on the clock given."""
    assert delays.due_ms(NOW, timedelta(seconds=1)) == NOW + 1_000
    assert delays.due_ms(NOW, 2.5) == NOW + 2_500
    assert delays.due_ms(NOW, timedelta(days=30)) == NOW + 30 * 86_400_000
    at = datetime.fromtimestamp((NOW + 60_000) / 1000, tz=UTC)
    assert delays.due_ms(NOW, deliver_at=at) == NOW + 60_000


@pytest.mark.parametrize(
    ("delay", "deliver_at", "says"),
    [
        (0.5, None, "from 1 s to 30 days"),
        (timedelta(days=31), None, "from 1 s to 30 days"),
        (None, datetime.fromtimestamp(NOW / 1000 - 5, tz=UTC), "from 1 s to 30 days"),
        (5, datetime.fromtimestamp(NOW / 1000, tz=UTC), "not both"),
        (None, None, "not both"),
        ("5", None, "timedelta or seconds"),
    ],
)
def test_a_delay_out_of_range_is_refused_with_a_one_line_error(
    delay: object, deliver_at: datetime | None, says: str
) -> None:
    """A bad delay is a DelayError (a DeclarationError: never retried) saying what is allowed."""
    with pytest.raises(DelayError, match=says) as raised:
        delays.due_ms(NOW, delay, deliver_at)  # type: ignore[arg-type]
    assert isinstance(raised.value, DeclarationError) and "\n" not in str(raised.value)


def test_tier_and_cancel_topic_names() -> None:
    """``<topic>.delay.<hold>s`` and ``<topic>.delay.cancel``; anything else is no tier."""
    assert delays.tier_topics("a.b")[:3] == ["a.b.delay.0.25s", "a.b.delay.1s", "a.b.delay.4s"]
    assert delays.cancel_topic("a.b") == "a.b.delay.cancel"
    assert delays.hold_of("a.b.delay.16s") == 16
    assert delays.hold_of("a.b.delay.3s") is None
    assert delays.hold_of("a.b.retry.1s") is None


class _Log:
    """A TopicLogPort's ``read``: the records given, or the error given."""

    def __init__(self, records: list[StoredRecord], error: Exception | None = None) -> None:
        self.records, self.error, self.reads = records, error, 0

    def read(
        self, topic: str, *, partition: int | None = None, start_offset: int = 0
    ) -> Iterator[StoredRecord]:
        self.reads += 1
        if self.error is not None:
            raise self.error
        return iter([r for r in self.records if r.offset >= start_offset])


def _cancel(offset: int, event_id: bytes, value: bytes | None = b"cancelled") -> StoredRecord:
    return StoredRecord("t.delay.cancel", 0, offset, event_id, value, (), 0)


def test_cancellations_are_read_incrementally_at_most_once_a_second() -> None:
    """Read again only when the last read is a second old, from where it stopped; a
    tombstone withdraws a cancellation."""
    clock = FakeClock()
    log = _Log([_cancel(0, b"a"), _cancel(1, b"b")])
    cancels = Cancellations(lambda: log, "t.delay.cancel", clock)  # type: ignore[arg-type,return-value]
    assert cancels.fresh(clock.wall_ms()) and b"a" in cancels and b"b" in cancels
    log.records.append(_cancel(2, b"a", None))
    clock.advance(0.5)
    assert cancels.fresh(clock.wall_ms()) and log.reads == 1 and b"a" in cancels
    clock.advance(0.5)
    assert cancels.fresh(clock.wall_ms()) and log.reads == 2
    assert b"a" not in cancels and b"b" in cancels


def test_an_unreadable_cancel_topic_holds_the_last_hop_and_a_missing_one_does_not() -> None:
    """Cannot read: not fresh (the mover holds the last hop, nothing lost, nothing delivered
    that may be cancelled). Never created: nothing can be cancelled, delivery goes on."""
    clock = FakeClock()
    down = _Log([], KafkaError("broker down"))
    assert not Cancellations(lambda: down, "c", clock).fresh(clock.wall_ms())  # type: ignore[arg-type,return-value]
    missing = _Log([], TopicNotFoundError("no such topic"))
    assert Cancellations(lambda: missing, "c", clock).fresh(clock.wall_ms())  # type: ignore[arg-type,return-value]


def test_a_failed_cancel_read_is_not_retried_for_every_record() -> None:
    """A read that failed (perhaps after its whole timeout) is tried again a hold later, not
    by the next final-hop record: the mover's loop must not block a timeout per record."""
    clock = FakeClock()
    down = _Log([], KafkaError("broker down"))
    cancels = Cancellations(lambda: down, "c", clock)  # type: ignore[arg-type,return-value]
    for _ in range(5):
        assert not cancels.fresh(clock.wall_ms())
    assert down.reads == 1
    clock.advance(1.0)
    down.error = None
    assert cancels.fresh(clock.wall_ms()) and down.reads == 2
