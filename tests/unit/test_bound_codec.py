"""The codec bound once per topic (``SingleObjectCodec.decoder`` / ``.encoder``) gives exactly what
``decode`` / ``encode`` give: the same events and bytes, and for every bad payload or event the
same error, type and message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.serde import SchemaCatalog, SingleObjectCodec
from pipeline.serde.codec import bound_decoder, bound_encoder
from tests.unit.test_serde_single_object import (
    COUNTER,
    EVERYTHING,
    PROFILE_V1,
    PROFILE_V2,
    Counter,
    Everything,
    PositiveCounter,
    ProfileV1,
    ProfileV2,
    everything,
    load,
)


@pytest.fixture
def catalog(tmp_path: Path) -> SchemaCatalog:
    return load(tmp_path, EVERYTHING, PROFILE_V1, COUNTER)


def _same_outcome(plain: Any, bound: Any) -> None:
    """Both calls return equal values, or raise the same error type with the same message."""
    try:
        expected: Any = plain()
    except Exception as exc:
        with pytest.raises(type(exc)) as info:
            bound()
        assert str(info.value) == str(exc)
        assert type(info.value.__cause__) is type(exc.__cause__)
        return
    assert bound() == expected


def test_a_bound_decoder_decodes_every_payload_as_decode_does(catalog: SchemaCatalog) -> None:
    """Clean records, other framings, cut and padded bodies, corrupt bodies, unknown writers and
    records the model refuses: the bound decoder's result or error is decode's."""
    codec = SingleObjectCodec(catalog)
    things, counter = catalog.bind(Everything), catalog.bind(Counter)
    data = codec.encode(everything(), things, "things")
    corrupt = bytearray(data)
    corrupt[corrupt.index(b"abcd") + 4] = 0x7E  # an impossible enum index
    payloads = [data, data[:11], data[: len(data) // 2], data + b"\x00", bytes(corrupt), b"",
                b"\xc3", b"\xc3\x01\x01\x02", b"\x00\x00\x00\x00\x07\x02", b'{"count": 1}',
                b"\xc3\x01\x01\x02\x03\x04\x05\x06\x07\x08\x02"]  # fmt: skip
    decode = codec.decoder(things)
    for payload in payloads:
        _same_outcome(lambda p=payload: codec.decode(p, things), lambda p=payload: decode(p))
    negative = codec.encode(Counter(count=-5), counter, "counts")
    positive = catalog.bind(PositiveCounter)
    decode_positive = codec.decoder(positive)
    _same_outcome(lambda: codec.decode(negative, positive), lambda: decode_positive(negative))


def test_a_bound_decoder_reads_another_writer_version_through_the_resolver(
    tmp_path: Path,
) -> None:
    """A record written with another version of the schema takes decode's own path (resolution)."""
    writer_catalog = load(tmp_path / "new", PROFILE_V2)
    writer = SingleObjectCodec(writer_catalog)
    data = writer.encode(ProfileV2(user_id="u", name="n", plan="pro"),
                         writer_catalog.bind(ProfileV2), "profiles")  # fmt: skip
    reader_catalog = load(tmp_path / "old", PROFILE_V1)
    reader = SingleObjectCodec(reader_catalog, resolver=lambda _fp: json.dumps(PROFILE_V2))
    decode = reader.decoder(reader_catalog.bind(ProfileV1))
    assert decode(data) == ProfileV1(user_id="u", name="n")


def test_a_bound_encoder_writes_the_bytes_encode_writes_and_fails_as_it_does(
    catalog: SchemaCatalog,
) -> None:
    """The same bytes for a good event; for one of another model or a value Avro cannot hold,
    the same SerializationError (with the same kind of cause)."""
    codec = SingleObjectCodec(catalog)
    things, counter = catalog.bind(Everything), catalog.bind(Counter)
    encode_things, encode_counter = codec.encoder(things, "things"), codec.encoder(counter, "c")
    events = [everything(), everything().model_copy(update={"digest": b"abc"})]
    for event in events:
        _same_outcome(lambda e=event: codec.encode(e, things, "things"),
                      lambda e=event: encode_things(e))  # fmt: skip
    for event in (Counter(count=3), Counter(count=2**63), ProfileV1(user_id="u", name="n")):
        _same_outcome(lambda e=event: codec.encode(e, counter, "c"),
                      lambda e=event: encode_counter(e))  # fmt: skip


def test_a_codec_without_bound_forms_is_called_as_before(catalog: SchemaCatalog) -> None:
    """bound_decoder / bound_encoder fall back to decode / encode with the binding fixed."""
    calls: list[tuple[Any, ...]] = []

    class Plain:
        def encode(self, event: Any, binding: Any, topic: str) -> bytes:
            calls.append(("encode", event, binding, topic))
            return b"x"

        def decode(self, data: bytes, binding: Any) -> Any:
            calls.append(("decode", data, binding))
            return "event"

        def close(self) -> None: ...

    counter = catalog.bind(Counter)
    assert bound_decoder(Plain(), counter)(b"d") == "event"
    assert bound_encoder(Plain(), counter, "t")(Counter(count=1)) == b"x"
    assert calls == [("decode", b"d", counter), ("encode", Counter(count=1), counter, "t")]
