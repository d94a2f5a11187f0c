"""ConsumerSet: due retries come first and a batch never exceeds what was asked for. Two
consumers in their own groups on a memory broker, as ``Pipeline.runner`` makes them."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.consumerset import ConsumerSet, Source
from pipeline.ports import RawRecord, TopicPartition
from pipeline.testing import FakeClock, MemoryBroker
from tests.unit.memory_rig import AskingConsumer

RETRY = "g.retry.1s"


class Listener:
    def on_assign(self, partitions: list[TopicPartition]) -> None: ...
    def on_revoke(self, partitions: list[TopicPartition]) -> None: ...
    def on_lost(self, partitions: list[TopicPartition]) -> None: ...


def consumers(
    inputs: int, retries: int
) -> tuple[ConsumerSet, AskingConsumer, AskingConsumer, FakeClock]:
    """``inputs`` records in "in", ``retries`` in the retry topic, read by a set subscribed to
    both."""
    clock = FakeClock()
    broker = MemoryBroker(clock)
    producer = broker.producer()
    for topic, n in (("in", inputs), (RETRY, retries)):
        broker.create_topic(topic)
        for i in range(n):
            producer.produce(topic, b"%d" % i, None, None, lambda _e, _m: None)
    producer.flush(1)
    main = AskingConsumer(broker, {"group.id": "g"})
    retry = AskingConsumer(broker, {"group.id": "g.retry"})
    both = ConsumerSet(
        [Source(retry, frozenset([RETRY]), ConsumerSet.RETRY_POLL_INTERVAL_S),
         Source(main, frozenset(["in"]))], clock.monotonic,
    )  # fmt: skip
    both.subscribe(["in", RETRY], Listener())
    return both, main, retry, clock


def test_retries_come_first_and_the_inputs_fill_the_rest() -> None:
    both, main, _, _ = consumers(inputs=10, retries=3)
    got = both.consume(5, 0.1)
    assert [(r.topic(), r.offset()) for r in got] == [(RETRY, 0), (RETRY, 1), (RETRY, 2),
                                                      ("in", 0), ("in", 1)]  # fmt: skip
    assert main.asked == [2]
    assert [r.offset() for r in both.consume(5, 0.1)] == [2, 3, 4, 5, 6], "none skipped"


def test_a_backlog_of_inputs_cannot_crowd_out_retries() -> None:
    both, main, _, _ = consumers(inputs=100, retries=4)
    assert [r.topic() for r in both.consume(4, 0.1)] == [RETRY] * 4
    assert main.asked == [], "no room left: inputs wait for the next call"


def test_retries_are_looked_for_at_most_every_100_ms() -> None:
    both, _, retry, clock = consumers(inputs=4, retries=0)
    both.consume(2, 0.1)
    both.consume(2, 0.1)
    assert len(retry.asked) == 1
    clock.advance(0.1)
    both.consume(10, 0.1)
    assert len(retry.asked) == 2


def test_close_closes_both_consumers_at_once() -> None:
    """A close waits for the group to answer; the two waits overlap instead of adding up."""
    import threading as _threading

    both = _threading.Barrier(2, timeout=10)

    class Slow:
        closed = False

        def close(self, timeout_s: float | None = None) -> None:
            both.wait()  # returns only when the other consumer's close is running too
            self.closed = True

    main, retry = Slow(), Slow()
    sources = [Source(retry, frozenset(["t.retry"]), 0.1), Source(main, frozenset())]  # type: ignore[arg-type]
    ConsumerSet(sources).close()
    assert main.closed and retry.closed


class Waiting(AskingConsumer):
    """Remembers the timeout of every ``consume`` too."""

    def __init__(self, broker: MemoryBroker, config: dict[str, str]) -> None:
        super().__init__(broker, config)
        self.waits: list[float] = []

    def consume(self, max_records: int, timeout_s: float) -> Sequence[RawRecord]:
        self.waits.append(timeout_s)
        return super().consume(max_records, timeout_s)


def lanes(
    counts: list[int], shares: list[float], retries: int = 0, clock: FakeClock | None = None
) -> tuple[ConsumerSet, list[Waiting], MemoryBroker]:
    """Lane k holds ``counts[k]`` records in "lane<k>", read by a consumer of its own in group
    "g.p<k>" (and retries in RETRY, read first), as ``ConsumerSet.for_plan`` makes them."""
    clock = clock or FakeClock()
    broker = MemoryBroker(clock)
    producer = broker.producer()
    topics = [f"lane{k}" for k in range(len(counts))]
    for topic, n in (*zip(topics, counts, strict=True), (RETRY, retries)):
        broker.create_topic(topic)
        for i in range(n):
            producer.produce(topic, b"%d" % i, None, None, lambda _e, _m: None)
    producer.flush(1)
    readers = [Waiting(broker, {"group.id": f"g.p{k}"}) for k in range(len(counts))]
    retry = Waiting(broker, {"group.id": "g.retry"})
    sources = [Source(retry, frozenset([RETRY]), ConsumerSet.RETRY_POLL_INTERVAL_S)]
    sources += [
        Source(c, frozenset([t]), share=s) for c, t, s in zip(readers, topics, shares, strict=True)
    ]
    both = ConsumerSet(sources, clock.monotonic)
    both.subscribe([*topics, RETRY], Listener())
    return both, [retry, *readers], broker


def test_the_highest_lane_with_records_comes_first_after_due_retries() -> None:
    """Lane 0 is empty, lane 1 has 2, lane 2 a backlog: retries, then lane 1, then lane 2."""
    both, _, _ = lanes([0, 2, 100], [0.0, 0.0, 0.0], retries=1)
    got = both.consume(6, 0.1)
    assert [r.topic() for r in got] == [RETRY, "lane1", "lane1", "lane2", "lane2", "lane2"]


def test_a_high_lane_record_overtakes_a_low_lane_backlog_at_the_next_fetch() -> None:
    both, _, broker = lanes([0, 0, 1000], [0.0, 0.1, 0.1])
    assert {r.topic() for r in both.consume(500, 0.1)} == {"lane2"}
    producer = broker.producer()
    producer.produce("lane0", b"urgent", None, None, lambda _e, _m: None)
    producer.flush(1)
    got = both.consume(500, 0.1)
    assert got[0].topic() == "lane0" and got[0].value() == b"urgent"
    assert len(got) == 500


def test_a_busy_high_lane_leaves_each_lower_lane_its_share() -> None:
    """Lane 0 and lane 2 both backlogged: over the fetches lane 2 gets its 10 %."""
    both, _, _ = lanes([5000, 0, 5000], [0.0, 0.1, 0.1])
    taken = [0, 0, 0]
    for _ in range(10):
        for r in both.consume(100, 0.1):
            taken[int(r.topic()[-1])] += 1
    assert sum(taken) == 1000
    assert 90 <= taken[2] <= 110 and taken[1] == 0


def test_only_the_last_lane_waits_and_only_when_nothing_came() -> None:
    """Polling lane 0 with a wait while lane 2 had records would stall the loop."""
    both, consumers, _ = lanes([0, 3, 0], [0.0, 0.0, 0.0])
    both.consume(10, 0.1)
    _, lane0, lane1, lane2 = consumers
    assert (lane0.asked, lane1.asked, lane2.asked) == ([10], [10], [7])
    assert lane0.waits == lane1.waits == lane2.waits == [0], "records came: nobody waits"
    both.consume(10, 0.1)
    assert (lane0.waits[-1], lane1.waits[-1], lane2.waits[-1]) == (0, 0, 0.1)


def test_strict_priority_still_polls_a_starved_lane_before_its_consumer_is_evicted() -> None:
    """Lanes(min_share=0) with lane 0 always full: lane 1's consumer is still asked for one
    record every LANE_KEEPALIVE_S (a consumer not polled for max.poll.interval.ms leaves its
    group), and otherwise gets nothing."""
    clock = FakeClock()
    both, consumers, _ = lanes([100_000, 1000], [0.0, 0.0], clock=clock)
    lane1 = consumers[2]
    taken1 = 0
    for _ in range(100):  # 100 fetches over 1000 s
        clock.advance(10)
        taken1 += sum(r.topic() == "lane1" for r in both.consume(100, 0.1))
    assert len(lane1.asked) == 100 and set(lane1.asked) == {1} and taken1 == 100
    clock.advance(1)
    assert not any(r.topic() == "lane1" for r in both.consume(100, 0.1))  # not due yet
