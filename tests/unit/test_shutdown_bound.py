"""A stopping stage gives every blocking call of its shutdown (flush, final commit, close) only
what is left of ``shutdown_timeout_s``: a broker slow to answer cannot stretch it."""

from __future__ import annotations

from typing import Any

from pipeline.ports import TopicPartition
from pipeline.testing import MemoryBroker, MemoryConsumer
from tests.integration.app_stages import PINGS, Echo
from tests.unit.memory_rig import Rig

SHUTDOWN_S = 10.0
SLOW_FLUSH_S = 6.0  # the flush that acknowledges the outputs takes this long (on the clock)


class TimedConsumer(MemoryConsumer):
    """Remembers the timeout given to each synchronous commit and to close."""

    def __init__(self, broker: MemoryBroker, config: Any) -> None:
        super().__init__(broker, config)
        self.sync_commits: list[float | None] = []
        self.closes: list[float | None] = []

    def commit(
        self, offsets: dict[TopicPartition, int], *, sync: bool, timeout_s: float | None = None
    ) -> None:
        if sync:
            self.sync_commits.append(timeout_s)
        super().commit(offsets, sync=sync, timeout_s=timeout_s)

    def close(self, timeout_s: float | None = None) -> None:
        self.closes.append(timeout_s)
        super().close(timeout_s)


def test_final_commit_and_close_get_only_what_the_flush_left() -> None:
    """Outputs acknowledged only by the shutdown's flush, which takes 6 s of a 10 s budget: the
    final commit and the close are each bounded by the 4 s left (at least the 1 s try), never
    unbounded, so the stage stops within its shutdown timeout."""
    rig = Rig(Echo, consumer=TimedConsumer, shutdown_timeout_s=SHUTDOWN_S)
    consumer = rig.consumer
    assert isinstance(consumer, TimedConsumer)
    producer, flush = rig.producer, rig.producer.flush

    def slow_flush(timeout_s: float) -> int:
        producer.hold = False  # the broker answers, late
        rig.clock.advance(SLOW_FLUSH_S)
        return flush(timeout_s)

    producer.flush = slow_flush  # type: ignore[method-assign]
    with rig:
        rig.ping(1)
        producer.hold = True  # the output is in flight when the stop comes
        rig.step(2)
        assert rig.committed() == {}
    left = SHUTDOWN_S - SLOW_FLUSH_S  # less by the real time the stop took to arrive
    [commit_s] = consumer.sync_commits
    [close_s] = consumer.closes
    assert commit_s is not None and 1.0 <= commit_s <= left
    assert close_s is not None and 1.0 <= close_s <= commit_s
    assert rig.committed() == {(PINGS.name, 0): 1}, "the final commit was not made"
