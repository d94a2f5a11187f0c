"""What ``pipeline run`` tells its operator: the names it uses, then progress on an interval.

At startup, ``log_names`` says, per stage, which consumer groups it joins and which retry and
dead-letter topics it writes (all derived from the stage's group; see the README's "Names").

While it runs, ``ProgressLog`` (a hook subscriber like any other) logs one line per stage every
``interval_s``: what this worker processed and failed since it started, and the group's lag.
The counts come from the outcome hooks, on the stage's own thread. The lag needs the broker (a
few round trips, up to the lag monitor's timeout when the cluster is slow), so it is never
asked for on a consume thread: a thread of its own (``LagPoller``) refreshes it once per
interval, and a line shows the latest value it has (``lag ?`` until the first answer, or
while the cluster cannot tell).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.errors import KafkaError
from pipeline.hooks import Hook, StageInfo, WorkerInfo
from pipeline.ports import LagPort, RawRecord
from pipeline.registry import StagePlan

if TYPE_CHECKING:
    from pipeline.context import Context

log = logging.getLogger("pipeline.progress")
DEFAULT_INTERVAL_S = 10.0


def log_names(plans: Sequence[StagePlan]) -> None:
    """One line per stage: its groups, and the topics it reads and writes besides its own."""
    for plan in plans:
        [(_, lane0), *lanes] = plan.lane_readers
        reads = ", ".join(lane0) + "".join(f"; lane {k}: {', '.join(ts)} (group {g})"
                                           for k, (g, ts) in enumerate(lanes, 1))  # fmt: skip
        if not plan.retry_topics:
            retries = "retries: none (in place)" if plan.stage.retry.ordered else "retries: none"
        elif plan.stage.guarantee == "exactly_once":  # one transaction, so one consumer
            retries = f"retries: {', '.join(plan.retry_topics)} (same group)"
        else:
            retries = f"retries: {', '.join(plan.retry_topics)} (group {plan.group}.retry)"
        log.info("stage %s: group %s reads %s; %s; dead letters: %s",
                 plan.name, plan.group, reads, retries, plan.dlq_topic)  # fmt: skip


@dataclass(slots=True)
class _Counts:
    processed: int = 0
    failed: int = 0
    dead_lettered: int = 0
    next_line_at: float | None = None
    last_line: tuple[int, int, int, int | None] | None = None  # processed, failed, DLQ, lag


class ProgressLog(Hook):
    """Logs ``progress <stage>: processed N (+n), failed N, dead-lettered N, lag N`` per stage
    every ``interval_s`` of the runner's clock (from ``on_tick``, so a stuck stage reports too),
    and once more when the stage stops. A drained stage (lag 0) with nothing new since its last
    line stays quiet until something happens.

    ``failed`` counts failed deliveries (each retry too); ``lag`` is the whole group's
    (inputs and retry topics), where the counts are this worker's."""

    def __init__(
        self,
        plans: Sequence[StagePlan],
        lag_monitor: Callable[[], LagPort] | None,
        interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self.interval_s = interval_s
        self._counts: dict[str, _Counts] = {}
        self.lag: dict[str, int | None] = {}  # written by the poller, read by the stages
        self._poller = LagPoller(plans, lag_monitor, self.lag, interval_s) if lag_monitor else None

    # -- the poller's life is the worker's ------------------------------------------------
    def on_worker_start(self, worker: WorkerInfo) -> None:
        if self._poller is not None:
            self._poller.start()

    def on_worker_stop(self, worker: WorkerInfo) -> None:
        if self._poller is not None:
            self._poller.stop()

    # -- counts, on each stage's thread -----------------------------------------------------
    def on_stage_start(self, stage: StageInfo) -> None:
        self._counts.setdefault(stage.name, _Counts())

    def on_succeeded(self, stage: StageInfo, record: RawRecord, ctx: Context) -> None:
        self._counts[stage.name].processed += 1

    def on_failed(
        self, stage: StageInfo, record: RawRecord, error: Exception, attempt: int, retrying: bool
    ) -> None:
        self._counts[stage.name].failed += 1

    def on_dead_lettered(self, stage: StageInfo, record: RawRecord, error: Exception) -> None:
        self._counts[stage.name].dead_lettered += 1

    def on_tick(self, stage: StageInfo, now: float) -> None:
        counts = self._counts.setdefault(stage.name, _Counts())
        if counts.next_line_at is None:  # the first tick starts the interval
            counts.next_line_at = now + self.interval_s
        if now < counts.next_line_at:
            return
        counts.next_line_at = now + self.interval_s
        self._line(stage.name, counts, idle_quiet=True)

    def on_stage_stop(self, stage: StageInfo) -> None:
        counts = self._counts.get(stage.name)
        if counts is not None:
            self._line(stage.name, counts, idle_quiet=False, end=" (stopped)")

    def _line(self, name: str, counts: _Counts, *, idle_quiet: bool, end: str = "") -> None:
        lag = self.lag.get(name)
        now = (counts.processed, counts.failed, counts.dead_lettered, lag)
        before = counts.last_line
        if idle_quiet and lag == 0 and before is not None and now == before:
            return
        counts.last_line = now
        gained = counts.processed - (before[0] if before else 0)
        log.info("progress %s: processed %d (+%d), failed %d, dead-lettered %d, lag %s%s",
                 name, counts.processed, gained, counts.failed, counts.dead_lettered,
                 "?" if lag is None else lag, end)  # fmt: skip


class LagPoller:
    """Refreshes each stage's lag once per interval on its own daemon thread, with its own lag
    monitor (created, used and closed on that thread). Stopping never waits for a query in
    flight: the thread is a daemon and closes its monitor when the query returns."""

    def __init__(
        self,
        plans: Sequence[StagePlan],
        lag_monitor: Callable[[], LagPort],
        into: dict[str, int | None],
        interval_s: float,
    ) -> None:
        self._plans = tuple(plans)
        self._open = lag_monitor
        self._into = into
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress-lag", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        try:
            monitor = self._open()
        except Exception as exc:  # progress is a courtesy: the stages run without it
            log.warning("progress: no lag monitor (%s); lag is shown as ?", exc)
            return
        try:
            while not self._stop.is_set():
                try:
                    self.refresh(monitor)
                except Exception:  # never let a surprise end the progress lines' lag
                    log.debug("progress: lag query failed", exc_info=True)
                self._stop.wait(self._interval)
        finally:
            monitor.close()

    def refresh(self, monitor: LagPort) -> None:
        for plan in self._plans:
            self._into[plan.name] = stage_lag(monitor, plan)


def stage_lag(monitor: LagPort, plan: StagePlan) -> int | None:
    """Records the stage's groups have not committed yet, over its inputs and retry topics;
    None while the cluster cannot tell (a partition without a leader, say)."""
    try:  # each consumer's group on its topics, as Pipeline.runner splits them
        lag = sum(monitor.lag(group, topics)[1] for group, topics in plan.readers)
    except KafkaError:
        return None
    return lag
