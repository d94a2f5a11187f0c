"""Declarative stages.

A stage consumes one or more topics in its own consumer group and may emit events to declared
output topics::

    UPLOADED = Topic("video.uploaded", VideoUploaded)
    TRANSCODED = Topic("video.transcoded", VideoTranscoded)

    class Transcode(Stage):
        consumes = UPLOADED
        emits = (TRANSCODED,)

        async def handle(self, event: VideoUploaded, ctx: Context) -> None:
            ctx.emit(TRANSCODED, VideoTranscoded(video_id=event.video_id, ...))

Workers of the same stage share its group (each event goes to one of them); stages in different
groups on the same topic each receive every event (fan-out).

Declaring a class has no side effect beyond a shape check in ``__init_subclass__``; a stage runs
only when a module lists it in ``STAGES`` and ``pipeline run`` is pointed at that module.
Everything that needs the schema catalog (model/schema agreement, topic without schema) is
checked by ``pipeline.registry.plan`` at startup.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pipeline.alerts import Alerts
from pipeline.breaker import BreakerPolicy
from pipeline.errors import DeclarationError
from pipeline.events import Event
from pipeline.failures import RetryPolicy
from pipeline.guarantees import Guarantee, Idempotency
from pipeline.hooks import Hook, check
from pipeline.jobs.tracking import JobTracking
from pipeline.lanes import Lanes, lane_of, levels
from pipeline.ratelimit import RateLimit

if TYPE_CHECKING:
    from pipeline.context import Context

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
# Well under librdkafka's default max.poll.interval.ms (300 s).
MAX_TIMEOUT_S = 240.0
MAX_CONCURRENCY = 10_000
# Set while pipeline.registry imports user modules: see deferred_field_checks.
_DEFER_FIELD_CHECKS: ContextVar[bool] = ContextVar("defer_topic_field_checks", default=False)


@contextmanager
def deferred_field_checks() -> Iterator[None]:
    """Within this block a Topic whose ``key``/``id_field`` is not a model field is created
    with the problem in ``Topic.problems`` instead of raising.

    ``pipeline.registry`` imports user modules inside it, so that ``plan`` reports such a typo
    together with every other problem of the module (a schema name that does not exist, say),
    rather than hiding them behind an import that stops at the first one. Elsewhere the check
    raises at once.
    """
    token = _DEFER_FIELD_CHECKS.set(True)
    try:
        yield
    finally:
        _DEFER_FIELD_CHECKS.reset(token)


@dataclass(frozen=True, slots=True)
class Topic:
    """A Kafka topic and the event model (hence Avro schema) every record on it carries.

    ``key`` optionally names a model field whose value becomes the record key when an event is
    published without an explicit key, so related events stay on one partition, in order.
    ``id_field`` optionally names the field that identifies the event; the publisher then uses
    its value as the ``event-id`` header (otherwise a new UUID), so publishing the same business
    event twice is recognised as a duplicate by idempotent stages.
    ``priorities`` makes it priority lanes (``pipeline.lanes``): a number of lanes, or their
    level names, highest first; ``publish(..., priority=)`` and ``ctx.emit(..., priority=)``
    pick one (lane 0, the base topic, by default).
    ``delayed=True`` lets events be published or emitted to it with a delay: its delay tiers
    are created and moved by the workers of the stages that consume it (``pipeline.delays``).
    ``replies`` optionally names the model of the reply to a request on this topic
    (``Publisher.request``, ``pipeline.reply``): what the stage reading it returns.
    """

    name: str
    model: type[Event]
    key: str | None = None
    id_field: str | None = None
    delayed: bool = False
    priorities: int | tuple[str, ...] | None = None
    replies: type[Event] | None = None
    # The level names, highest first; () without lanes. Derived from ``priorities``.
    levels: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)
    # Declaration problems found while field checks were deferred (see deferred_field_checks).
    problems: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _TOPIC_NAME.match(self.name) or self.name in {".", ".."}:
            raise DeclarationError(
                f"topic name {self.name!r} is not valid: use 1-200 of [A-Za-z0-9._-]"
            )
        if not (isinstance(self.model, type) and issubclass(self.model, Event)):
            raise DeclarationError(
                f"topic {self.name!r}: model must be a pipeline.Event subclass, got {self.model!r}"
            )
        if self.replies is not None and not (
            isinstance(self.replies, type) and issubclass(self.replies, Event)
        ):
            raise DeclarationError(
                f"topic {self.name!r}: replies must be a pipeline.Event subclass, "
                f"got {self.replies!r}"
            )
        problems = tuple(
            f"topic {self.name!r}: {role} field {name!r} is not a field of {self.model.__name__}"
            for role, name in (("key", self.key), ("id", self.id_field))
            if name is not None and name not in self.model.model_fields
        )
        if problems and not _DEFER_FIELD_CHECKS.get():
            raise DeclarationError("; ".join(problems))
        object.__setattr__(self, "problems", problems)  # frozen: set once, here
        object.__setattr__(self, "levels", levels(self.priorities, f"topic {self.name!r}"))

    @property
    def lanes(self) -> int:
        """How many lanes (topics) it is: 1 without priorities."""
        return max(len(self.levels), 1)

    def lane(self, priority: int | str | None) -> int:
        """The lane index of a ``priority=`` argument (ValueError if it names none)."""
        return lane_of(self.levels, priority, f"topic {self.name!r}")

    def check(self) -> None:
        """Raise DeclarationError if the declaration has problems (see ``problems``)."""
        if self.problems:
            raise DeclarationError("; ".join(self.problems))


class Stage:
    """Base class of every stage. Subclasses set ``consumes`` (and usually ``emits``) and
    implement ``handle(self, event, ctx)``, sync or async.

    Class attributes:
        consumes: a Topic or a tuple of Topics this stage reads.
        emits: the Topics ``ctx.emit`` may write to; anything else is refused at emit time.
        group: consumer group; defaults to ``<module>.<stage_name>`` (e.g. ``video.transcode``).
        name: stage name used in logs, metrics and derived topic names; defaults to the class
            name in snake_case.
        retry: what happens to a failing event (see ``pipeline.failures.RetryPolicy``).
        breaker: a circuit breaker over the whole stage, or None.
        timeout_s: longest a handler may run; exceeding it is a retryable failure.
        idempotency: an idempotency store for the stage (``pipeline.guarantees``), or None.
        guarantee: "at_least_once" (default) or "exactly_once" (Kafka transactions).
        concurrency: how many events an async handler works on at once in one worker (default
            1). Events with the same key are still handled one after another, in offset order;
            offsets are committed at each partition's contiguous low watermark. For I/O-bound
            handlers; CPU-bound stages scale with worker processes (``pipeline run --workers``).
        hooks: ``pipeline.hooks.Hook`` instances that hear this stage's events only (added to
            the Pipeline's own hooks).
        stall_after_s: a handler call running longer is reported as stalled (logged, the
            ``on_stalled`` hook, counted); default half of ``timeout_s``, else 30 s.
        alerts: thresholds (``pipeline.alerts.Alerts``) whose crossing fires the ``on_alert``
            hook once, and ``on_resolved`` when the value falls back; None: no alerts.
        lanes: how fetches are shared among the priority lanes of its inputs
            (``pipeline.lanes.Lanes``; default: each lower lane is guaranteed 10 %).
        rate_limit: at most ``max`` handler calls every ``per_s`` seconds for the whole group
            (``pipeline.ratelimit.RateLimit``), or per key; None: no limit.
        track_jobs: record each event's job status (``pipeline.jobs.JobTracking``): state,
            attempts, progress, result; the handler's non-None return value is the result.
    """

    consumes: ClassVar[Topic | tuple[Topic, ...]]
    emits: ClassVar[tuple[Topic, ...]] = ()
    group: ClassVar[str | None] = None
    name: ClassVar[str | None] = None
    retry: ClassVar[RetryPolicy] = RetryPolicy()
    breaker: ClassVar[BreakerPolicy | None] = None
    timeout_s: ClassVar[float | None] = None
    idempotency: ClassVar[Idempotency | None] = None
    guarantee: ClassVar[Guarantee] = "at_least_once"
    concurrency: ClassVar[int] = 1
    hooks: ClassVar[tuple[Hook, ...]] = ()
    stall_after_s: ClassVar[float | None] = None
    alerts: ClassVar[Alerts | None] = None
    lanes: ClassVar[Lanes] = Lanes()
    rate_limit: ClassVar[RateLimit | None] = None
    track_jobs: ClassVar[JobTracking | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if inspect.isabstract(cls) or cls.__dict__.get("__abstract_stage__", False):
            return
        _check_shape(cls)

    # The framework calls this; subclasses must override it.
    def handle(self, event: Any, ctx: Context) -> Awaitable[Any] | Any:
        raise NotImplementedError

    # Optional lifecycle hooks, called once per worker, around the consume loop.
    def setup(self) -> None:
        """Open clients/connections this stage needs. Runs before the first event."""

    def teardown(self) -> None:
        """Release what setup opened. Runs after the last commit, on every exit path."""

    # -- derived declaration, computed once -------------------------------------------------

    @classmethod
    def stage_name(cls) -> str:
        return cls.name or _snake(cls.__name__)

    @classmethod
    def group_id(cls) -> str:
        if cls.group:
            return cls.group
        module = cls.__module__.rsplit(".", 1)[-1]
        return f"{module}.{cls.stage_name()}"

    @classmethod
    def input_topics(cls) -> tuple[Topic, ...]:
        return cls.consumes if isinstance(cls.consumes, tuple) else (cls.consumes,)

    @classmethod
    def is_async(cls) -> bool:
        return inspect.iscoroutinefunction(cls.handle)


def _check_shape(cls: type[Stage]) -> None:
    where = f"stage {cls.__module__}.{cls.__qualname__}"
    consumes = cls.__dict__.get("consumes", getattr(cls, "consumes", None))
    if consumes is None:
        raise DeclarationError(f"{where}: set `consumes = SomeTopic` (the topic(s) it reads)")
    topics = consumes if isinstance(consumes, tuple) else (consumes,)
    if not topics or not all(isinstance(t, Topic) for t in topics):
        raise DeclarationError(f"{where}: `consumes` must be a Topic or a tuple of Topics")
    if not isinstance(cls.emits, tuple) or not all(isinstance(t, Topic) for t in cls.emits):
        raise DeclarationError(f"{where}: `emits` must be a tuple of Topics (note the comma)")
    if cls.handle is Stage.handle:
        raise DeclarationError(f"{where}: implement `def handle(self, event, ctx)`")
    _check_handler_signature(cls, where)
    _check_policies(cls, where)


def _check_policies(cls: type[Stage], where: str) -> None:
    if not isinstance(cls.retry, RetryPolicy):
        raise DeclarationError(f"{where}: `retry` must be a RetryPolicy")
    if cls.breaker is not None and not isinstance(cls.breaker, BreakerPolicy):
        raise DeclarationError(f"{where}: `breaker` must be a BreakerPolicy or None")
    if cls.alerts is not None and not isinstance(cls.alerts, Alerts):
        raise DeclarationError(f"{where}: `alerts` must be an Alerts(...) or None")
    _check_rate_limit(cls, where)
    if cls.track_jobs is not None and not isinstance(cls.track_jobs, JobTracking):
        raise DeclarationError(f"{where}: `track_jobs` must be a JobTracking(...) or None")
    if cls.idempotency is not None and not isinstance(cls.idempotency, Idempotency):
        raise DeclarationError(f"{where}: `idempotency` must be an Idempotency() or None")
    if cls.guarantee not in ("at_least_once", "exactly_once"):
        raise DeclarationError(
            f"{where}: `guarantee` must be 'at_least_once' or 'exactly_once', not {cls.guarantee!r}"
        )
    _check_concurrency(cls, where)
    _check_lanes(cls, where)
    cls.hooks = check(cls.hooks, f"{where}: `hooks`")
    stall = cls.stall_after_s
    if stall is not None and (isinstance(stall, bool) or not isinstance(stall, int | float)
                              or not 0 < stall <= MAX_TIMEOUT_S):  # fmt: skip
        raise DeclarationError(
            f"{where}: `stall_after_s` must be a number of seconds in (0, {MAX_TIMEOUT_S:g}] "
            f"or None, not {stall!r}"
        )
    if cls.timeout_s is not None and not (
        isinstance(cls.timeout_s, int | float) and 0 < cls.timeout_s < MAX_TIMEOUT_S
    ):
        raise DeclarationError(
            f"{where}: `timeout_s` must be between 0 and {MAX_TIMEOUT_S:g}s: the consume loop "
            "waits for the handler, and a longer wait would exceed max.poll.interval.ms"
        )


def _check_rate_limit(cls: type[Stage], where: str) -> None:
    limit = cls.rate_limit
    if limit is not None and not isinstance(limit, RateLimit):
        raise DeclarationError(f"{where}: `rate_limit` must be a RateLimit(...) or None")
    if limit is not None and limit.keyed and len(cls.input_topics()) != 1:
        raise DeclarationError(
            f"{where}: a per-key `rate_limit` needs a stage with one input topic (its deferral "
            "topic carries that topic's events); split the stage, or limit the whole group"
        )
    if (
        limit is not None
        and limit.keyed
        and cls.guarantee == "exactly_once"
        and (cls.idempotency is None)
    ):
        raise DeclarationError(
            f"{where}: a per-key `rate_limit` cannot be combined with guarantee='exactly_once' "
            "without an idempotency store: a deferred event comes back through the delay "
            "tiers, whose moves are at-least-once, and a second copy would be a second "
            "transaction's outputs; add `idempotency = Idempotency(...)`, or limit the whole "
            "group"
        )


def _check_concurrency(cls: type[Stage], where: str) -> None:
    n = cls.concurrency
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CONCURRENCY:
        raise DeclarationError(
            f"{where}: `concurrency` must be an int from 1 to {MAX_CONCURRENCY}, not {n!r}"
        )
    if n == 1:
        return
    if not cls.is_async():
        raise DeclarationError(
            f"{where}: `concurrency = {n}` needs `async def handle`; a sync handler holds the "
            "consume loop, so scale it with worker processes (`pipeline run --workers N`)"
        )
    if cls.guarantee == "exactly_once":
        raise DeclarationError(
            f"{where}: `concurrency` > 1 cannot be combined with guarantee='exactly_once': a "
            "transaction commits the read position of everything it read, so a record still in "
            "flight, or one that failed after later records finished, would be committed with "
            "them and never handled; use concurrency = 1, or scale with worker processes"
        )
    if cls.retry.ordered:
        raise DeclarationError(
            f"{where}: `concurrency` > 1 cannot be combined with RetryPolicy(ordered=True): "
            "ordered retries hold the partition and retry a failed record before any later one "
            "runs, but with concurrent handlers later records (other keys) have already run; "
            "use retry topics (order per key is kept), or concurrency = 1"
        )


def _check_lanes(cls: type[Stage], where: str) -> None:
    if not isinstance(cls.lanes, Lanes):
        raise DeclarationError(f"{where}: `lanes` must be a Lanes(min_share=...)")
    count = max(t.lanes for t in cls.input_topics())
    if count == 1:
        return
    try:
        cls.lanes.shares(count)
    except DeclarationError as exc:
        raise DeclarationError(f"{where}: {exc}") from None
    if cls.guarantee == "exactly_once":
        raise DeclarationError(
            f"{where}: priority lanes cannot be read with guarantee='exactly_once': each lane "
            "is read by a consumer of its own (so a low lane's backlog never queues in front of "
            "a high lane), and one transaction commits one consumer's offsets; use "
            "at_least_once with an idempotency store, or a topic without priorities"
        )


def _check_handler_signature(cls: type[Stage], where: str) -> None:
    params = list(inspect.signature(cls.handle).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required_extra = [
        p
        for p in params[3:]
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if len(positional) < 3 or required_extra:
        got = ", ".join(p.name for p in params)
        raise DeclarationError(f"{where}: handle must take (self, event, ctx); it takes ({got})")


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
