"""The schema catalog parses every .avsc once, resolves types across files in any order, and
explains what is wrong with a directory (which file, why) or a lookup (what was meant)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import SchemaError, SchemaNotFoundError
from pipeline.serde import SchemaCatalog
from pipeline.serde.schema import from_json

THUMB = {
    "type": "record",
    "name": "Thumbnail",
    "namespace": "video",
    "fields": [
        {"name": "url", "type": "string"},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["JPEG", "PNG"]}},
    ],
}
# References video.Thumbnail, defined in another file that sorts after this one.
UPLOADED = {
    "type": "record",
    "name": "Uploaded",
    "namespace": "video",
    "fields": [
        {"name": "thumb", "type": "Thumbnail"},
        {"name": "others", "type": {"type": "array", "items": "video.Thumbnail"}},
    ],
}


def write(directory: Path, files: dict[str, Any]) -> Path:
    for name, schema in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(schema if isinstance(schema, str) else json.dumps(schema))
    return directory


def test_every_named_type_is_indexed_by_full_name(tmp_path: Path) -> None:
    """Top-level records and the enums and records nested in them each get an entry."""
    catalog = SchemaCatalog.load(write(tmp_path, {"deep/er/thumb.avsc": THUMB}))
    assert catalog.names == ["video.Kind", "video.Thumbnail"]
    assert catalog.get("video.Kind").type == "enum"


def test_a_type_defined_in_a_later_file_can_be_referenced(tmp_path: Path) -> None:
    """Load order does not matter: a.avsc may use a type that z.avsc defines."""
    catalog = SchemaCatalog.load(write(tmp_path, {"a.avsc": UPLOADED, "z.avsc": THUMB}))
    assert catalog.get("video.Uploaded").source == str(tmp_path / "a.avsc")


def test_a_schema_that_references_another_file_is_self_contained(tmp_path: Path) -> None:
    """Its JSON inlines the referenced type once, so a registry or resolver can use it alone."""
    catalog = SchemaCatalog.load(write(tmp_path, {"a.avsc": UPLOADED, "z.avsc": THUMB}))
    uploaded = catalog.get("video.Uploaded")
    assert uploaded.json.count('"name":"video.Thumbnail"') == 1
    assert from_json(uploaded.json, "test").fingerprint == uploaded.fingerprint


def test_a_null_namespace_type_inside_a_namespaced_record_keeps_its_name(tmp_path: Path) -> None:
    """A nested record declared with namespace "" stays "Plain", not "video.Plain"."""
    outer = {
        "type": "record",
        "name": "Outer",
        "namespace": "video",
        "fields": [
            {
                "name": "p",
                "type": {"type": "record", "name": "Plain", "namespace": "", "fields": []},
            }
        ],
    }
    catalog = SchemaCatalog.load(write(tmp_path, {"outer.avsc": outer}))
    assert catalog.names == ["Plain", "video.Outer"]
    assert '"name":"Plain"' in catalog.get("video.Outer").canonical_form


def test_invalid_json_names_the_file_and_position(tmp_path: Path) -> None:
    """A syntax error reports the file, line and column."""
    write(tmp_path, {"good.avsc": THUMB, "bad.avsc": '{"type": "record",\n "name": }'})
    with pytest.raises(SchemaError, match=r"bad\.avsc: invalid JSON at line 2 column 10"):
        SchemaCatalog.load(tmp_path)


def test_invalid_avro_names_the_file_and_the_reason(tmp_path: Path) -> None:
    """A default that does not match its field's type is refused with fastavro's reason."""
    bad = {"type": "record", "name": "R", "fields": [{"name": "n", "type": "int", "default": "x"}]}
    with pytest.raises(SchemaError, match=r"r\.avsc: not valid Avro: Default value <x> must match"):
        SchemaCatalog.load(write(tmp_path, {"r.avsc": bad}))


def test_an_unknown_type_is_reported_with_a_suggestion(tmp_path: Path) -> None:
    """A misspelt reference names the file, the type and the closest known type."""
    typo = {
        "type": "record",
        "name": "R",
        "namespace": "video",
        "fields": [{"name": "t", "type": "Thumbnial"}],
    }
    write(tmp_path, {"r.avsc": typo, "thumb.avsc": THUMB})
    with pytest.raises(SchemaError) as info:
        SchemaCatalog.load(tmp_path)
    assert (
        str(info.value) == f"{tmp_path / 'r.avsc'}: unknown type 'video.Thumbnial' "
        "(did you mean 'video.Thumbnail'?)"
    )


def test_two_files_defining_the_same_full_name_are_refused(tmp_path: Path) -> None:
    """A duplicate full name names both files, even when one defines it nested."""
    copy = {
        "type": "record",
        "name": "Other",
        "namespace": "video",
        "fields": [{"name": "t", "type": THUMB}],
    }
    write(tmp_path, {"a_thumb.avsc": THUMB, "b_other.avsc": copy})
    with pytest.raises(
        SchemaError,
        match=r"b_other\.avsc: defines video\.Thumbnail, which is defined also in .*a_thumb\.avsc",
    ):
        SchemaCatalog.load(tmp_path)


def test_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    """Loading a directory that does not exist fails instead of yielding an empty catalog."""
    with pytest.raises(SchemaError, match="does not exist"):
        SchemaCatalog.load(tmp_path / "nope")


def test_a_short_name_finds_a_schema_when_it_is_unambiguous(tmp_path: Path) -> None:
    """get("Thumbnail") returns video.Thumbnail when no other namespace has a Thumbnail."""
    catalog = SchemaCatalog.load(write(tmp_path, {"thumb.avsc": THUMB}))
    assert catalog.get("Thumbnail") is catalog.get("video.Thumbnail")


def test_an_ambiguous_short_name_lists_the_candidates(tmp_path: Path) -> None:
    """A short name defined in two namespaces asks for the full name."""
    other = {**THUMB, "namespace": "image", "fields": [{"name": "url", "type": "string"}]}
    catalog = SchemaCatalog.load(write(tmp_path, {"a.avsc": THUMB, "b.avsc": other}))
    with pytest.raises(
        SchemaNotFoundError, match=r"ambiguous \(image\.Thumbnail, video\.Thumbnail\)"
    ):
        catalog.get("Thumbnail")


def test_a_missing_schema_suggests_close_names(tmp_path: Path) -> None:
    """A lookup that misses lists the closest names, ignoring case."""
    catalog = SchemaCatalog.load(write(tmp_path, {"thumb.avsc": THUMB}))
    with pytest.raises(
        SchemaNotFoundError,
        match=r"no schema named 'video\.thumbnails' .*did you mean 'video\.Thumbnail'\?",
    ):
        catalog.get("video.thumbnails")
