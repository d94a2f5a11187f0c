"""Request-reply round trip on a real broker (issue 14 item 5): p50/p99 of
``Publisher.request_sync`` against an in-process stage, one request at a time and with
``--in-flight`` requests awaited at once (``Publisher.request``).

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 .venv/bin/python -m bench.reply_latency

A round trip is: encode and produce the request, the broker's ack, the stage's fetch, decode,
handler (returns at once), the reply's produce, the requester's fetch and decode. Topics get a
unique prefix and are deleted at the end. Prints one JSON line with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from pathlib import Path

from pipeline import Publisher
from pipeline.app import Pipeline
from pipeline.config import load_settings
from pipeline.worker import Worker
from tests.integration.reply_stages import QUOTES, Quoter, QuoteRequested

ROOT = Path(__file__).resolve().parents[1]


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples_s)
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    return {"p50_ms": round(cuts[49], 2), "p99_ms": round(cuts[98], 2), "n": len(ms)}


def headline(figures: dict[str, object]) -> dict[str, object]:
    """The round trip's p50 and p99 (one request at a time) for the bench summary line."""
    one = figures["sequential"]
    assert isinstance(one, dict)
    return {"request_reply_p50_ms": one["p50_ms"], "request_reply_p99_ms": one["p99_ms"]}


def sequential(publisher: Publisher, count: int) -> list[float]:
    out = []
    for i in range(count):
        started = time.perf_counter()
        publisher.request_sync(QUOTES, QuoteRequested(sku=f"s{i % 64}", quantity=1), timeout_s=30)
        out.append(time.perf_counter() - started)
    return out


async def concurrent(publisher: Publisher, count: int, in_flight: int) -> tuple[list[float], float]:
    gate = asyncio.Semaphore(in_flight)
    out: list[float] = []

    async def one(i: int) -> None:
        async with gate:
            started = time.perf_counter()
            await publisher.request(
                QUOTES, QuoteRequested(sku=f"s{i % 64}", quantity=1), timeout_s=30
            )
            out.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return out, count / (time.perf_counter() - began)


def measure(bootstrap: str | None, requests: int, warmup: int, in_flight: int) -> dict[str, object]:
    overrides: dict[str, object] = {
        "topic_prefix": f"bench-rr-{uuid.uuid4().hex[:8]}.",
        "schemas_dir": ROOT / "tests" / "schemas",
        "batch_timeout_s": 0.005,
    }
    if bootstrap:
        overrides["bootstrap_servers"] = bootstrap
    settings = load_settings(**overrides)
    pipeline = Pipeline.build(settings, [Quoter])
    pipeline.ensure_topics()
    worker = Worker(pipeline, worker_id="bench-rr")
    worker.start()
    try:
        with Publisher(settings) as publisher:
            sequential(publisher, warmup)  # group joins, metadata, schema lookups
            one = sequential(publisher, requests)
            many, rate = asyncio.run(concurrent(publisher, requests, in_flight))
            dropped = publisher.replies.late + publisher.replies.duplicate
    finally:
        worker.stop()
        worker.join(30)
        pipeline.close()
        admin = pipeline.transport.admin()
        admin.delete([t for t in admin.topics() if t.startswith(settings.topic_prefix)])
    return {
        "sequential": percentiles(one),
        f"in_flight_{in_flight}": percentiles(many) | {"requests_per_s": round(rate)},
        "dropped_replies": dropped,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bootstrap", default=None, help="default: the settings' bootstrap servers")
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--in-flight", type=int, default=16)
    args = p.parse_args()
    print(json.dumps(measure(args.bootstrap, args.requests, args.warmup, args.in_flight)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
