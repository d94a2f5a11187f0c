"""After an aborted transaction every partition goes back to its committed offset. Reading those
offsets needs the group coordinator; when its broker was just killed, the first read times out.
Found by the 3-node chaos run: the exactly-once worker then stopped ("no rewind after an abort")
although a second read, once the group had a new coordinator, would have answered."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.clock import FakeClock
from pipeline.holds import Holds
from pipeline.offsets import OffsetTracker

TP = ("in", 0)


class CoordinatorMoving:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.seeks: list[tuple[Any, int]] = []

    def committed(self, partitions: list[Any], timeout_s: float = 10) -> dict[Any, int]:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("Failed to get committed offsets: Local: Timed out")
        return {tp: 42 for tp in partitions}

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp, offset))


def holds(consumer: CoordinatorMoving) -> Holds:
    return Holds(consumer, OffsetTracker(), {TP}, clock=FakeClock())  # type: ignore[arg-type]


def test_a_read_that_times_out_while_the_coordinator_moves_is_asked_again() -> None:
    consumer = CoordinatorMoving(failures=1)
    holds(consumer).rewind_to_committed()
    assert consumer.seeks == [(TP, 42)]


def test_a_coordinator_that_stays_away_is_still_an_error() -> None:
    with pytest.raises(RuntimeError, match="Timed out"):
        holds(CoordinatorMoving(failures=2)).rewind_to_committed()
