"""Typed, frozen settings, loaded from (lowest to highest precedence) defaults, a TOML file,
``PIPELINE_*`` environment variables and the keyword arguments of ``load_settings``.

``KAFKA_BOOTSTRAP_SERVERS`` is honoured too (it is what Docker images and CI systems export).
Without either, the default bootstrap follows ``PIPELINE_KAFKA_BASE_PORT``, the port the local
broker (``make kafka-up``) listens on. Unknown TOML keys, and ``PIPELINE_*`` variables close to
a setting's name, are rejected with a "did you mean" hint, because a misspelt setting that is
silently ignored is worse than a crash at startup; a ``PIPELINE_*`` variable like no setting
(another tool's, say) is only warned about.

The precedence is pydantic-settings' own: ``Settings.settings_customise_sources`` ranks the
sources, and the file is read by its ``TomlConfigSettingsSource`` (``pipeline.configfile``).

librdkafka options that have no field here go in ``consumer_config`` / ``producer_config`` using
librdkafka's own dotted names; they are applied last and win. Connection options (security,
SASL, TLS) go in ``client_config`` or the typed ``security_protocol`` / ``sasl_*`` / ``ssl_*``
fields, because every client needs them alike (see ``pipeline.security``).
"""

from __future__ import annotations

import difflib
import logging
import os
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from pipeline import security
from pipeline.configfile import PipelineToml, config_file_in_use, reading
from pipeline.errors import ConfigError

log = logging.getLogger("pipeline.config")
ENV_PREFIX = "PIPELINE_"
LOCAL_HOST = "127.0.0.1"
LOCAL_BASE_PORT = 19092  # the local broker's (pipeline.localkafka), when unset
BASE_PORT_ENV = "PIPELINE_KAFKA_BASE_PORT"
# A stray PIPELINE_* variable this close to a setting's name (difflib's ratio) is taken for a
# misspelling and refused; one less alike is only warned about.
TYPO_CUTOFF = 0.75
# Read by other tools of this project (the local broker), not by Settings.
_FOREIGN_ENV = {
    "PIPELINE_KAFKA_VERSION",
    "PIPELINE_KAFKA_HOME",
    "PIPELINE_KAFKA_BASE_PORT",
    "PIPELINE_KAFKA_IMAGE",
    "PIPELINE_TEST_BROKER",
    "PIPELINE_CONFIG",
    "PIPELINE_LOG_LEVEL",
    "PIPELINE_LOG_FORMAT",
}


