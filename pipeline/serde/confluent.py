"""Confluent wire format, for topics shared with producers and consumers that use a registry.

Wire format::

    00 | schema id, 4 bytes big-endian | Avro binary body

Encoding registers the binding's schema under a subject named by one of Confluent's strategies
(``SUBJECT_STRATEGIES``: ``<topic>-value`` by default, the record's full name, or both) the first
time a (topic, schema) pair is seen, then reuses the header. Whether the registry accepts a new
version (compatibility) is the registry's decision; a refusal is a ``SerializationError``.
Decoding fetches a writer schema by id once and caches it; ids are immutable in a registry, so
the cache never goes stale.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from io import BytesIO
from typing import Any, Literal

from pipeline.errors import (
    BadMagicError,
    SchemaError,
    SerializationError,
    TruncatedPayloadError,
    UnknownSchemaError,
)
from pipeline.events import Event
from pipeline.serde.binding import Binding, E
from pipeline.serde.catalog import SchemaCatalog
from pipeline.serde.codec import bad_magic_hint, read_event, write_body
from pipeline.serde.registry import RegistryPort
from pipeline.serde.schema import AvroSchema, from_json

MAGIC = b"\x00"
HEADER_SIZE = 5
_MAX_ID = 2**32 - 1

SubjectStrategy = Literal["topic", "record", "topic_record"]
# Confluent's TopicNameStrategy, RecordNameStrategy and TopicRecordNameStrategy, for values
# (keys are not Avro here). (topic, record full name) -> subject.
SUBJECT_STRATEGIES: Mapping[SubjectStrategy, Callable[[str, str], str]] = {
    "topic": lambda topic, _record: f"{topic}-value",
    "record": lambda _topic, record: record,
    "topic_record": lambda topic, record: f"{topic}-{record}",
}


class ConfluentCodec:
    """Registry-backed codec; the registry is called once per subject and schema, and per id."""

    def __init__(
        self, catalog: SchemaCatalog, registry: RegistryPort, subjects: SubjectStrategy = "topic"
    ) -> None:
        self._catalog = catalog
        self._registry = registry
        self._subject = SUBJECT_STRATEGIES[subjects]
        self._headers: dict[tuple[str, bytes], bytes] = {}
        self._writers: dict[int, AvroSchema] = {}

    def encode(self, event: Event, binding: Binding[Any], topic: str) -> bytes:
        header = self._headers.get((topic, binding.fingerprint))
        if header is None:
            header = self._register(topic, binding)
        out = BytesIO()
        out.write(header)
        write_body(out, event, binding)
        return out.getvalue()

    def close(self) -> None:
        pass  # nothing of its own: the registry client is shared for the process's life

    def decode(self, data: bytes, binding: Binding[E]) -> E:
        if data[:1] != MAGIC:
            raise self._bad_magic(data)
        if len(data) < HEADER_SIZE:
            raise TruncatedPayloadError(
                f"payload is {len(data)} bytes, shorter than the Confluent header"
            )
        schema_id = int.from_bytes(data[1:HEADER_SIZE], "big")
        writer = self._writers.get(schema_id) or self._fetch(schema_id)
        return read_event(data, HEADER_SIZE, writer, binding)

    def _register(self, topic: str, binding: Binding[Any]) -> bytes:
        subject = self._subject(topic, binding.schema.full_name)
        schema_id = self._registry.register(subject, binding.schema.json)
        if not 0 <= schema_id <= _MAX_ID:
            raise SerializationError(
                f"registry returned schema id {schema_id}, which does not fit 4 bytes"
            )
        self._writers.setdefault(schema_id, binding.schema)
        header = self._headers[(topic, binding.fingerprint)] = MAGIC + schema_id.to_bytes(4, "big")
        return header

    def _fetch(self, schema_id: int) -> AvroSchema:
        text = self._registry.schema_by_id(schema_id)
        try:
            schema = from_json(text, f"registry schema id {schema_id}")
        except SchemaError as exc:
            raise UnknownSchemaError(str(exc)) from None
        # Share the catalog's parsed copy when the registry holds one of our own schemas.
        known = self._catalog.by_fingerprint(schema.fingerprint)
        self._writers[schema_id] = schema = known if known is not None else schema
        return schema

    @staticmethod
    def _bad_magic(data: bytes) -> Exception:
        if not data:
            return TruncatedPayloadError("payload is empty")
        hint = bad_magic_hint(data)
        if data[:2] == b"\xc3\x01":
            hint += ", written without a schema registry"
        return BadMagicError(
            f"payload starts with {data[:2].hex(' ')}, expected 00 (Confluent wire format): {hint}"
        )
