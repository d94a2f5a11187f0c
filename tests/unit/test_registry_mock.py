"""Registry mode through confluent-kafka's own client, on its ``mock://`` registry.

No schema registry server can run on this machine, so these tests are the evidence: they use the
same ``SchemaRegistryClient.new_client`` call, configuration and error handling as production,
and stop only where the mock answers instead of HTTP. One thing the mock does not do is enforce
compatibility (it accepts every schema), so the refusal test has it answer as a real registry
does (HTTP 409) and checks what the framework makes of that.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry.error import SchemaRegistryError

from pipeline.app import build_codec
from pipeline.config import Settings, load_settings
from pipeline.errors import ConfigError, KafkaError, SerializationError, UnknownSchemaError
from pipeline.events import Event
from pipeline.kafka.registry import ConfluentRegistry
from pipeline.serde import ConfluentCodec, SchemaCatalog
from pipeline.testing import MemoryBroker, MemoryTransport

ORDER_V1 = {
    "type": "record",
    "name": "OrderPlaced",
    "namespace": "shop",
    "fields": [{"name": "order_id", "type": "string"}, {"name": "cents", "type": "long"}],
}
# BACKWARD compatible: the added field has a default, so v2 readers can read v1 records.
ORDER_V2 = {
    **ORDER_V1,
    "fields": [*ORDER_V1["fields"], {"name": "currency", "type": "string", "default": "EUR"}],
}
# Not BACKWARD compatible: a v3 reader cannot read v1 records (no default for `channel`).
ORDER_V3 = {**ORDER_V1, "fields": [*ORDER_V1["fields"], {"name": "channel", "type": "string"}]}


class OrderPlaced(Event, schema="shop.OrderPlaced"):
    order_id: str
    cents: int


class OrderPlacedV2(Event, schema="shop.OrderPlaced"):
    order_id: str
    cents: int
    currency: str = "EUR"


class OrderPlacedV3(Event, schema="shop.OrderPlaced"):
    order_id: str
    cents: int
    channel: str


def catalog_of(directory: Path, schema: dict[str, Any]) -> SchemaCatalog:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "order.avsc").write_text(json.dumps(schema))
    return SchemaCatalog.load(directory)


def registry(**settings: Any) -> ConfluentRegistry:
    return ConfluentRegistry(Settings(schema_registry_url="mock://registry", **settings))


def test_an_event_round_trips_through_the_registry(tmp_path: Path) -> None:
    """Encoding registers v1 under orders-value and frames the id; decoding reads it back."""
    catalog = catalog_of(tmp_path, ORDER_V1)
    settings = Settings(schema_registry_url="mock://round-trip", schemas_dir=tmp_path)
    codec, _announce = build_codec(settings, catalog, MemoryTransport(MemoryBroker(), settings))
    binding = catalog.bind(OrderPlaced)
    event = OrderPlaced(order_id="o1", cents=250)
    data = codec.encode(event, binding, "orders")
    assert data[:1] == b"\x00"
    assert codec.decode(data, binding) == event
    assert isinstance(codec, ConfluentCodec)
    latest = codec._registry._client.get_latest_version("orders-value")  # type: ignore[attr-defined]
    assert latest.schema_id == int.from_bytes(data[1:5], "big")


def test_a_backward_compatible_evolution_reads_both_ways(tmp_path: Path) -> None:
    """v1 and v2 become versions 1 and 2 of one subject; each reader decodes the other's records."""
    shared = registry()
    v1, v2 = catalog_of(tmp_path / "v1", ORDER_V1), catalog_of(tmp_path / "v2", ORDER_V2)
    old, new = ConfluentCodec(v1, shared), ConfluentCodec(v2, shared)
    old_record = old.encode(OrderPlaced(order_id="o1", cents=5), v1.bind(OrderPlaced), "orders")
    new_record = new.encode(
        OrderPlacedV2(order_id="o2", cents=7, currency="USD"), v2.bind(OrderPlacedV2), "orders"
    )
    assert sorted(shared._client.get_versions("orders-value")) == [1, 2]  # the mock keeps a set
    # A fresh process on each version: nothing cached but what the registry answers.
    fresh_new, fresh_old = ConfluentCodec(v2, shared), ConfluentCodec(v1, shared)
    assert fresh_new.decode(old_record, v2.bind(OrderPlacedV2)) == OrderPlacedV2(
        order_id="o1", cents=5, currency="EUR"
    )
    assert fresh_old.decode(new_record, v1.bind(OrderPlaced)) == OrderPlaced(order_id="o2", cents=7)


def test_an_incompatible_schema_is_refused_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry's 409 for v3 is a SerializationError that says why; nothing is cached."""
    shared = registry()
    v1, v3 = catalog_of(tmp_path / "v1", ORDER_V1), catalog_of(tmp_path / "v3", ORDER_V3)
    ConfluentCodec(v1, shared).encode(OrderPlaced(order_id="o", cents=1), v1.bind(OrderPlaced), "o")
    calls: list[str] = []

    def refuse(subject: str, schema: Any, normalize_schemas: bool = False) -> int:
        calls.append(subject)  # what a real registry answers under BACKWARD compatibility:
        raise SchemaRegistryError(
            409, 409, "Schema being registered is incompatible with an earlier schema for "
            f'subject "{subject}"'
        )  # fmt: skip

    monkeypatch.setattr(shared._client, "register_schema", refuse)
    codec, event = ConfluentCodec(v3, shared), OrderPlacedV3(order_id="o", cents=1, channel="web")
    for _ in range(2):
        with pytest.raises(SerializationError) as info:
            codec.encode(event, v3.bind(OrderPlacedV3), "o")
    assert str(info.value).startswith(
        "schema registry mock://registry: register under subject 'o-value': refused as "
        "incompatible with the subject's registered versions"
    )
    assert calls == ["o-value", "o-value"]  # a refusal is not cached: a fixed registry is retried


