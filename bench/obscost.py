"""The cost of observability: OURS with metrics or tracing on, next to OURS without, in one run.

    .venv/bin/python -m bench.obscost [--messages 200000] [--rounds 5] [--skip-drain]
    make bench BENCH_ARGS=--obs-cost ROUNDS=5   # the same, from bench.run

Two measurements, because one machine shared with other work cannot give a 5 % answer from
throughput alone (single drains of OURS have spread 14-24k msg/s in one run here):

1. **Paired drains** on the real broker. By default (``--pairing together``) OURS and one
   variant drain the same pre-filled topic *at the same time*, each in its own group, for
   ``--time-limit`` seconds (the topic holds more than either drains in that time): both live
   through the same moments of the machine's load, so it cancels out of their ratio, which
   one after the other it does not (seen here: 0.35-3.3 for the same pair at load 15-27).
   Each round pairs OURS with every variant; the headline is the median over rounds of the
   variant's throughput over OURS', and of its CPU per record over OURS' (the consume-loop
   thread, and the process). ``--pairing sequential`` drains them one after the other, the
   order rotating each round.
2. **Instruction counts per record** under valgrind's callgrind, which are independent of
   load: the stage's ``StageRunner`` fed by ``bench.micro``'s in-memory consumer and producer
   (no Kafka, the same ports), once with ``SMALL`` and once with ``LARGE`` records; the
   difference divided by the difference in records is the cost per record, with startup and
   imports cancelled out. Time runs on a ``FakeClock`` advanced per batch as at ``NOMINAL_RATE``
   records/s, so the once-a-second work (ticks, metrics flushes, commits) is counted as often
   per record as in a real drain at that rate, however slow valgrind is.

Variants: ``metrics`` (what ``pipeline run --metrics-port`` adds: the ``Metrics`` hook, the
/metrics endpoint and the lag thread; in callgrind the hook alone), ``tracing-api`` (the
``Tracing`` hook with no tracer provider configured: the OpenTelemetry API alone) and
``tracing-sdk`` (the SDK's ``TracerProvider`` with a ``BatchSpanProcessor`` whose exporter drops
the spans). Results go to ``bench/results/obscost-<UTC time>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import phases
from bench.contenders import load
from bench.procs import ROOT, Proc, module, wait_exit
from bench.topics import RunTopics

RESULTS = ROOT / "bench" / "results"
OURS = phases.OURS
VARIANTS = {
    "metrics": phases.OURS_METRICS,
    "tracing-api": phases.Contender("ours-tracing", "bench.contenders.ours_tracing",
                                    phases.PROJECT_PY),
    "tracing-sdk": phases.Contender("ours-tracing-sdk", "bench.contenders.ours_tracing_sdk",
                                    phases.PROJECT_PY),
}  # fmt: skip
TARGET = 0.95  # issue 12: metrics cost at most 5 % of throughput
SMALL, LARGE = 1_000, 4_000  # records of the two callgrind runs
NOMINAL_RATE = 20_000.0  # records/s the fake clock moves at in the callgrind runs


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=200_000, help="records in the drained topic")
    p.add_argument("--rounds", type=int, default=5, help="paired drain rounds")
    p.add_argument("--time-limit", type=float, default=15.0, help="longest drain (s)")
    p.add_argument(
        "--pairing", choices=("together", "sequential"), default="together",
        help="together: OURS and a variant drain at once; sequential: one after the other",
    )  # fmt: skip
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--skip-drain", action="store_true", help="callgrind counts only")
    p.add_argument("--skip-callgrind", action="store_true", help="paired drains only")
    p.add_argument("--baseline", type=float, help="OURS' instructions/record, known already")
    p.add_argument("--child", nargs=2, metavar=("VARIANT", "RECORDS"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


# -- 1. paired drains ---------------------------------------------------------------------------


def paired_drains(args: argparse.Namespace, variants: list[str]) -> dict[str, Any]:
    from bench.run import bootstrap_servers

    bootstrap = bootstrap_servers()
    topics = RunTopics(bootstrap, f"bench-{uuid.uuid4().hex[:8]}.")
    contenders = [OURS, *(VARIANTS[v] for v in variants)]
    run = phases.Run(bootstrap, topics, args.time_limit)
    rounds: list[dict[str, dict[str, Any]]] = []
    try:
        src = topics.name("src")
        topics.create([src, *(topics.name("out", c.name) for c in contenders)])
        load.prefill(bootstrap, src, args.messages)
        print(f"{args.pairing} pairs: {args.messages} records, {args.rounds} rounds", flush=True)
        for r in range(1, args.rounds + 1):
            if args.pairing == "sequential":
                rounds.append(_sequential(run, contenders, src, r, args.messages))
            else:
                rounds += [_together(run, VARIANTS[v], src, r, args.messages) for v in variants]
    finally:
        topics.delete_all()
    return {"rounds": rounds, "load": os.getloadavg(), "pairing": args.pairing}


def _sequential(
    run: phases.Run, contenders: list[phases.Contender], src: str, r: int, count: int
) -> dict[str, dict[str, Any]]:
    """OURS and every variant one after the other, the order rotating with the round."""
    shift = (r - 1) % len(contenders)
    results = {}
    for c in contenders[shift:] + contenders[:shift]:
        results[c.name] = result = run.drain(c, src, f"r{r}", count)
        print(f"  round {r} {c.name:<17} {phases._brief(result)}", flush=True)
    return results


def _together(
    run: phases.Run, variant: phases.Contender, src: str, r: int, count: int
) -> dict[str, dict[str, Any]]:
    """OURS and ``variant`` draining at the same time, each in its own group, for the time
    limit (the topic holds more than either drains in it): both share the same moments of the
    machine's load, so their ratio keeps what load does to both out."""
    pair = [OURS, variant] if r % 2 else [variant, OURS]  # who starts first alternates
    t = run.topics
    procs = [
        Proc(module(c.python, c.module, run.args(src, t.name("out", c.name),
                                                 t.name("g", c.name, variant.name, r), count)))
        for c in pair
    ]  # fmt: skip
    results = {}
    for c, proc in zip(pair, procs, strict=True):
        results[c.name] = result = proc.result(run.time_limit_s + 90)
        print(f"  round {r} {c.name:<17} {phases._brief(result)}", flush=True)
    for proc in procs:
        wait_exit(proc)
    return results


