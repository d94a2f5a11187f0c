"""Turning confluent-kafka errors into ours, at the boundary."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError as CKafkaError
from confluent_kafka import KafkaException

from pipeline.errors import DeliveryError, KafkaError

# Produce errors no retry can fix for the record concerned: it is too large, malformed or not
# allowed, and will be so again next time. Its input is dead-lettered instead of re-read.
PERMANENT_PRODUCE = frozenset(
    {
        CKafkaError.MSG_SIZE_TOO_LARGE,  # also what produce() raises over message.max.bytes
        CKafkaError.RECORD_LIST_TOO_LARGE,
        CKafkaError.INVALID_RECORD,
        CKafkaError.INVALID_TIMESTAMP,
        CKafkaError.UNSUPPORTED_FOR_MESSAGE_FORMAT,
        CKafkaError.TOPIC_EXCEPTION,  # an invalid topic name
        CKafkaError.TOPIC_AUTHORIZATION_FAILED,
        CKafkaError._VALUE_SERIALIZATION,
        CKafkaError._KEY_SERIALIZATION,
        CKafkaError._INVALID_ARG,  # bad headers, partition out of range
    }
)
# Of those, the ones a broker answers for a whole produce batch: librdkafka fails every record
# of the batch with it (confluentinc/librdkafka#488), so it may belong to a neighbour.
BATCH_WIDE = frozenset(
    {CKafkaError.MSG_SIZE_TOO_LARGE, CKafkaError.RECORD_LIST_TOO_LARGE, CKafkaError.INVALID_RECORD}
)


def wrap(exc: KafkaException | CKafkaError | Any, context: str) -> KafkaError:
    """A client call's error (the record concerned only: no batch is involved)."""
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else exc
    if isinstance(err, CKafkaError):
        return KafkaError(
            f"{context}: {err.str()} ({err.name()})", code=err.name(), retriable=err.retriable(),
            permanent=err.code() in PERMANENT_PRODUCE,
        )  # fmt: skip
    return KafkaError(f"{context}: {exc}")


def delivery_error(err: Any, topic: str) -> DeliveryError:
    """A failed delivery report's error."""
    code = err.code()
    return DeliveryError(
        f"delivery to {topic} failed: {err.str()} ({err.name()})",
        code=err.name(),
        retriable=bool(err.retriable()),
        permanent=code in PERMANENT_PRODUCE,
        batch_wide=code in BATCH_WIDE,
    )


def is_unknown_topic(err: Any) -> bool:
    return isinstance(err, CKafkaError) and err.code() in (
        CKafkaError.UNKNOWN_TOPIC_OR_PART,
        CKafkaError._UNKNOWN_TOPIC,
    )


def is_partition_eof(err: Any) -> bool:
    return isinstance(err, CKafkaError) and err.code() == CKafkaError._PARTITION_EOF
