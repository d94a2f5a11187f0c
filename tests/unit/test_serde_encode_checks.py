"""Encoding refuses integers their Avro type cannot hold, naming the field and not the value, and
writes a naive datetime in a timestamp field as UTC whatever the process's time zone: with both
wire formats, at any depth (nested and optional records, arrays, maps, recursive types), and
through the Publisher."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from pipeline.config import Settings
from pipeline.errors import SerializationError
from pipeline.events import Event
from pipeline.publisher import Publisher
from pipeline.serde import (
    Codec,
    ConfluentCodec,
    InMemoryRegistry,
    SchemaCatalog,
    SingleObjectCodec,
)
from pipeline.stage import Topic

TIMESTAMP_MICROS = {"type": "long", "logicalType": "timestamp-micros"}
MEDIA = {
    "type": "record",
    "name": "Media",
    "namespace": "test",
    "fields": [
        {"name": "width", "type": "int"},
        {"name": "size", "type": "long"},
        {"name": "rating", "type": ["null", "int"], "default": None},
        {
            "name": "video",
            "type": {
                "type": "record",
                "name": "Video",
                "fields": [
                    {"name": "width", "type": "int"},
                    {"name": "taken_at", "type": ["null", TIMESTAMP_MICROS], "default": None},
                ],
            },
        },
        {"name": "preview", "type": ["null", "Video"], "default": None},
        {"name": "frames", "type": {"type": "array", "items": "Video"}},
        {"name": "sizes", "type": {"type": "array", "items": "long"}},
        {"name": "counts", "type": {"type": "map", "values": "int"}},
        {"name": "either", "type": ["null", "int", "string"], "default": None},
    ],
}
TREE = {
    "type": "record",
    "name": "Tree",
    "namespace": "test",
    "fields": [
        {
            "name": "root",
            "type": {
                "type": "record",
                "name": "Node",
                "fields": [
                    {"name": "value", "type": "int"},
                    {"name": "children", "type": {"type": "array", "items": "Node"}},
                ],
            },
        }
    ],
}
STAMPED = {
    "type": "record",
    "name": "Stamped",
    "namespace": "test",
    "fields": [
        {"name": "at_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "at_us", "type": TIMESTAMP_MICROS},
        {"name": "wall", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
        {"name": "videos", "type": {"type": "array", "items": "test.Video"}},
        {"name": "by_name", "type": {"type": "map", "values": TIMESTAMP_MICROS}},
    ],
}


class Video(BaseModel):
    width: int
    taken_at: datetime | None = None


class Media(Event, schema="test.Media"):
    width: int
    size: int
    rating: int | None = None
    video: Video
    preview: Video | None = None
    frames: list[Video] = Field(default_factory=list)
    sizes: list[int] = Field(default_factory=list)
    counts: dict[str, int] = Field(default_factory=dict)
    either: int | str | None = None


class Node(BaseModel):
    value: int
    children: list[Node] = Field(default_factory=list)


class Tree(Event, schema="test.Tree"):
    root: Node


class Stamped(Event, schema="test.Stamped"):
    at_ms: datetime
    at_us: datetime
    wall: datetime
    videos: list[Video] = Field(default_factory=list)
    by_name: dict[str, datetime] = Field(default_factory=dict)


@pytest.fixture
def catalog(tmp_path: Path) -> SchemaCatalog:
    for schema in (MEDIA, TREE, STAMPED):
        (tmp_path / f"{schema['name']}.avsc").write_text(json.dumps(schema))
    return SchemaCatalog.load(tmp_path)


@pytest.fixture(params=["single-object", "confluent"])
def codec(request: pytest.FixtureRequest, catalog: SchemaCatalog) -> Codec:
    if request.param == "confluent":
        return ConfluentCodec(catalog, InMemoryRegistry())
    return SingleObjectCodec(catalog)


@pytest.fixture
def new_york() -> Iterator[None]:
    """The process runs in a zone five hours behind UTC in winter (as the publisher that sent
    midnight as 05:00Z did)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


def media(**changes: Any) -> Media:
    fields: dict[str, Any] = {
        "width": 1920,
        "size": 10**12,
        "video": Video(width=1920),
        "frames": [Video(width=1), Video(width=2)],
        "sizes": [1, 2, 3],
        "counts": {"a": 1},
    }
    return Media(**{**fields, **changes})


OUT_OF_RANGE = [
    pytest.param({"width": 2**31}, "width", "int", id="int-too-big"),
    pytest.param({"width": -(2**31) - 1}, "width", "int", id="int-too-small"),
    pytest.param({"width": 99999999999}, "width", "int", id="the-reported-width"),
    pytest.param({"size": 2**63}, "size", "long", id="long-too-big"),
    pytest.param({"size": -(2**63) - 1}, "size", "long", id="long-too-small"),
    pytest.param({"rating": 2**31}, "rating", "int", id="optional-int"),
    pytest.param({"video": Video(width=2**31)}, "video.width", "int", id="nested-record"),
    pytest.param({"preview": Video(width=2**31)}, "preview.width", "int", id="optional-record"),
    pytest.param(
        {"frames": [Video(width=1), Video(width=2**40)]}, "frames[1].width", "int", id="array"
    ),
    pytest.param({"sizes": [1, 2, 2**64]}, "sizes[2]", "long", id="array-of-longs"),
    pytest.param({"counts": {"secret-key": 2**31}}, "counts{}", "int", id="map"),
    pytest.param({"either": 2**31}, "either", "int", id="union-of-int-and-string"),
]


