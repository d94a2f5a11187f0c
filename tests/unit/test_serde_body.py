"""``pipeline.serde.body``: a body read or written with the schema's work done once gives what
fastavro's public ``schemaless_reader`` / ``schemaless_writer`` give, and the installed fastavro
still takes the direct path (an upgrade that breaks it fails here, not silently in production)."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fastavro import schemaless_reader, schemaless_writer

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
