"""The codec port, and the Avro body reading and writing that both wire formats share.

A codec turns an event into bytes for a topic and back. Failures are always ours:

- encoding raises ``SerializationError`` (the library's error is chained for debugging);
- decoding raises only ``DecodeError`` subclasses, and their messages name fields, types and
  schemas but never payload values: they end up in logs and dead-letter headers. For the same
  reason the library's error is not chained (its text may quote the payload).
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import Any, Protocol, get_args

from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from pydantic import ValidationError
from pydantic_core.core_schema import ErrorType

from pipeline.errors import (
    DecodeError,
    EventValidationError,
    SerializationError,
    TruncatedPayloadError,
)
from pipeline.events import Event
from pipeline.serde.binding import Binding, E
from pipeline.serde.guard import OutOfRange
from pipeline.serde.schema import AvroSchema

_BITS = {"int": 32, "long": 64}


class Codec(Protocol):
    def encode(self, event: Event, binding: Binding[Any], topic: str) -> bytes:
        """Frame and encode ``event`` for ``topic``; raise SerializationError."""
        ...

    def decode(self, data: bytes, binding: Binding[E]) -> E:
        """Read bytes written with any schema that resolves to the binding's; raise DecodeError."""
        ...

    def close(self) -> None:
        """Release what the codec holds open to find writer schemas (idempotent)."""
        ...


def bound_decoder(codec: Codec, binding: Binding[E]) -> Callable[[bytes], E]:
    """``codec.decode`` with ``binding`` fixed, made once per input topic: the codec's own
    ``decoder(binding)`` when it has one (``SingleObjectCodec``: the common record in one call,
    its checks and attribute reads bound ahead), else a plain call of ``decode``."""
    own: Callable[[Binding[E]], Callable[[bytes], E]] | None = getattr(codec, "decoder", None)
    if own is not None:
        return own(binding)
    decode = codec.decode
    return lambda data: decode(data, binding)


def bound_encoder(codec: Codec, binding: Binding[Any], topic: str) -> Callable[[Event], bytes]:
    """``codec.encode`` with ``binding`` and ``topic`` fixed, made once per output topic (the
    codec's own ``encoder(binding, topic)`` when it has one), as ``bound_decoder``."""
    own: Callable[[Binding[Any], str], Callable[[Event], bytes]] | None = getattr(
        codec, "encoder", None
    )
    if own is not None:
        return own(binding, topic)
    encode = codec.encode
    return lambda event: encode(event, binding, topic)


def write_body(out: BytesIO, event: Event, binding: Binding[Any]) -> None:
    """Append ``event``'s Avro binary encoding (no framing) to ``out``."""
    if not isinstance(event, binding.model):
        raise SerializationError(
            f"cannot encode a {type(event).__name__} with the binding for {binding.model.__name__}"
        )
    try:
        record = event.__dict__ if binding.flat else binding.to_record(event)  # one call less
        if binding.guard is not None:
            record = binding.guard(record)
        schemaless_writer(out, binding.parsed, record)
    except OutOfRange as exc:  # names the field, never its value
        raise SerializationError(
            f"cannot encode {type(event).__name__} as {binding.name}: field {exc.path!r} "
            f"does not fit an Avro {exc.avro_type} ({_BITS[exc.avro_type]}-bit signed)"
        ) from None
    except Exception as exc:  # fastavro raises many types (ValueError, TypeError, OverflowError...)
        raise SerializationError(
            f"cannot encode {type(event).__name__} as {binding.name}: {type(exc).__name__}"
        ) from exc


def read_event(data: bytes, start: int, writer: AvroSchema, binding: Binding[E]) -> E:
    """Read the Avro body at ``data[start:]``, written with ``writer``, as ``binding.model``.

    When the writer is the binding's own schema (same fingerprint) the record is read directly;
    otherwise Avro schema resolution maps it onto the binding's schema (defaults fill fields the
    writer lacked, fields the reader lacks are skipped).
    """
    if writer.fingerprint == binding.fingerprint:
        writer_parsed, reader_parsed = binding.parsed, None
    else:
        writer_parsed, reader_parsed = writer.parsed, binding.parsed
    stream = BytesIO(data)
    stream.seek(start)
    try:  # inline, not a helper: this runs once per record
        record = schemaless_reader(stream, writer_parsed, reader_parsed)
    except Exception as exc:
        raise _read_error(exc, stream, writer, binding) from None
    trailing = len(data) - stream.tell()
    if trailing:
        raise TruncatedPayloadError(
            f"{trailing} trailing bytes after the {writer.full_name} record"
        )
    try:
        return binding.validate(record)
    except ValidationError as exc:
        raise EventValidationError(_summarize(exc, binding)) from None


def _read_error(
    exc: Exception, stream: BytesIO, writer_schema: AvroSchema, binding: Binding[Any]
) -> DecodeError:
    """Ours for what fastavro raised reading a body (never quoting the payload)."""
    if isinstance(exc, EOFError):
        return TruncatedPayloadError(
            f"the {writer_schema.full_name} body ends early "
            f"(payload is {len(stream.getbuffer())} bytes)"
        )
    if isinstance(exc, SchemaResolutionError):  # its message is about schemas, not data
        return DecodeError(
            f"writer schema {writer_schema.fingerprint.hex()} ({writer_schema.source}) cannot be "
            f"read as {binding.name}: {exc}"
        )
    # bad union/enum index, invalid UTF-8, ...: a corrupt body
    return DecodeError(
        f"the body is not a valid {writer_schema.full_name} record ({type(exc).__name__})"
    )


def bad_magic_hint(data: bytes) -> str:
    """What the first bytes of a payload that is not ours look like."""
    if data[:1] == b"\x00":
        return "looks like Confluent wire format"
    if data[:2] == b"\xc3\x01":
        return "looks like Avro single-object encoding"
    if data[:4] == b"Obj\x01":
        return "looks like an Avro container file"
    if data[:1] in (b"{", b"["):
        return "looks like JSON"
    return "not a known framing"


# Error types whose message may quote the input (or a user's exception text): only the type is kept.
_SAFE_MESSAGES = frozenset(get_args(ErrorType)) - {
    "value_error",
    "assertion_error",
    "union_tag_invalid",
    "get_attribute_error",
    "iteration_error",
}
_MAX_ERRORS = 10


def _summarize(exc: ValidationError, binding: Binding[Any]) -> str:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    parts = []
    for error in errors[:_MAX_ERRORS]:
        where = ".".join(str(part) for part in error["loc"]) or "(record)"
        kind = error["type"]
        parts.append(
            f"{where}: {error['msg']} [{kind}]" if kind in _SAFE_MESSAGES else f"{where}: [{kind}]"
        )
    more = f"; and {len(errors) - _MAX_ERRORS} more" if len(errors) > _MAX_ERRORS else ""
    return (
        f"{binding.model.__name__} rejects the decoded {binding.name} record: "
        + "; ".join(parts)
        + more
    )
