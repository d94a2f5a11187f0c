"""Binding checks a model against its Avro record once, at startup, and lists every problem in
one readable message, so a mismatch never surfaces as a poison record in production."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from pydantic import BaseModel, Field

from pipeline.errors import DeclarationError, SchemaMismatchError, SchemaNotFoundError
from pipeline.events import Event
from pipeline.serde import SchemaCatalog, SingleObjectCodec

SCHEMAS: dict[str, Any] = {
    "uploaded.avsc": {
        "type": "record",
        "name": "VideoUploaded",
        "namespace": "video",
        "fields": [
            {"name": "video_id", "type": "string"},
            {"name": "size", "type": "long"},
            {"name": "title", "type": "long"},
        ],
    },
    "thumbnailed.avsc": {
        "type": "record",
        "name": "Thumbnailed",
        "namespace": "video",
        "fields": [
            {"name": "video_id", "type": "string"},
            {
                "name": "thumb",
                "type": {
                    "type": "record",
                    "name": "Thumb",
                    "fields": [{"name": "width", "type": "int"}, {"name": "url", "type": "string"}],
                },
            },
            {
                "name": "format",
                "type": {"type": "enum", "name": "Format", "symbols": ["JPEG", "PNG", "WEBP"]},
            },
            {"name": "caption", "type": ["null", "string"], "default": None},
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "retries", "type": "int", "default": 0},
        ],
    },
    "node.avsc": {
        "type": "record",
        "name": "Node",
        "namespace": "tree",
        "fields": [
            {"name": "value", "type": "long"},
            {"name": "next", "type": ["null", "Node"], "default": None},
        ],
    },
    "camel.avsc": {
        "type": "record",
        "name": "UserCreated",
        "namespace": "user",
        "fields": [{"name": "userId", "type": "string"}, {"name": "displayName", "type": "string"}],
    },
}


@pytest.fixture
def catalog(tmp_path: Path) -> SchemaCatalog:
    for name, schema in SCHEMAS.items():
        (tmp_path / name).write_text(json.dumps(schema))
    return SchemaCatalog.load(tmp_path)


class Format(StrEnum):
    JPEG = "JPEG"
    PNG = "PNG"
    WEBP = "WEBP"


class Thumb(BaseModel):
    width: int
    url: str


class Thumbnailed(Event, schema="video.Thumbnailed"):
    video_id: str
    thumb: Thumb
    format: Format
    caption: str | None = None
    at: datetime
    retries: int = 0


def test_a_matching_model_binds_to_its_schema(catalog: SchemaCatalog) -> None:
    """A model with a nested record, an enum, an optional, a timestamp and defaults binds."""
    binding = catalog.bind(Thumbnailed)
    assert binding.model is Thumbnailed
    assert binding.name == "video.Thumbnailed"
    assert binding.fingerprint == catalog.get("video.Thumbnailed").fingerprint


def test_binding_twice_returns_the_same_binding(catalog: SchemaCatalog) -> None:
    """Bindings are made once per model and cached by the catalog."""
    assert catalog.bind(Thumbnailed) is catalog.bind(Thumbnailed)


def test_a_mismatch_lists_every_problem_in_one_message(catalog: SchemaCatalog) -> None:
    """Missing, mistyped and extra fields are all reported, schema fields first."""

    class VideoUploaded(Event, schema="video.VideoUploaded"):
        video_id: str
        title: str
        extra: int

    with pytest.raises(SchemaMismatchError) as info:
        catalog.bind(VideoUploaded)
    assert str(info.value) == (
        "VideoUploaded vs video.VideoUploaded: field 'size' missing from model; "
        "field 'title' is str in the model but long in the schema; "
        "model field 'extra' is not in the schema"
    )


def test_problems_inside_a_nested_record_carry_the_field_path(catalog: SchemaCatalog) -> None:
    """A nested model is checked recursively and its problems name 'thumb.width'."""

    class BadThumb(BaseModel):
        width: str
        url: str

    class Bad(Event, schema="video.Thumbnailed"):
        video_id: str
        thumb: BadThumb
        format: Format
        caption: str | None = None
        at: datetime
        retries: int = 0

    with pytest.raises(
        SchemaMismatchError, match=r"field 'thumb\.width' is str in the model but int in the schema"
    ):
        catalog.bind(Bad)


def test_nullability_must_agree_both_ways(catalog: SchemaCatalog) -> None:
    """A nullable schema field needs X | None, and an optional model field needs a null branch."""

    class Bad(Event, schema="video.Thumbnailed"):
        video_id: str | None
        thumb: Thumb
        format: Format
        caption: str = ""
        at: datetime
        retries: int = 0

    with pytest.raises(SchemaMismatchError) as info:
        catalog.bind(Bad)
    message = str(info.value)
    assert "field 'video_id' is str | None in the model but string in the schema" in message
    assert "field 'caption' is str in the model but union[null, string] in the schema" in message


def test_enum_symbols_must_equal_the_model_values(catalog: SchemaCatalog) -> None:
    """A Literal that lacks a symbol and adds another is reported with both differences."""

    class Bad(Event, schema="video.Thumbnailed"):
        video_id: str
        thumb: Thumb
        format: Literal["JPEG", "PNG", "GIF"]
        caption: str | None = None
        at: datetime
        retries: int = 0

    with pytest.raises(SchemaMismatchError, match=r"the model lacks WEBP; the schema lacks GIF"):
        catalog.bind(Bad)


def test_a_schema_default_needs_an_equal_model_default(catalog: SchemaCatalog) -> None:
    """A defaulted schema field without a model default, or with a different one, is refused."""

    class Bad(Event, schema="video.Thumbnailed"):
        video_id: str
        thumb: Thumb
        format: Format
        caption: str | None
        at: datetime
        retries: int = 3

    with pytest.raises(SchemaMismatchError) as info:
        catalog.bind(Bad)
    message = str(info.value)
    assert "field 'caption' has a default in the schema but not in the model" in message
    assert "field 'retries' defaults to 0 in the schema but 3 in the model" in message


def test_a_model_cannot_bind_to_an_enum(catalog: SchemaCatalog) -> None:
    """Only record schemas can be bound."""

    class Bad(Event, schema="video.Format"):
        value: str

    with pytest.raises(
        SchemaMismatchError, match=r"a model binds to a record schema, and video\.Format is an enum"
    ):
        catalog.bind(Bad)


def test_a_model_naming_a_missing_schema_gets_a_suggestion(catalog: SchemaCatalog) -> None:
    """The schema name is looked up like catalog.get, with close matches on a miss."""

    class Typo(Event, schema="video.Thumbnailled"):
        video_id: str

    with pytest.raises(SchemaNotFoundError, match=r"did you mean 'video\.Thumbnailed'"):
        catalog.bind(Typo)


def test_a_plain_pydantic_model_cannot_be_bound(catalog: SchemaCatalog) -> None:
    """Binding needs an Event, which names its schema."""
    with pytest.raises(DeclarationError, match="Thumb names no schema"):
        catalog.bind(Thumb)  # type: ignore[type-var]


def test_a_recursive_schema_binds_without_looping(catalog: SchemaCatalog) -> None:
    """A linked-list record that refers to itself is checked once per level of nesting."""

    class Node(Event, schema="tree.Node"):
        value: int
        next: Node | None = None

    binding = catalog.bind(Node)
    codec = SingleObjectCodec(catalog)
    chain = Node(value=1, next=Node(value=2))
    assert codec.decode(codec.encode(chain, binding, "t"), binding) == chain


def test_aliases_map_camel_case_schema_fields(catalog: SchemaCatalog) -> None:
    """Field(alias="userId") binds user_id to the schema's userId, both ways."""

    class UserCreated(Event, schema="user.UserCreated"):
        user_id: str = Field(alias="userId")
        display_name: str = Field(alias="displayName")

    binding = catalog.bind(UserCreated)
    codec = SingleObjectCodec(catalog)
    event = UserCreated(userId="u1", displayName="Ann")
    assert codec.decode(codec.encode(event, binding, "t"), binding) == event


