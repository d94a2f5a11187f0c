"""Hooks: one vocabulary for everything that watches a stage run.

Subclass ``Hook`` and override the methods you need; every method here does nothing. Metrics,
tracing, job status, alerts, the live view of ``make run-pipeline`` and the runner's own
``StageStats`` are all subscribers of the same methods (dramatiq's ``Middleware``, karafka's
instrumentation events). Register hooks explicitly::

    Pipeline.build(settings, STAGES, hooks=[DeadLettersByError()])  # every stage
    class Charge(Stage):
        hooks = (ChargeAlerts(),)                                    # one stage

or, for ``pipeline run``, in a ``HOOKS`` list next to the module's ``STAGES``; a
``Publisher(settings, hooks=[...])`` hears its own publishes (``before_publish``).

Rules:

- Hooks run on the stage's consume thread, inside the loop: keep them short and never block
  (hand slow work to a queue). ``around_handler`` runs where the handler runs (its task, or
  its thread for a sync handler with a timeout), so context variables it sets (a tracing
  span, say) are the handler's. ``on_hung_change`` may come from a handler thread and
  ``on_stalled`` comes from the stage's stall-watch thread; ``on_progress`` comes from where
  the handler runs.
- Two methods return something rather than only hear: ``around_handler`` (a context manager)
  and ``output_headers`` (headers for an event's outputs, in place of the input's headers of
  the same names: how a tracing hook puts its span's ``traceparent`` on the outputs).
- A hook that raises is logged (once with its traceback, then counted) and the stage goes on;
  its exception never changes an event's outcome.
- A hook costs nothing where nobody listens: which hooks override which method is resolved once,
  when the runner is built, and an event no hook overrides is never dispatched.
- Records are what the consumer returned: ``topic()``, ``partition()``, ``offset()``, ``key()``,
  ``headers()``, ``value()`` (the raw bytes; do not log them). Outcomes are reported when they
  are final: a retry copy or dead letter once the broker acknowledged it (in an exactly-once
  stage, once its transaction committed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.ports import RawRecord, TopicPartition

if TYPE_CHECKING:
    from pipeline.alerts import Alert
    from pipeline.context import Context
    from pipeline.errors import DeliveryError
    from pipeline.publisher import Delivered
    from pipeline.scheduler import Fired


@dataclass(frozen=True, slots=True)
class StageInfo:
    """Which stage a hook hears from: its name, its consumer group, and the worker running it.
    ``has_breaker``: the stage declares a circuit breaker, which starts closed (so a metric can
    show its state before the first ``on_breaker_change``)."""

    name: str
    group: str
    worker_id: str
    has_breaker: bool = False


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    worker_id: str
    stages: tuple[str, ...]


class Hook:
    """Override what you need. ``stage`` is always the ``StageInfo`` of the stage concerned."""

    # -- lifecycle ---------------------------------------------------------------------------
    def on_worker_start(self, worker: WorkerInfo) -> None:
        """A worker process is about to start its stages (Pipeline-level hooks only)."""

    def on_worker_stop(self, worker: WorkerInfo) -> None:
        """Every stage of the worker has stopped (Pipeline-level hooks only)."""

    def on_stage_start(self, stage: StageInfo) -> None:
        """The stage is subscribed and about to consume."""

    def on_stage_stop(self, stage: StageInfo) -> None:
        """The stage has shut down: outputs flushed, offsets committed, group left."""

    # -- partitions (called inside the rebalance) ----------------------------------------------
    def on_assign(self, stage: StageInfo, partitions: list[TopicPartition]) -> None:
        """These partitions are now the stage's."""

    def on_revoke(self, stage: StageInfo, partitions: list[TopicPartition]) -> None:
        """These partitions were handed back after finishing and committing their work."""

    def on_lost(self, stage: StageInfo, partitions: list[TopicPartition]) -> None:
        """These partitions were lost (another member owns them already); nothing committed."""

    # -- batches -----------------------------------------------------------------------------
    def before_batch(self, stage: StageInfo, records: Sequence[RawRecord]) -> None:
        """One ``consume`` returned ``records``; none is handled yet."""

    def after_batch(self, stage: StageInfo, records: Sequence[RawRecord]) -> None:
        """Every record of the batch was handed to the executor (with ``concurrency`` > 1,
        some may still be running)."""

    # -- the handler -------------------------------------------------------------------------
    def around_handler(
        self, stage: StageInfo, event: Any, ctx: Context
    ) -> AbstractContextManager[object]:
        """A context manager entered around each handler call (each in-process attempt), on
        the handler's own task or thread. It sees the handler's exception but cannot swallow
        it. Typical use: ``@contextlib.contextmanager`` opening a tracing span."""
        return nullcontext()

    def output_headers(
        self, stage: StageInfo, record: RawRecord, ctx: Context
    ) -> Sequence[tuple[str, bytes]]:
        """Headers every output of ``record`` carries, after its handler succeeded and before
        they are produced (on the consume thread, once per event that emitted something). A
        header named here replaces the input's header of that name that outputs would copy
        (``correlation-id``, ``traceparent``, ``tracestate``); headers given to ``emit`` come
        last. A hook that raises contributes nothing."""
        return ()

    # -- publishing (hooks given to a Publisher) -----------------------------------------------
    def before_publish(
        self, topic: str, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> Callable[[Delivered | DeliveryError], None] | None:
        """``Publisher.publish`` is about to produce an encoded event to ``topic``: append to
        ``headers`` what the record should carry (a tracer's ``traceparent``). Return a callable
        to hear how it ended (``Delivered`` or ``DeliveryError``, on the publisher's report
        thread, or on the caller's when the producer refused it at once), or None."""
        return None

    # -- outcomes of each event --------------------------------------------------------------
    def on_succeeded(self, stage: StageInfo, record: RawRecord, ctx: Context) -> None:
        """The handler returned; ``ctx.outputs`` are being produced."""

    def on_completed(self, stage: StageInfo, record: RawRecord) -> None:
        """Durably done: the handler succeeded and the broker acknowledged every output (in an
        exactly-once stage: inside the open transaction; ``on_commit`` says when it commits)."""

    def on_failed(
        self, stage: StageInfo, record: RawRecord, error: Exception, attempt: int, retrying: bool
    ) -> None:
        """A delivery of the event failed: its handler raised (after its in-process attempts),
        or the record could not be decoded. ``attempt`` counts its failed deliveries, this one
        included; ``retrying`` says whether it will be tried again (a retry tier, in place, or
        held by an open breaker) rather than dead-lettered or skipped. Its outcome follows."""

    def on_retrying(
        self, stage: StageInfo, record: RawRecord, error: Exception, attempt: int,
        tier: int | None,
    ) -> None:  # fmt: skip
        """The event will be tried again (``attempt`` failed deliveries so far): its copy in
        retry tier ``tier`` (an index into ``RetryPolicy.tiers``) is acknowledged, or, with
        ``tier`` None, its partition is held for an in-place retry."""

    def on_dead_lettered(self, stage: StageInfo, record: RawRecord, error: Exception) -> None:
        """The event's dead letter is acknowledged by the broker."""

    def on_skipped(self, stage: StageInfo, record: RawRecord, error: Exception) -> None:
        """The handler asked to skip the event (``Skip``): committed and forgotten."""

    def on_duplicate(self, stage: StageInfo, record: RawRecord) -> None:
        """The idempotency store had seen this event done already: it is not handled again."""

    def on_progress(
        self, stage: StageInfo, record: RawRecord, percent: float, note: str | None
    ) -> None:
        """The handler called ``ctx.progress(percent, note)`` on ``record`` (``percent`` in
        0..100). Called where the handler runs (its task, or its thread for a sync handler
        with a timeout), not always on the consume thread: a job tracker takes a lock."""

    def on_stalled(self, stage: StageInfo, record: RawRecord, running_s: float) -> None:
        """The handler call on ``record`` has run for ``running_s`` (past the stage's
        ``stall_after_s``) and is still running; its event's fate is unchanged. Called once per
        call, from the stage's stall-watch thread."""

    # -- outputs that cannot be delivered ----------------------------------------------------
    def on_delivery_stall(
        self, stage: StageInfo, tp: TopicPartition, offset: int, error: Exception, attempt: int
    ) -> None:
        """An output (or copy) of the input at ``offset`` was not delivered; the partition
        re-reads it after a backoff. ``attempt`` counts the failures in a row (1 = a new
        stall)."""

    def on_undeliverable(
        self, stage: StageInfo, tp: TopicPartition, offset: int, error: Exception
    ) -> None:
        """An output of the input at ``offset`` can never be delivered (too large, say): the
        input is dead-lettered (``on_dead_lettered`` follows)."""

    # -- rate limits -------------------------------------------------------------------------
    def on_rate_limited(
        self, stage: StageInfo, tp: TopicPartition, offset: int, delay_s: float
    ) -> None:
        """The stage's ``RateLimit`` had no token for the record at ``offset``: its partition is
        held for ``delay_s`` (a group-wide limit; the record is read again then, and heard
        again if still no token is due), or the record is deferred by ``delay_s`` (a per-key
        limit: its copy goes through the delay tiers). Nothing is failed or retried for it."""

    # -- commits, breaker, time --------------------------------------------------------------
    def on_commit(self, stage: StageInfo, offsets: dict[TopicPartition, int]) -> None:
        """``offsets`` (the next offset to read, per partition) were committed, or sent to be
        committed asynchronously; for an exactly-once stage, its transaction committed."""

    def on_commit_failed(self, stage: StageInfo, partitions: list[TopicPartition]) -> None:
        """A commit of these partitions' offsets failed: an asynchronous commit the broker
        refused (its offsets are sent again with the next commit), a synchronous one that
        raised (on revoke or shutdown: the records are redelivered), or an exactly-once
        transaction that failed to commit (``on_abort`` follows)."""

    def on_abort(self, stage: StageInfo) -> None:
        """An exactly-once stage aborted its transaction; its partitions are read again."""

    def on_breaker_change(self, stage: StageInfo, old: str, new: str) -> None:
        """The stage's circuit breaker moved (``"closed"``, ``"open"``, ``"half-open"``)."""

    def on_hung_change(self, stage: StageInfo, hung: int) -> None:
        """The number of sync handler calls abandoned at their timeout and still running."""

    def on_tick(self, stage: StageInfo, now: float) -> None:
        """About once a second (``now`` is the runner clock's monotonic time), busy or idle."""

    # -- alerts (a stage's ``alerts = Alerts(...)``, see pipeline.alerts) --------------------
    def on_alert(self, stage: StageInfo, alert: Alert) -> None:
        """A threshold of the stage's ``Alerts`` was crossed (``alert.kind``: ``"waiting"``,
        ``"oldest_waiting"`` or ``"failure_ratio"``): once, until it resolves. Attach a
        webhook or a pager here (hand the call to a queue: this runs on the consume thread)."""

    def on_resolved(self, stage: StageInfo, alert: Alert) -> None:
        """A firing alert's value fell back (to ``Alerts.resolve_below`` of its threshold)."""

    # -- cron schedules (Pipeline-level hooks only, see pipeline.scheduler) ------------------
    def on_schedule_fired(self, fired: Fired) -> None:
        """A tick of a cron schedule fired: its event and the tick's state record were
        committed, in one transaction, by this worker, the schedules' owner. So a tick is heard
        once across workers, by the owner that committed it; a commit whose outcome is unknown
        (it timed out, yet went through) is not heard at all. ``fired.schedule``,
        ``fired.tick``; ``fired.trigger_id`` is set for ``pipeline schedules trigger``. On the
        scheduler's thread (Pipeline-level hooks only): keep it short."""


WORKER_EVENTS = ("on_worker_start", "on_worker_stop")
PUBLISHER_EVENTS = ("before_publish",)
SCHEDULER_EVENTS = ("on_schedule_fired",)
# What a stage's runner dispatches (the worker's own two are called by the Worker, a
# Publisher resolves its own with ``publish_hook`` and the scheduler with ``pipeline_hook``).
EVENTS: tuple[str, ...] = tuple(
    name
    for name in vars(Hook)
    if name.startswith(("on_", "before_", "after_"))
    and name not in (*WORKER_EVENTS, *PUBLISHER_EVENTS, *SCHEDULER_EVENTS)
)


class Trusted:
    """Marks a built-in subscriber whose methods cannot raise (plain counters): it is called
    directly, without the guard user hooks get. It may also define ``wrap_handler(stage,
    handler, is_async)``, returning the handler wrapped in exactly what its ``around_handler``
    does: when it is the only ``around_handler`` subscriber, that is used in its place. And
    ``count_succeeded(stage, records, outputs)``, doing exactly what its ``on_succeeded`` does
    for that many records with that many outputs in all: its ``on_succeeded`` is then not
    called per record; the runner hands it the counts at the end of each loop step (and at
    shutdown), so what it counts may be one step behind."""


def check(hooks: object, where: str) -> tuple[Hook, ...]:
    """``hooks`` as a tuple of ``Hook`` instances, or a one-line DeclarationError."""
    from pipeline.errors import DeclarationError

    if isinstance(hooks, Hook) or not isinstance(hooks, list | tuple):
        raise DeclarationError(f"{where} must be a list or tuple of Hook instances, not {hooks!r}")
    bad = [h for h in hooks if not isinstance(h, Hook)]
    if bad:
        what = ", ".join(repr(h) for h in bad)
        raise DeclarationError(
            f"{where} holds {what}: a hook is an instance of a pipeline.hooks.Hook subclass"
        )
    return tuple(hooks)
