"""``JobView``: the process that keeps a local ``JobStore`` up to date with the jobs topic.

It reads the whole compacted jobs topic with a consumer of its own (a group of one, named
uniquely per view, committing nothing: its read positions live in the store, next to the rows
they produced), applies each batch in one transaction, and keeps reading: a transition is in
the store about as soon as the worker's writer produced it (``flush_interval_s``, 0.1 s by
default, plus a fetch). Each view reads every partition, so any number of them (one per web
server, say) can run side by side.

Steps of ``poll_once``: consume a batch → position partitions assigned meanwhile (seek to the
store's position, or the log's start; their records of this batch are read again from there)
→ apply the batch → on the sweep interval, tombstone entries whose ``expires_at`` passed
(retention) and delete them here. Tombstones from several views are harmless duplicates.

Run one with ``pipeline job-view``, or in your own process::

    with JobView(settings) as view:   # a thread follows the topic
        view.catch_up()               # optional: wait until it has read what exists now
        job = view.get(job_id)
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.clock import SYSTEM, Clock
from pipeline.config import Settings
from pipeline.jobs.state import Job
from pipeline.jobs.store import Entry, JobStore, JobStoreError
from pipeline.jobs.writer import ensure_jobs_topic
from pipeline.ports import ConsumerPort, ProducerPort, RawRecord, TopicPartition
from pipeline.transport import Transport, kafka

log = logging.getLogger("pipeline.jobs")
BATCH = 1000
SWEEP_INTERVAL_S = 60.0


class JobView:
    def __init__(
        self,
        settings: Settings,
        *,
        transport: Transport | None = None,
        store: JobStore | Path | str | None = None,
        clock: Clock = SYSTEM,
        sweep_interval_s: float = SWEEP_INTERVAL_S,
    ) -> None:
        self._transport = kafka(settings) if transport is None else transport
        self.topic = ensure_jobs_topic(settings, self._transport)
        if not isinstance(store, JobStore):
            store = JobStore(settings.jobs_store if store is None else store)
        self.store = store
        self._group = f"{settings.topic('_pipeline.jobs-view')}.{uuid.uuid4().hex[:12]}"
        self._clock, self._sweep_interval = clock, sweep_interval_s
        self._next_sweep = clock.monotonic()
        self._consumer: ConsumerPort | None = None
        self._producer: ProducerPort | None = None  # for tombstones, opened at the first
        self._unpositioned: set[TopicPartition] = set()
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self.applied = 0

    # -- lookups -----------------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        return self.store.get(job_id)

    async def get_async(self, job_id: str) -> Job | None:
        return await asyncio.to_thread(self.store.get, job_id)

    def find(
        self, stage: str | None = None, state: str | None = None, limit: int = 20
    ) -> list[Job]:
        """The most recently updated jobs, newest first, of ``stage`` and in ``state``."""
        return self.store.find(stage, state, limit)

    # -- following the topic -----------------------------------------------------------------
    def start(self) -> JobView:
        """Follow the topic on a thread of the view's own until ``close``."""
        self._thread = threading.Thread(target=self._follow, name="job-view", daemon=True)
        self._thread.start()
        return self

    def poll_once(self, timeout_s: float = 0.1) -> int:
        """One step (see the module's docstring); how many jobs changed."""
        consumer = self._open()
        records = consumer.consume(BATCH, timeout_s)
        skip = self._position_new(consumer) if self._unpositioned else frozenset()
        entries = _entries(records, skip)
        changed = self.store.apply(entries) if entries else 0
        self.applied += changed
        if self._clock.monotonic() >= self._next_sweep:
            self._next_sweep = self._clock.monotonic() + self._sweep_interval
            self.sweep()
        return changed

    def catch_up(self, timeout_s: float = 30.0) -> None:
        """Read until the store holds everything the topic held when called (``JobStoreError``
        after ``timeout_s``). Reading goes on on this thread: do not mix with ``start``."""
        marks = self._transport.topic_log().watermarks(self.topic)
        wanted = {p: high for p, (low, high) in marks.items() if high > low}
        deadline = self._clock.monotonic() + timeout_s
        while True:
            at = self.store.positions(self.topic)
            if all(at.get(p, 0) >= high for p, high in wanted.items()):
                return
            if self._clock.monotonic() >= deadline:
                behind = {p: h - at.get(p, 0) for p, h in wanted.items() if at.get(p, 0) < h}
                raise JobStoreError(f"job view of {self.topic} not caught up after "
                                    f"{timeout_s:g}s (records behind: {behind})")  # fmt: skip
            self.poll_once(0.2)

    def sweep(self) -> int:
        """Retention: tombstone the entries whose ``expires_at`` passed, and drop them here."""
        expired = self.store.expired(self._clock.time())
        if not expired:
            return 0
        if self._producer is None:
            self._producer = self._transport.producer("jobs-view")
        for job_id in expired:
            self._producer.produce(self.topic, None, job_id.encode(), None, _tombstoned)
        self._producer.poll(0)
        self.store.delete(expired)
        return len(expired)

    def close(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(5.0)
        if self._producer is not None:
            self._producer.flush(5.0)
        if self._consumer is not None:
            self._consumer.close()
        self.store.close()

    def __enter__(self) -> JobView:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- rebalance listener (a group of one: every partition, once) ----------------------------
    def on_assign(self, partitions: list[TopicPartition]) -> None:
        self._unpositioned.update(partitions)

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        self._unpositioned.difference_update(partitions)

    def on_lost(self, partitions: list[TopicPartition]) -> None:
        self._unpositioned.difference_update(partitions)

    # -- internals ---------------------------------------------------------------------------
    def _open(self) -> ConsumerPort:
        if self._consumer is None:
            self._consumer = self._transport.consumer(self._group, self._group)
            self._consumer.subscribe([self.topic], self)
        return self._consumer

    def _position_new(self, consumer: ConsumerPort) -> frozenset[TopicPartition]:
        """Seek newly assigned partitions to where the store is (or the log's start)."""
        at = self.store.positions(self.topic)
        marks = self._transport.topic_log().watermarks(self.topic)
        new, self._unpositioned = frozenset(self._unpositioned), set()
        for tp in new:
            low = marks.get(tp[1], (0, 0))[0]
            consumer.seek(tp, max(at.get(tp[1], 0), low))
        return new

    def _follow(self) -> None:
        failing = False
        while not self._stopped.is_set():
            try:
                self.poll_once(0.1)
            except Exception as exc:  # the broker or the file: said once, tried again
                if not failing:
                    log.warning("job view: cannot follow %s (%s); trying again", self.topic, exc)
                failing = True
                self._stopped.wait(1.0)
            else:
                failing = False


def _entries(records: Sequence[RawRecord], skip: frozenset[TopicPartition]) -> list[Entry]:
    return [
        (r.key(), r.value(), r.topic(), r.partition(), r.offset())
        for r in records
        if r.error() is None and (r.topic(), r.partition()) not in skip
    ]


def _tombstoned(err: Any, _msg: Any) -> None:
    if err is not None:
        log.warning("job view: a retention tombstone was not delivered (%s)", err)
