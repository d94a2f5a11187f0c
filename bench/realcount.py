"""Instructions per message on the real path: RAW, RAW+ and OURS each drain a real topic on the
broker under callgrind, with every client call, delivery report and commit in the count.

    .venv/bin/python -m bench.realcount --bootstrap HOST:PORT [--workload order|checkout|both]
        [--small 2000] [--large 6000]

``bench.instructions`` counts the loop on an in-memory consumer and producer; this counts the
same contenders as ``make bench`` runs them. Each contender drains a topic of ``--small`` and one
of ``--large`` records; the difference of the two counts over the difference of the records is
the per-message cost, with the startup, the group joins and the shutdown cancelled out. Two
figures per contender: the Python threads (those that run the interpreter: the loop, and OURS'
watcher, which does no per-record work), and the whole process (librdkafka's threads too:
compression, the protocol). The contenders' once-a-second librdkafka statistics are off here
(``BENCH_PRODUCE_STATS=0``): their cost grows with the run's length, not its records.

What the difference does not cancel: work driven by the clock rather than by records (commits
and the producer's flush every second, polls of the retry consumer, OURS' watcher, heartbeats)
grows with a drain's length, which callgrind stretches about 50 times, and so does the
batching: at some 300 records a second, a 5 ms linger window holds about one record, so
librdkafka compresses and sends nearly one Produce request per record where ``make bench``
sends one per ~160. The Python-threads figure (per-record calls: consume, decode, handler,
encode, produce, delivery report) is the one to read; the whole-process figure is printed for
completeness and says little about librdkafka's share in a real drain. Counts do not depend on
the machine's load otherwise, where the wall-clock drains of this shared 2-core host swing by
20-30% between rounds of the same code.

A run is only counted if each drain handled exactly its records and left its counts: a
rebalance under the slowdown (a missed heartbeat) would redeliver records and inflate the
count, and a contender killed at its exit bound leaves no counts at all; such a drain is run
again once, then the run fails. (A rebalance that redelivers nothing is not caught.)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import stat
import tempfile
import time
import uuid
from pathlib import Path

from bench.contenders import load
from bench.phases import OURS, PROJECT_PY, RAW, RAW_GUARDED, Contender, Run
from bench.procs import ROOT
from bench.topics import RunTopics

CONTENDERS = (RAW, RAW_GUARDED, OURS)
# A thread that ran the interpreter: the loop (and OURS' watcher); librdkafka's never do.
PYTHON_THREAD = "_PyEval_EvalFrameDefault"


def callgrind_python(out: Path) -> Path:
    """A ``python`` that runs this venv's interpreter under callgrind, one file per thread
    (valgrind's own messages to ``<out>.log``; the contender's stderr stays its own)."""
    wrapper = out.parent / f"{out.name}.python"
    cmd = (f'BENCH_PRODUCE_STATS=0 exec valgrind -q --tool=callgrind --separate-threads=yes '
           f'--log-file="{out}.log" --callgrind-out-file="{out}.%p" '
           f'"{PROJECT_PY}" "$@"')  # fmt: skip
    wrapper.write_text(f"#!/bin/sh\n{cmd}\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper


def thread_totals(out: Path) -> tuple[int, int]:
    """(instructions of the Python threads, of every thread) of the run whose files are
    ``<out>.<pid>-<thread>``."""
    python = every = 0
    for dump in out.parent.glob(out.name + ".[0-9]*"):  # not the wrapper or the log
        text = dump.read_text(errors="replace")
        found = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
        count = int(found.group(1)) if found else 0
        every += count
        if PYTHON_THREAD in text:
            python += count
    return python, every


def per_message(
    small: tuple[int, int], large: tuple[int, int], records: int
) -> tuple[float, float]:
    """The difference of two runs' (Python, every thread) counts, per record of difference."""
    return (large[0] - small[0]) / records, (large[1] - small[1]) / records


