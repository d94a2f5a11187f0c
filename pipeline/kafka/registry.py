"""Confluent Schema Registry, as the serde package's ``RegistryPort``.

The client is confluent-kafka's own ``SchemaRegistryClient`` (``new_client`` hands out its
in-memory mock for a ``mock://`` URL, and the real HTTP client otherwise), so the test of this
module and production run the same code up to the HTTP call. Errors are turned into ours here:

- 409 (incompatible with the subject's versions, under the registry's compatibility level) and
  422 (not a valid schema) → ``SerializationError``: the registry will not take this schema;
- 404 for a schema id → ``UnknownSchemaError``: a record naming an id nobody issued is poison;
- 401/403 → ``KafkaError`` naming the user; anything else (unreachable, 5xx) → ``KafkaError``.

Messages name the registry by host only and never carry credentials.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pipeline.config import Settings
from pipeline.errors import ConfigError, KafkaError, SerializationError, UnknownSchemaError

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

SCHEMA_NOT_FOUND = (40403, 40400)
INCOMPATIBLE = 409
INVALID_SCHEMA = (422, 42201)
# A registry call blocks the stage's loop: bound it (attempts x timeout, with the client's backoff).
MAX_RETRIES = 2


def registry_config(settings: Settings) -> dict[str, Any]:
    """The client's configuration, in confluent-kafka's own key names."""
    conf: dict[str, Any] = {
        "url": settings.schema_registry_url or "",
        "timeout": settings.schema_registry_timeout_s,
        "max.retries": MAX_RETRIES,
    }
    if settings.schema_registry_username:
        password = settings.schema_registry_password
        secret = password.get_secret_value() if password is not None else ""
        conf["basic.auth.user.info"] = f"{settings.schema_registry_username}:{secret}"
    paths = {
        "ssl.ca.location": settings.schema_registry_ca_file,
        "ssl.certificate.location": settings.schema_registry_certificate_file,
        "ssl.key.location": settings.schema_registry_key_file,
    }
    conf.update({key: str(path) for key, path in paths.items() if path is not None})
    if settings.schema_registry_key_password is not None:
        conf["ssl.key.password"] = settings.schema_registry_key_password.get_secret_value()
    return conf


def _new_client(conf: dict[str, Any]) -> SchemaRegistryClient:
    try:
        from confluent_kafka.schema_registry import SchemaRegistryClient
    except ImportError as exc:  # installed without its dependencies (pip --no-deps, say)
        raise ConfigError(
            f"schema_registry_url is set, but confluent-kafka's registry client cannot be "
            f"imported ({exc}); reinstall with: pip install 'confluent-kafka[schemaregistry]'"
        ) from None
    try:
        return SchemaRegistryClient.new_client(conf)
    except (ValueError, TypeError, OSError) as exc:  # a bad URL, an unreadable cert or key
        # OSError texts name a file, never its contents; ValueError texts name keys, not values.
        raise ConfigError(f"schema registry settings: {exc}") from None


class ConfluentRegistry:
    def __init__(self, settings: Settings) -> None:
        self._client = _new_client(registry_config(settings))
        self._where = _host(settings.schema_registry_url or "")
        self._user = settings.schema_registry_username

    def register(self, subject: str, schema_json: str) -> int:
        from confluent_kafka.schema_registry import Schema
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            schema = Schema(schema_json, "AVRO")
            return int(self._client.register_schema(subject, schema))
        except SchemaRegistryError as exc:
            raise self._refused(f"register under subject {subject!r}", exc) from None
        except Exception as exc:  # httpx's transport errors: the registry is unreachable
            raise self._unreachable(exc) from None

    @lru_cache(maxsize=1024)  # noqa: B019 - one client per process, ids are immutable
    def schema_by_id(self, schema_id: int) -> str:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            return str(self._client.get_schema(schema_id).schema_str)
        except SchemaRegistryError as exc:
            if exc.error_code in SCHEMA_NOT_FOUND:
                # A record naming an id the registry never issued is poison, not an outage.
                raise UnknownSchemaError(f"schema id {schema_id} is not in the registry") from None
            raise self._refused(f"schema id {schema_id}", exc) from None
        except Exception as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: Exception) -> KafkaError:
        return KafkaError(f"schema registry {self._where}: {type(exc).__name__}: {exc}")

    def _refused(self, what: str, exc: Any) -> Exception:
        status, said = exc.http_status_code, exc.error_message
        where = f"schema registry {self._where}: {what}"
        if status == INCOMPATIBLE or exc.error_code == INCOMPATIBLE:
            return SerializationError(
                f"{where}: refused as incompatible with the subject's registered versions "
                f"(the registry's compatibility level decides; BACKWARD by default): {said}"
            )
        if status in INVALID_SCHEMA or exc.error_code in INVALID_SCHEMA:
            return SerializationError(f"{where}: refused as an invalid schema: {said}")
        if status in (401, 403):
            user = f"user {self._user!r}" if self._user else "no credentials"
            return KafkaError(f"{where}: authentication failed for {user} (HTTP {status})")
        return KafkaError(f"{where}: {exc}")


def _host(url: str) -> str:
    """The first URL's scheme, host and port: enough to say which registry, and nothing secret."""
    parts = urlsplit(url.split(",")[0].strip())
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"
