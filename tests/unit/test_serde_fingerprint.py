"""Fingerprints are CRC-64-AVRO (Rabin) of the Parsing Canonical Form, as the Avro spec defines,
cross-checked against an implementation written here from the spec rather than fastavro's."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.events import Event
from pipeline.serde import SchemaCatalog, SingleObjectCodec
from pipeline.serde.schema import fingerprint_of

# From the Avro spec's test data (share/test/data/schema-tests.txt), as signed 64-bit integers.
SPEC_VECTORS = {
    '"null"': 7195948357588979594,
    '"int"': 8247732601305521295,
    '{"name":"foo","type":"record","fields":[]}': -4824392279771201922,
}

EMPTY_64 = 0xC15D213AA4D7A795  # the spec's "fingerprint of the empty string"


def rabin(data: bytes) -> int:
    """The spec's reference algorithm: a table-driven CRC-64 with polynomial EMPTY_64."""
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (EMPTY_64 if fp & 1 else 0)
        table.append(fp)
    fp = EMPTY_64
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def le_bytes(value: int) -> bytes:
    return (value & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")


def test_the_reference_implementation_reproduces_the_spec_vectors() -> None:
    """The Rabin implementation in this test matches the Avro spec's published fingerprints."""
    for canonical, expected in SPEC_VECTORS.items():
        assert rabin(canonical.encode()) == expected & 0xFFFFFFFFFFFFFFFF


def test_fingerprints_are_the_spec_values_as_eight_little_endian_bytes() -> None:
    """fingerprint_of("int") is 8f 5c 39 3f 1a d5 75 72, the spec's value little-endian."""
    assert fingerprint_of('"int"') == bytes.fromhex("8f5c393f1ad57572")
    for canonical, expected in SPEC_VECTORS.items():
        assert fingerprint_of(canonical) == le_bytes(expected)


def test_a_catalog_schema_fingerprints_its_canonical_form(tmp_path: Path) -> None:
    """A record's fingerprint covers its canonical form, without docs, defaults or logical types."""
    schema = {
        "type": "record",
        "name": "Order",
        "namespace": "shop",
        "doc": "an order",
        "fields": [
            {"name": "id", "type": "string", "doc": "order id"},
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "note", "type": ["null", "string"], "default": None},
        ],
    }
    (tmp_path / "order.avsc").write_text(json.dumps(schema))
    order = SchemaCatalog.load(tmp_path).get("shop.Order")
    assert order.canonical_form == (
        '{"name":"shop.Order","type":"record","fields":[{"name":"id","type":"string"},'
        '{"name":"at","type":"long"},{"name":"note","type":["null","string"]}]}'
    )
    assert order.fingerprint == le_bytes(rabin(order.canonical_form.encode()))


def test_single_object_payloads_carry_the_writer_fingerprint(tmp_path: Path) -> None:
    """An encoded event starts with C3 01 and then its schema's 8 fingerprint bytes."""
    (tmp_path / "ping.avsc").write_text(
        '{"type":"record","name":"Ping","fields":[{"name":"n","type":"int"}]}'
    )

    class Ping(Event):
        n: int

    catalog = SchemaCatalog.load(tmp_path)
    data = SingleObjectCodec(catalog).encode(Ping(n=1), catalog.bind(Ping), "pings")
    canonical = '{"name":"Ping","type":"record","fields":[{"name":"n","type":"int"}]}'
    assert data[:10] == b"\xc3\x01" + le_bytes(rabin(canonical.encode()))
    assert data[10:] == b"\x02"  # zig-zag varint of 1