def drain_counted(run: Run, c: Contender, src: str, tag: str, count: int, work: str, dumps: Path
                  ) -> tuple[int, int]:  # fmt: skip
    """One drain under callgrind: its thread totals; a second try if the first handled more or
    fewer records than ``count`` (redelivered after a rebalance) or failed."""
    for attempt in (1, 2):
        out = dumps / f"{work}-{c.name}-{count}-{attempt}"
        counted = Contender(c.name, c.module, callgrind_python(out))
        result = run.drain(counted, src, f"{tag}.a{attempt}", count, workload=work)
        totals = thread_totals(out)
        if result.get("processed") == count and totals[0] > 0:
            return totals
        why = result.get("error") or ("redelivered" if totals[0] else "no counts: killed at exit?")
        print(f"  {c.name} {count}: {result.get('processed')} handled ({why}); again", flush=True)
    raise RuntimeError(f"{c.name} could not drain {count} records exactly once under callgrind")


def measure(bootstrap: str, work: str, small: int, large: int) -> dict[str, dict[str, float]]:
    topics = RunTopics(bootstrap, f"bench-{uuid.uuid4().hex[:8]}.")
    run = Run(bootstrap, topics, 900.0)
    dumps = Path(tempfile.mkdtemp(prefix="bench-realcount-"))
    rows: dict[str, dict[str, float]] = {}
    try:
        # Run.drain writes Order to out.<name>, the others to out.<workload>.<name>.
        outs = [topics.name("out", c.name) if work == "order" else
                topics.name("out", work, c.name) for c in CONTENDERS]  # fmt: skip
        sources = {n: topics.name(work, "src", n) for n in (small, large)}
        topics.create([*outs, *sources.values()])
        for n, src in sources.items():
            load.prefill(bootstrap, src, n, workload=work)
        for c in CONTENDERS:
            a = drain_counted(run, c, sources[small], f"{work}.s", small, work, dumps)
            b = drain_counted(run, c, sources[large], f"{work}.l", large, work, dumps)
            py, every = per_message(a, b, large - small)
            rows[c.name] = {"python_threads": py, "process": every}
            print(f"  {work:9} {c.name:12} {py:9,.0f} (Python threads) {every:9,.0f} (process)",
                  flush=True)  # fmt: skip
    finally:
        topics.delete_all()
        shutil.rmtree(dumps, ignore_errors=True)
    return rows


def table(results: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    lines = ["| workload | contender | Python threads, instr/msg | vs RAW | vs RAW+ | "
             "whole process (batching differs, see above) | vs RAW | vs RAW+ |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for work, rows in results.items():
        raw, guarded = rows["raw"], rows["raw-guarded"]
        for name, r in rows.items():
            py, every = r["python_threads"], r["process"]
            lines.append(
                f"| {work} | {name} | {py:,.0f} | {py / raw['python_threads']:.2f}x | "
                f"{py / guarded['python_threads']:.2f}x | {every:,.0f} | "
                f"{every / raw['process']:.2f}x | {every / guarded['process']:.2f}x |"
            )
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", ""))
    p.add_argument("--workload", choices=("order", "checkout", "both"), default="both")
    p.add_argument("--small", type=int, default=2000)
    p.add_argument("--large", type=int, default=6000)
    a = p.parse_args()
    if not a.bootstrap:
        p.error("--bootstrap (or KAFKA_BOOTSTRAP_SERVERS) is required")
    if not 0 < a.small < a.large:
        p.error("--small must be above 0 and below --large")
    works = ("order", "checkout") if a.workload == "both" else (a.workload,)
    results = {w: measure(a.bootstrap, w, a.small, a.large) for w in works}
    lines = table(results)
    print("\n".join(lines))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = ROOT / "bench" / "results" / f"realcount-{stamp}"
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    out.with_suffix(".md").write_text(
        f"# Real-path instructions per message, {stamp}\n\n"
        f"callgrind over real drains of {a.small} and {a.large} records (the difference), "
        "see bench/realcount.py.\n\n" + "\n".join(lines) + "\n"
    )


if __name__ == "__main__":
    main()
