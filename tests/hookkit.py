"""A hook that records what it hears, for the hook tests (unit and contract)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pipeline.hooks import Hook, StageInfo, WorkerInfo
from pipeline.ports import RawRecord, TopicPartition


def _at(record: RawRecord) -> str:
    return f"{record.topic()}[{record.partition()}]@{record.offset()}"


class Recorder(Hook):
    """Every event as a tuple (name, stage, detail...); records are shown by coordinates."""

    def __init__(self) -> None:
        self.heard: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()

    def _note(self, *what: Any) -> None:
        with self._lock:
            self.heard.append(what)

    def names(self, stage: str | None = None) -> list[str]:
        return [h[0] for h in self.heard if stage is None or h[1] == stage]

    def of(self, name: str) -> list[tuple[Any, ...]]:
        return [h for h in self.heard if h[0] == name]

    def on_worker_start(self, worker: WorkerInfo) -> None:
        self._note("worker_start", worker.worker_id, worker.stages)

    def on_worker_stop(self, worker: WorkerInfo) -> None:
        self._note("worker_stop", worker.worker_id, worker.stages)

    def on_stage_start(self, stage: StageInfo) -> None:
        self._note("stage_start", stage.name)

    def on_stage_stop(self, stage: StageInfo) -> None:
        self._note("stage_stop", stage.name)

    def on_assign(self, stage: StageInfo, partitions: list[TopicPartition]) -> None:
        self._note("assign", stage.name, sorted(partitions))

    def on_revoke(self, stage: StageInfo, partitions: list[TopicPartition]) -> None:
        self._note("revoke", stage.name, sorted(partitions))

    def on_lost(self, stage: StageInfo, partitions: list[TopicPartition]) -> None:
        self._note("lost", stage.name, sorted(partitions))

    def before_batch(self, stage: StageInfo, records: Sequence[RawRecord]) -> None:
        self._note("before_batch", stage.name, len(records))

    def after_batch(self, stage: StageInfo, records: Sequence[RawRecord]) -> None:
        self._note("after_batch", stage.name, len(records))

    @contextmanager
    def around_handler(self, stage: StageInfo, event: Any, ctx: Any) -> Iterator[None]:
        self._note("enter", stage.name, ctx.coordinates)
        try:
            yield
        except Exception as exc:
            self._note("exit", stage.name, ctx.coordinates, type(exc).__name__)
            raise
        self._note("exit", stage.name, ctx.coordinates, None)

    def on_succeeded(self, stage: StageInfo, record: RawRecord, ctx: Any) -> None:
        self._note("succeeded", stage.name, _at(record), len(ctx.outputs))

    def on_completed(self, stage: StageInfo, record: RawRecord) -> None:
        self._note("completed", stage.name, _at(record))

    def on_failed(
        self, stage: StageInfo, record: RawRecord, error: Exception, attempt: int, retrying: bool
    ) -> None:
        self._note("failed", stage.name, _at(record), type(error).__name__, attempt, retrying)

    def on_retrying(
        self, stage: StageInfo, record: RawRecord, error: Exception, attempt: int,
        tier: int | None,
    ) -> None:  # fmt: skip
        self._note("retrying", stage.name, _at(record), type(error).__name__, attempt, tier)

    def on_dead_lettered(self, stage: StageInfo, record: RawRecord, error: Exception) -> None:
        self._note("dead_lettered", stage.name, _at(record), type(error).__name__)

    def on_skipped(self, stage: StageInfo, record: RawRecord, error: Exception) -> None:
        self._note("skipped", stage.name, _at(record))

    def on_duplicate(self, stage: StageInfo, record: RawRecord) -> None:
        self._note("duplicate", stage.name, _at(record))

    def on_delivery_stall(
        self, stage: StageInfo, tp: TopicPartition, offset: int, error: Exception, attempt: int
    ) -> None:
        self._note("delivery_stall", stage.name, tp, offset, attempt)

    def on_undeliverable(
        self, stage: StageInfo, tp: TopicPartition, offset: int, error: Exception
    ) -> None:
        self._note("undeliverable", stage.name, tp, offset)

    def on_rate_limited(
        self, stage: StageInfo, tp: TopicPartition, offset: int, delay_s: float
    ) -> None:
        self._note("rate_limited", stage.name, tp, offset, delay_s)

    def on_commit(self, stage: StageInfo, offsets: dict[TopicPartition, int]) -> None:
        self._note("commit", stage.name, dict(offsets))

    def on_commit_failed(self, stage: StageInfo, partitions: list[TopicPartition]) -> None:
        self._note("commit_failed", stage.name, sorted(partitions))

    def on_abort(self, stage: StageInfo) -> None:
        self._note("abort", stage.name)

    def on_breaker_change(self, stage: StageInfo, old: str, new: str) -> None:
        self._note("breaker", stage.name, old, new)

    def on_hung_change(self, stage: StageInfo, hung: int) -> None:
        self._note("hung", stage.name, hung)

    def on_tick(self, stage: StageInfo, now: float) -> None:
        self._note("tick", stage.name, now)
