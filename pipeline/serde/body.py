"""One Avro body read or written with a schema parsed once, for the codecs' per-topic fast paths.

fastavro's ``schemaless_reader`` and ``schemaless_writer`` redo on every call what depends on
the schema alone: a fresh named-schema table, ``parse_schema``'s check of an already parsed
schema (copying its named types into that table), and an options dict. On an 11-field record
that is about a sixth of the read and a quarter of the write. ``reader(parsed)`` and
``writer(parsed)`` do that work once and call the Cython entry points the two functions call
(``_read_data`` and ``write_data``, the same since fastavro 1.5), so the bytes and the records
are the same (read from the source of fastavro 1.9 to 1.13: the entry points only read the
named-schema tables and options, so sharing them across threads is safe).

Those entry points are not fastavro's public API, so this module checks them once, at import:
the public functions must still take exactly the options passed here, with the same defaults,
and a round trip through a schema with named types, unions (of records too), an enum, a map,
a fixed decimal, a default and logical types must give the public functions' bytes and record.
Otherwise every call takes the public functions (``DIRECT`` is False, logged once), slower and
still correct.
``tests/unit/test_serde_body.py`` fails if the installed fastavro no longer takes the direct path.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from decimal import Decimal
from io import BytesIO
from typing import Any

import fastavro
from fastavro import parse_schema, schemaless_reader, schemaless_writer

log = logging.getLogger("pipeline.serde")

# What schemaless_reader / schemaless_writer pass with their default arguments.
_READ_OPTIONS = {
    "return_record_name": False,
    "return_record_name_override": False,
    "handle_unicode_errors": "strict",
    "return_named_type": False,
    "return_named_type_override": False,
}
_WRITE_OPTIONS = {"strict": False, "strict_allow_default": False, "disable_tuple_notation": False}


def _same_options() -> bool:
    """Whether the public functions still take exactly these options, with these defaults: a
    new or changed one would be read by the entry points (with ``.get``) and silently differ."""
    for function, options, fixed in (
        (schemaless_reader, _READ_OPTIONS, {"fo", "writer_schema", "reader_schema"}),
        (schemaless_writer, _WRITE_OPTIONS, {"fo", "schema", "record"}),
    ):
        params = inspect.signature(function).parameters
        if set(params) != fixed | set(options):
            return False
        if any(params[name].default != value for name, value in options.items()):
            return False
    return True


ReadBody = Callable[[BytesIO], Any]  # the datum at the stream's position
WriteBody = Callable[[bytearray, Any], None]  # appends the datum's encoding


def _public_reader(parsed: Any) -> ReadBody:
    return lambda stream: schemaless_reader(stream, parsed, None)


def _public_writer(parsed: Any) -> WriteBody:
    def write(out: bytearray, datum: Any) -> None:
        buffer = BytesIO()
        schemaless_writer(buffer, parsed, datum)
        out += buffer.getvalue()

    return write


def _direct_reader(parsed: Any) -> ReadBody:
    from fastavro._read import _read_data  # type: ignore[attr-defined]  # not in its stubs

    named: dict[str, dict[str, Any]] = {"writer": {}, "reader": {}}
    schema = parse_schema(parsed, named["writer"])
    options = dict(_READ_OPTIONS)
    return lambda stream: _read_data(stream, schema, named, None, options)


def _direct_writer(parsed: Any) -> WriteBody:
    from fastavro._write import write_data  # type: ignore[attr-defined]  # not in its stubs

    named: dict[str, Any] = {}
    schema = parse_schema(parsed, named)
    options = dict(_WRITE_OPTIONS)
    return lambda out, datum: write_data(out, datum, schema, named, "", options)


_PROBE_SCHEMA = {
    "type": "record",
    "name": "probe.Outer",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "n", "type": "long"},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}},
        {
            "name": "inner",
            "type": {"type": "record", "name": "Inner", "fields": [{"name": "x", "type": "int"}]},
        },
        {"name": "again", "type": ["null", "Inner"]},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {
            "name": "either",
            "type": [
                "Inner",
                {"type": "record", "name": "Other", "fields": [{"name": "s", "type": "string"}]},
            ],
        },
        {"name": "by", "type": {"type": "map", "values": "Inner"}},
        {
            "name": "price",
            "type": {
                "type": "fixed",
                "name": "F8",
                "size": 8,
                "logicalType": "decimal",
                "precision": 18,
                "scale": 4,
            },
        },
        {"name": "dflt", "type": "string", "default": "d"},
    ],
}
_PROBE_DATUM = {
    "id": "é1",
    "n": -(2**40),
    "at": 1_700_000_000_123,
    "kind": "B",
    "inner": {"x": 7},
    "again": {"x": -3},
    "tags": ["a", ""],
    "either": {"s": "o"},
    "by": {"k": {"x": 1}},
    "price": Decimal("-12.3456"),
}


def _direct_works() -> bool:
    """Whether the direct calls exist, take these arguments, and agree with the public ones."""
    try:
        if not _same_options():
            return False
        parsed = parse_schema(_PROBE_SCHEMA)
        public = BytesIO()
        schemaless_writer(public, parsed, _PROBE_DATUM)
        direct = bytearray(b"\x00")  # appended to, not overwritten
        _direct_writer(parsed)(direct, _PROBE_DATUM)
        if bytes(direct[1:]) != public.getvalue():
            return False
        expected = schemaless_reader(BytesIO(public.getvalue()), parsed, None)
        stream = BytesIO(b"\x00" + public.getvalue())
        stream.seek(1)
        got = _direct_reader(parsed)(stream)
        return bool(got == expected and stream.tell() == len(public.getvalue()) + 1)
    except Exception:  # any incompatibility: the public path
        return False


DIRECT = _direct_works()
if not DIRECT:  # correct, only slower: say so once
    log.info("fastavro %s: Avro bodies take its public functions (slower path)",
             fastavro.__version__)  # fmt: skip


def reader(parsed: Any) -> ReadBody:
    """Read one datum of the parsed schema from a stream, at its position (fastavro's errors
    propagate as they are, for the caller to make its own)."""
    return _direct_reader(parsed) if DIRECT else _public_reader(parsed)


def writer(parsed: Any) -> WriteBody:
    """Append one datum's encoding with the parsed schema to a bytearray (fastavro's errors
    propagate; on one, the bytearray may hold part of the datum)."""
    return _direct_writer(parsed) if DIRECT else _public_writer(parsed)
