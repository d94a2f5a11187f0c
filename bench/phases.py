"""The three measurements, each in interleaved rounds (the contender order rotates every round,
so slow drift of a shared machine does not always hit the same contender).

- drain: every contender drains the same pre-filled topic in its own group;
- chain: a 4-stage chain (4 processes) fed at a fixed rate, timed by a sink at its end;
- io: a stage whose async handler awaits 10 ms, sequential and (where supported) concurrent.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import ROOT, Proc, module, wait_exit
from bench.topics import RunTopics

PROJECT_PY = ROOT / ".venv" / "bin" / "python"
PEERS_PY = ROOT / "bench" / ".venv-peers" / "bin" / "python"
STAGES = 4
# The chain's warm-up lasts until it is steady (bench.contenders.sink), this long at most.
MAX_WARMUP_S = 30.0


@dataclass(frozen=True)
class Contender:
    name: str
    module: str
    python: Path
    peer: bool = False


RAW = Contender("raw", "bench.contenders.raw", PROJECT_PY)
OURS = Contender("ours", "bench.contenders.ours", PROJECT_PY)
# RAW with the guarantees' per-message work, by hand (bench.drains --guarded, bench.realcount).
# Its name is in topic and group names: no "+" there.
RAW_GUARDED = Contender("raw-guarded", "bench.contenders.raw_guarded", PROJECT_PY)
# OURS with metrics on (drain only): its throughput over OURS' is the cost of metrics.
OURS_METRICS = Contender("ours-metrics", "bench.contenders.ours_metrics", PROJECT_PY)
PEERS = {
    "faststream": Contender("faststream", "bench.contenders.faststream_peer", PEERS_PY, True),
    "quix": Contender("quix", "bench.contenders.quix_peer", PEERS_PY, True),
    "faust": Contender("faust", "bench.contenders.faust_peer", PEERS_PY, True),
}


@dataclass(frozen=True)
class Run:
    bootstrap: str
    topics: RunTopics
    time_limit_s: float

    def args(self, src: str, dst: str, group: str, count: int, **extra: Any) -> list[str]:
        argv = ["--bootstrap", self.bootstrap, "--prefix", self.topics.prefix]
        argv += ["--src", src, "--dst", dst, "--group", group, "--count", str(count)]
        argv += ["--time-limit", str(self.time_limit_s)]
        for key, value in extra.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        return argv

    def drain(self, c: Contender, src: str, tag: str, count: int, **extra: Any) -> dict[str, Any]:
        t = self.topics
        workload = extra.get("workload", "order")
        dst = t.name("out", c.name) if workload == "order" else t.name("out", workload, c.name)
        group = t.name("g", c.name, tag)
        proc = Proc(module(c.python, c.module, self.args(src, dst, group, count, **extra)))
        result = proc.result(self.time_limit_s + 90)
        wait_exit(proc)
        return result


def rotations(items: list[Contender], rounds: int) -> Iterator[tuple[int, list[Contender]]]:
    for r in range(rounds):
        shift = r % len(items)
        yield r + 1, items[shift:] + items[:shift]


def drain_rounds(
    run: Run,
    contenders: list[Contender],
    src: str,
    count: int,
    rounds: int,
    workload: str = "order",
) -> dict[str, list[dict[str, Any]]]:
    """``workload``: see ``bench.contenders.workloads`` (its rounds get their own groups)."""
    results: dict[str, list[dict[str, Any]]] = {c.name: [] for c in contenders}
    tag = "" if workload == "order" else f"{workload}."
    for r, order in rotations(contenders, rounds):
        for c in order:
            result = run.drain(c, src, f"{tag}r{r}", count, workload=workload)
            results[c.name].append(result)
            print(f"  round {r} {workload} {c.name:<10} {_brief(result)}", flush=True)
    return results


def chain_rounds(
    run: Run, contenders: list[Contender], rates: dict[str, float], seconds: float, rounds: int
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """``rates``: label -> records/s; results by label, then contender."""
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        label: {c.name: [] for c in contenders} for label in rates
    }
    for r, order in rotations(contenders, rounds):
        for label, rate in rates.items():
            for c in order:
                result = chain(run, c, f"r{r}.x{label}", rate, seconds)
                results[label][c.name].append(result)
                print(f"  round {r} {c.name:<5} @{rate:>6.0f}/s {_brief(result)}", flush=True)
    return results


def chain(run: Run, c: Contender, tag: str, rate: float, seconds: float) -> dict[str, Any]:
    """Feed ``rate`` records/s through a warm-up until the chain is steady (the sink's rule,
    ``bench.contenders.sink``, the same for every contender), then ``seconds`` more; time the
    records of those ``seconds`` at the end. The chain's topics stamp records with the time the
    broker appended them (``LogAppendTime``): ``bench.chain`` reads them back, hop by hop."""
    t = run.topics
    hops = [t.name("chain", c.name, tag, i) for i in range(STAGES + 1)]
    t.create(hops, {"message.timestamp.type": "LogAppendTime"})

    def stage(i: int) -> Proc:
        group = t.name("g", c.name, tag, i)
        return Proc(module(c.python, c.module, run.args(hops[i], hops[i + 1], group, 0)))

    procs = [stage(i) for i in range(STAGES)]
    sink_args = ["--bootstrap", run.bootstrap, "--topic", hops[-1], "--max-warmup"]
    sink_args += [str(MAX_WARMUP_S), "--group", t.name("g", c.name, tag, "sink")]
    sink = Proc(module(PROJECT_PY, "bench.contenders.sink", sink_args), stdin=True)
    procs.append(sink)
    load: Proc | None = None
    try:
        if not all(p.wait_for("READY", 90) for p in procs):
            return {"error": "; ".join(p.describe_failure(90) for p in procs if not p.ready)}
        load_args = _load_args(run, hops[0], rate, seconds)
        load = Proc(module(PROJECT_PY, "bench.contenders.load", load_args), stdin=True)
        line = sink.wait_for("STEADY ", MAX_WARMUP_S + 60)
        if line is None:
            return {"error": sink.describe_failure(MAX_WARMUP_S + 60)}
        window_from = int(line.split()[-1])
        window_to = window_from + int(seconds * 1e9)
        load.send(f"{window_from} {window_to}\n")
        cpu0, wall0 = [_cpu_s(p) for p in procs], time.monotonic()
        sent = load.result(seconds + 60)
        if "error" in sent:
            return sent
        # What each stage (and the sink, last) cost while the window's records were sent
        wall = time.monotonic() - wall0
        cpu = [_cpu_s(p) - c0 for p, c0 in zip(procs, cpu0, strict=True)]
        sink.send(f"{window_from} {window_to} {sent['in_window']}\n")
        return sink.result(60) | {
            "rate": rate, "sent": sent["sent"], "load_behind_ms": sent["behind_ms"],
            "window_from_ns": window_from, "cores": [round(x / wall, 3) for x in cpu],
            "stage_cpu_us_per_record": round(sum(cpu[:-1]) / (rate * wall) * 1e6, 1),
            # Seconds from each process's start (stages, then the sink) to its READY, and the
            # milestones a contender reports (OURS: assigned, topics_ensured, ...).
            "ready_s": [p.ready_s for p in procs], "startup": [_startup(p) for p in procs[:-1]],
        }  # fmt: skip
    finally:
        for p in [*procs, *([load] if load else [])]:
            p.stop()


def _startup(proc: Proc) -> dict[str, float]:
    """The ``STARTUP {json}`` line a contender printed with its READY, if any."""
    line = next((x for x in proc.tail if x.startswith("STARTUP ")), None)
    return {} if line is None else dict(json.loads(line[len("STARTUP ") :]))


def _cpu_s(proc: Proc) -> float:
    """User + system CPU seconds of a process, all its threads (Linux)."""
    try:
        with open(f"/proc/{proc.popen.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load_args(run: Run, topic: str, rate: float, seconds: float) -> list[str]:
    return [
        "--bootstrap", run.bootstrap, "--topic", topic, "--rate", f"{rate:.0f}",
        "--seconds", f"{MAX_WARMUP_S + seconds + 5:.0f}", "--window-on-stdin",
    ]  # fmt: skip


def io_rounds(
    run: Run, cases: list[tuple[Contender, int]], src: str, count: int, io_ms: float, rounds: int
) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {}
    for r in range(1, rounds + 1):
        shift = (r - 1) % len(cases)
        for c, n in cases[shift:] + cases[:shift]:
            key = f"{c.name}@{n}"
            extra = {"io_ms": io_ms, "concurrency": n}
            result = run.drain(c, src, f"io{n}.r{r}", count, **extra)
            results.setdefault(key, []).append(result)
            print(f"  round {r} {key:<14} {_brief(result)}", flush=True)
    return results


def _brief(result: dict[str, Any]) -> str:
    if "error" in result:
        return "ERROR " + str(result["error"])[:300]
    if "p99_ms" in result:
        saturated = "  SATURATED (backlog grew)" if result["saturated"] else ""
        return (
            f"p50 {result['p50_ms']:.1f} ms  p99 {result['p99_ms']:.1f} ms  "
            f"({result['received']}/{result['expected']} timed){saturated}"
        )
    capped = " (time limit)" if result.get("timed_out") else ""
    done, took = result["processed"], result["seconds"]
    return f"{result['throughput']:>9.0f} msg/s  {done} in {took:.1f}s{capped}"