class Settings(BaseSettings):
    """Everything a worker, the publisher and the CLI need. Frozen: build a new one to change it."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, populate_by_name=True
    )

    bootstrap_servers: str = Field(
        default_factory=lambda: local_bootstrap(),
        validation_alias=AliasChoices(
            "bootstrap_servers", "PIPELINE_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"
        ),
        description="Kafka bootstrap servers, host:port[,host:port].",
    )
    schemas_dir: Path = Field(Path("schemas"), description="Directory holding the .avsc contract.")
    schema_registry_url: str | None = Field(
        None,
        description="Confluent Schema Registry URL; when set, the Confluent wire format is used.",
    )
    schema_registry_subject_strategy: Literal["topic", "record", "topic_record"] = Field(
        "topic",
        description="Registry subject per value: <topic>-value, <record name>, <topic>-<record>.",
    )
    schema_registry_username: str | None = Field(None, description="Registry basic-auth user.")
    schema_registry_password: SecretStr | None = Field(
        None, description="Registry basic-auth password (needs schema_registry_username)."
    )
    schema_registry_ca_file: Path | None = Field(
        None, description="CA bundle (file or directory) that signs the registry's certificate."
    )
    schema_registry_certificate_file: Path | None = Field(
        None, description="Client certificate (PEM) for mutual TLS to the registry."
    )
    schema_registry_key_file: Path | None = Field(
        None, description="Private key (PEM) of the client certificate."
    )
    schema_registry_key_password: SecretStr | None = None
    schema_registry_timeout_s: float = Field(
        10.0, gt=0, description="Longest wait for one registry request."
    )
    topic_prefix: str = Field(
        "", description="Prepended to every topic and group name (environment isolation)."
    )
    create_topics: bool = Field(True, description="Create missing topics at startup.")
    topic_partitions: int = Field(6, ge=1, description="Partitions of topics we create.")
    topic_replication: int = Field(1, ge=1, description="Replication factor of topics we create.")
    topic_min_insync_replicas: int | None = Field(
        None,
        ge=1,
        description="min.insync.replicas of topics we create; None: the broker's default.",
    )
    batch_size: int = Field(500, ge=1, le=100_000, description="Records fetched per consume call.")
    batch_timeout_s: float = Field(
        0.1, gt=0, description="Longest wait for a record when none is ready."
    )
    # One loop step per record costs more than the record while records trickle in (about
    # 200 us against 50-100 us on a loaded 2-core machine): a 4-stage chain at 25% of the
    # drain rate then needed more CPU than a shared machine had, and its latency grew without
    # bound. 5 ms, the producers' linger, halved the loop's CPU per record at moderate rates.
    batch_linger_s: float = Field(
        0.005,
        ge=0,
        le=1,
        description="After waiting for a first record, hold it this long so that those just "
        "behind it come in the same batch (0: hand it on at once). Records already waiting "
        "are never held.",
    )
    commit_interval_s: float = Field(
        1.0, gt=0, description="How often completed offsets are committed."
    )
    shutdown_timeout_s: float = Field(30.0, gt=0, description="Grace period on SIGTERM/SIGINT.")
    transaction_retry_timeout_s: float = Field(
        300.0,
        gt=0,
        description="How long an exactly-once stage keeps retrying a transaction call while "
        "the broker is away (a restart): init_transactions at startup, a commit or abort that "
        "cannot finish in the loop. Then it stops (exit 1).",
    )
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    idempotency_url: str = Field(
        "sqlite:///.pipeline/idempotency.db",
        description="Idempotency store for stages that declare one (sqlite:/// or postgresql://).",
    )
    jobs_store: Path = Field(
        Path(".pipeline/jobs.sqlite3"),
        description="SQLite file of the local job view (pipeline.jobs lookups, pipeline job).",
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Serve Prometheus metrics on this port (0: any free one); None: off.",
    )
    consumer_config: dict[str, str] = Field(default_factory=dict)
    producer_config: dict[str, str] = Field(default_factory=dict)
    # -- connection security: every client gets these (pipeline.security) ------------------
    security_protocol: security.Protocol = "PLAINTEXT"
    sasl_mechanism: security.Mechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = Field(None, description="File holding the SASL password.")
    ssl_ca_file: Path | None = Field(None, description="CA bundle (PEM) to verify brokers by.")
    ssl_certificate_file: Path | None = Field(None, description="Client certificate (mTLS).")
    ssl_key_file: Path | None = Field(None, description="Client private key (mTLS).")
    ssl_key_password: SecretStr | None = None
    ssl_key_password_file: Path | None = None
    client_config: dict[str, str] = Field(
        default_factory=dict, description="librdkafka options for every client (dotted names)."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Highest first: keyword arguments, the environment, then the TOML file that
        ``load_settings`` is reading (none when Settings is built directly)."""
        sources = (init_settings, env_settings, dotenv_settings, file_secret_settings)
        path = config_file_in_use()
        return sources if path is None else (*sources, PipelineToml(settings_cls, path))

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers_look_like_host_port(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"{server!r} is not host:port")
        return value

    @model_validator(mode="after")
    def _min_isr_fits_replication(self) -> Settings:
        # A topic whose min ISR exceeds its replicas rejects every acks=all write.
        if (self.topic_min_insync_replicas or 0) > self.topic_replication:
            raise ValueError(
                f"topic_min_insync_replicas ({self.topic_min_insync_replicas}) cannot exceed "
                f"topic_replication ({self.topic_replication})"
            )
        return self

    @model_validator(mode="after")
    def _registry_settings_are_whole(self) -> Settings:
        # Half a credential fails only at the first registry call, mid-stream: refuse it here.
        if self.schema_registry_password is not None and not self.schema_registry_username:
            raise ValueError("schema_registry_password needs schema_registry_username")
        key_set = self.schema_registry_key_file or self.schema_registry_key_password
        if key_set and self.schema_registry_certificate_file is None:
            raise ValueError(
                "schema_registry_key_file/_key_password need schema_registry_certificate_file"
            )
        # Credentials in the URL would show in every repr and error that names it.
        urls = (self.schema_registry_url or "").split(",")
        if any("@" in urlsplit(url.strip()).netloc for url in urls):
            raise ValueError(
                "schema_registry_url must not carry credentials; set "
                "schema_registry_username and schema_registry_password"
            )
        return self

    @field_validator("security_protocol", "sasl_mechanism", mode="before")
    @classmethod
    def _upper_case(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _connection_fits(self) -> Settings:
        security.check(self)  # raises ConfigError: one line, naming fields, never a secret
        return self

    def __repr_args__(self) -> Any:
        # A password typed into a *_config dict must not show up where Settings is printed.
        for name, value in super().__repr_args__():
            yield name, security.redact(value) if name and name.endswith("_config") else value

    @field_validator("consumer_config", "producer_config", "client_config", mode="before")
    @classmethod
    def _stringify_values(cls, value: Any) -> Any:
        # librdkafka takes strings; TOML gives ints and bools. Normalise so both spell the same.
        if isinstance(value, dict):
            return {
                str(k): (str(v).lower() if isinstance(v, bool) else str(v))
                for k, v in value.items()
            }
        return value

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def topic_config(self) -> dict[str, str]:
        """Topic-level configs for every topic we create (on top of per-topic ones)."""
        if self.topic_min_insync_replicas is None:
            return {}
        return {"min.insync.replicas": str(self.topic_min_insync_replicas)}


def local_bootstrap() -> str:
    """The local broker's address: its first node listens on ``PIPELINE_KAFKA_BASE_PORT``."""
    raw = os.environ.get(BASE_PORT_ENV, "").strip()
    if not raw:
        return f"{LOCAL_HOST}:{LOCAL_BASE_PORT}"
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"{BASE_PORT_ENV} must be a port number, got {raw!r}")
    return f"{LOCAL_HOST}:{int(raw)}"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build Settings, turning every kind of bad input into one readable ConfigError."""
    if config_file is None and os.environ.get("PIPELINE_CONFIG"):
        config_file = Path(os.environ["PIPELINE_CONFIG"])
    _check_environment()
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} does not exist")
    try:
        with reading(config_file):
            return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, config_file)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from None
    except SettingsError as exc:  # an environment value that is not valid JSON, say
        raise ConfigError(_describe_source_error(exc)) from None


def _check_environment() -> None:
    """Refuse a ``PIPELINE_*`` variable that looks like a misspelt setting; warn about one
    that looks like none (it may belong to another tool, or be left over)."""
    for name in sorted(os.environ):
        if not name.startswith(ENV_PREFIX) or name in _FOREIGN_ENV:
            continue
        field = name[len(ENV_PREFIX) :].lower()
        if field in Settings.model_fields:
            continue
        if _closest(field, TYPO_CUTOFF):
            raise ConfigError(f"unknown environment variable {name}{_hint(field, env=True)}")
        log.warning("ignoring environment variable %s: no such setting%s", name,
                    _hint(field, env=True))  # fmt: skip


def _closest(key: str, cutoff: float = 0.6) -> str | None:
    match = difflib.get_close_matches(key.lower(), list(Settings.model_fields), 1, cutoff)
    return match[0] if match else None


def _hint(key: str, *, env: bool = False) -> str:
    match = _closest(key)
    if match is None:
        return ""
    return f" (did you mean {ENV_PREFIX + match.upper() if env else repr(match)}?)"


def _describe_source_error(exc: SettingsError) -> str:
    # pydantic-settings parses dict-valued variables as JSON, and reports a failure as 'error
    # parsing value for field "x" from source "..."', with the JSONDecodeError as the cause.
    reason = f": {exc.__cause__}" if exc.__cause__ else ""
    for name in Settings.model_fields:
        if f'field "{name}"' in str(exc):
            return (
                f"environment variable {ENV_PREFIX + name.upper()} is not valid JSON{reason} "
                '(expected an object, e.g. {"client.rack": "eu-1a"})'
            )
    return f"invalid settings: {exc}{reason}"


def _describe(exc: ValidationError, source: Path | None) -> str:
    where = f" (from {source} and the environment)" if source else ""
    lines = [f"invalid settings{where}:"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "settings"
        lines.append(f"  {field}: {err['msg']}")
    return "\n".join(lines)
