"""Reliable Avro event pipelines on Apache Kafka.

The public API is what ``__all__`` lists; everything else may change without notice.
"""

from typing import TYPE_CHECKING

from pipeline.alerts import Alert, Alerts
from pipeline.backoff import Backoff
from pipeline.breaker import BreakerPolicy, CircuitBreaker, CircuitOpenError
from pipeline.context import Context
from pipeline.delays import DelayError
from pipeline.errors import (
    AuthenticationError,
    BadMagicError,
    BrokerUnavailableError,
    ConfigError,
    DeclarationError,
    DecodeError,
    DeliveryError,
    DuplicateGroupError,
    EventValidationError,
    KafkaError,
    PipelineError,
    RequestCancelled,
    RequestError,
    RequestFailed,
    RequestTimeout,
    ResultError,
    SchemaError,
    SchemaMismatchError,
    SchemaNotFoundError,
    SerializationError,
    TLSError,
    TopicNotFoundError,
    TruncatedPayloadError,
    UnknownSchemaError,
)
from pipeline.events import Event
from pipeline.failures import DeadLetter, HandlerTimeout, RetryAfter, RetryPolicy, Skip
from pipeline.guarantees import Idempotency
from pipeline.hooks import Hook, StageInfo, WorkerInfo
from pipeline.jobs.tracking import JobTracking
from pipeline.lanes import Lanes
from pipeline.ratelimit import RateLimit
from pipeline.schedules import Schedule
from pipeline.stage import Stage, Topic

if TYPE_CHECKING:
    # Loaded lazily at run time (``__getattr__`` below); these imports let type checkers and
    # IDEs see the real classes rather than ``object``.
    from pipeline.app import Pipeline
    from pipeline.config import Settings, load_settings
    from pipeline.publisher import Delivered, Publisher
    from pipeline.queues import PipelineStatus, StageStatus, status
    from pipeline.worker import Worker

__all__ = [
    "Alert",
    "Alerts",
    "AuthenticationError",
    "Backoff",
    "BadMagicError",
    "BreakerPolicy",
    "BrokerUnavailableError",
    "CircuitBreaker",
    "CircuitOpenError",
    "ConfigError",
    "Context",
    "DeadLetter",
    "DeclarationError",
    "DecodeError",
    "DelayError",
    "Delivered",
    "DeliveryError",
    "DuplicateGroupError",
    "Event",
    "EventValidationError",
    "HandlerTimeout",
    "Hook",
    "Idempotency",
    "JobTracking",
    "KafkaError",
    "Lanes",
    "Pipeline",
    "PipelineError",
    "PipelineStatus",
    "Publisher",
    "RateLimit",
    "RequestCancelled",
    "RequestError",
    "RequestFailed",
    "RequestTimeout",
    "ResultError",
    "RetryAfter",
    "RetryPolicy",
    "Schedule",
    "SchemaError",
    "SchemaMismatchError",
    "SchemaNotFoundError",
    "SerializationError",
    "Settings",
    "Skip",
    "Stage",
    "StageInfo",
    "StageStatus",
    "TLSError",
    "Topic",
    "TopicNotFoundError",
    "TruncatedPayloadError",
    "UnknownSchemaError",
    "Worker",
    "WorkerInfo",
    "load_settings",
    "status",
]


def __getattr__(name: str) -> object:
    # Kafka-bound pieces load lazily, so `from pipeline import Stage, Event` in a stage module
    # does not pull in confluent_kafka (fast imports, and unit tests of stages need no client).
    if name in ("Publisher", "Delivered"):
        from pipeline import publisher

        return getattr(publisher, name)
    if name == "Pipeline":
        from pipeline.app import Pipeline

        return Pipeline
    if name in ("status", "StageStatus", "PipelineStatus"):
        from pipeline import queues

        return getattr(queues, name)
    if name in ("Settings", "load_settings"):
        # pydantic-settings loads with the settings, not with `from pipeline import Stage`.
        from pipeline import config

        return getattr(config, name)
    if name == "Worker":
        from pipeline.worker import Worker

        return Worker
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
