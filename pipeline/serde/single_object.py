"""Avro single-object encoding: the default codec, which needs no schema registry.

Wire format (Avro spec, "Single-object encoding")::

    C3 01 | CRC-64-AVRO fingerprint of the writer schema, 8 bytes little-endian | Avro binary body

A reader finds the writer schema by fingerprint: first among the catalog's schemas, then
through an optional ``resolver`` (in a pipeline, a ``WriterSchemas`` reading the schema topic).
The catalog holds one version of each full name, so records written with another version of
the bound type need the resolver. The body is then resolved from the writer schema onto the
binding's schema, so a defaulted field added on either side is filled in or skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import Any, Protocol, runtime_checkable

from pydantic import ValidationError

from pipeline.errors import BadMagicError, SchemaError, TruncatedPayloadError, UnknownSchemaError
from pipeline.events import Event
from pipeline.serde import body
from pipeline.serde.binding import Binding, E
from pipeline.serde.catalog import SchemaCatalog
from pipeline.serde.codec import bad_magic_hint, read_event, write_body
from pipeline.serde.schema import AvroSchema, from_json

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8

# Given the 8 fingerprint bytes, the writer schema's JSON, or None when it is unknown. Its own
# exceptions (say, a registry that is down) propagate: they are not the record's fault.
SchemaResolver = Callable[[bytes], str | None]


@runtime_checkable
class _Closeable(Protocol):
    def close(self) -> None: ...


class SingleObjectCodec:
    """Encodes with the binding's schema; decodes anything whose writer schema can be found.

    Schemas found through the resolver are parsed once and cached by fingerprint. Unknown
    fingerprints are not cached (a schema may be published later), so each such record asks
    the resolver again: a resolver must answer a repeated miss cheaply. The codec owns its
    resolver: ``close()`` closes it, if it has a ``close``.
    """

    def __init__(self, catalog: SchemaCatalog, resolver: SchemaResolver | None = None) -> None:
        self._catalog = catalog
        self._resolver = resolver
        self._resolved: dict[bytes, AvroSchema] = {}

    def encode(self, event: Event, binding: Binding[Any], topic: str) -> bytes:
        out = BytesIO()
        out.write(MAGIC)
        out.write(binding.fingerprint)
        write_body(out, event, binding)
        return out.getvalue()

    def decode(self, data: bytes, binding: Binding[E]) -> E:
        if data[:2] != MAGIC:
            raise self._bad_magic(data)
        if len(data) < HEADER_SIZE:
            raise TruncatedPayloadError(
                f"payload is {len(data)} bytes, shorter than the single-object header"
            )
        fingerprint = data[2:HEADER_SIZE]
        writer = binding.schema if fingerprint == binding.fingerprint else self._writer(fingerprint)
        return read_event(data, HEADER_SIZE, writer, binding)

    def decoder(self, binding: Binding[E]) -> Callable[[bytes], E]:
        """``decode`` for ``binding``, with the common record in one call: written with the
        binding's own schema (the magic and fingerprint in one prefix test), read cleanly. Any
        other record, and any failure, takes ``decode`` itself, which raises ours (a failure is
        read again: the cost is on the failure path only)."""
        own, validate, decode = MAGIC + binding.fingerprint, binding.validate, self.decode
        read = body.reader(binding.parsed)  # the schema's per-call work done once

        def decode_own(data: bytes) -> E:
            if not data.startswith(own):  # another writer schema, or not our framing
                return decode(data, binding)
            stream = BytesIO(data)
            stream.seek(HEADER_SIZE)
            try:  # read_event's reading, inline
                record = read(stream)
            except Exception:
                return decode(data, binding)
            if stream.tell() != len(data):  # trailing bytes
                return decode(data, binding)
            try:
                return validate(record)
            except ValidationError:
                return decode(data, binding)

        return decode_own

    def encoder(self, binding: Binding[Any], topic: str) -> Callable[[Event], bytes]:
        """``encode`` for ``binding``, with ``write_body``'s common case inline (the framing
        written in one piece, the binding's attributes read once). A failure takes ``encode``
        itself, which raises ours."""
        header, model = MAGIC + binding.fingerprint, binding.model
        flat, to_record, guard, encode = binding.flat, binding.to_record, binding.guard, self.encode
        write = body.writer(binding.parsed)  # the schema's per-call work done once

        def encode_own(event: Event) -> bytes:
            if not isinstance(event, model):
                return encode(event, binding, topic)
            out = bytearray(header)
            try:
                record = event.__dict__ if flat else to_record(event)
                if guard is not None:
                    record = guard(record)
                write(out, record)
            except Exception:
                return encode(event, binding, topic)
            return bytes(out)

        return encode_own

    def close(self) -> None:
        if isinstance(self._resolver, _Closeable):
            self._resolver.close()

    def _writer(self, fingerprint: bytes) -> AvroSchema:
        schema = self._catalog.by_fingerprint(fingerprint) or self._resolved.get(fingerprint)
        if schema is not None:
            return schema
        text = self._resolver(fingerprint) if self._resolver is not None else None
        if text is None:
            where = (
                "the catalog or the resolver"
                if self._resolver
                else "the catalog (no resolver is set)"
            )
            raise UnknownSchemaError(f"writer schema {fingerprint.hex()} is not in {where}")
        schema = self._resolved[fingerprint] = _checked(text, fingerprint)
        return schema

    @staticmethod
    def _bad_magic(data: bytes) -> Exception:
        if MAGIC.startswith(data):
            return TruncatedPayloadError(f"payload is {len(data)} bytes, shorter than the header")
        found = data[:2].hex(" ")
        hint = bad_magic_hint(data)
        if data[:1] == b"\x00":
            hint += "; is a schema registry configured?"
        return BadMagicError(
            f"payload starts with {found}, expected c3 01 (Avro single-object encoding): {hint}"
        )


def _checked(text: str, fingerprint: bytes) -> AvroSchema:
    source = f"resolver schema {fingerprint.hex()}"
    try:
        schema = from_json(text, source)
    except SchemaError as exc:
        raise UnknownSchemaError(str(exc)) from None
    if schema.fingerprint != fingerprint:
        raise UnknownSchemaError(
            f"{source}: the resolver returned {schema.full_name}, whose fingerprint is "
            f"{schema.fingerprint.hex()}"
        )
    return schema
