"""Priority lanes: how long a high-priority event waits behind a backlog on the low lane.

One stage reads ``prio.mail`` (3 lanes). 50,000 events are published to lane 2 before it
starts; once it is draining them, high-priority events are published to lane 0 at a steady
rate and the handler times each one from publish to handling (both in this process, on one
monotonic clock). FIFO (one topic) would make each wait for the backlog ahead of it: that wait
is *derived*, as the low-lane records still waiting when the urgent one was published over the
drain rate measured in the same run (running it would take minutes).

Two handlers, each its own process:

- ``io``: an async mailer awaiting 20 ms per event, ``concurrency = 8`` (about 400/s);
- ``sync``: a sync handler working 2 ms of CPU per event, ``batch_size`` 50: a sync stage
  finishes the batch in hand before it fetches again, so a high event waits up to
  ``batch_size x`` handler time behind it (the README's rule for sync stages).

``python -m bench.priority --bootstrap HOST:PORT --prefix bench-x. [--case io]`` prints one
``RESULT {json}`` line; ``bench.run`` runs both cases and tabulates them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from bench.contenders.ours import Order  # the framework's bench.Order, one definition
from pipeline import Context, Publisher, Stage, Topic
from pipeline.app import Pipeline
from pipeline.config import Settings
from pipeline.worker import Worker

SCHEMAS = Path(__file__).resolve().parent / "schemas"


MAIL = Topic("prio.mail", Order, key="customer_id", priorities=3)


class Timings:
    """What the handlers saw; written on the handler's thread, read by the main one."""

    lock = threading.Lock()
    low = 0
    urgent: ClassVar[list[float]] = []  # publish-to-handling, seconds


def _saw(event: Order) -> None:
    with Timings.lock:
        if event.order_id.startswith("u"):
            Timings.urgent.append((time.monotonic_ns() - event.sent_ns) / 1e9)
        else:
            Timings.low += 1


class IoMailer(Stage):
    consumes = MAIL
    group = "prio.io"
    concurrency = 8
    work_s = 0.020

    async def handle(self, event: Order, ctx: Context) -> None:
        await asyncio.sleep(self.work_s)
        _saw(event)


class SyncMailer(Stage):
    consumes = MAIL
    group = "prio.sync"
    work_s = 0.002

    def handle(self, event: Order, ctx: Context) -> None:
        end = time.perf_counter() + self.work_s
        while time.perf_counter() < end:  # CPU work, not a sleep: the loop is really busy
            pass
        _saw(event)


CASES: dict[str, tuple[type[Stage], int]] = {"io": (IoMailer, 500), "sync": (SyncMailer, 50)}
SECONDS = 10.0  # how long high events are published


def min_backlog(case: str, seconds: float = SECONDS) -> int:
    """The smallest backlog the case can measure: two batches to get going (``scenario``
    waits for them, so a smaller backlog never starts measuring), then the most its handler
    can drain while high events are published (``concurrency`` calls of ``work_s`` at
    once), so the last one still has low-lane records ahead of it."""
    stage, batch = CASES[case]
    most_per_s = stage.concurrency / stage.work_s  # type: ignore[attr-defined]
    return 2 * batch + math.ceil(seconds * most_per_s)


def check_backlog(backlog: int, cases: Sequence[str] = tuple(CASES), seconds: float = SECONDS,
                  flag: str = "--backlog") -> None:  # fmt: skip
    """Refuse, in one line, a backlog a case cannot finish or measure with."""
    for case in cases:
        least = min_backlog(case, seconds)
        if backlog < least:
            batch = CASES[case][1]
            raise ValueError(
                f"{flag} {backlog} is too small for the {case} case: it needs at least "
                f"{least} (2 batches of {batch} to get going, then up to "
                f"{least - 2 * batch} drained in the {seconds:g} s high events are published)"
            )


def order(order_id: str, n: int) -> Order:
    return Order(order_id=order_id, customer_id=f"c{n % 997}", sku="sku-1", quantity=1,
                 unit_price=1.0, currency="EUR", total=1.0, country="FR", note="", hops=0,
                 sent_ns=time.monotonic_ns())  # fmt: skip


