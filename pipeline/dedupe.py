"""A stage's idempotency store, as the consume loop uses it: which records of a batch are
already done (one query per batch), and removing old ids on a schedule.

A store outage never stops the stage: deduplication is skipped for that batch (at least once
allows it, and ``ctx.transaction()`` still guards side effects: it fails too while the store is
down, and the event is retried), and the cleanup is tried again at the next interval.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from pipeline import headers as hdr
from pipeline.errors import PipelineError
from pipeline.guarantees import Idempotency
from pipeline.ports import RawRecord, TopicPartition

log = logging.getLogger("pipeline.runner")
EventIds = dict[tuple[TopicPartition, int], str]  # (tp, offset) -> event id


class Deduper:
    def __init__(
        self, stage: str, group: str, policy: Idempotency, url: str, clock: Callable[[], float]
    ) -> None:
        from pipeline.idempotency import open_store

        self._stage = stage
        self._group = group
        self._policy = policy
        self._clock = clock
        self.store: Any = open_store(url)
        self.store.open()
        self.last_cleanup = clock()

    def ids_not_done(self, records: Sequence[RawRecord]) -> EventIds:
        """Event ids of the batch's records, minus those the store has seen done."""
        ids: EventIds = {}
        for r in records:
            if r.error() is None:
                coordinates = f"{r.topic()}[{r.partition()}]@{r.offset()}"
                ids[((r.topic(), r.partition()), r.offset())] = hdr.event_id_of(
                    r.headers(), coordinates
                )
        try:
            done = self.store.completed(self._group, list(ids.values()))
        except PipelineError as exc:
            log.warning("%s: idempotency store unavailable (%s); not deduplicating this batch",
                        self._stage, exc)  # fmt: skip
            return ids
        return {k: v for k, v in ids.items() if v not in done} if done else ids

    def maybe_clean(self) -> None:
        """Delete ids past their retention, once per ``cleanup_interval_s``."""
        now = self._clock()
        if now - self.last_cleanup < self._policy.cleanup_interval_s:
            return
        self.last_cleanup = now
        try:
            removed = self.store.cleanup(self._policy.retention_s)
        except PipelineError as exc:
            log.warning("%s: idempotency cleanup failed (%s); will try again",
                        self._stage, exc)  # fmt: skip
            return
        log.info("%s: removed %d idempotency records past retention", self._stage, removed)

    def close(self) -> None:
        self.store.close()
