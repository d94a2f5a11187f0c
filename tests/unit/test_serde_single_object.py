"""The registry-less codec round-trips every supported type, resolves schema evolution both
ways through its resolver, and turns every bad payload into one of our DecodeErrors without
quoting it."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import pytest
from pydantic import BaseModel, Field

from pipeline.errors import (
    BadMagicError,
    DecodeError,
    EventValidationError,
    SerializationError,
    TruncatedPayloadError,
    UnknownSchemaError,
)
from pipeline.events import Event
from pipeline.serde import SchemaCatalog, SingleObjectCodec

EVERYTHING = {
    "type": "record",
    "name": "Everything",
    "namespace": "test",
    "fields": [
        {"name": "text", "type": "string"},
        {"name": "small", "type": "int"},
        {"name": "big", "type": "long"},
        {"name": "ratio", "type": "float"},
        {"name": "precise", "type": "double"},
        {"name": "flag", "type": "boolean"},
        {"name": "blob", "type": "bytes"},
        {"name": "digest", "type": {"type": "fixed", "name": "Digest", "size": 4}},
        {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN"]}},
        {"name": "mood", "type": {"type": "enum", "name": "Mood", "symbols": ["HAPPY", "SAD"]}},
        {"name": "maybe", "type": ["null", "string"], "default": None},
        {"name": "absent", "type": ["null", "long"], "default": None},
        {"name": "numbers", "type": {"type": "array", "items": "long"}},
        {"name": "labels", "type": {"type": "map", "values": "string"}},
        {
            "name": "point",
            "type": {
                "type": "record",
                "name": "Point",
                "fields": [{"name": "x", "type": "double"}, {"name": "y", "type": "double"}],
            },
        },
        {"name": "path", "type": {"type": "array", "items": "Point"}},
        {"name": "raw", "type": "Point"},
        {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "at_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "at_us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "clock", "type": {"type": "int", "logicalType": "time-millis"}},
        {
            "name": "price",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 8, "scale": 2},
        },
    ],
}

PROFILE_V1 = {
    "type": "record",
    "name": "Profile",
    "namespace": "evo",
    "fields": [{"name": "user_id", "type": "string"}, {"name": "name", "type": "string"}],
}
PROFILE_V2 = {
    **PROFILE_V1,
    "fields": [*PROFILE_V1["fields"], {"name": "plan", "type": "string", "default": "free"}],
}
COUNTER = {
    "type": "record",
    "name": "Counter",
    "namespace": "test",
    "fields": [{"name": "count", "type": "long"}],
}


class Color(str, Enum):  # noqa: UP042 - the pre-StrEnum spelling must work too
    RED = "RED"
    GREEN = "GREEN"


class Point(BaseModel):
    x: float
    y: float


class Everything(Event, schema="test.Everything"):
    text: str
    small: int
    big: int
    ratio: float
    precise: float
    flag: bool
    blob: bytes
    digest: bytes
    color: Color
    mood: Literal["HAPPY", "SAD"]
    maybe: str | None = None
    absent: int | None = None
    numbers: list[int]
    labels: dict[str, str]
    point: Point
    path: list[Point]
    raw: dict[str, Any]
    id: UUID
    at_ms: datetime
    at_us: datetime
    day: date
    clock: time
    price: Decimal


class ProfileV1(Event, schema="evo.Profile"):
    user_id: str
    name: str


class ProfileV2(Event, schema="evo.Profile"):
    user_id: str
    name: str
    plan: str = "free"


class Counter(Event, schema="test.Counter"):
    count: int


class PositiveCounter(Event, schema="test.Counter"):
    count: int = Field(gt=0)


def load(directory: Path, *schemas: dict[str, Any]) -> SchemaCatalog:
    directory.mkdir(parents=True, exist_ok=True)
    for schema in schemas:
        (directory / f"{schema['name']}.avsc").write_text(json.dumps(schema))
    return SchemaCatalog.load(directory)


@pytest.fixture
def catalog(tmp_path: Path) -> SchemaCatalog:
    return load(tmp_path, EVERYTHING, PROFILE_V1, COUNTER)


@pytest.fixture
def codec(catalog: SchemaCatalog) -> SingleObjectCodec:
    return SingleObjectCodec(catalog)


def everything() -> Everything:
    return Everything(
        text="héllo",
        small=-7,
        big=2**40,
        ratio=0.5,
        precise=3.141592653589793,
        flag=True,
        blob=b"\x00\xff",
        digest=b"abcd",
        color=Color.GREEN,
        mood="SAD",
        maybe="here",
        numbers=[1, -2, 3],
        labels={"k": "v"},
        point=Point(x=1.0, y=2.0),
        path=[Point(x=0.0, y=0.0), Point(x=1.5, y=-1.5)],
        raw={"x": 9.0, "y": 8.0},
        id=UUID("12345678-1234-5678-1234-567812345678"),
        at_ms=datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC),
        at_us=datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
        day=date(2024, 2, 29),
        clock=time(23, 59, 58, 999000),
        price=Decimal("123456.78"),
    )


def test_every_supported_type_round_trips(catalog: SchemaCatalog, codec: SingleObjectCodec) -> None:
    """An event with every supported Avro type decodes equal to what was encoded."""
    binding = catalog.bind(Everything)
    event = everything()
    assert codec.decode(codec.encode(event, binding, "things"), binding) == event


def test_a_truncated_body_is_a_truncated_payload(
    catalog: SchemaCatalog, codec: SingleObjectCodec
) -> None:
    """Cutting the body short anywhere raises TruncatedPayloadError."""
    binding = catalog.bind(Everything)
    data = codec.encode(everything(), binding, "things")
    for end in (10, 11, len(data) // 2, len(data) - 1):
        with pytest.raises(TruncatedPayloadError, match="body ends early"):
            codec.decode(data[:end], binding)


def test_trailing_bytes_after_the_record_are_refused(
    catalog: SchemaCatalog, codec: SingleObjectCodec
) -> None:
    """Bytes left over after a complete record mean the payload is not what it claims."""
    binding = catalog.bind(Counter)
    data = codec.encode(Counter(count=1), binding, "counts")
    with pytest.raises(
        TruncatedPayloadError, match=r"2 trailing bytes after the test\.Counter record"
    ):
        codec.decode(data + b"\x00\x00", binding)


def test_a_payload_shorter_than_the_header_is_truncated(
    catalog: SchemaCatalog, codec: SingleObjectCodec
) -> None:
    """Empty payloads, a lone magic byte and a cut fingerprint are all TruncatedPayloadError."""
    binding = catalog.bind(Counter)
    for data in (b"", b"\xc3", b"\xc3\x01\x01\x02"):
        with pytest.raises(TruncatedPayloadError):
            codec.decode(data, binding)


def test_confluent_framing_is_recognized_as_bad_magic(
    catalog: SchemaCatalog, codec: SingleObjectCodec
) -> None:
    """A payload starting 00 is named as Confluent wire format, with a hint about the registry."""
    with pytest.raises(BadMagicError) as info:
        codec.decode(b"\x00\x00\x00\x00\x07\x02", catalog.bind(Counter))
    assert str(info.value) == (
        "payload starts with 00 00, expected c3 01 (Avro single-object encoding): "
        "looks like Confluent wire format; is a schema registry configured?"
    )


def test_json_is_recognized_as_bad_magic(catalog: SchemaCatalog, codec: SingleObjectCodec) -> None:
    """A JSON payload is reported as JSON, quoting only its first two bytes."""
    with pytest.raises(BadMagicError, match=r"starts with 7b 22, .*looks like JSON") as info:
        codec.decode(b'{"count": 12345}', catalog.bind(Counter))
    assert "12345" not in str(info.value)


def test_an_unknown_fingerprint_is_reported_in_hex(
    catalog: SchemaCatalog, codec: SingleObjectCodec
) -> None:
    """A writer schema found nowhere raises UnknownSchemaError naming its fingerprint."""
    with pytest.raises(
        UnknownSchemaError, match="writer schema 0102030405060708 is not in the catalog"
    ):
        codec.decode(b"\xc3\x01\x01\x02\x03\x04\x05\x06\x07\x08\x02", catalog.bind(Counter))


def test_values_the_model_rejects_are_summarized_without_the_values(
    catalog: SchemaCatalog, codec: SingleObjectCodec
) -> None:
    """A decoded record the model refuses raises EventValidationError naming field and rule only."""
    data = codec.encode(Counter(count=-98765), catalog.bind(Counter), "counts")
    with pytest.raises(EventValidationError) as info:
        codec.decode(data, catalog.bind(PositiveCounter))
    message = str(info.value)
    assert message == (
        "PositiveCounter rejects the decoded test.Counter record: "
        "count: Input should be greater than 0 [greater_than]"
    )
    assert "98765" not in message and info.value.__cause__ is None


def test_a_corrupt_body_is_a_decode_error(catalog: SchemaCatalog, codec: SingleObjectCodec) -> None:
    """A body with an impossible enum index raises DecodeError, not fastavro's IndexError."""
    binding = catalog.bind(Everything)
    data = bytearray(codec.encode(everything(), binding, "things"))
    color_at = data.index(b"abcd") + 4  # the enum index follows the fixed digest
    data[color_at] = 0x7E
    with pytest.raises(DecodeError, match=r"not a valid test.Everything record \(IndexError\)"):
        codec.decode(bytes(data), binding)


