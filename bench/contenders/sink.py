"""The end of a latency chain: reads the last topic and times each record against its ``sent_ns``.

Prints READY once assigned, then times everything it reads. The warm-up lasts until the chain is
in a steady state, by the same rule for every contender (``steady``, on the median latency of
each second of receipts): over the last ``STEADY_SECONDS`` seconds the latency has no trend (it
neither falls, as while a startup backlog drains, nor rises, as while one builds) and every one
of those seconds received records; and at least ``MIN_WARMUP_S`` have passed since the first
record. A chain that gets there within ``--max-warmup`` is said ``steady``; one that does not
(its backlog keeps growing, or the machine's load swings it) is measured anyway from then on,
marked ``steady: false``. The sink
prints ``STEADY <from_ns>``: the measured window starts one second later (so the load generator
hears of it in time). The orchestrator then writes ``<from_ns> <to_ns> <count>`` on stdin: the
window and how many records the load sent in it. The sink stops when it has seen them all (or
after ``--timeout``) and prints ``RESULT {"expected", "received", "p50_ms", "p99_ms",
"p99_late_ms", "max_ms", "saturated", "steady", "warmup_s", "series"}`` (``p99_late_ms``: the p99
of records sent in the second half of the window; ``series``: per second of send time, warm-up
included, records, p50 and p99).

``saturated``: the chain could not keep up with the rate, so its latency measures a backlog rather
than the stages: either the queue grew during the window (records sent in its last tenth waited
more than twice as long as those of its first tenth, plus 100 ms) or a standing backlog held the
median above ``STANDING_BACKLOG_MS`` (an unloaded 4-stage chain has a median of tens of ms).
"""

from __future__ import annotations

import argparse
import itertools
import select
import sys
import time

from confluent_kafka import Consumer

from bench.contenders import common

STANDING_BACKLOG_MS = 1000.0
MIN_WARMUP_S = 3.0
STEADY_SECONDS = 5
# Noise a steady chain shows between seconds on a loaded 2-core machine: a quarter of its level
# plus 20 ms (RAW's own chain swings 90 -> 190 -> 90 ms from one second to the next).
NOISE_SHARE, NOISE_MS = 0.25, 20.0
WINDOW_DELAY_NS = 10**9  # the window starts this long after the steady state is declared


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def trend(values: list[float]) -> float:
    """The Theil-Sen slope (the median of the slopes between every two points) per step: one
    outlying second moves it little, unlike a least-squares fit or a max - min spread."""
    slopes = [
        (values[j] - values[i]) / (j - i)
        for i in range(len(values))
        for j in range(i + 1, len(values))
    ]
    ordered = sorted(slopes)
    middle = len(ordered) // 2
    return (ordered[middle] + ordered[~middle]) / 2 if ordered else 0.0


def steady(medians: list[float]) -> bool:
    """Whether the last ``STEADY_SECONDS`` per-second median latencies (ms; NaN: a second that
    received nothing) show a chain in a steady state:

    - every second received records (a stalled chain is not steady);
    - no trend: the latency's drift across those seconds (``trend`` times their span) is within
      the noise (a quarter of their median plus 20 ms). A draining startup backlog, which
      falls by a fraction of itself every second, fails this however little it spreads;
    - not monotone either way over the last three seconds by more than the noise (the end of
      a hump: a backlog that built and now drains has no slope over five seconds), nor over
      the last four by more than the noise's fixed part (a slow drift that the slope's
      tolerance lets through is still a backlog moving).
    """
    last = medians[-STEADY_SECONDS:]
    if len(last) < STEADY_SECONDS or any(m != m for m in last):  # NaN: an empty second
        return False
    noise = NOISE_SHARE * percentile(last, 0.5) + NOISE_MS
    if abs(trend(last)) * (len(last) - 1) > noise:
        return False
    return not (_moves(last[-3:], noise) or _moves(last[-4:], NOISE_MS))


def _moves(values: list[float], by: float) -> bool:
    """Whether ``values`` only rise or only fall, by more than ``by`` from first to last."""
    steps = [b - a for a, b in itertools.pairwise(values)]
    monotone = all(d < 0 for d in steps) or all(d > 0 for d in steps)
    return monotone and abs(values[-1] - values[0]) > by