def _per_record(result: dict[str, Any], key: str) -> float | None:
    if "error" in result or not result.get("processed") or result.get(key) is None:
        return None
    return float(result[key]) / float(result["processed"]) * 1e6


def paired_ratios(rounds: list[dict[str, dict[str, Any]]], name: str) -> dict[str, Any]:
    """Per round, the variant's figure over that round's OURS; medians over rounds."""
    speed: list[float] = []
    loop_cpu: list[float] = []
    cpu: list[float] = []
    for results in rounds:
        base, it = results.get(OURS.name, {}), results.get(name, {})
        if "error" in base or "error" in it or not base or not it:
            continue
        speed.append(it["throughput"] / base["throughput"])
        for out, key in ((loop_cpu, "loop_cpu_s"), (cpu, "cpu_s")):
            mine, theirs = _per_record(it, key), _per_record(base, key)
            if mine and theirs:
                out.append(mine / theirs)
    return {
        "pairs": len(speed),
        "throughput_ratio_median": _median(speed),
        "throughput_ratios": [round(x, 3) for x in speed],
        "loop_cpu_per_record_ratio_median": _median(loop_cpu),
        "cpu_per_record_ratio_median": _median(cpu),
    }


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


# -- 2. callgrind ---------------------------------------------------------------------------


def hooks_of(variant: str) -> list[Any]:
    if variant == "metrics":
        from pipeline.metrics import Metrics

        return [Metrics()]
    if variant in ("tracing-api", "tracing-sdk"):
        from pipeline.tracing import Tracing

        if variant == "tracing-api":
            return [Tracing()]
        from bench.contenders.ours_tracing_sdk import sdk_provider

        return [Tracing(sdk_provider())]
    return []


def child(variant: str, count: int) -> None:
    """Run ``count`` records through the in-memory runner with ``variant``'s hooks."""
    from bench import micro
    from bench.contenders import common, ours
    from pipeline.app import Pipeline
    from pipeline.clock import FakeClock
    from pipeline.config import Settings
    from pipeline.runner import StageRunner

    recs = micro.records(count)
    args = argparse.Namespace(prefix="", src="bench-micro.src", dst="bench-micro.out",
                              group="bench-micro", io_ms=0, concurrency=1)  # fmt: skip
    settings = Settings(schemas_dir=common.SCHEMAS_DIR)
    pipeline = Pipeline.build(settings, [ours.stage_class(args)])
    consumer = micro.MemoryConsumer(recs, settings.batch_size)
    clock = FakeClock()
    runner = StageRunner(pipeline.plans[0], consumer, micro.MemoryProducer(), pipeline.codec,  # type: ignore[arg-type]
                         hooks=hooks_of(variant), clock=clock)  # fmt: skip
    consumer.subscribe(pipeline.plans[0].subscriptions, runner)
    if runner.hooks.on_stage_start is not None:
        runner.hooks.on_stage_start()
    step_s = settings.batch_size / NOMINAL_RATE
    while runner.stats.processed < count:
        runner.step()
        clock.advance(step_s)
    if runner.hooks.on_stage_stop is not None:
        runner.hooks.on_stage_stop()


def instructions(variant: str, count: int) -> int:
    """Instructions (Ir) of one child process under callgrind."""
    with tempfile.TemporaryDirectory(prefix="obscost-") as tmp:
        out = Path(tmp) / "callgrind.out"
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
               str(phases.PROJECT_PY), "-m", "bench.obscost", "--child", variant,
               str(count)]  # fmt: skip
        env = os.environ | {"PYTHONHASHSEED": "0", "PYTHONPATH": str(ROOT)}
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode:
            raise RuntimeError(f"callgrind {variant} {count}: {done.stderr[-800:]}")
        match = re.search(r"^totals:\s*(\d+)", out.read_text(), re.MULTILINE)
        if match is None:
            raise RuntimeError(f"callgrind {variant} {count}: no totals line")
        return int(match.group(1))