def test_an_event_of_another_model_cannot_be_encoded(
    catalog: SchemaCatalog, codec: SingleObjectCodec
) -> None:
    """Encoding with a binding for a different model raises SerializationError."""
    with pytest.raises(
        SerializationError, match="cannot encode a ProfileV1 with the binding for Counter"
    ):
        codec.encode(ProfileV1(user_id="u", name="n"), catalog.bind(Counter), "counts")


def test_a_value_avro_cannot_hold_is_a_serialization_error(
    catalog: SchemaCatalog, codec: SingleObjectCodec
) -> None:
    """A 3-byte digest for a 4-byte fixed raises SerializationError wrapping fastavro's error."""
    event = everything().model_copy(update={"digest": b"abc"})
    with pytest.raises(
        SerializationError, match=r"cannot encode Everything as test\.Everything: ValueError"
    ):
        codec.encode(event, catalog.bind(Everything), "things")


def test_an_old_reader_decodes_a_newer_writer_through_the_resolver(tmp_path: Path) -> None:
    """Reader v1, writer v2 with an added defaulted field: the field is skipped."""
    v2 = load(tmp_path / "v2", PROFILE_V2)
    v1 = load(tmp_path / "v1", PROFILE_V1)
    data = SingleObjectCodec(v2).encode(
        ProfileV2(user_id="u1", name="Ann", plan="pro"), v2.bind(ProfileV2), "p"
    )
    v2_schema = v2.get("evo.Profile")
    reader = SingleObjectCodec(v1, resolver={v2_schema.fingerprint: v2_schema.json}.get)
    assert reader.decode(data, v1.bind(ProfileV1)) == ProfileV1(user_id="u1", name="Ann")