class Steadiness:
    """Watches latencies by second of receipt; ``done`` once steady or out of warm-up time."""

    def __init__(self, max_warmup_s: float) -> None:
        self.max_warmup_s = max_warmup_s
        self.first_ns = 0
        self.medians: list[float] = []
        self._second: list[float] = []
        self._second_ends = 0
        self.steady = False
        self.done = False

    def add(self, latencies_ms: list[float], now_ns: int) -> None:
        if not latencies_ms or self.done:
            return
        if not self.first_ns:
            # The first (partial) second is not a sample.
            self.first_ns, self._second_ends = now_ns, now_ns + 10**9
        if now_ns >= self._second_ends:
            if self._second:
                self.medians.append(percentile(self._second, 0.5))
            # Whole seconds that received nothing (a stall) are samples too: NaN, not steady.
            empty = (now_ns - self._second_ends) // 10**9
            self.medians.extend([float("nan")] * empty)
            self._second, self._second_ends = [], self._second_ends + (empty + 1) * 10**9
        self._second.extend(latencies_ms)
        warmed = (now_ns - self.first_ns) / 1e9
        if warmed >= MIN_WARMUP_S and steady(self.medians):
            self.steady = self.done = True
        elif warmed >= self.max_warmup_s:
            self.done = True

    def warmup_s(self, now_ns: int) -> float:
        return round((now_ns - self.first_ns) / 1e9, 1)


def _window() -> tuple[int, int, int] | None:
    if select.select([sys.stdin], [], [], 0)[0]:
        start, end, count = sys.stdin.readline().split()
        return int(start), int(end), int(count)
    return None


def run(bootstrap: str, topic: str, group: str, timeout_s: float, max_warmup_s: float) -> None:
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
    watch, warmup_s = Steadiness(max_warmup_s), 0.0
    window: tuple[int, int, int] | None = None
    timed, deadline = 0, float("inf")
    while window is None or (timed < window[2] and time.monotonic() < deadline):
        first = consumer.poll(0.05)  # returns as soon as one record is there
        now = time.time_ns()
        records = [first, *consumer.consume(1000, 0)] if first is not None else []
        sents = [
            common.sent_ns_of(value)
            for record in records
            if record.error() is None and (value := record.value()) is not None
        ]
        samples.extend((sent, now) for sent in sents)
        if window is not None:
            timed += sum(1 for sent in sents if window[0] <= sent < window[1])
        elif not watch.done:
            watch.add([(now - sent) / 1e6 for sent in sents], now)
            if watch.done:
                warmup_s = watch.warmup_s(now)
                print(f"STEADY {now + WINDOW_DELAY_NS}", flush=True)
        elif (window := _window()) is not None:
            timed = sum(1 for sent, _ in samples if window[0] <= sent < window[1])
            deadline = time.monotonic() + timeout_s
    consumer.close()
    common.report(summary(samples, window, watch.steady, warmup_s))


def summary(
    samples: list[tuple[int, int]], window: tuple[int, int, int], is_steady: bool, warmup_s: float
) -> dict[str, object]:
    samples.sort()
    latencies = [(got - sent) / 1e6 for sent, got in samples if window[0] <= sent < window[1]]
    tenth = max(1, len(latencies) // 10)
    early, late = percentile(latencies[:tenth], 0.5), percentile(latencies[-tenth:], 0.5)
    median = percentile(latencies, 0.5)
    return {
        "expected": window[2],
        "received": len(latencies),
        "p50_ms": median,
        "p99_ms": percentile(latencies, 0.99),
        # The window's second half only: past any backlog left from startup.
        "p99_late_ms": percentile(latencies[len(latencies) // 2 :], 0.99),
        "max_ms": max(latencies, default=float("nan")),
        "saturated": late > 2 * early + 100 or median > STANDING_BACKLOG_MS,
        "steady": is_steady,
        "warmup_s": warmup_s,
        "series": series(samples, window[0]),
    }


def series(samples: list[tuple[int, int]], window_from_ns: int) -> list[list[float]]:
    """Per second of send time, warm-up included (negative seconds): ``[second, records,
    p50_ms, p99_ms]``. Shows whether the chain reached a steady state before the window and
    stayed in it, which one p99 cannot."""
    by: dict[int, list[float]] = {}
    for sent, got in samples:
        by.setdefault((sent - window_from_ns) // 10**9, []).append((got - sent) / 1e6)
    return [
        [second, len(v), round(percentile(v, 0.5), 1), round(percentile(v, 0.99), 1)]
        for second, v in sorted(by.items())
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--max-warmup", type=float, default=30.0)
    a = parser.parse_args()
    run(a.bootstrap, a.topic, a.group, a.timeout, a.max_warmup)
