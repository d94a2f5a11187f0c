"""PEER faust-streaming (aiokafka, not librdkafka), run from bench/.venv-peers.

One agent iterates the stream, decodes/validates/transforms/encodes each record with the same
fastavro/pydantic code as RAW and ``send``s it (not awaiting the acknowledgement). Faust commits
what its agents acknowledged every second (``broker_commit_interval``). Producer: acks=all,
linger 5 ms, lz4 (faust's default producer is not idempotent).
"""

# mypy: disable-error-code="untyped-decorator,misc,unused-ignore"
# (the peer libraries live in bench/.venv-peers, so the project's mypy sees them as Any)
from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import faust

from bench.contenders import common


def main(args: Any) -> None:
    meter = common.Meter(args.count, args.time_limit)
    app = faust.App(
        args.group,
        broker=f"kafka://{args.bootstrap}",
        value_serializer="raw",
        key_serializer="raw",
        broker_commit_interval=common.COMMIT_INTERVAL_S,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger=0.005,
        producer_compression_type="lz4",
        web_enabled=False,
        topic_disable_leader=True,
        store="memory://",
    )
    source, sink = app.topic(args.src), app.topic(args.dst)
    reported: list[bool] = []

    @app.agent(source)
    async def price(stream: Any) -> None:
        async for key, value in stream.items():
            meter.start()
            if args.io_ms:
                await asyncio.sleep(args.io_ms / 1000)
            order = common.transform(common.decode(value))
            await sink.send(key=key, value=common.encode(order))
            meter.add()
            if meter.finished and not reported:
                reported.append(True)
                await app.producer.flush()
                common.report(meter.result(produce_requests=None))
                os.kill(os.getpid(), signal.SIGTERM)

    @app.task
    async def announce() -> None:
        common.ready()

    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main(common.parse_args(__doc__ or ""))
