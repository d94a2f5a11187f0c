"""Instructions per message, by step, counted by callgrind: the framework's loop next to RAW's
loop body, without Kafka (the in-memory consumer and producer of ``bench.micro``).

    .venv/bin/python -m bench.instructions [--workload order|checkout] [--messages 3000]

Instruction counts do not depend on what else the machine runs, so two of them compare even on
a loaded machine where timings do not. The child process runs under ``valgrind
--tool=callgrind``; before and after each measured phase it asks this process (a line on its
stdout) to have callgrind dump and reset its counters (``callgrind_control --dump``), so each
dump holds exactly one phase. Phases: the whole ``StageRunner`` over the records, RAW's loop
body over the same records, RAW+'s (``bench.contenders.raw_guarded``: RAW with the guarantees'
per-message work, by hand), then the runner's own steps one by one on the same records
(``rest of the loop`` is the whole minus the steps). Python's garbage collections are counted
too (young collections per 1000 messages), as their cost lands on whichever step allocates.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench import micro
from bench.contenders.workloads import WORKLOADS, Workload
from bench.procs import ROOT

Phase = tuple[str, Callable[[], Any]]


def _runner(work: Workload, recs: list[micro.Record]) -> Any:
    from pipeline.app import Pipeline
    from pipeline.config import Settings
    from pipeline.runner import StageRunner

    args = argparse.Namespace(prefix="", src="bench-micro.src", dst="bench-micro.out",
                              group="bench-micro", io_ms=0, concurrency=1,
                              workload=work.name)  # fmt: skip
    settings = Settings(schemas_dir=micro.common.SCHEMAS_DIR)
    pipeline = Pipeline.build(settings, [micro.ours.stage_class(args)])
    consumer, producer = micro.MemoryConsumer(recs, settings.batch_size), micro.MemoryProducer()
    runner = StageRunner(pipeline.plans[0], consumer, producer, pipeline.codec)  # type: ignore[arg-type]
    consumer.subscribe(pipeline.plans[0].subscriptions, runner)
    return runner


def phases(work: Workload, n: int) -> Iterator[Phase]:
    """(name, what to run over ``n`` records); a phase's setup is done before it is yielded."""
    warm = micro.records(1000, work)
    runner = _runner(work, warm)
    while runner.stats.processed < len(warm):  # imports, caches and first-call costs
        runner.step()
    recs = micro.records(n, work)
    runner = _runner(work, recs)

    def whole() -> None:
        while runner.stats.processed < n:
            runner.step()

    yield "StageRunner, whole loop", whole
    yield "RAW loop body", lambda: micro.raw_us(recs, work)
    micro.guarded_us(micro.records(200, work), work)  # its first-call costs, not measured
    yield "RAW+ loop body (RAW with the guarantees, by hand)", lambda: micro.guarded_us(recs, work)
    values = [r.value() for r in recs]
    yield "RAW: decode (Avro + validate)", lambda: [work.decode(v) for v in values]
    models = [work.decode(v) for v in values]
    yield "RAW: transform", lambda: [work.transform(m) for m in models]
    yield "RAW: encode", lambda: [work.encode(m) for m in models]
    # The runner's steps on their own, on a fresh runner (its tracker empty again).
    runner = _runner(work, recs)
    decode, outputs, tracker = runner._decode, runner._outputs, runner._tracker
    src = recs[0].topic()  # the input topic, whose binding decodes every record
    yield "decode (Avro + validate)", lambda: [decode(r, src) for r in recs]
    events = [decode(r, src) for r in recs]
    call = runner._invoke.call_sync
    pairs = list(zip(events, recs, strict=True))
    yield "handler call (Context, transform, emit)", lambda: [call(e, r) for e, r in pairs]
    ctxs = [call(e, r) for e, r in pairs]
    yield "encode outputs", lambda: [outputs.encode(c) for c in ctxs]
    payloads = [outputs.encode(c) for c in ctxs]
    begin = [(tracker.partition((r.topic(), r.partition())), r.offset()) for r in recs]
    yield "offset tokens (begin, settle)", lambda: [p.begin(o).settle(1) for p, o in begin]
    tokens = [p.begin(o + n) for p, o in begin]  # past the first ones: a fresh token each
    tps = [(r.topic(), r.partition()) for r in recs]
    items = list(zip(recs, ctxs, payloads, tps, tokens, strict=True))
    yield "produce (ids, headers, callback)", lambda: [outputs.produce(*i) for i in items]
    yield "delivery reports", lambda: runner._producer.poll(0)