def test_a_new_reader_fills_a_default_the_older_writer_lacked(tmp_path: Path) -> None:
    """Reader v2, writer v1: the added field takes its schema default."""
    v1 = load(tmp_path / "v1", PROFILE_V1)
    v2 = load(tmp_path / "v2", PROFILE_V2)
    data = SingleObjectCodec(v1).encode(
        ProfileV1(user_id="u1", name="Ann"), v1.bind(ProfileV1), "p"
    )
    v1_schema = v1.get("evo.Profile")
    reader = SingleObjectCodec(v2, resolver={v1_schema.fingerprint: v1_schema.json}.get)
    assert reader.decode(data, v2.bind(ProfileV2)) == ProfileV2(
        user_id="u1", name="Ann", plan="free"
    )


def test_resolved_schemas_are_cached(tmp_path: Path) -> None:
    """The resolver is asked once per fingerprint, however many records carry it."""
    v1, v2 = load(tmp_path / "v1", PROFILE_V1), load(tmp_path / "v2", PROFILE_V2)
    data = SingleObjectCodec(v1).encode(
        ProfileV1(user_id="u1", name="Ann"), v1.bind(ProfileV1), "p"
    )
    asked: list[bytes] = []

    def resolver(fingerprint: bytes) -> str:
        asked.append(fingerprint)
        return v1.get("evo.Profile").json

    reader = SingleObjectCodec(v2, resolver=resolver)
    for _ in range(3):
        reader.decode(data, v2.bind(ProfileV2))
    assert asked == [v1.get("evo.Profile").fingerprint]


def test_closing_the_codec_closes_a_resolver_that_can_be_closed(tmp_path: Path) -> None:
    """The codec owns its resolver: close() releases one with a close (a schema-topic reader);
    a plain function is left alone."""
    catalog = load(tmp_path, PROFILE_V1)

    class Reader:
        closed = 0

        def __call__(self, fingerprint: bytes) -> str | None:
            return None

        def close(self) -> None:
            self.closed += 1

    reader = Reader()
    SingleObjectCodec(catalog, resolver=reader).close()
    assert reader.closed == 1
    SingleObjectCodec(catalog, resolver=lambda fp: None).close()
    SingleObjectCodec(catalog).close()


def test_a_resolver_answer_with_the_wrong_fingerprint_is_refused(tmp_path: Path) -> None:
    """A resolver returning a schema that does not hash to the asked fingerprint is not trusted."""
    v1, v2 = load(tmp_path / "v1", PROFILE_V1), load(tmp_path / "v2", PROFILE_V2)
    data = SingleObjectCodec(v1).encode(
        ProfileV1(user_id="u1", name="Ann"), v1.bind(ProfileV1), "p"
    )
    reader = SingleObjectCodec(v2, resolver=lambda fp: json.dumps(COUNTER))
    with pytest.raises(
        UnknownSchemaError, match=r"the resolver returned test\.Counter, whose fingerprint is"
    ):
        reader.decode(data, v2.bind(ProfileV2))


def test_an_incompatible_writer_is_a_decode_error(tmp_path: Path) -> None:
    """A writer lacking a field the reader has without a default cannot be resolved."""
    v1 = load(tmp_path / "v1", PROFILE_V1)
    strict_v2 = {
        **PROFILE_V1,
        "fields": [*PROFILE_V1["fields"], {"name": "plan", "type": "string"}],
    }
    v2 = load(tmp_path / "v2", strict_v2)

    class StrictV2(Event, schema="evo.Profile"):
        user_id: str
        name: str
        plan: str

    data = SingleObjectCodec(v1).encode(
        ProfileV1(user_id="u1", name="Ann"), v1.bind(ProfileV1), "p"
    )
    v1_schema = v1.get("evo.Profile")
    reader = SingleObjectCodec(v2, resolver={v1_schema.fingerprint: v1_schema.json}.get)
    with pytest.raises(DecodeError, match=r"cannot be read as evo\.Profile"):
        reader.decode(data, v2.bind(StrictV2))
