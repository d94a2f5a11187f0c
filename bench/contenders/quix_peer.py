"""PEER Quix Streams, run from bench/.venv-peers.

A StreamingDataFrame: the topic's deserializer does the Avro decode (same fastavro code and
single-object framing as RAW), ``apply`` validates and transforms, the output topic's serializer
encodes. Quix's own at-least-once checkpointing (flush the producer, then commit) every second,
like OURS. Producer settings as ours: idempotence, linger.ms=5, lz4. The drain ends when the
Application has stopped, i.e. after its final checkpoint.
"""

# mypy: disable-error-code="untyped-decorator,misc,unused-ignore"
# (the peer libraries live in bench/.venv-peers, so the project's mypy sees them as Any)
from __future__ import annotations

from io import BytesIO
from typing import Any

from fastavro import schemaless_reader
from quixstreams import Application
from quixstreams.models.serializers import Deserializer, Serializer

from bench.contenders import common


class AvroIn(Deserializer):
    def __init__(self, meter: common.Meter) -> None:
        super().__init__()
        self._meter = meter

    def __call__(self, value: bytes, ctx: Any) -> Any:
        self._meter.start()
        if value[:10] != common.HEADER:
            raise ValueError("not a bench.Order in Avro single-object encoding")
        stream = BytesIO(value)
        stream.seek(10)
        return schemaless_reader(stream, common.SCHEMA, None)


class AvroOut(Serializer):
    def __call__(self, value: common.Order, ctx: Any) -> bytes:
        return common.encode(value)


def main(args: Any) -> None:
    meter = common.Meter(args.count, args.time_limit)

    def processed(_topic: str, _partition: int, _offset: int) -> None:
        meter.add()
        if meter.finished:
            app.stop()

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_interval=common.COMMIT_INTERVAL_S,
        consumer_extra_config={"fetch.wait.max.ms": 100},
        producer_extra_config={"linger.ms": 5, "compression.type": "lz4"},
        on_message_processed=processed,
        loglevel="WARNING",
        auto_create_topics=False,
    )
    source = app.topic(args.src, value_deserializer=AvroIn(meter))
    sink = app.topic(args.dst, value_serializer=AvroOut())
    sdf = app.dataframe(source)
    sdf = sdf.apply(lambda record: common.transform(common.Order.model_validate(record)))
    sdf.to_topic(sink)
    app.run()
    common.report(meter.result(produce_requests=None))


if __name__ == "__main__":
    main(common.parse_args(__doc__ or ""))
