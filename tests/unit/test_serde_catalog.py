"""The schema catalog parses every .avsc once, resolves types across files in any order, and
explains what is wrong with a directory (which file, why) or a lookup (what was meant)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import KafkaError, SchemaError, SchemaNotFoundError
from pipeline.serde import SchemaCatalog
from pipeline.serde.catalog import WriterSchemas
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


# -- WriterSchemas: writer schemas found at run time, on a fake clock and an in-memory log ----


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeLog:
    """A schema log in memory. Its "fetcher" delivers what was published only when ``prefetched``
    is on or the reader waits (``read`` with a timeout); ``stalled`` delivers nothing, letting
    the fake clock run out the wait; ``broken`` makes every broker call fail."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.partitions: dict[int, list[tuple[bytes, str]]] | None = {0: []}
        self.assigned: set[int] = set()
        self.delivered: dict[int, int] = {}
        self.prefetched = False
        self.stalled = False
        self.broken = False
        self.closed = False
        self.calls: dict[str, int] = {"discover": 0, "ends": 0, "wait": 0}

    def publish(self, fingerprint: bytes, partition: int = 0) -> None:
        assert self.partitions is not None
        self.partitions.setdefault(partition, []).append((fingerprint, f"schema {fingerprint!r}"))

    def discover(self) -> bool:
        self._call("discover")
        if self.partitions is None:
            return False
        self.assigned |= set(self.partitions)
        return True

    def ends(self) -> dict[int, int]:
        self._call("ends")
        assert self.partitions is not None
        return {p: len(self.partitions[p]) for p in self.assigned}

    def read(self, timeout_s: float) -> tuple[dict[bytes, str], dict[int, int]]:
        if timeout_s > 0:
            self.calls["wait"] += 1
        if self.stalled:
            self.clock.now += timeout_s
            return {}, {}
        if (timeout_s == 0 and not self.prefetched) or self.partitions is None:
            return {}, {}
        schemas, positions = {}, {}
        for p in self.assigned:
            records = self.partitions[p]
            schemas.update(records[self.delivered.get(p, 0) :])
            self.delivered[p] = positions[p] = len(records)
        return schemas, positions

    def close(self) -> None:
        self.closed = True

    def _call(self, name: str) -> None:
        self.calls[name] += 1
        if self.broken:
            self.clock.now += 5.0  # the query's timeout
            raise KafkaError("broker down", retriable=True)


def reader(**options: float) -> tuple[WriterSchemas, FakeLog, FakeClock]:
    clock = FakeClock()
    log = FakeLog(clock)
    return WriterSchemas(log, clock=clock, **options), log, clock


def test_a_published_schema_is_found_and_then_answered_from_memory() -> None:
    """The first lookup reads the log to its end; a known fingerprint never asks again."""
    schemas, log, _ = reader()
    log.publish(b"fp-1")
    assert schemas(b"fp-1") == "schema b'fp-1'"
    before = dict(log.calls)
    assert schemas(b"fp-1") == "schema b'fp-1'"
    assert log.calls == before


def test_misses_on_an_unchanged_log_cost_one_end_query_each_and_no_read() -> None:
    """200 bogus fingerprints: the log is read once, then each miss is one end-offsets query
    answered from what was already read (the negative cache), with no time passing."""
    schemas, log, _ = reader()
    log.publish(b"fp-1")
    for i in range(200):
        assert schemas(b"bogus-%d" % i) is None
    assert log.calls == {"discover": 1, "ends": 200, "wait": 1}
    assert schemas.misses == 200


def test_a_schema_published_right_after_a_miss_is_found_at_once() -> None:
    """A writer that publishes after the reader missed its fingerprint, then produces, is
    found on the very next lookup: the log has grown, so the reader catches up (no miss TTL)."""
    schemas, log, _ = reader()
    assert schemas(b"fp-new") is None
    log.publish(b"fp-new")  # not yet prefetched: only the end offsets show it
    assert schemas(b"fp-new") == "schema b'fp-new'"


def test_a_prefetched_schema_is_found_without_asking_the_broker() -> None:
    """What the reader has already fetched is looked at before any end-offsets query."""
    schemas, log, _ = reader()
    assert schemas(b"other") is None
    log.prefetched = True
    log.publish(b"fp-new")
    ends = log.calls["ends"]
    assert schemas(b"fp-new") == "schema b'fp-new'"
    assert log.calls["ends"] == ends


def test_a_log_that_does_not_exist_yet_is_looked_for_at_each_miss() -> None:
    """Before any writer published, every miss looks for the log, so its first schema is found."""
    schemas, log, _ = reader()
    log.partitions = None
    assert schemas(b"fp-1") is None
    assert schemas(b"fp-1") is None
    assert log.calls["discover"] == 2
    log.partitions = {0: []}
    log.publish(b"fp-1")
    assert schemas(b"fp-1") == "schema b'fp-1'"


def test_new_partitions_are_looked_for_only_every_rediscover_s() -> None:
    """Once the log exists, its partition list is refreshed at most every rediscover_s."""
    schemas, log, clock = reader(rediscover_s=30.0)
    assert schemas(b"x") is None
    log.publish(b"fp-2", partition=1)
    clock.now = 29.9
    assert schemas(b"fp-2") is None
    assert log.calls["discover"] == 1
    clock.now = 30.0
    assert schemas(b"fp-2") == "schema b'fp-2'"
    assert log.calls["discover"] == 2


def test_catching_up_is_bounded_by_catch_up_s() -> None:
    """A reader that cannot reach the end offsets gives up after catch_up_s with a retriable
    error (the record is not at fault), waiting in short reads."""
    schemas, log, clock = reader(catch_up_s=15.0)
    log.publish(b"fp-1")
    log.stalled = True
    with pytest.raises(KafkaError, match=r"stalled within 15s .*\{0: '0/1'\}") as caught:
        schemas(b"fp-1")
    assert caught.value.retriable
    assert clock.now == pytest.approx(15.0)
    assert log.calls["wait"] == pytest.approx(15.0 / WriterSchemas.READ_WAIT_S, abs=1)


def test_after_a_failure_unknown_fingerprints_fail_fast_until_retry_after_s() -> None:
    """When the broker cannot be asked, one lookup waits out the query; the next ones within
    retry_after_s fail at once without asking, and known fingerprints are still answered."""
    schemas, log, clock = reader(retry_after_s=10.0)
    log.publish(b"known")
    assert schemas(b"known") is not None
    log.broken = True
    with pytest.raises(KafkaError, match="broker down"):
        schemas(b"a")
    calls = dict(log.calls)
    for fingerprint in (b"b", b"c", b"d"):
        with pytest.raises(KafkaError, match=r"unavailable \(broker down\); asking again in"):
            schemas(fingerprint)
    assert log.calls == calls
    assert schemas(b"known") is not None
    log.broken = False
    clock.now += 10.0
    assert schemas(b"b") is None
    assert log.calls["ends"] == calls["ends"] + 1


def test_close_closes_the_log_once_and_later_lookups_fail() -> None:
    schemas, log, _ = reader()
    schemas.close()
    schemas.close()
    assert log.closed
    with pytest.raises(KafkaError, match="closed"):
        schemas(b"fp-1")