@pytest.mark.parametrize(("changes", "path", "avro_type"), OUT_OF_RANGE)
def test_an_integer_outside_its_avro_type_is_refused_naming_the_field(
    catalog: SchemaCatalog, codec: Codec, changes: dict[str, Any], path: str, avro_type: str
) -> None:
    """The message names the field's path and its Avro type, and quotes neither value nor key."""
    with pytest.raises(SerializationError) as caught:
        codec.encode(media(**changes), catalog.bind(Media), "media")
    bits = 32 if avro_type == "int" else 64
    assert str(caught.value) == (
        f"cannot encode Media as test.Media: field {path!r} does not fit an Avro {avro_type} "
        f"({bits}-bit signed)"
    )
    assert "secret-key" not in str(caught.value)


def test_integers_at_the_edges_of_their_range_round_trip(
    catalog: SchemaCatalog, codec: Codec
) -> None:
    """The largest and smallest int and long are written and read back unchanged."""
    binding = catalog.bind(Media)
    for low, high in ((-(2**31), -(2**63)), (2**31 - 1, 2**63 - 1)):
        event = media(
            width=low,
            size=high,
            rating=low,
            video=Video(width=low),
            sizes=[high, low],
            counts={"k": low},
            either=low,
        )
        assert codec.decode(codec.encode(event, binding, "media"), binding) == event


def test_a_recursive_record_is_checked_at_every_depth(catalog: SchemaCatalog, codec: Codec) -> None:
    """A node two levels down with an out-of-range value is named by its full path."""
    leaf = Node(value=2**31)
    tree = Tree(root=Node(value=1, children=[Node(value=2), Node(value=3, children=[leaf])]))
    with pytest.raises(SerializationError, match=r"field 'root\.children\[1\]\.children\[0\]\.v"):
        codec.encode(tree, catalog.bind(Tree), "trees")
    fine = Tree(root=Node(value=1, children=[Node(value=2, children=[Node(value=-3)])]))
    binding = catalog.bind(Tree)
    assert codec.decode(codec.encode(fine, binding, "trees"), binding) == fine


MIDNIGHT = datetime(2024, 1, 1)  # naive; New York is UTC-5 on this date


def stamped(at: datetime) -> Stamped:
    return Stamped(
        at_ms=at,
        at_us=at + timedelta(microseconds=1),
        wall=MIDNIGHT,
        videos=[Video(width=1, taken_at=at)],
        by_name={"first": at},
    )


def test_a_naive_timestamp_is_written_as_utc_whatever_the_local_zone(
    catalog: SchemaCatalog, codec: Codec, new_york: None
) -> None:
    """Naive midnight reads back as 00:00Z (not 05:00Z) in every timestamp field, at any depth;
    a local-timestamp field keeps its wall-clock value."""
    binding = catalog.bind(Stamped)
    decoded = codec.decode(codec.encode(stamped(MIDNIGHT), binding, "stamps"), binding)
    utc_midnight = MIDNIGHT.replace(tzinfo=UTC)
    assert decoded.at_ms == utc_midnight
    assert decoded.at_us == utc_midnight + timedelta(microseconds=1)
    assert decoded.videos[0].taken_at == utc_midnight
    assert decoded.by_name == {"first": utc_midnight}
    assert decoded.wall == MIDNIGHT


def test_naive_and_utc_timestamps_encode_to_the_same_bytes(
    catalog: SchemaCatalog, codec: Codec, new_york: None
) -> None:
    """Naive is UTC, and an aware value in another zone is written as its instant."""
    binding = catalog.bind(Stamped)
    naive = codec.encode(stamped(MIDNIGHT), binding, "stamps")
    assert naive == codec.encode(stamped(MIDNIGHT.replace(tzinfo=UTC)), binding, "stamps")
    tokyo = MIDNIGHT.replace(tzinfo=UTC).astimezone(timezone(timedelta(hours=9)))
    assert naive == codec.encode(stamped(tokyo), binding, "stamps")


def test_encoding_leaves_the_event_unchanged(
    catalog: SchemaCatalog, codec: Codec, new_york: None
) -> None:
    """The UTC reading of a naive value is made on a copy: the event keeps its naive values."""
    event = stamped(MIDNIGHT)
    before = event.model_dump()
    codec.encode(event, catalog.bind(Stamped), "stamps")
    assert event.model_dump() == before
    assert event.at_ms.tzinfo is None and event.by_name["first"].tzinfo is None


def test_the_publisher_refuses_an_out_of_range_event_before_sending(
    catalog: SchemaCatalog, tmp_path: Path
) -> None:
    """Publisher.publish raises the codec's SerializationError; nothing is queued for the broker
    (an unroutable bootstrap: a send attempt would fail the flush on close)."""
    settings = Settings(bootstrap_servers="127.0.0.1:1", schemas_dir=tmp_path)
    media_topic = Topic("test.media", Media)
    publisher = Publisher(settings, catalog, SingleObjectCodec(catalog), check_topics=False)
    with publisher, pytest.raises(SerializationError, match=r"field 'video\.width' does not fit"):
        publisher.publish(media_topic, media(video=Video(width=2**31)), timeout_s=1)
