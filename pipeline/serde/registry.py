"""The schema-registry port the Confluent codec needs, and an in-memory implementation for tests.

The real client lives in the Kafka adapter; serde never imports confluent_kafka.
"""

from __future__ import annotations

from typing import Protocol

from pipeline.errors import UnknownSchemaError


class RegistryPort(Protocol):
    """What the Confluent codec asks of a schema registry.

    Contract for implementations: ``schema_by_id`` raises ``UnknownSchemaError`` for an id the
    registry does not have; ``register`` raises a ``SchemaError`` or ``SerializationError`` when
    the registry refuses the schema (say, as incompatible). Anything else they raise is taken
    as transient and propagates unchanged. Both are called once per schema: the codec caches.
    """

    def register(self, subject: str, schema_json: str) -> int:
        """Register (or look up) ``schema_json`` under ``subject``; return its global id."""
        ...

    def schema_by_id(self, schema_id: int) -> str:
        """The schema JSON registered under ``schema_id``."""
        ...


class InMemoryRegistry:
    """A registry in two dicts. Like Confluent's, ids are global: the same schema text gets the
    same id under every subject, and ids count up from 1."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._schemas: dict[int, str] = {}
        self._subjects: dict[str, list[int]] = {}

    def register(self, subject: str, schema_json: str) -> int:
        schema_id = self._ids.get(schema_json)
        if schema_id is None:
            schema_id = self._ids[schema_json] = len(self._ids) + 1
            self._schemas[schema_id] = schema_json
        versions = self._subjects.setdefault(subject, [])
        if schema_id not in versions:
            versions.append(schema_id)
        return schema_id

    def schema_by_id(self, schema_id: int) -> str:
        try:
            return self._schemas[schema_id]
        except KeyError:
            raise UnknownSchemaError(f"schema id {schema_id} is not registered") from None

    def versions(self, subject: str) -> list[int]:
        """The ids registered under ``subject``, oldest first."""
        return list(self._subjects.get(subject, ()))
