"""Confluent Schema Registry, as the serde package's ``RegistryPort``."""

from __future__ import annotations

from functools import lru_cache

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from pipeline.config import Settings
from pipeline.errors import KafkaError, UnknownSchemaError

SCHEMA_NOT_FOUND = 40403


class ConfluentRegistry:
    def __init__(self, settings: Settings) -> None:
        conf: dict[str, str] = {"url": settings.schema_registry_url or ""}
        if settings.schema_registry_password is not None:
            conf["basic.auth.user.info"] = settings.schema_registry_password.get_secret_value()
        self._client = SchemaRegistryClient(conf)

    def register(self, subject: str, schema_json: str) -> int:
        try:
            schema = Schema(schema_json, "AVRO")  # type: ignore[call-arg]  # attrs class, no stub
            return int(self._client.register_schema(subject, schema))
        except SchemaRegistryError as exc:
            raise KafkaError(f"schema registry: register {subject}: {exc}") from None

    @lru_cache(maxsize=1024)  # noqa: B019 - one client per process, ids are immutable
    def schema_by_id(self, schema_id: int) -> str:
        try:
            return str(self._client.get_schema(schema_id).schema_str)
        except SchemaRegistryError as exc:
            if exc.error_code == SCHEMA_NOT_FOUND:
                # A record naming an id the registry never issued is poison, not an outage.
                raise UnknownSchemaError(f"schema id {schema_id} is not in the registry") from None
            raise KafkaError(f"schema registry: schema id {schema_id}: {exc}") from None
