"""The metric families a worker writes, on one registry (never prometheus-client's global one).

Counters and the histogram are summed over workers by the multiprocess endpoint; gauges carry
the mode that aggregates them meaningfully (``livesum``: a dead worker's share is dropped once
the supervisor marks it dead; ``livemax``: the worst worker's value).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

STAGE = ("stage", "group")
# Per-event counters carry the record's partition (bounded: partitions are); those labelled by
# error type carry its topic only, as error x partition would multiply the series.
PARTITION = ("topic", "partition")
# Handler duration buckets, seconds: from sub-millisecond transforms to minute-long calls.
DURATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
)  # fmt: skip
BREAKER_STATES = ("closed", "half-open", "open")


@dataclass(frozen=True)
class Families:
    consumed: Counter
    completed: Counter
    failed: Counter
    retried: Counter
    dead_lettered: Counter
    skipped: Counter
    stalled: Counter
    duplicates: Counter
    commits: Counter
    commit_failures: Counter
    produce_errors: Counter
    aborts: Counter
    alerts: Counter
    rate_limited: Counter
    duration: Histogram
    in_flight: Gauge
    oldest_age: Gauge
    breaker: Gauge
    hung: Gauge
    assigned: Gauge
    alert_firing: Gauge
    # Not per stage: a pipeline's schedules are fired by its scheduler (labelled by schedule).
    schedule_fired: Counter

    @classmethod
    def on(cls, registry: CollectorRegistry) -> Families:
        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(name, doc, (*STAGE, *labels), registry=registry)

        def gauge(name: str, doc: str, mode: str, *labels: str) -> Gauge:
            return Gauge(name, doc, (*STAGE, *labels), registry=registry, multiprocess_mode=mode)  # type: ignore[arg-type]

        return cls(
            consumed=counter("pipeline_events_consumed_total", "Records fetched.", *PARTITION),
            completed=counter(
                "pipeline_events_completed_total",
                "Events durably done: handled and every output acknowledged.",
                *PARTITION,
            ),
            failed=counter(
                "pipeline_events_failed_total",
                "Failed deliveries (the handler raised, or the record did not decode).",
                "topic",
                "error",
            ),
            retried=counter(
                "pipeline_events_retried_total",
                "Events to be tried again, by retry tier (in_place: the partition is held).",
                *PARTITION,
                "tier",
            ),
            dead_lettered=counter(
                "pipeline_events_dead_lettered_total",
                "Dead letters acknowledged.",
                "topic",
                "error",
            ),
            skipped=counter(
                "pipeline_events_skipped_total", "Events the handler skipped.", *PARTITION
            ),
            stalled=counter(
                "pipeline_events_stalled_total",
                "Handler calls still running past the stage's stall_after_s.",
                *PARTITION,
            ),
            duplicates=counter(
                "pipeline_events_duplicates_total",
                "Events the idempotency store had seen done.",
                *PARTITION,
            ),
            commits=counter("pipeline_commits_total", "Offset commits (or transactions)."),
            commit_failures=counter(
                "pipeline_commit_failures_total", "Offset commits (or transactions) that failed."
            ),
            produce_errors=counter(
                "pipeline_produce_errors_total",
                "Outputs not delivered: retriable (the input is read again) or permanent "
                "(the input is dead-lettered).",
                *PARTITION,
                "kind",
            ),
            aborts=counter("pipeline_transactions_aborted_total", "Aborted transactions."),
            alerts=counter(
                "pipeline_alerts_total", "Alerts fired (pipeline.alerts), by kind.", "kind"
            ),
            rate_limited=counter(
                "pipeline_rate_limited_total",
                "Records the stage's RateLimit had no token for: partition holds (group-wide "
                "limit) or deferrals (per-key limit). Nothing is failed or retried for them.",
                "topic",
            ),
            duration=Histogram(
                "pipeline_handler_duration_seconds",
                "Handler call duration (each in-process attempt).",
                STAGE,
                registry=registry,
                buckets=DURATION_BUCKETS,
            ),
            in_flight=gauge("pipeline_events_in_flight", "Handler calls running now.", "livesum"),
            oldest_age=gauge(
                "pipeline_oldest_unfinished_age_seconds",
                "Age (now minus record timestamp) of the partition's oldest fetched event not "
                "yet committed; 0 when none.",
                "livemax",
                "topic",
                "partition",
            ),
            breaker=gauge(
                "pipeline_breaker_state",
                "Workers whose stage breaker is in this state (closed from the stage's start).",
                "livesum",
                "state",
            ),
            hung=gauge(
                "pipeline_hung_calls", "Timed-out sync handler calls still running.", "livesum"
            ),
            assigned=gauge("pipeline_assigned_partitions", "Partitions assigned.", "livesum"),
            alert_firing=gauge(
                "pipeline_alert_firing",
                "1 while an alert of this kind is firing (fired and not resolved), else 0.",
                "livemax",
                "kind",
            ),
            schedule_fired=Counter(
                "pipeline_schedule_fired_total",
                "Ticks of cron schedules fired (committed), manual triggers included.",
                ("schedule",),
                registry=registry,
            ),
        )
