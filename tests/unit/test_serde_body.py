"""``pipeline.serde.body``: a body read or written with the schema's work done once gives what
fastavro's public ``schemaless_reader`` / ``schemaless_writer`` give, and the installed fastavro
still takes the direct path (an upgrade that breaks it fails here, not silently in production)."""

from __future__ import annotations

import copy
import datetime
import decimal
import threading
import uuid
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from pipeline.serde import body
from tests.unit.test_serde_single_object import EVERYTHING, Everything, everything, load


def _parsed_and_datum(tmp_path: Path) -> tuple[Any, dict[str, Any]]:
    catalog = load(tmp_path, EVERYTHING)
    binding = catalog.bind(Everything)
    return binding.parsed, dict(binding.to_record(everything()))


def _public_bytes(parsed: Any, datum: Any) -> bytes:
    out = BytesIO()
    schemaless_writer(out, parsed, datum)
    return out.getvalue()


def test_the_installed_fastavro_takes_the_direct_path() -> None:
    assert body.DIRECT, "fastavro's _read_data / write_data changed: pipeline/serde/body.py"


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "public"])
def test_a_body_is_written_and_read_as_the_public_functions_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    """Nested records, unions, enums, maps, arrays and logical types: the same bytes appended
    after what the buffer held, and the same record read from the stream's position."""
    monkeypatch.setattr(body, "DIRECT", direct)
    parsed, datum = _parsed_and_datum(tmp_path)
    expected = _public_bytes(parsed, datum)
    out = bytearray(b"head")
    body.writer(parsed)(out, datum)
    assert bytes(out) == b"head" + expected
    stream = BytesIO(b"head" + expected + b"tail")
    stream.seek(4)
    assert body.reader(parsed)(stream) == schemaless_reader(BytesIO(expected), parsed, None)
    assert stream.tell() == 4 + len(expected)  # the caller's trailing-bytes check relies on it


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "public"])
def test_fastavro_errors_propagate_from_both_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    """The codecs make their own errors from fastavro's: a bad datum or a cut body raises."""
    monkeypatch.setattr(body, "DIRECT", direct)
    parsed, datum = _parsed_and_datum(tmp_path)
    with pytest.raises(Exception):  # noqa: B017 - fastavro raises several types
        body.writer(parsed)(bytearray(), datum | {"small": "not an int"})
    cut = _public_bytes(parsed, datum)[:5]
    with pytest.raises(EOFError):
        body.reader(parsed)(BytesIO(cut))


def test_a_direct_call_that_disagrees_with_the_public_one_turns_the_direct_path_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def wrong(parsed: Any) -> body.WriteBody:
        return lambda out, datum: out.extend(b"\x00")

    monkeypatch.setattr(body, "_direct_writer", wrong)
    assert body._direct_works() is False

    def broken(parsed: Any) -> body.ReadBody:
        raise TypeError("_read_data() takes 3 positional arguments")

    monkeypatch.undo()
    monkeypatch.setattr(body, "_direct_reader", broken)
    assert body._direct_works() is False


# A schema of what the catalog accepts at its widest: unions of several records (by name, with
# "-type" hints and tuple notation), a recursive record, fixed and bytes decimals, maps of
# records and of unions, enums with defaults, defaulted fields and every logical type.
A = {"type": "record", "name": "A", "namespace": "ns1", "fields": [{"name": "a", "type": "int"}]}
B = {
    "type": "record",
    "name": "B",
    "namespace": "ns2",
    "fields": [{"name": "b", "type": "string"}, {"name": "d", "type": "int", "default": 5}],
}
WIDE: dict[str, Any] = {
    "type": "record",
    "name": "Top",
    "namespace": "top",
    "fields": [
        {"name": "u", "type": ["null", A, B]},
        {"name": "u2", "type": ["ns1.A", "ns2.B"]},
        {"name": "u3", "type": ["ns2.B", "ns1.A"]},
        {
            "name": "list",
            "type": {
                "type": "record",
                "name": "Node",
                "fields": [
                    {"name": "v", "type": "int"},
                    {"name": "next", "type": ["null", "Node"], "default": None},
                ],
            },
        },
        {
            "name": "fdec",
            "type": {
                "type": "fixed",
                "name": "F8",
                "size": 8,
                "logicalType": "decimal",
                "precision": 18,
                "scale": 4,
            },
        },
        {
            "name": "bdec",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 3},
        },
        {"name": "m", "type": {"type": "map", "values": "ns1.A"}},
        {
            "name": "es",
            "type": {
                "type": "array",
                "items": {"type": "enum", "name": "E", "symbols": ["X", "Y", "Z"], "default": "X"},
            },
        },
        {"name": "dflt", "type": "string", "default": "dv"},
        {"name": "dnull", "type": ["null", "long"], "default": None},
        {"name": "tmicros", "type": {"type": "long", "logicalType": "time-micros"}},
        {"name": "lts", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
        {"name": "uid", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "tsu", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "fx", "type": "F8"},
        {"name": "mu", "type": {"type": "map", "values": ["null", "ns2.B", "double"]}},
    ],
}
WIDE_DATA: list[dict[str, Any]] = [
    {
        "u": {"a": 1},
        "u2": {"b": "x", "d": 2},
        "u3": {"a": 3},
        "list": {"v": 1, "next": {"v": 2, "next": {"v": 3}}},
        "fdec": decimal.Decimal("123.4567"),
        "bdec": decimal.Decimal("-1.250"),
        "m": {"k": {"a": 9}, "": {"a": -1}},
        "es": ["Y", "Z", "X"],
        "tmicros": datetime.time(1, 2, 3, 456789),
        "lts": datetime.datetime(2024, 1, 2, 3, 4, 5, 678000),
        "uid": uuid.UUID(int=12345),
        "tsu": datetime.datetime(2024, 5, 6, tzinfo=datetime.UTC),
        "fx": b"12345678",
        "mu": {"a": None, "b": {"b": "q"}, "c": 1.5},
    },
    # -type hints and tuple notation for unions of records, missing-with-default fields
    {
        "u": {"-type": "ns2.B", "b": "y"},
        "u2": ("ns2.B", {"b": "t"}),
        "u3": ("ns1.A", {"a": 4}),
        "list": {"v": 0, "next": None},
        "fdec": decimal.Decimal("0"),
        "bdec": decimal.Decimal("0.001"),
        "m": {},
        "es": [],
        "dnull": 7,
        "tmicros": 5,
        "lts": 0,
        "uid": "00000000-0000-0000-0000-000000000001",
        "tsu": 1,
        "fx": b"\0" * 8,
        "mu": {},
    },
    {
        "u": None,
        "u2": {"a": 1},
        "u3": {"b": "z"},
        "list": {"v": -5},
        "fdec": decimal.Decimal("-99999999999999.9999"),
        "bdec": decimal.Decimal("999999.999"),
        "m": {"é": {"a": 2**31 - 1}},
        "es": ["Z"],
        "dflt": "",
        "tmicros": 0,
        "lts": 10**12,
        "uid": str(uuid.UUID(int=2**128 - 1)),
        "tsu": -1,
        "fx": b"abcdefgh",
        "mu": {"n": 2.0},
    },
]