def scenario(
    bootstrap: str, prefix: str, case: str, backlog: int, urgent_rate: float, seconds: float
) -> dict[str, Any]:
    stage, batch = CASES[case]
    settings = Settings(bootstrap_servers=bootstrap, topic_prefix=f"{prefix}{case}.",
                        schemas_dir=SCHEMAS, topic_partitions=6, batch_size=batch)  # fmt: skip
    pipeline = Pipeline.build(settings, [stage])
    pipeline.ensure_topics()
    with Publisher(settings) as publisher:
        for n in range(backlog):
            publisher.publish(MAIL, order(f"l{n}", n), priority=2, wait=False)
        publisher.flush(120)
        worker = Worker(pipeline, worker_id=f"bench-{uuid.uuid4().hex[:6]}")
        worker.start()
        try:
            _wait(lambda: Timings.low >= 2 * batch, 120)  # draining, past its start-up
            started, low_at_start = time.monotonic(), Timings.low
            ahead: list[int] = []  # FIFO: low-lane records still waiting at each publish
            for i in range(int(seconds * urgent_rate)):
                _sleep_until(started + i / urgent_rate)
                ahead.append(backlog - Timings.low)
                publisher.publish(MAIL, order(f"u{i}", i), priority=0)
            _wait(lambda: len(Timings.urgent) >= len(ahead), 60)
            rate = (Timings.low - low_at_start) / (time.monotonic() - started)
        finally:
            worker.stop()
            worker.join(30)
            pipeline.close()
    waits = sorted(Timings.urgent)
    fifo = sorted(a / rate for a in ahead) if rate > 0 else []
    return {
        "case": case, "handler_ms": stage.work_s * 1000,  # type: ignore[attr-defined]
        "concurrency": stage.concurrency,
        "batch_size": batch, "backlog": backlog, "urgent": len(waits),
        "low_rate_per_s": round(rate, 1),
        "p50_s": _q(waits, 0.5), "p99_s": _q(waits, 0.99), "max_s": waits[-1],
        "fifo_p50_s": _q(fifo, 0.5), "fifo_min_s": fifo[0] if fifo else None,
    }  # fmt: skip


def _q(values: list[float], q: float) -> float | None:
    return round(values[min(int(q * len(values)), len(values) - 1)], 4) if values else None


def _wait(predicate: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench.priority: not done within {timeout_s:g}s")
        time.sleep(0.01)


def _sleep_until(when: float) -> None:
    left = when - time.monotonic()
    if left > 0:
        time.sleep(left)


def phase(bootstrap: str, prefix: str, backlog: int) -> dict[str, dict[str, Any]]:
    """Both cases, each in its own process (``bench.run``'s priority phase)."""
    from bench.phases import PROJECT_PY
    from bench.procs import Proc, module, wait_exit

    check_backlog(backlog, flag="--priority-backlog")
    out = {}
    for case in CASES:
        args = ["--bootstrap", bootstrap, "--prefix", prefix, "--case", case]
        proc = Proc(module(PROJECT_PY, "bench.priority", [*args, "--backlog", str(backlog)]))
        out[case] = proc.result(600)
        wait_exit(proc)
        r = out[case]
        print(f"  priority {case:<4} p99 {r.get('p99_s')} s, FIFO {r.get('fifo_p50_s')} s "
              f"{r.get('error', '')}", flush=True)  # fmt: skip
    return out


def table(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| case | handler | low lane drains at | high events | p50 | p99 | max "
        "| FIFO wait (derived) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case, r in results.items():
        if "error" in r:
            lines.append(f"| {case} | not run: {r['error']} |")
            continue
        how = f"{r['handler_ms']:g} ms, concurrency {r['concurrency']}, batch {r['batch_size']}"
        lines.append(
            f"| {case} | {how} | {r['low_rate_per_s']:.0f}/s | {r['urgent']} | {r['p50_s']:.3f} s "
            f"| {r['p99_s']:.3f} s | {r['max_s']:.3f} s | {r['fifo_p50_s']:.0f} s (median) |"
        )
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--prefix", default=f"bench-{uuid.uuid4().hex[:8]}.")
    p.add_argument("--case", choices=sorted(CASES), default="io")
    p.add_argument("--backlog", type=int, default=50_000)
    p.add_argument("--urgent-rate", type=float, default=20.0, help="high events per second")
    p.add_argument("--seconds", type=float, default=SECONDS, help="how long they are published")
    a = p.parse_args()
    try:
        check_backlog(a.backlog, [a.case], a.seconds)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = scenario(a.bootstrap, a.prefix, a.case, a.backlog, a.urgent_rate, a.seconds)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
