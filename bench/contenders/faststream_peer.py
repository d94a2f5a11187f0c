"""PEER FastStream (confluent backend), run from bench/.venv-peers.

Throughput: a batch subscriber (``max_records`` = our batch size) whose handler decodes,
validates, transforms and encodes each record with the same fastavro/pydantic code as RAW and
publishes it with ``no_confirm=True`` (awaiting each acknowledgement would serialise the handler
on broker round trips).
I/O: a per-message subscriber whose async handler awaits first; ``--concurrency N`` > 1 uses
FastStream's ``max_workers``. Offsets: FastStream's default ``AckPolicy.ACK_FIRST`` (librdkafka
auto-commit), a weaker guarantee than OURS/RAW (outputs are not awaited before the commit).
Producer settings as ours: acks=all, idempotence, linger.ms=5, lz4.
"""

# mypy: disable-error-code="untyped-decorator,misc,unused-ignore"
# (the peer libraries live in bench/.venv-peers, so the project's mypy sees them as Any)
from __future__ import annotations

import asyncio
import logging
from typing import Any

from faststream.confluent import KafkaBroker
from faststream.confluent.annotations import KafkaMessage

from bench.contenders import common


def _broker(args: Any) -> KafkaBroker:
    return KafkaBroker(
        args.bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        compression_type="lz4",
        log_level=logging.WARNING,
        config={"fetch.wait.max.ms": 100, "log_level": 5},  # type: ignore[typeddict-unknown-key]
    )


async def main(args: Any) -> None:
    meter, done = common.Meter(args.count, args.time_limit), asyncio.Event()
    broker = _broker(args)
    io_s = args.io_ms / 1000
    subscriber = broker.subscriber(
        args.src,
        group_id=args.group,
        auto_offset_reset="earliest",
        batch=not io_s,
        max_records=common.BATCH_SIZE if not io_s else None,
        max_workers=args.concurrency if io_s else None,
    )

    async def publish(value: bytes, key: bytes | None) -> None:
        await broker.publish(value, args.dst, key=key, no_confirm=True)

    if io_s:

        @subscriber
        async def handle_one(body: bytes, msg: KafkaMessage) -> None:
            meter.start()
            await asyncio.sleep(io_s)
            await publish(
                common.encode(common.transform(common.decode(body))), msg.raw_message.key()
            )
            meter.add()
            if meter.finished:
                done.set()

    else:

        @subscriber
        async def handle_batch(msg: KafkaMessage) -> None:
            meter.start()
            for record in msg.raw_message:
                value = common.encode(common.transform(common.decode(record.value())))
                await publish(value, record.key())
            meter.add(len(msg.raw_message))
            if meter.finished:
                done.set()

    await broker.start()
    common.ready()  # FastStream exposes no assignment hook; the drain meter starts at record 1
    await done.wait()
    await broker.config.producer.flush()  # every output acknowledged
    result = meter.result(produce_requests=None)
    await broker.stop()
    common.report(result)


if __name__ == "__main__":
    asyncio.run(main(common.parse_args(__doc__ or "")))
