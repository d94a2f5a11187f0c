"""The public surface is curated: changing it is a deliberate act that updates this test."""

from __future__ import annotations

import subprocess
import sys

import pipeline

EXPECTED = {
    "Backoff", "BadMagicError", "BreakerPolicy", "BrokerUnavailableError", "CircuitBreaker",
    "CircuitOpenError", "ConfigError", "Context", "DeadLetter", "DecodeError",
    "DeclarationError", "Delivered", "DeliveryError", "DuplicateGroupError", "Event",
    "EventValidationError", "HandlerTimeout", "Hook", "Idempotency", "KafkaError", "Pipeline",
    "PipelineError", "Publisher", "RetryAfter", "RetryPolicy", "SchemaError",
    "SchemaMismatchError", "SchemaNotFoundError", "SerializationError", "Settings", "Skip",
    "Stage", "StageInfo", "Topic", "TopicNotFoundError", "TruncatedPayloadError",
    "UnknownSchemaError",
    "AuthenticationError", "TLSError",  # issue 11: secured clusters
    "Worker", "WorkerInfo", "load_settings",
    "Alert", "Alerts", "PipelineStatus", "StageStatus", "status",  # issue 12: counts, alerts
    "Schedule",  # issue 13: cron schedules
    "DelayError",  # issue 13: delayed events
    "Lanes",  # issue 13: priority lanes
    "RateLimit",  # issue 13: rate limits
    "JobTracking", "ResultError",  # issue 14: job status
    "RequestCancelled", "RequestError", "RequestTimeout",  # issue 14: request-reply
    "RequestFailed",  # issue 14 review: a dead-lettered request's error reply
}  # fmt: skip
JOBS_EXPECTED = {
    "Job", "JobStore", "JobStoreError", "JobTracker", "JobTracking", "JobView", "JobsQueued",
    "NOTE_MAX_CHARS", "RESULT_MAX_BYTES", "STATES", "State", "get", "get_async", "jobs_topic",
    "list_jobs",
}  # fmt: skip


def test_all_lists_exactly_the_public_names() -> None:
    assert set(pipeline.__all__) == EXPECTED


def test_the_jobs_package_lists_exactly_its_public_names() -> None:
    from pipeline import jobs

    assert set(jobs.__all__) == JOBS_EXPECTED
    assert all(getattr(jobs, name) is not None for name in jobs.__all__)


def test_every_public_name_resolves() -> None:
    for name in pipeline.__all__:
        assert getattr(pipeline, name) is not None


def test_every_error_derives_from_pipeline_error() -> None:
    names = [n for n in pipeline.__all__ if n.endswith("Error")]
    names += ["DeadLetter", "Skip", "RetryAfter", "HandlerTimeout"]
    errors = [getattr(pipeline, n) for n in names]
    assert all(issubclass(e, pipeline.PipelineError) for e in errors)


def test_declaring_stages_does_not_import_the_kafka_client() -> None:
    code = "import stages.video, stages.orders, sys; print('confluent_kafka' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_confluent_kafka_is_imported_only_by_the_adapter() -> None:
    import re
    from pathlib import Path

    imports = re.compile(r"^\s*(from|import)\s+confluent_kafka", re.MULTILINE)
    root = Path(pipeline.__file__).parent
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if imports.search(p.read_text()) and p.relative_to(root).parts[0] != "kafka"
    ]
    assert offenders == []


def test_prometheus_client_is_imported_only_by_the_metrics_package() -> None:
    import re
    from pathlib import Path

    imports = re.compile(r"^\s*(from|import)\s+prometheus_client", re.MULTILINE)
    root = Path(pipeline.__file__).parent
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if imports.search(p.read_text()) and p.relative_to(root).parts[0] != "metrics"
    ]
    assert offenders == []
    code = "import pipeline, pipeline.worker, sys; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", "metrics off: prometheus-client is not even imported"


def test_there_is_one_fake_clock_for_the_runner_and_the_memory_broker() -> None:
    """``pipeline.testing.FakeClock`` is ``pipeline.clock.FakeClock``: one time, one class."""
    from pipeline import clock, testing

    assert testing.FakeClock is clock.FakeClock
    fake = testing.FakeClock(1_000.0, monotonic=5.0)
    fake.advance(2.5)
    assert (fake.monotonic(), fake.time(), fake.wall_ms()) == (7.5, 1_002.5, 1_002_500)
