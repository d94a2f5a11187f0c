"""ConsumerSet: due retries come first and a batch never exceeds what was asked for. Two
consumers in their own groups on a memory broker, as ``Pipeline.runner`` makes them."""

from __future__ import annotations

from pipeline.consumerset import ConsumerSet, Source
from pipeline.ports import TopicPartition
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

        def close(self) -> None:
            both.wait()  # returns only when the other consumer's close is running too
            self.closed = True

    main, retry = Slow(), Slow()
    sources = [Source(retry, frozenset(["t.retry"]), 0.1), Source(main, frozenset())]  # type: ignore[arg-type]
    ConsumerSet(sources).close()
    assert main.closed and retry.closed