@pytest.mark.parametrize(
    ("strategy", "subject"),
    [
        ("topic", "orders-value"),
        ("record", "shop.OrderPlaced"),
        ("topic_record", "orders-shop.OrderPlaced"),
    ],
)
def test_subject_name_strategies(tmp_path: Path, strategy: str, subject: str) -> None:
    """Each of Confluent's three strategies names the subject the way its Java class does."""
    catalog = catalog_of(tmp_path, ORDER_V1)
    settings = Settings(
        schema_registry_url="mock://subjects", schema_registry_subject_strategy=strategy
    )
    codec, _ = build_codec(settings, catalog, MemoryTransport(MemoryBroker(), settings))
    codec.encode(OrderPlaced(order_id="o", cents=1), catalog.bind(OrderPlaced), "orders")
    assert codec._registry._client.get_subjects() == [subject]  # type: ignore[attr-defined]


def test_basic_auth_reaches_the_client_and_the_password_stays_secret() -> None:
    """username:password become the client's basic auth; no repr or error shows the password."""
    shared = registry(schema_registry_username="svc", schema_registry_password="s3cret-pw")
    assert shared._client._rest_client.auth == ("svc", "s3cret-pw")
    settings = Settings(
        schema_registry_url="mock://r", schema_registry_username="svc",
        schema_registry_password="s3cret-pw",
    )  # fmt: skip
    assert "s3cret-pw" not in repr(settings)


def test_a_refused_login_names_the_user_not_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP 401 is a KafkaError saying authentication failed for the user."""
    shared = registry(schema_registry_username="svc", schema_registry_password="s3cret-pw")

    def unauthorized(schema_id: int, *args: Any, **kwargs: Any) -> Any:
        raise SchemaRegistryError(401, 40101, "Unauthorized")

    monkeypatch.setattr(shared._client, "get_schema", unauthorized)
    with pytest.raises(KafkaError, match="authentication failed for user 'svc'") as info:
        shared.schema_by_id(1)
    assert "s3cret-pw" not in str(info.value)


def test_an_id_the_registry_never_issued_is_an_unknown_schema() -> None:
    """The mock's 404 for an id is UnknownSchemaError: the record is poison, not an outage."""
    with pytest.raises(UnknownSchemaError, match="schema id 42 is not in the registry"):
        registry().schema_by_id(42)


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def test_tls_files_are_loaded_by_the_client(tmp_path: Path) -> None:
    """A CA bundle, a client certificate and its encrypted key are loaded at startup."""
    key, cert = tmp_path / "client.key", tmp_path / "client.pem"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-days", "1", "-subj", "/CN=registry-test",
        "-keyout", str(key), "-out", str(cert), "-passout", "pass:key-pw",
    )  # fmt: skip
    shared = registry(
        schema_registry_ca_file=cert,
        schema_registry_certificate_file=cert,
        schema_registry_key_file=key,
        schema_registry_key_password="key-pw",
    )
    context = shared._client._rest_client.verify
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "registry-test"),),)]


def test_an_unreadable_tls_file_is_a_config_error(tmp_path: Path) -> None:
    """A missing CA file fails at startup with a ConfigError, not at the first event."""
    with pytest.raises(ConfigError, match="schema registry settings"):
        registry(schema_registry_ca_file=tmp_path / "missing.pem")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PIPELINE_SCHEMA_REGISTRY_PASSWORD": "pw"}, "needs schema_registry_username"),
        ({"PIPELINE_SCHEMA_REGISTRY_KEY_FILE": "k.pem"}, "need schema_registry_certificate"),
        ({"PIPELINE_SCHEMA_REGISTRY_URL": "https://u:pw@sr:8081"}, "must not carry credentials"),
        ({"PIPELINE_SCHEMA_REGISTRY_SUBJECT_STRATEGY": "topics"}, "'topic', 'record' or"),
    ],
)
def test_incomplete_registry_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    """Half a credential, a key without its certificate, or a URL with credentials: ConfigError."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message) as info:
        load_settings()
    assert ":pw@" not in str(info.value)


def test_a_missing_registry_dependency_names_the_fix() -> None:
    """Without the client's extras (pip --no-deps), registry mode says what to install."""
    code = (
        "import sys; sys.modules['confluent_kafka.schema_registry'] = None\n"
        "from pipeline.config import Settings\n"
        "from pipeline.kafka.registry import ConfluentRegistry\n"
        "try:\n    ConfluentRegistry(Settings(schema_registry_url='mock://x'))\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.startswith("ConfigError schema_registry_url is set")
    assert "pip install 'confluent-kafka[schemaregistry]'" in out.stdout