def test_a_flat_model_is_written_from_its_dict_without_a_copy(catalog: SchemaCatalog) -> None:
    """Without nested models, aliases or serializers, encoding reads the instance __dict__."""

    class Node(Event, schema="tree.Node"):
        value: int
        next: dict[str, Any] | None = None

    event = Node(value=1)
    assert catalog.bind(Node).to_record(event) is event.__dict__
    thumbnailed = Thumbnailed(
        video_id="v", thumb=Thumb(width=1, url="u"), format=Format.PNG, at=datetime(2024, 1, 1)
    )
    assert catalog.bind(Thumbnailed).to_record(thumbnailed) == thumbnailed.model_dump()


def test_a_decoded_record_is_validated_as_model_validate_would_unless_the_model_overrides_it(
    catalog: SchemaCatalog,
) -> None:
    """The per-record path calls the model's validator directly, with model_validate's result;
    a model with its own model_validate keeps getting it called."""
    codec = SingleObjectCodec(catalog)
    plain = catalog.bind(Thumbnailed)
    at = datetime(2026, 1, 2, tzinfo=UTC)
    event = Thumbnailed(video_id="v1", thumb=Thumb(url="u", width=1), format=Format.PNG, at=at)
    assert codec.decode(codec.encode(event, plain, "t"), plain) == event

    class Counted(Event, schema="video.Thumbnailed"):
        video_id: str
        thumb: Thumb
        format: Format
        caption: str | None = None
        at: datetime
        retries: int = 0
        calls: ClassVar[list[Any]] = []

        @classmethod
        def model_validate(cls, obj: Any, **kwargs: Any) -> Counted:
            cls.calls.append(obj)
            return super().model_validate(obj, **kwargs)

    counted = catalog.bind(Counted)
    sent = Counted(video_id="v1", thumb=Thumb(url="u", width=1), format=Format.PNG, at=at)
    data = codec.encode(sent, counted, "t")
    assert codec.decode(data, counted).video_id == "v1" and len(Counted.calls) == 1
