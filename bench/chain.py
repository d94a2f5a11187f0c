"""The chain phase alone, with its diagnostics: ``python -m bench.chain --rate 3761``.

Runs RAW's and OURS' 4-stage chains (``bench.phases.chain``) at the given rates, as ``make bench``
does, and prints for each: the sink's per-second series (records, p50, p99 by second of send
time, warm-up included), the CPU each stage process used in the window, and the latency of each
hop from the records' own timestamps (the chain's topics take the broker's append time): *load*
is the append on the first topic minus ``sent_ns``; *stage i* is the append on topic *i+1*
minus the append on topic *i* for the same key (the time stage *i* took to fetch the record,
handle it and get its output appended: its linger and produce request included).

Uses KAFKA_BOOTSTRAP_SERVERS, else the local broker (started if it does not answer), as
``bench.run`` does; the run's topics are deleted at the end.
"""

from __future__ import annotations

import argparse
import itertools
import json
import uuid
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from bench import phases
from bench.contenders import common
from bench.contenders.sink import percentile
from bench.phases import OURS, RAW, Run
from bench.run import bootstrap_servers
from bench.topics import PARTITIONS, RunTopics


def hop_latencies(
    bootstrap: str, hops: list[str], from_ms: int
) -> tuple[list[dict[str, float]], list[list[float]]]:
    """p50 / p99 / max ms from the load's send to the broker's append on the first topic, then
    of each stage (append to append), for the records appended at or after ``from_ms``; and
    the same hops' p50 per second of send time, warm-up included (``hop_series``)."""
    read = [_timestamps(bootstrap, topic) for topic in hops]
    steps = [read[0][1], *(appended for appended, _ in read)]  # sent, then each append
    return _hop_totals(steps, from_ms), hop_series(steps, from_ms)


def hop_series(steps: list[dict[bytes, int]], from_ms: int) -> list[list[float]]:
    """``[second, records, p50 load, p50 stage 0, ...]`` per second of send time (from
    ``from_ms``), for the records that went all the way: which hop a startup backlog sat in."""
    by: dict[int, list[list[float]]] = {}
    for key, sent in steps[0].items():
        times = [sent, *(step.get(key) for step in steps[1:])]
        if None in times:
            continue
        hops = [float(b - a) for a, b in itertools.pairwise(times)]  # type: ignore[operator]
        by.setdefault((sent - from_ms) // 1000, []).append(hops)
    return [
        [second, len(rows), *(percentile([r[i] for r in rows], 0.5) for i in range(len(rows[0])))]
        for second, rows in sorted(by.items())
    ]


def _hop_totals(steps: list[dict[bytes, int]], from_ms: int) -> list[dict[str, float]]:
    out = []
    for before, after in itertools.pairwise(steps):
        deltas = [
            float(after[key] - ts)
            for key, ts in before.items()
            if key in after and after[key] >= from_ms
        ]
        out.append(
            {
                "records": len(deltas),
                "p50_ms": percentile(deltas, 0.5),
                "p99_ms": percentile(deltas, 0.99),
                "max_ms": max(deltas, default=float("nan")),
            }
        )
    return out


def _timestamps(bootstrap: str, topic: str) -> tuple[dict[bytes, int], dict[bytes, int]]:
    """Every record's key -> its timestamp (ms; the chain's topics take the broker's append
    time) and -> its ``sent_ns`` (in ms), read from the start to the end offsets."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex[:8]}",
         "enable.auto.commit": False, "log_level": 3}
    )  # fmt: skip
    parts = [TopicPartition(topic, p, 0) for p in range(PARTITIONS)]
    ends = {p: consumer.get_watermark_offsets(tp, timeout=10)[1] for p, tp in enumerate(parts)}
    left = {p for p, end in ends.items() if end > 0}
    consumer.assign(parts)
    appended: dict[bytes, int] = {}
    sent: dict[bytes, int] = {}
    while left:
        for record in consumer.consume(1000, 5):
            if record.error() is not None:
                continue
            key = record.key() or b""
            appended[key] = record.timestamp()[1]
            sent[key] = common.sent_ns_of(record.value() or b"") // 10**6
            if record.offset() + 1 >= ends[record.partition()]:
                left.discard(record.partition())
    consumer.close()
    return appended, sent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rate", default="3761", help="records/s, comma-separated")
    p.add_argument("--seconds", type=float, default=8.0, help="measured window")
    p.add_argument("--contenders", default="raw,ours")
    p.add_argument("--rounds", type=int, default=1)
    args = p.parse_args()
    bootstrap = bootstrap_servers()
    topics = RunTopics(bootstrap, f"bench-{uuid.uuid4().hex[:8]}.")
    run = Run(bootstrap, topics, 30.0)
    chosen = [c for c in (RAW, OURS) if c.name in args.contenders.split(",")]
    results: dict[str, Any] = {}
    try:
        for r, order in phases.rotations(chosen, args.rounds):
            for rate in (float(x) for x in args.rate.split(",")):
                for c in order:
                    tag = f"r{r}.x{rate:.0f}"
                    result = phases.chain(run, c, tag, rate, args.seconds)
                    hops = [topics.name("chain", c.name, tag, i) for i in range(phases.STAGES + 1)]
                    if "window_from_ns" in result:
                        from_ms = result["window_from_ns"] // 10**6
                        result["hops"], result["hop_series"] = hop_latencies(
                            bootstrap, hops, from_ms
                        )
                    results[f"{c.name}@{rate:.0f}/r{r}"] = result
                    _print(f"{c.name}@{rate:.0f}/r{r}", result)
    finally:
        topics.delete_all()
    print(json.dumps(results))
    return 0


def _print(name: str, result: dict[str, Any]) -> None:
    if "error" in result:
        print(f"{name}: ERROR {result['error']}", flush=True)
        return
    print(
        f"{name}: p50 {result['p50_ms']:.0f} ms p99 {result['p99_ms']:.0f} ms "
        f"saturated={result['saturated']} steady={result['steady']} after "
        f"{result['warmup_s']} s; {result['received']}/{result['expected']} timed; load behind "
        f"{result['load_behind_ms']} ms at worst; cores {result['cores']}; "
        f"{result['stage_cpu_us_per_record']} us CPU/record in 4 stages",
        flush=True,
    )
    for second, n, p50, p99 in result.get("series", []):
        print(f"   t={second:>4.0f}s n={n:>5.0f} p50 {p50:>7.1f} p99 {p99:>7.1f}", flush=True)
    for i, hop in enumerate(result.get("hops", [])):
        print(
            f"   {'load' if i == 0 else f'stage {i - 1}'}: p50 {hop['p50_ms']:.0f} ms "
            f"p99 {hop['p99_ms']:.0f} ms "
            f"max {hop['max_ms']:.0f} ms ({hop['records']:.0f})",
            flush=True,
        )
    if result.get("hop_series"):
        print("   p50 ms per hop by second of send time: load, stage 0..3", flush=True)
    for second, n, *hops in result.get("hop_series", []):
        cells = " ".join(f"{h:>6.0f}" for h in hops)
        print(f"   t={second:>4.0f}s n={n:>5.0f} {cells}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