def child(work: Workload, n: int) -> None:
    for name, run in phases(work, n):
        gc.collect()
        young = gc.get_stats()[0]["collections"]
        _ask(f"start {name}")
        run()
        _ask(f"end {name}")
        print(f"gc {gc.get_stats()[0]['collections'] - young}", flush=True)


def _ask(line: str) -> None:
    print(line, flush=True)
    sys.stdin.readline()  # the dump is done


def measure(work: str, n: int) -> list[tuple[str, float, float]]:
    """(phase, instructions per message, young GCs per 1000 messages), from one child."""
    out = Path(tempfile.mkdtemp(prefix="bench-cg-"))
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.%p",
           sys.executable, "-m", "bench.instructions", "--child", "--workload", work,
           "--messages", str(n)]  # fmt: skip
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    pipes: dict[str, Any] = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.DEVNULL, text=True, **pipes)
    assert proc.stdin is not None and proc.stdout is not None
    rows: list[tuple[str, float, float]] = []
    for line in proc.stdout:
        kind, _, name = line.strip().partition(" ")
        if kind == "gc":
            rows[-1] = (*rows[-1][:2], 1000 * int(name) / n)
            continue
        if kind not in ("start", "end"):
            continue
        subprocess.run(["callgrind_control", "--dump=" + kind, str(proc.pid)],
                       capture_output=True, check=True)  # fmt: skip
        if kind == "end":
            rows.append((name, _last_total(out) / n, 0.0))
        proc.stdin.write("\n")
        proc.stdin.flush()
    proc.wait()
    return rows


def _last_total(directory: Path) -> int:
    dumps = sorted(directory.glob("cg.*.*"), key=lambda p: int(p.suffix[1:]))
    for line in dumps[-1].read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dumps[-1]}")


def table(rows: list[tuple[str, float, float]]) -> list[str]:
    whole, raw, guarded = rows[0][1], rows[1][1], rows[2][1]
    raw_steps = [r for r in rows[3:] if r[0].startswith("RAW: ")]
    steps = [r for r in rows[3:] if not r[0].startswith("RAW: ")]
    rest = whole - sum(ir for _, ir, _ in steps)
    lines = ["| step | instructions/msg | share of OURS | young GCs / 1000 msgs |",
             "|---|---:|---:|---:|"]  # fmt: skip
    for name, ir, gcs in [*steps, ("rest of the loop (gates, settle, batching)", rest, 0.0)]:
        lines.append(f"| {name} | {ir:,.0f} | {100 * ir / whole:.1f}% | {gcs:.1f} |")
    lines.append(f"| **OURS, whole loop** | {whole:,.0f} | 100% | {rows[0][2]:.1f} |")
    lines.append(f"| **RAW loop body** | {raw:,.0f} | {100 * raw / whole:.1f}% "
                 f"(OURS = {whole / raw:.2f}x RAW) | {rows[1][2]:.1f} |")  # fmt: skip
    lines.append(f"| **RAW+ loop body** (RAW with the guarantees, by hand) | {guarded:,.0f} | "
                 f"{100 * guarded / whole:.1f}% (RAW+ = {guarded / raw:.2f}x RAW; OURS = "
                 f"{whole / guarded:.2f}x RAW+) | {rows[2][2]:.1f} |")  # fmt: skip
    for name, ir, gcs in raw_steps:
        lines.append(f"| {name} | {ir:,.0f} | {100 * ir / whole:.1f}% | {gcs:.1f} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workload", choices=tuple(WORKLOADS), default="order")
    p.add_argument("--messages", type=int, default=3000)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(WORKLOADS[a.workload], a.messages)
        return
    print(f"workload {a.workload}, {a.messages} messages, instructions counted by callgrind")
    print("\n".join(table(measure(a.workload, a.messages))))


if __name__ == "__main__":
    main()
