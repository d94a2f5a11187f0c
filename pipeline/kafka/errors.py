"""Turning confluent-kafka errors into ours, at the boundary."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError as CKafkaError
from confluent_kafka import KafkaException

from pipeline.errors import KafkaError


def wrap(exc: KafkaException | CKafkaError | Any, context: str) -> KafkaError:
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else exc
    if isinstance(err, CKafkaError):
        return KafkaError(
            f"{context}: {err.str()} ({err.name()})", code=err.name(), retriable=err.retriable()
        )
    return KafkaError(f"{context}: {exc}")


def is_unknown_topic(err: Any) -> bool:
    return isinstance(err, CKafkaError) and err.code() in (
        CKafkaError.UNKNOWN_TOPIC_OR_PART,
        CKafkaError._UNKNOWN_TOPIC,
    )


def is_partition_eof(err: Any) -> bool:
    return isinstance(err, CKafkaError) and err.code() == CKafkaError._PARTITION_EOF
