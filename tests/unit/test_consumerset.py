"""ConsumerSet: due retries come first and a batch never exceeds what was asked for."""

from __future__ import annotations

from pipeline.consumerset import ConsumerSet
from tests.unit.fakes import FakeConsumer, Record


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def batch(topic: str, n: int) -> list[Record]:
    return [Record(topic, 0, i, b"") for i in range(n)]


def test_retries_come_first_and_the_inputs_fill_the_rest() -> None:
    main, retry, clock = FakeConsumer(), FakeConsumer(), Clock()
    both = ConsumerSet(main, retry, ["g.retry.1s"], clock)
    main.batches = [batch("in", 10)]
    retry.batches = [batch("g.retry.1s", 3)]
    got = both.consume(5, 0.1)
    assert [r.topic() for r in got] == ["g.retry.1s"] * 3 + ["in"] * 2
    assert main.asked == [2]


def test_a_backlog_of_inputs_cannot_crowd_out_retries() -> None:
    main, retry, clock = FakeConsumer(), FakeConsumer(), Clock()
    both = ConsumerSet(main, retry, ["g.retry.1s"], clock)
    main.batches = [batch("in", 100)]
    retry.batches = [batch("g.retry.1s", 4)]
    assert [r.topic() for r in both.consume(4, 0.1)] == ["g.retry.1s"] * 4
    assert main.asked == [], "no room left: inputs wait for the next call"


def test_retries_are_looked_for_at_most_every_100_ms() -> None:
    main, retry, clock = FakeConsumer(), FakeConsumer(), Clock()
    both = ConsumerSet(main, retry, ["g.retry.1s"], clock)
    main.batches = [batch("in", 2), batch("in", 2)]
    both.consume(10, 0.1)
    both.consume(10, 0.1)
    assert len(retry.asked) == 1
    clock.now += 0.1
    both.consume(10, 0.1)
    assert len(retry.asked) == 2
