"""Per-stage counters, updated by the runner's thread and read by progress views.

Plain ints: a reader on another thread may see a value one batch old, which is fine for display.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class StageStats:
    stage: str
    group: str
    consumed: int = 0
    processed: int = 0
    failed: int = 0  # handler calls that raised (each retry counts)
    retried: int = 0  # retry copies acknowledged, in-place retries and re-reads scheduled
    dead_lettered: int = 0  # dead letters acknowledged by the broker
    skipped: int = 0
    undeliverable: int = 0  # inputs dead-lettered because an output can never be delivered
    stalls: int = 0  # times a partition started failing to deliver (once per run of failures)
    duplicates: int = 0  # events the idempotency store had already seen done
    aborts: int = 0  # aborted transactions (exactly-once stages)
    hung_calls: int = 0  # sync handler calls past their timeout still running (abandoned)
    breaker: str = "-"  # circuit state, "-" when the stage has no breaker
    outputs: int = 0
    commits: int = 0
    assigned: int = 0
    running: bool = False
