"""Every exception the framework raises on purpose.

The tree::

    PipelineError
    ├── ConfigError                 bad settings or environment (before anything connects)
    ├── DeclarationError            a stage, topic or model declaration is wrong (at startup)
    │   ├── DuplicateGroupError     two stages claim the same consumer group
    │   └── DelayError              a delay out of 1 s .. 30 days, or on a topic not delayed=True
    ├── SchemaError                 a .avsc file is unreadable or not valid Avro
    │   ├── SchemaNotFoundError     a model or topic names a schema that schemas/ lacks
    │   └── SchemaMismatchError     a pydantic model does not match its Avro schema
    ├── SerializationError          an event could not be encoded
    │   └── ResultError             a job result is not JSON, or larger than RESULT_MAX_BYTES
    ├── DecodeError                 bytes could not be turned back into an event (a poison record)
    │   ├── BadMagicError           the framing byte(s) are not ours
    │   ├── UnknownSchemaError      the writer schema's fingerprint / id cannot be resolved
    │   ├── TruncatedPayloadError   the body ends early or has trailing garbage
    │   └── EventValidationError    decoded fine, but the model rejects the values
    ├── KafkaError                  the broker or client reported an error (wraps confluent_kafka's)
    │   ├── TopicNotFoundError      a topic is missing and creating it is not allowed
    │   ├── DeliveryError           a produced record was not acknowledged by the broker
    │   └── TransactionError        a Kafka transaction failed (exactly-once stages)
    │       └── ProducerFencedError another instance took over this transactional id
    ├── BrokerUnavailableError      no broker could be found or started
    │   ├── AuthenticationError     the brokers refused our SASL login (user, password, mechanism)
    │   └── TLSError                no TLS connection: the brokers' certificate is not trusted...
    ├── IdempotencyStoreError       the idempotency store failed (pipeline.idempotency)
    ├── RequestError                a request (``Publisher.request``) got no usable reply
    │   ├── RequestTimeout          no reply within the request's timeout
    │   ├── RequestCancelled        the publisher closed (or its reply reader failed) first
    │   └── RequestFailed           the stage dead-lettered or skipped the request (its error reply)
    └── CallAbandoned               a handler call given up with no outcome (event uncommitted)
        └── TooManyHungCalls        too many timed-out sync handler calls still run: stage stops

Library exceptions are wrapped at the boundary (serde, kafka adapter) so callers catch ours only.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error this framework raises on purpose."""


class ConfigError(PipelineError):
    pass


class DeclarationError(PipelineError):
    pass


class DuplicateGroupError(DeclarationError):
    pass


class SchemaError(PipelineError):
    pass


class SchemaNotFoundError(SchemaError):
    pass


class SchemaMismatchError(SchemaError):
    pass


class SerializationError(PipelineError):
    pass


class ResultError(SerializationError):
    """A handler's job result (``ctx.result`` or its return value) cannot be stored: not
    JSON-serialisable, or over ``pipeline.jobs.RESULT_MAX_BYTES``. Never retried: the event is
    dead-lettered with this error."""


class DecodeError(PipelineError):
    pass


class BadMagicError(DecodeError):
    pass


class UnknownSchemaError(DecodeError):
    pass


class TruncatedPayloadError(DecodeError):
    pass


class EventValidationError(DecodeError):
    pass


class KafkaError(PipelineError):
    """A broker or client error. `code` is librdkafka's error name when there is one.

    ``permanent``: no retry can fix it for this record (too large, invalid, not authorised),
    as classified by the Kafka adapter. ``batch_wide``: the broker reports it for a whole batch,
    so it may belong to another record produced alongside this one.
    """

    def __init__(
        self, message: str, *, code: str | None = None, retriable: bool = False,
        permanent: bool = False, batch_wide: bool = False,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.code = code
        self.retriable = retriable
        self.permanent = permanent
        self.batch_wide = batch_wide


class TopicNotFoundError(KafkaError):
    pass


class DeliveryError(KafkaError):
    pass


class TransactionError(KafkaError):
    """``abortable``: abort and rewind the input, then carry on."""

    def __init__(self, message: str, *, code: str | None = None, abortable: bool = False,
                 retriable: bool = False) -> None:  # fmt: skip
        super().__init__(message, code=code, retriable=retriable)
        self.abortable = abortable


class ProducerFencedError(TransactionError):
    pass


class BrokerUnavailableError(PipelineError):
    pass


class AuthenticationError(BrokerUnavailableError):
    """The brokers answer but refuse our SASL credentials: fix the settings, not the network."""


class TLSError(BrokerUnavailableError):
    """The TLS handshake failed: the brokers' certificate is not trusted (``ssl_ca_file``), the
    host name does not match it, or the brokers refused our client certificate."""


class CallAbandoned(PipelineError):
    """A handler call was given up without an outcome for its event (the stage is stopping, or
    cannot start the call): the event is neither retried nor dead-lettered, it stays
    uncommitted and is redelivered."""


class TooManyHungCalls(CallAbandoned):
    """Too many of a stage's sync handler calls ran past their timeout and are still running
    (``pipeline.handlerthreads.MAX_HUNG_CALLS``): the stage stops instead of starting more."""


class RequestError(PipelineError):
    """A request got no usable reply; ``request_id`` is its id (its ``event-id`` header)."""

    def __init__(self, message: str, request_id: str) -> None:
        super().__init__(message)
        self.request_id = request_id


class RequestTimeout(RequestError):
    pass


class RequestCancelled(RequestError):
    pass


class RequestFailed(RequestError):
    pass