def callgrind(variants: list[str], baseline: float | None = None) -> dict[str, Any]:
    """``baseline``: OURS' instructions per record from an earlier run (it is not measured)."""
    per_record: dict[str, float] = {} if baseline is None else {"none": baseline}
    for variant in [*(["none"] if baseline is None else []), *variants]:
        small, large = instructions(variant, SMALL), instructions(variant, LARGE)
        per_record[variant] = (large - small) / (LARGE - SMALL)
        print(f"  callgrind {variant:<12} {per_record[variant]:>10,.0f} instructions/record",
              flush=True)  # fmt: skip
    base = per_record["none"]
    return {
        "instructions_per_record": {k: round(v) for k, v in per_record.items()},
        "added_per_record": {k: round(v - base) for k, v in per_record.items() if k != "none"},
        "cost_ratio": {k: round(base / v, 4) for k, v in per_record.items() if k != "none"},
        "records": [SMALL, LARGE],
        "nominal_rate": NOMINAL_RATE,
    }


# -- report ---------------------------------------------------------------------------------


def render(stamp: str, args: argparse.Namespace, data: dict[str, Any]) -> str:
    where = f"{os.cpu_count()} cores shared with other work; versions {data['versions']}."
    lines = [f"# Observability cost {stamp}", "", where, ""]
    drains = data.get("drain")
    if drains:
        lines += [
            f"## Paired drains ({drains['pairing']}): {args.time_limit:g} s each, "
            f"{args.rounds} rounds (load "
            f"{', '.join(f'{x:.1f}' for x in drains['load'])} at the end)",
            "",
            "Ratios to the same round's OURS (throughput: higher is better; CPU per record: "
            "lower is better), medians over rounds.",
            "",
            "| variant | pairs | throughput ratio | CPU/record, loop thread | CPU/record, process "
            "| per-round throughput ratios |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for name, r in drains["ratios"].items():
            lines.append(
                f"| {name} | {r['pairs']} | {r['throughput_ratio_median']} | "
                f"{r['loop_cpu_per_record_ratio_median']} | {r['cpu_per_record_ratio_median']} "
                f"| {', '.join(map(str, r['throughput_ratios']))} |"
            )
        lines.append("")
    counts = data.get("callgrind")
    if counts:
        lines += [
            f"## Instructions per record (callgrind, in-memory runner, {SMALL} vs {LARGE} "
            f"records, clock at {NOMINAL_RATE:,.0f} records/s)",
            "",
            "| variant | instructions/record | added | OURS ÷ it (throughput if CPU-bound) |",
            "|---|---:|---:|---:|",
        ]
        for name, n in counts["instructions_per_record"].items():
            added = counts["added_per_record"].get(name, 0)
            ratio = counts["cost_ratio"].get(name, 1.0)
            lines.append(f"| {name} | {n:,} | {added:+,} | {ratio} |")
        lines.append("")
    lines += ["## Target", "", f"metrics cost ≤ 5 % (ratio ≥ {TARGET}): {verdict(data)}", ""]
    return "\n".join(lines)


def verdict(data: dict[str, Any]) -> str:
    found = []
    if data.get("callgrind") and "metrics" in data["callgrind"]["cost_ratio"]:
        ratio = data["callgrind"]["cost_ratio"]["metrics"]
        found.append(f"instructions {ratio} ({'met' if ratio >= TARGET else 'NOT met'})")
    if data.get("drain") and "ours-metrics" in data["drain"]["ratios"]:
        ratio = data["drain"]["ratios"]["ours-metrics"]["throughput_ratio_median"]
        if ratio is not None:
            found.append(f"paired drains {ratio} ({'met' if ratio >= TARGET else 'NOT met'})")
    return "; ".join(found) or "not measured"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        child(args.child[0], int(args.child[1]))
        return 0
    from bench.run import versions

    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        print(f"bench.obscost: unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
        return 2
    started, data = time.monotonic(), {"versions": versions(), "params": vars(args)}
    if not args.skip_callgrind:
        print("callgrind: instructions per record, in-memory runner", flush=True)
        data["callgrind"] = callgrind(variants, args.baseline)
    if not args.skip_drain:
        drains = paired_drains(args, variants)
        drains["ratios"] = {VARIANTS[v].name: paired_ratios(drains["rounds"], VARIANTS[v].name)
                            for v in variants}  # fmt: skip
        data["drain"] = drains
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    markdown = render(stamp, args, data) + f"Took {(time.monotonic() - started) / 60:.1f} min.\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"obscost-{stamp}.md"
    path.write_text(markdown)
    path.with_suffix(".json").write_text(json.dumps(data, indent=2, default=str))
    print(markdown)
    print(f"saved {path.relative_to(ROOT)} (+ .json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