def test_the_direct_path_matches_the_public_functions_on_every_kind_of_schema() -> None:
    """Bytes, records (repr too: the same types) and stream positions; the same error type for
    bad datums, and the same error and message for a body cut at every byte."""
    for schema, datums in ((WIDE, WIDE_DATA), ({"type": "enum", "name": "Solo",
                            "symbols": ["P", "Q"]}, ["Q", "P"]),
                           ({"type": "fixed", "name": "Fx4", "size": 4}, [b"abcd"])):  # fmt: skip
        parsed = parse_schema(copy.deepcopy(schema))
        write, read = body._direct_writer(parsed), body._direct_reader(parsed)
        for datum in datums:
            expected = _public_bytes(parsed, datum)
            out = bytearray(b"hd")
            write(out, datum)
            assert bytes(out) == b"hd" + expected
            stream = BytesIO(b"hd" + expected + b"tl")
            stream.seek(2)
            got, want = read(stream), schemaless_reader(BytesIO(expected), parsed, None)
            assert got == want and repr(got) == repr(want)
            assert stream.tell() == 2 + len(expected)
    parsed = parse_schema(copy.deepcopy(WIDE))
    write, read = body._direct_writer(parsed), body._direct_reader(parsed)
    first = WIDE_DATA[0]
    for bad in ({**first, "u2": {"zz": 1}}, {**first, "fdec": decimal.Decimal("1.23456")},
                {**first, "es": ["W"]}, {**first, "list": {"v": "s"}}):  # fmt: skip
        expected = _error(lambda: _public_bytes(parsed, bad), message=False)  # noqa: B023
        assert expected is not None
        assert _error(lambda: write(bytearray(), bad), message=False) == expected  # noqa: B023
    good = _public_bytes(parsed, first)
    for n in range(len(good)):
        cut = BytesIO(good[:n]).read()
        public = _error(lambda c=cut: schemaless_reader(BytesIO(c), parsed, None))
        assert _error(lambda c=cut: read(BytesIO(c))) == public


def test_a_shared_reader_and_writer_stay_right_across_threads() -> None:
    """Four threads on one reader and writer: every result right, the shared tables untouched."""
    parsed = parse_schema(copy.deepcopy(WIDE))
    write, read = body._direct_writer(parsed), body._direct_reader(parsed)
    shared = [c.cell_contents for f in (write, read) for c in f.__closure__ or ()
              if isinstance(c.cell_contents, dict)]  # fmt: skip
    before = copy.deepcopy(shared)
    errors: list[str] = []

    def work(k: int) -> None:
        try:
            for j in range(300):
                datum = WIDE_DATA[(j + k) % len(WIDE_DATA)]
                out = bytearray()
                write(out, datum)
                assert bytes(out) == _public_bytes(parsed, datum)
                assert read(BytesIO(bytes(out))) == schemaless_reader(BytesIO(bytes(out)), parsed)
        except Exception as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert shared == before


def _error(call: Any, message: bool = True) -> Any:
    try:
        call()
    except Exception as exc:
        return (type(exc), str(exc)) if message else type(exc)
    return None
