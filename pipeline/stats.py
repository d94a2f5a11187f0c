"""Per-stage counters, kept by a hook subscriber and read by progress views and tests.

``StageStats`` is written only by ``StatsHook``, a subscriber of the same hooks users get
(``pipeline.hooks``); nothing in the loop writes it directly. Successes reach it counted, once
per loop step (``count_succeeded``, see ``pipeline.hooks.Trusted``), not one call per record.
Plain ints: a reader on another thread may see a value one batch old, which is fine for
display.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.hookcalls import Hooks
from pipeline.hooks import Hook, StageInfo, Trusted
from pipeline.ports import RawRecord, TopicPartition

if TYPE_CHECKING:
    from pipeline.alerts import Alert
    from pipeline.context import Context


@dataclass(slots=True)
class StageStats:
    stage: str
    group: str
    consumed: int = 0
    processed: int = 0
    failed: int = 0  # handler calls (or decodes) that raised; each attempt counts
    retried: int = 0  # retry copies acknowledged, in-place retries and re-reads scheduled
    dead_lettered: int = 0  # dead letters acknowledged by the broker
    skipped: int = 0
    undeliverable: int = 0  # inputs dead-lettered because an output can never be delivered
    stalls: int = 0  # times a partition started failing to deliver (once per run of failures)
    duplicates: int = 0  # events the idempotency store had already seen done
    aborts: int = 0  # aborted transactions (exactly-once stages)
    hung_calls: int = 0  # sync handler calls past their timeout still running (abandoned)
    stalled: int = 0  # handler calls that ran past stall_after_s (each counted once)
    rate_limited: int = 0  # no token: partition holds (group-wide) or deferrals (per key)
    breaker: str = "-"  # circuit state, "-" when the stage has no breaker
    alerts: int = 0  # alerts fired (pipeline.alerts)
    outputs: int = 0
    commits: int = 0
    assigned: int = 0
    running: bool = False


class StatsHook(Hook, Trusted):
    """Keeps a ``StageStats`` from the stage's hooks. Trusted: plain counters cannot raise, so
    it is called without the guard user hooks get."""

    def __init__(self, stats: StageStats) -> None:
        self.stats = stats
        self._assigned: set[TopicPartition] = set()

    def on_stage_start(self, stage: StageInfo) -> None:
        self.stats.running = True

    def on_stage_stop(self, stage: StageInfo) -> None:
        self.stats.running = False

    def on_assign(self, stage: StageInfo, partitions: list[TopicPartition]) -> None:
        self._assigned.update(partitions)
        self.stats.assigned = len(self._assigned)

    def on_revoke(self, stage: StageInfo, partitions: list[TopicPartition]) -> None:
        self._assigned.difference_update(partitions)
        self.stats.assigned = len(self._assigned)

    on_lost = on_revoke

    def before_batch(self, stage: StageInfo, records: Sequence[RawRecord]) -> None:
        self.stats.consumed += len(records)

    def on_succeeded(self, stage: StageInfo, record: RawRecord, ctx: Context) -> None:
        self.count_succeeded(stage, 1, len(ctx.outputs))

    def count_succeeded(self, stage: StageInfo, records: int, outputs: int) -> None:
        """``on_succeeded`` for ``records`` records with ``outputs`` outputs in all (called
        instead of it: see ``pipeline.hooks.Trusted``)."""
        stats = self.stats
        stats.processed += records
        stats.outputs += outputs

    def on_failed(
        self, stage: StageInfo, record: RawRecord, error: Exception, attempt: int, retrying: bool
    ) -> None:
        self.stats.failed += 1

    def on_retrying(
        self, stage: StageInfo, record: RawRecord, error: Exception, attempt: int,
        tier: int | None,
    ) -> None:  # fmt: skip
        self.stats.retried += 1

    def on_dead_lettered(self, stage: StageInfo, record: RawRecord, error: Exception) -> None:
        self.stats.dead_lettered += 1

    def on_skipped(self, stage: StageInfo, record: RawRecord, error: Exception) -> None:
        self.stats.skipped += 1

    def on_duplicate(self, stage: StageInfo, record: RawRecord) -> None:
        self.stats.duplicates += 1

    def on_stalled(self, stage: StageInfo, record: RawRecord, running_s: float) -> None:
        self.stats.stalled += 1

    def on_delivery_stall(
        self, stage: StageInfo, tp: TopicPartition, offset: int, error: Exception, attempt: int
    ) -> None:
        self.stats.retried += 1  # the input is read and handled again
        if attempt == 1:
            self.stats.stalls += 1

    def on_undeliverable(
        self, stage: StageInfo, tp: TopicPartition, offset: int, error: Exception
    ) -> None:
        self.stats.undeliverable += 1

    def on_rate_limited(
        self, stage: StageInfo, tp: TopicPartition, offset: int, delay_s: float
    ) -> None:
        self.stats.rate_limited += 1

    def on_commit(self, stage: StageInfo, offsets: dict[TopicPartition, int]) -> None:
        self.stats.commits += 1

    def on_abort(self, stage: StageInfo) -> None:
        self.stats.aborts += 1

    def on_breaker_change(self, stage: StageInfo, old: str, new: str) -> None:
        self.stats.breaker = new

    def on_hung_change(self, stage: StageInfo, hung: int) -> None:
        self.stats.hung_calls = hung

    def on_alert(self, stage: StageInfo, alert: Alert) -> None:
        self.stats.alerts += 1


def counting(stats: StageStats, *hooks: Hook, worker_id: str = "") -> Hooks:
    """The resolved hooks of a stage that keep ``stats`` (and call ``hooks`` after)."""
    return Hooks(StageInfo(stats.stage, stats.group, worker_id), (StatsHook(stats), *hooks))
