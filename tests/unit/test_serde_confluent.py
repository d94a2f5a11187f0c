"""The Confluent codec writes 00 + a 4-byte schema id + the Avro body, registers each schema once
per subject, fetches each writer schema once per id, and resolves other writers' versions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import BadMagicError, TruncatedPayloadError, UnknownSchemaError
from pipeline.events import Event
from pipeline.serde import ConfluentCodec, InMemoryRegistry, SchemaCatalog, SingleObjectCodec

ORDER_V1 = {
    "type": "record",
    "name": "OrderPlaced",
    "namespace": "shop",
    "fields": [{"name": "order_id", "type": "string"}, {"name": "cents", "type": "long"}],
}
ORDER_V2 = {
    **ORDER_V1,
    "fields": [*ORDER_V1["fields"], {"name": "currency", "type": "string", "default": "EUR"}],
}


class OrderPlaced(Event, schema="shop.OrderPlaced"):
    order_id: str
    cents: int


class OrderPlacedV2(Event, schema="shop.OrderPlaced"):
    order_id: str
    cents: int
    currency: str = "EUR"


class CountingRegistry(InMemoryRegistry):
    def __init__(self) -> None:
        super().__init__()
        self.registered: list[str] = []
        self.fetched: list[int] = []

    def register(self, subject: str, schema_json: str) -> int:
        self.registered.append(subject)
        return super().register(subject, schema_json)

    def schema_by_id(self, schema_id: int) -> str:
        self.fetched.append(schema_id)
        return super().schema_by_id(schema_id)


def load(directory: Path, schema: dict[str, Any]) -> SchemaCatalog:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "order.avsc").write_text(json.dumps(schema))
    return SchemaCatalog.load(directory)


@pytest.fixture
def catalog(tmp_path: Path) -> SchemaCatalog:
    return load(tmp_path, ORDER_V1)


def test_payloads_are_framed_with_the_registered_schema_id(catalog: SchemaCatalog) -> None:
    """Encoding registers under '<topic>-value' and writes 00, the id big-endian, then the body."""
    registry = InMemoryRegistry()
    registry.register("unrelated-value", '"string"')  # so our schema gets id 2, not 1
    binding = catalog.bind(OrderPlaced)
    data = ConfluentCodec(catalog, registry).encode(
        OrderPlaced(order_id="o1", cents=250), binding, "orders"
    )
    assert data[:5] == b"\x00\x00\x00\x00\x02"
    assert data[5:] == b"\x04o1\xf4\x03"
    assert registry.versions("orders-value") == [2]
    assert json.loads(registry.schema_by_id(2)) == json.loads(binding.schema.json)


def test_a_schema_is_registered_once_per_subject(catalog: SchemaCatalog) -> None:
    """Many events to two topics cost two register calls, and share one global id."""
    registry = CountingRegistry()
    codec = ConfluentCodec(catalog, registry)
    binding = catalog.bind(OrderPlaced)
    for topic in ("orders", "orders", "audit", "orders", "audit"):
        codec.encode(OrderPlaced(order_id="o1", cents=1), binding, topic)
    assert registry.registered == ["orders-value", "audit-value"]
    assert registry.versions("orders-value") == registry.versions("audit-value") == [1]


def test_round_trip_needs_no_fetch_for_a_schema_this_codec_registered(
    catalog: SchemaCatalog,
) -> None:
    """Decoding what this codec encoded uses the cached schema, without asking the registry."""
    registry = CountingRegistry()
    codec = ConfluentCodec(catalog, registry)
    binding = catalog.bind(OrderPlaced)
    event = OrderPlaced(order_id="o1", cents=250)
    assert codec.decode(codec.encode(event, binding, "orders"), binding) == event
    assert registry.fetched == []


def test_a_newer_writer_schema_is_fetched_once_and_resolved(tmp_path: Path) -> None:
    """A v1 reader decodes v2 records by fetching schema id 1 once; the added field is skipped."""
    registry = CountingRegistry()
    v2 = load(tmp_path / "v2", ORDER_V2)
    writer = ConfluentCodec(v2, registry)
    data = writer.encode(
        OrderPlacedV2(order_id="o1", cents=5, currency="USD"), v2.bind(OrderPlacedV2), "orders"
    )
    v1 = load(tmp_path / "v1", ORDER_V1)
    reader = ConfluentCodec(v1, registry)
    for _ in range(3):
        assert reader.decode(data, v1.bind(OrderPlaced)) == OrderPlaced(order_id="o1", cents=5)
    assert registry.fetched == [1]


def test_an_unknown_schema_id_is_an_unknown_schema_error(catalog: SchemaCatalog) -> None:
    """An id the registry does not have raises UnknownSchemaError naming the id."""
    codec = ConfluentCodec(catalog, InMemoryRegistry())
    with pytest.raises(UnknownSchemaError, match="schema id 7 is not registered"):
        codec.decode(b"\x00\x00\x00\x00\x07\x04o1\xf4\x03", catalog.bind(OrderPlaced))


def test_a_registry_schema_that_is_not_a_record_is_an_unknown_schema_error(
    catalog: SchemaCatalog,
) -> None:
    """A writer id pointing at a non-record schema cannot be read as an event."""
    registry = InMemoryRegistry()
    schema_id = registry.register("keys-key", '"string"')
    codec = ConfluentCodec(catalog, registry)
    with pytest.raises(
        UnknownSchemaError, match=f"registry schema id {schema_id}: expected a named Avro type"
    ):
        codec.decode(b"\x00" + schema_id.to_bytes(4, "big") + b"\x02a", catalog.bind(OrderPlaced))


def test_single_object_payloads_are_recognized_as_bad_magic(catalog: SchemaCatalog) -> None:
    """A registry-less payload on a registry topic is named as such."""
    binding = catalog.bind(OrderPlaced)
    data = SingleObjectCodec(catalog).encode(OrderPlaced(order_id="o1", cents=1), binding, "orders")
    with pytest.raises(BadMagicError) as info:
        ConfluentCodec(catalog, InMemoryRegistry()).decode(data, binding)
    assert str(info.value) == (
        "payload starts with c3 01, expected 00 (Confluent wire format): "
        "looks like Avro single-object encoding, written without a schema registry"
    )


def test_a_payload_shorter_than_the_header_is_truncated(catalog: SchemaCatalog) -> None:
    """Empty payloads and a cut schema id raise TruncatedPayloadError."""
    codec = ConfluentCodec(catalog, InMemoryRegistry())
    for data in (b"", b"\x00\x00\x01"):
        with pytest.raises(TruncatedPayloadError):
            codec.decode(data, catalog.bind(OrderPlaced))
