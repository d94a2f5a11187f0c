"""A worker's wait for its stages is bounded by one deadline, however many of them are stuck."""

from __future__ import annotations

from pipeline.clock import FakeClock
from pipeline.worker import join_all


class StuckThread:
    """A stage thread that never finishes: each join waits its whole timeout (on the clock)."""

    def __init__(self, clock: FakeClock, finishes_after_s: float | None = None) -> None:
        self.clock, self.finishes_at = clock, finishes_after_s
        self.timeouts: list[float | None] = []

    def join(self, timeout: float | None = None) -> None:
        self.timeouts.append(timeout)
        assert timeout is not None, "an unbounded join"
        if self.finishes_at is not None and self.finishes_at - self.clock.monotonic() <= timeout:
            self.clock.advance(max(self.finishes_at - self.clock.monotonic(), 0.0))
            return
        self.clock.advance(timeout)

    def is_alive(self) -> bool:
        return self.finishes_at is None or self.clock.monotonic() < self.finishes_at


def test_three_stuck_stages_are_waited_for_once_not_three_times() -> None:
    """Seven stages, three stuck in their final commit: the worker gives up on them after its
    grace period, not after three grace periods (a SIGTERM'd worker overran its 20 s bound)."""
    clock = FakeClock()
    threads = [StuckThread(clock, finishes_after_s=1.0) for _ in range(4)]
    threads[1:1] = [StuckThread(clock) for _ in range(3)]
    assert join_all(threads, 20.0, clock.monotonic) is False
    assert clock.monotonic() == 20.0
    assert [t.timeouts for t in threads[1:4]] == [[19.0], [0.0], [0.0]]


def test_stages_that_stop_in_time_are_all_joined() -> None:
    """Stages finishing at different times within the bound: every one is joined, True."""
    clock = FakeClock()
    threads = [StuckThread(clock, finishes_after_s=s) for s in (3.0, 1.0, 12.0)]
    assert join_all(threads, 20.0, clock.monotonic) is True
    assert clock.monotonic() == 12.0
