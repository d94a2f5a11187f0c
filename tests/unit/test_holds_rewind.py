"""After an aborted transaction every partition goes back to its committed offset. Reading those
offsets needs the group coordinator; when its broker was just killed, the first read times out.
Found by the 3-node chaos run: the exactly-once worker then stopped ("no rewind after an abort")
although a second read, once the group had a new coordinator, would have answered. One that stays
away (a broker restart) holds the partitions until their offsets can be read."""

from __future__ import annotations

from typing import Any

from pipeline.clock import FakeClock
from pipeline.holds import Holds
from pipeline.offsets import OffsetTracker

TP, OTHER = ("in", 0), ("in", 1)


class CoordinatorMoving:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.seeks: list[tuple[Any, int]] = []
        self.held: list[Any] = []
        self.reason = ""

    def committed(self, partitions: list[Any], timeout_s: float = 10) -> dict[Any, int]:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("Failed to get committed offsets: Local: Timed out")
        return {tp: 42 for tp in partitions}

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp, offset))

    def hold_until_committed(self, partitions: list[Any], reason: str) -> None:
        self.held, self.reason = list(partitions), reason


def holds(consumer: CoordinatorMoving) -> Holds:
    return Holds(consumer, OffsetTracker(), {TP}, clock=FakeClock())  # type: ignore[arg-type]


def test_a_read_that_times_out_while_the_coordinator_moves_is_asked_again() -> None:
    consumer = CoordinatorMoving(failures=1)
    holds(consumer).rewind_to_committed()
    assert consumer.seeks == [(TP, 42)]


def test_a_coordinator_that_stays_away_hands_the_partitions_to_the_start_holds() -> None:
    """A broker restart: the stage stays up; the partitions are paused and read again from
    their committed offsets once those can be read (``pipeline.unstable``), never seeked to a
    guess meanwhile; the rest of the batch is handed back and nothing begun is kept."""
    consumer = CoordinatorMoving(failures=2)
    tracker = OffsetTracker()
    tracker.partition(TP).begin(40, 1)
    h = Holds(consumer, tracker, {TP, OTHER}, clock=FakeClock())  # type: ignore[arg-type]
    h.rewind_to_committed()
    assert consumer.seeks == [], "seeked although the committed offset is unknown"
    assert sorted(consumer.held) == [TP, OTHER] and "Timed out" in consumer.reason
    assert h.skip == {TP: False, OTHER: False}, "the rest of the batch must be handed back"
    assert tracker.partition(TP).next_read is None
