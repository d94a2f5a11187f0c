"""``JobTracker``: the hook subscriber that records a tracking stage's job transitions.

It hears the stage like any hook and turns what it hears into the job's latest status, which
its ``JobWriter`` produces to the compacted jobs topic (coalesced, off the consume loop):

=====================================  ==============================================
hook                                   job entry
=====================================  ==============================================
``around_handler`` (each call)         ``active`` (attempt, worker, ``started_at``)
``on_progress``                        ``active`` with ``progress`` and ``note``
``on_succeeded``                       keeps the handler's result for the next line
``on_completed``                       ``completed`` with ``result`` (outputs acknowledged);
                                       ``delayed`` for each ``emit(delay=...)`` output
``on_failed`` (``retrying``)           ``retrying`` with the error summary
``on_failed`` (final)                  ``failed`` with the error summary
``on_dead_lettered``                   ``dead-lettered`` (the dead letter acknowledged)
``on_skipped``                         ``failed``, error ``Skip: …``
=====================================  ==============================================

``waiting`` comes from the publisher (``pipeline.jobs.JobsQueued``). The attempt number of a
delivery is 1 + the failed deliveries before it: from the retry headers of a retry-topic
record, or remembered here for an in-place retry (the partition re-reads the record). A
redelivery after a crash is the same attempt again: its ``active`` is behind the ``completed``
already written, and every reader drops it (``pipeline.jobs.state.merge``).

A delayed output's entry uses the output's own id (derived as ``pipeline.outputs`` derives it),
so ``pipeline job ID`` shows a follow-up job as ``delayed`` until a tracking stage takes it; if
none does, the entry expires ``retention_s`` after its due time.

A finished job leaves the tracker's memory; ``expires_at`` tells job views when to tombstone
its entry (at once, by the tracker itself, when ``keep_completed`` / ``keep_failed`` is off).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pipeline import headers as hdr
from pipeline.clock import Clock
from pipeline.config import Settings
from pipeline.hooks import Hook, StageInfo
from pipeline.jobs.state import Job, State, summarise
from pipeline.jobs.tracking import JobTracking
from pipeline.jobs.writer import JobWriter, ensure_jobs_topic
from pipeline.ports import RawRecord
from pipeline.retrytopics import origin_of
from pipeline.transport import Transport

if TYPE_CHECKING:
    from pipeline.context import Context
    from pipeline.registry import StagePlan

MAX_IN_FLIGHT = 100_000  # jobs remembered between transitions (oldest forgotten first)
_NO_CONTEXT = nullcontext()


class JobTracker(Hook):
    def __init__(
        self, policy: JobTracking, writer: JobWriter, clock: Clock,
        retry_topics: frozenset[str] = frozenset(), output_topics: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.policy, self.writer = policy, writer
        self._clock, self._retry_topics = clock, retry_topics
        self._output_topics = output_topics or {}  # logical name -> physical name
        self._jobs: OrderedDict[str, Job] = OrderedDict()  # unfinished, by id
        # ``delayed`` entries of a job's delayed outputs, written once its outputs are acked.
        self._later: OrderedDict[str, list[Job]] = OrderedDict()
        self._lock = threading.Lock()  # hooks come from handler threads too

    # -- lifecycle ---------------------------------------------------------------------------
    def on_stage_start(self, stage: StageInfo) -> None:
        self.writer.start(stage.name)

    def on_stage_stop(self, stage: StageInfo) -> None:
        self.writer.close()

    def on_commit(self, stage: StageInfo, offsets: dict[Any, int]) -> None:
        # Everything committed has its final entry produced: a harness that waits for commits
        # (on a fake clock) finds every entry, and the thread has less to do.
        self.writer.flush()

    # -- transitions -------------------------------------------------------------------------
    def around_handler(
        self, stage: StageInfo, event: Any, ctx: Context
    ) -> AbstractContextManager[object]:
        record = ctx.record
        job_id, held = self._held(record)
        now = self._clock.time()
        attempt = self._attempt(record, held)
        base = held if held is not None and held.attempt == attempt else None
        job = Job(
            job_id, "active", attempt, stage.name, *self._where(record),
            worker=stage.worker_id, created_at=self._created(record, held),
            started_at=now, updated_at=now,
        )  # fmt: skip
        if base is not None:  # another in-process attempt: progress so far stays
            job = replace(job, progress=base.progress, note=base.note)
        self._keep(job)
        return _NO_CONTEXT

    def on_progress(
        self, stage: StageInfo, record: RawRecord, percent: float, note: str | None
    ) -> None:
        _, held = self._held(record)
        # Only while active: a timed-out sync call left running reports into the void.
        if held is not None and held.state == "active":
            self._keep(replace(held, progress=percent, note=note, updated_at=self._clock.time()))

    def on_succeeded(self, stage: StageInfo, record: RawRecord, ctx: Context) -> None:
        later = self._delayed_outputs(stage, record, ctx) if ctx.outputs else None
        if ctx.result_json is None and not later:
            return
        job_id, held = self._held(record)
        with self._lock:
            if later:
                self._later[job_id] = later
                if len(self._later) > MAX_IN_FLIGHT:
                    self._later.popitem(last=False)
            if held is not None and ctx.result_json is not None:  # completed carries it
                self._jobs[job_id] = replace(held, result=json.loads(ctx.result_json))

    def on_completed(self, stage: StageInfo, record: RawRecord) -> None:
        self._finish(stage, record, "completed", None, keep=self.policy.keep_completed)

    def on_failed(
        self, stage: StageInfo, record: RawRecord, error: Exception, attempt: int, retrying: bool
    ) -> None:
        # A final failure is followed by its outcome (dead-lettered, or skipped), which
        # finishes the job: until then it is ``failed``, and remembered with its attempt.
        state: State = "retrying" if retrying else "failed"
        with self._lock:  # its delayed outputs were not all stored: a retry emits them again
            self._later.pop(hdr.event_id_of(record.headers(), _coordinates(record)), None)
        self._keep(self._transition(stage, record, state, error, attempt))

    def on_dead_lettered(self, stage: StageInfo, record: RawRecord, error: Exception) -> None:
        self._finish(stage, record, "dead-lettered", error, keep=self.policy.keep_failed)

    def on_skipped(self, stage: StageInfo, record: RawRecord, error: Exception) -> None:
        self._finish(stage, record, "failed", error, keep=self.policy.keep_failed)

    def on_duplicate(self, stage: StageInfo, record: RawRecord) -> None:
        # Done before (the idempotency store says so): its completed entry was written then.
        with self._lock:
            self._jobs.pop(hdr.event_id_of(record.headers(), _coordinates(record)), None)

    # -- internals ---------------------------------------------------------------------------
    def _held(self, record: RawRecord) -> tuple[str, Job | None]:
        job_id = hdr.event_id_of(record.headers(), _coordinates(record))
        with self._lock:
            return job_id, self._jobs.get(job_id)

    def _keep(self, job: Job) -> None:
        with self._lock:
            self._jobs[job.id] = job
            self._jobs.move_to_end(job.id)
            if len(self._jobs) > MAX_IN_FLIGHT:
                self._jobs.popitem(last=False)
        self.writer.put(job)

    def _transition(
        self, stage: StageInfo, record: RawRecord, state: State, error: Exception | None,
        attempt: int | None = None,
    ) -> Job:  # fmt: skip
        job_id, held = self._held(record)
        now = self._clock.time()
        if attempt is None:
            attempt = held.attempt if held is not None else self._attempt(record, None)
        if held is None or held.attempt != attempt:  # a decode failure: never active
            held = Job(job_id, state, attempt, stage.name, *self._where(record),
                       worker=stage.worker_id, created_at=self._created(record, held))  # fmt: skip
        return replace(held, state=state, error=None if error is None else summarise(error),
                       updated_at=now)  # fmt: skip

    def _finish(
        self, stage: StageInfo, record: RawRecord, state: State, error: Exception | None,
        *, keep: bool, attempt: int | None = None,
    ) -> None:  # fmt: skip
        job = self._transition(stage, record, state, error, attempt)
        now = job.updated_at
        with self._lock:
            self._jobs.pop(job.id, None)
            later = self._later.pop(job.id, ())
        if state == "completed":  # its delayed outputs are stored: they are jobs now
            for follow_up in later:
                self.writer.put(follow_up)
        if not keep:
            self.writer.remove(job.id)
            return
        self.writer.put(replace(job, finished_at=now,
                                expires_at=(now or 0.0) + self.policy.retention_s))  # fmt: skip

    def _delayed_outputs(self, stage: StageInfo, record: RawRecord, ctx: Context) -> list[Job]:
        """A ``delayed`` entry for each output sent to a delay tier, under the id the output
        writer gives it (the parent's id, the stage, the output's index)."""
        outputs = [(i, o) for i, o in enumerate(ctx.outputs) if o.due_ms is not None]
        if not outputs:
            return []
        parent = hdr.header_event_id(record.headers()) or hdr.id_from_coordinates(
            _coordinates(record)
        )
        now = self._clock.time()
        return [
            Job(hdr.derived_id_bytes(f"{parent}/{stage.name}/{i}".encode()).decode(), "delayed",
                1, None, self._output_topics.get(o.topic.name, o.topic.name), created_at=now,
                updated_at=now, expires_at=(o.due_ms or 0) / 1000 + self.policy.retention_s)
            for i, o in outputs
        ]  # fmt: skip

    def _attempt(self, record: RawRecord, held: Job | None) -> int:
        if record.topic() in self._retry_topics:
            return origin_of(record, from_retry_topic=True).attempts + 1
        if held is not None and held.state == "retrying":  # an in-place retry
            return held.attempt + 1
        return held.attempt if held is not None else 1

    def _where(self, record: RawRecord) -> tuple[str, int, int]:
        if record.topic() in self._retry_topics:
            origin = origin_of(record, from_retry_topic=True)
            return origin.topic, origin.partition, origin.offset
        return record.topic(), record.partition(), record.offset()

    def _created(self, record: RawRecord, held: Job | None) -> float | None:
        if held is not None and held.created_at is not None:
            return held.created_at
        if record.topic() in self._retry_topics:
            ms = origin_of(record, from_retry_topic=True).timestamp_ms
        else:
            ms = record.timestamp()[1]
        return ms / 1000 if ms > 0 else None


def _coordinates(record: RawRecord) -> str:
    return f"{record.topic()}[{record.partition()}]@{record.offset()}"


def track(
    plan: StagePlan, settings: Settings, transport: Transport, clock: Clock, client_id: str
) -> JobTracker | None:
    """The tracker of ``plan``'s ``track_jobs``, with its writer's producer and the jobs topic
    (created compacted if missing), or None when the stage does not track jobs."""
    policy = plan.stage.track_jobs
    if policy is None:
        return None
    topic = ensure_jobs_topic(settings, transport)
    writer = JobWriter(transport.producer(f"{client_id}-jobs"), topic, policy.flush_interval_s)
    physical = {name: topic for name, (topic, _binding) in plan.outputs.items()}
    return JobTracker(policy, writer, clock, frozenset(plan.retry_topics), physical)
