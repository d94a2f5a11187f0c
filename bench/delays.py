"""Due-time precision of delayed events on a real broker: how late past its due time a stage
sees a delayed event, under a steady publishing load.

::

    make bench-delays                                  # 3000 events at 150/s, delays 1-8 s
    .venv/bin/python -m bench.delays --events 6000 --rate 300 --workers 2

A stage reading a ``delayed=True`` topic runs in ``--workers`` in-process workers (each with
its mover, as ``pipeline run`` would start them); a publisher sends ``--events`` events at
``--rate`` per second, each with a delay drawn uniformly from ``--min-delay``..``--max-delay``
seconds. Lateness is the handler's wall time minus the event's ``delay-due-ms`` (same machine,
same clock). Prints a table and, last, one JSON line; deletes its topics and groups at the end.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
import uuid
from pathlib import Path
from typing import ClassVar

from bench.contenders.ours import Order  # the framework's bench.Order, one definition
from bench.topics import RunTopics
from pipeline import Context, Publisher, RetryPolicy, Settings, Stage, Topic
from pipeline.app import Pipeline
from pipeline.worker import Worker

SCHEMAS = Path(__file__).resolve().parent / "schemas"


ORDERS = Topic("orders.later", Order, key="order_id", id_field="order_id", delayed=True)


class Late(Stage):
    consumes = ORDERS
    group = "late"
    retry = RetryPolicy(in_process_attempts=1, tiers=())
    lateness_ms: ClassVar[dict[str, int]] = {}
    lock = threading.Lock()

    def handle(self, event: Order, ctx: Context) -> None:
        late = time.time_ns() // 1_000_000 - int(ctx.headers["delay-due-ms"])
        with Late.lock:
            Late.lateness_ms.setdefault(event.order_id, late)  # a duplicate keeps the first


def _order(n: int) -> Order:
    return Order(order_id=f"o{n}", customer_id=f"c{n % 97}", sku="sku-1", quantity=1,
                 unit_price=9.5, currency="EUR", total=9.5, country="FR", note="", hops=0,
                 sent_ns=time.time_ns())  # fmt: skip


def _pct(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(args: argparse.Namespace) -> dict[str, object]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    settings = Settings(bootstrap_servers=args.bootstrap, topic_prefix=prefix,
                        schemas_dir=SCHEMAS, commit_interval_s=1.0)  # fmt: skip
    topics = RunTopics(args.bootstrap, prefix)
    pipeline = Pipeline.build(settings, [Late])
    workers = [Worker(pipeline, worker_id=f"bench-{i}") for i in range(args.workers)]
    try:
        pipeline.ensure_topics()
        for worker in workers:
            worker.start()
        time.sleep(5)  # let the groups settle before the clock starts (not part of a measure)
        rand = random.Random(7)
        with Publisher(settings) as publisher:
            started = time.monotonic()
            for n in range(args.events):
                delay = rand.uniform(args.min_delay, args.max_delay)
                publisher.publish(ORDERS, _order(n), delay=delay, wait=False)
                pause = started + (n + 1) / args.rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)  # pacing the load generator, not the system under test
            publisher.flush()
        deadline = time.monotonic() + args.max_delay + 60
        while len(Late.lateness_ms) < args.events and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        for worker in workers:
            worker.stop()
        for worker in workers:
            worker.join(30)
        pipeline.close()
        topics.delete_all()
    late = list(Late.lateness_ms.values())
    return {
        "events": args.events, "rate_per_s": args.rate, "workers": args.workers,
        "delays_s": [args.min_delay, args.max_delay], "delivered": len(late),
        "early": sum(1 for v in late if v < 0),
        "lateness_p50_ms": _pct(late, 0.5) if late else None,
        "lateness_p90_ms": _pct(late, 0.9) if late else None,
        "lateness_p99_ms": _pct(late, 0.99) if late else None,
        "lateness_max_ms": max(late) if late else None,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=150.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--min-delay", type=float, default=1.0)
    parser.add_argument("--max-delay", type=float, default=8.0)
    result = run(parser.parse_args())
    print("| delivered | early | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    print(f"| {result['delivered']}/{result['events']} | {result['early']} | "
          f"{result['lateness_p50_ms']} | {result['lateness_p90_ms']} | "
          f"{result['lateness_p99_ms']} | {result['lateness_max_ms']} |")  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
