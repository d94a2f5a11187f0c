"""Drain rounds alone: RAW and OURS on both workloads, one broker, optionally next to OURS of
another checkout (``--baseline``: a tree of another commit, run with its own ``PYTHONPATH``
and this venv), interleaved on the same pre-filled topics, for before/after in one sitting.

    .venv/bin/python -m bench.drains --bootstrap HOST:PORT [--messages 100000] [--rounds 5]
        [--baseline /path/to/checkout-of-main] [--guarded]

``--guarded`` adds RAW+ (``bench.contenders.raw_guarded``): RAW's loop plus, hand-written, the
per-message work of OURS' guarantees (derived ids and carried headers on every output, each
input's delivery tracked, only acknowledged offsets committed). OURS' distance from RAW+ is the
framework's own cost; RAW+'s distance from RAW is the guarantees'.

Prints, per workload and contender, the median throughput and loop-thread CPU per message,
each as a ratio to RAW's; the rounds go to ``--json`` if given. Use a broker of your own.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import tempfile
import uuid
from pathlib import Path
from typing import Any

from bench import phases, report
from bench.contenders import load
from bench.phases import OURS, PROJECT_PY, RAW, RAW_GUARDED, Contender, Run
from bench.topics import RunTopics


def _baseline(tree: Path) -> Contender:
    """OURS of ``tree``: this venv's interpreter, with ``tree`` first on the path."""
    wrapper = Path(tempfile.mkdtemp(prefix="bench-baseline-")) / "python"
    wrapper.write_text(f'#!/bin/sh\ncd "{tree}" && PYTHONPATH="{tree}" exec "{PROJECT_PY}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return Contender("ours-base", "bench.contenders.ours", wrapper)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", ""))
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--baseline", type=Path, help="a checkout of another commit")
    p.add_argument("--guarded", action="store_true", help="add RAW+ (RAW with the guarantees)")
    p.add_argument("--json", type=Path, help="write every round here")
    a = p.parse_args()
    if not a.bootstrap:
        p.error("--bootstrap (or KAFKA_BOOTSTRAP_SERVERS) is required")
    contenders = [RAW, *([RAW_GUARDED] if a.guarded else []),
                  *([_baseline(a.baseline.resolve())] if a.baseline else []), OURS]  # fmt: skip
    topics = RunTopics(a.bootstrap, f"bench-{uuid.uuid4().hex[:8]}.")
    run = Run(a.bootstrap, topics, 300.0)
    results: dict[str, Any] = {}
    try:
        src, checkout_src = topics.name("src"), topics.name("checkout", "src")
        outs = [topics.name("out", c.name) for c in contenders]
        outs += [topics.name("out", "checkout", c.name) for c in contenders]
        topics.create([src, checkout_src, *outs])
        load.prefill(a.bootstrap, src, a.messages)
        load.prefill(a.bootstrap, checkout_src, a.messages, workload="checkout")
        for work, source in (("order", src), ("checkout", checkout_src)):
            results[work] = rounds = phases.drain_rounds(
                run, contenders, source, a.messages, a.rounds, work
            )
            raw_tp, raw_cpu = report.throughput(rounds["raw"]), report.loop_cpu_us(rounds["raw"])
            for c in contenders:
                tp, cpu = report.throughput(rounds[c.name]), report.loop_cpu_us(rounds[c.name])
                line = f"{work:9} {c.name:11} {tp:8.0f} msg/s {tp / raw_tp:5.2f}x RAW   "
                print(line + f"loop CPU {cpu:5.1f} µs/msg {cpu / raw_cpu:5.2f}x RAW", flush=True)
    finally:
        topics.delete_all()
        if a.json is not None:
            a.json.write_text(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
