"""librdkafka configuration built from Settings. User overrides (``consumer_config`` /
``producer_config``) are applied last, so any librdkafka option can be set or changed."""

from __future__ import annotations

from typing import Any

from pipeline.config import Settings


def common(settings: Settings) -> dict[str, Any]:
    # log_level 5 (notice): librdkafka's info lines (e.g. BGQUEUE on every client teardown)
    # are noise in a worker's log; warnings and errors still show.
    return {"bootstrap.servers": settings.bootstrap_servers, "log_level": 5}


def consumer(settings: Settings, group_id: str, client_id: str) -> dict[str, Any]:
    conf = common(settings) | {
        "group.id": group_id,
        "client.id": client_id,
        # We commit ourselves, only what is finished (see pipeline.offsets).
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": settings.auto_offset_reset,
        # Incremental rebalances: a worker joining or leaving does not stop the others.
        "partition.assignment.strategy": "cooperative-sticky",
        # A killed worker's partitions move on after 10 s rather than the default 45 s.
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
        # Outputs of a transactional producer are visible only once committed.
        "isolation.level": "read_committed",
        "fetch.wait.max.ms": 100,
        # Prefetch at most 16 MB per consumer (librdkafka's default is 64 MB): plenty to keep
        # the loop fed, and a bounded footprint with several stages per process.
        "queued.max.messages.kbytes": 16384,
    }
    return conf | settings.consumer_config


def retry_consumer(settings: Settings, group_id: str, client_id: str) -> dict[str, Any]:
    """The consumer of a stage's retry topics. Retries wait a second or more by design, so an
    empty fetch may sit at the broker for 500 ms (one with data still returns at once): two idle
    fetch requests a second per worker instead of ten, on a broker every stage shares."""
    conf = consumer(settings, group_id, client_id)
    if "fetch.wait.max.ms" not in settings.consumer_config:
        conf["fetch.wait.max.ms"] = 500
    return conf


def producer(settings: Settings, client_id: str) -> dict[str, Any]:
    conf = common(settings) | {
        "client.id": client_id,
        # acks=all + idempotence: an acknowledged output is durable and never duplicated by
        # the producer's own retries; per-partition order is kept.
        "enable.idempotence": True,
        "linger.ms": 5,
        "compression.type": "lz4",
    }
    return conf | settings.producer_config


def admin(settings: Settings) -> dict[str, Any]:
    return common(settings)
