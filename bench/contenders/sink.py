"""The end of a latency chain: reads the last topic and times each record against its ``sent_ns``.

Prints READY once assigned, then times everything it reads. When the load is sent, the
orchestrator writes ``<window_from_ns> <count>`` on stdin: the measured window starts at
``window_from_ns`` (what came before was warm-up) and holds ``count`` records. The sink stops when
it has seen them all (or after ``--timeout``) and prints
``RESULT {"expected", "received", "p50_ms", "p99_ms", "p99_late_ms", "max_ms", "saturated"}``
(``p99_late_ms``: the p99 of records sent in the second half of the window, past whatever
backlog the chain's startup left; reported beside the headline, not instead of it).

``saturated``: the chain could not keep up with the rate, so its latency measures a backlog rather
than the stages: either the queue grew during the window (records sent in its last tenth waited
more than twice as long as those of its first tenth, plus 100 ms) or a standing backlog held the
median above ``STANDING_BACKLOG_MS`` (an unloaded 4-stage chain with 100 ms batch timeouts has a
median of about 0.3 s).
"""

from __future__ import annotations

import argparse
import select
import sys
import time

from confluent_kafka import Consumer

from bench.contenders import common

STANDING_BACKLOG_MS = 1000.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _window() -> tuple[int, int] | None:
    if select.select([sys.stdin], [], [], 0)[0]:
        start, count = sys.stdin.readline().split()
        return int(start), int(count)
    return None


def run(bootstrap: str, topic: str, group: str, timeout_s: float) -> None:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
            "log_level": 5,
        }
    )
    consumer.subscribe([topic], on_assign=lambda _c, _p: common.ready())
    samples: list[tuple[int, int]] = []  # (sent_ns, received_ns)
    window: tuple[int, int] | None = None
    timed, deadline = 0, float("inf")
    while window is None or (timed < window[1] and time.monotonic() < deadline):
        first = consumer.poll(0.05)  # returns as soon as one record is there
        now = time.time_ns()
        records = [first, *consumer.consume(1000, 0)] if first is not None else []
        for record in records:
            value = record.value()
            if record.error() is None and value is not None:
                sent = common.sent_ns_of(value)
                samples.append((sent, now))
                timed += window is not None and sent >= window[0]
        if window is None and (window := _window()) is not None:
            timed = sum(1 for sent, _ in samples if sent >= window[0])
            deadline = time.monotonic() + timeout_s
    consumer.close()
    samples.sort()
    latencies = [(got - sent) / 1e6 for sent, got in samples if sent >= window[0]]
    tenth = max(1, len(latencies) // 10)
    early, late = percentile(latencies[:tenth], 0.5), percentile(latencies[-tenth:], 0.5)
    expected, median = window[1], percentile(latencies, 0.5)
    common.report(
        {
            "expected": expected,
            "received": len(latencies),
            "p50_ms": median,
            "p99_ms": percentile(latencies, 0.99),
            # The window's second half only: past any backlog left from startup.
            "p99_late_ms": percentile(latencies[len(latencies) // 2 :], 0.99),
            "max_ms": max(latencies, default=float("nan")),
            "saturated": late > 2 * early + 100 or median > STANDING_BACKLOG_MS,
        }
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--timeout", type=float, default=30.0)
    a = parser.parse_args()
    run(a.bootstrap, a.topic, a.group, a.timeout)
