"""librdkafka configuration built from Settings. User overrides (``consumer_config`` /
``producer_config``) are applied last, so any librdkafka option can be set or changed.

librdkafka's own log lines go to the ``pipeline.kafka.librdkafka`` logger (not straight to
stderr), through a ``RepeatFilter``: a client that cannot reach its broker says so every few
milliseconds, which would bury the one clear error. confluent-kafka queues them and hands them
over in ``poll``/``consume``/``flush``, on the caller's thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaException, Producer

from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.kafka import security
from pipeline.logs import RepeatFilter
from pipeline.transport import JAVA_COMPATIBLE_PARTITIONER

LIBRDKAFKA_LOG = logging.getLogger("pipeline.kafka.librdkafka")
LIBRDKAFKA_LOG.addFilter(RepeatFilter())
# What the clients' error callbacks report ("1/1 brokers are down", again at every reconnect).
CLIENT_ERRORS_LOG = logging.getLogger("pipeline.kafka.errors")
CLIENT_ERRORS_LOG.addFilter(RepeatFilter())
# A library's loggers: shown where the application configures logging (`pipeline run` does),
# not printed by Python's last-resort handler next to a CLI command's one error line.
for _logger in (LIBRDKAFKA_LOG, CLIENT_ERRORS_LOG):
    _logger.addHandler(logging.NullHandler())

Client = TypeVar("Client")


def common(settings: Settings) -> dict[str, Any]:
    """What every client gets, whatever its role: where the cluster is, how to log in to it
    and trust it (``pipeline.kafka.security``: ``client_config`` last), where its logs go.
    Every client of the framework is built on this."""
    # log_level 5 (notice): librdkafka's info lines (e.g. BGQUEUE on every client teardown)
    # are noise in a worker's log; warnings and errors still show.
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        "log_level": 5,
        "logger": LIBRDKAFKA_LOG,
    } | security.options(settings)


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
        # A key lands where a Java producer puts it, so both keep per-key order in one topic.
        "partitioner": JAVA_COMPATIBLE_PARTITIONER,
    }
    return conf | settings.producer_config


def admin(settings: Settings) -> dict[str, Any]:
    return common(settings)


def create(factory: Callable[[dict[str, Any]], Client], conf: dict[str, Any], role: str) -> Client:
    """``factory(conf)``, with librdkafka's refusal of the options (an unknown property, a bad
    value, options that contradict each other) as a ConfigError naming the client ``role``."""
    try:
        return factory(conf)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else exc
        reason = err.str() if hasattr(err, "str") else str(err)
        raise ConfigError(f"librdkafka refused the {role} options: {reason}") from None


def check(settings: Settings) -> None:
    """Raise ConfigError now if librdkafka would refuse the options of a stage's clients.

    It would otherwise say so only when the first runner starts, after topics were created.
    The throwaway clients get no bootstrap servers, so they connect to nothing; they are
    created and destroyed in about a millisecond.
    """
    for role, factory, conf in (
        ("connection (client_config, sasl_*, ssl_*)", Producer, common(settings)),
        ("consumer_config", Consumer, consumer(settings, "pipeline-config-check", "check")),
        ("producer_config", Producer, producer(settings, "pipeline-config-check")),
    ):
        client = create(factory, {**conf, "bootstrap.servers": ""}, role)
        if isinstance(client, Consumer):
            client.close()
