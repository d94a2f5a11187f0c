"""Where OURS spends its time per message: a drain under py-spy (from bench/.venv-peers), folded
into self and inclusive time per function of the consume loop.

    .venv/bin/python -m bench.profile [--messages 100000] [--contender ours|raw]

py-spy samples from outside the process (no code change, no tracing overhead inside it); the
drain rate under it is a little lower than in ``make bench``. Only stacks that pass through the
per-batch loop (``--focus``) are counted, so startup and librdkafka's idle threads do not dilute it.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import uuid
from pathlib import Path

from bench import phases
from bench.contenders import load
from bench.procs import ROOT, Proc, module, wait_exit
from bench.run import bootstrap_servers
from bench.topics import RunTopics

PY_SPY = os.environ.get("PY_SPY", str(ROOT / "bench" / ".venv-peers" / "bin" / "py-spy"))


def fold(raw: Path, focus: str, top: int) -> list[str]:
    """Self and inclusive shares per function (py-spy names frames ``func (file:line)``)."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    lines: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if focus not in stack:
            continue
        frames, n = stack.split(";"), int(count)
        samples += n
        lines[frames[-1]] += n
        functions = [re.sub(r":\d+\)$", ")", f) for f in frames]
        own[functions[-1]] += n
        for function in set(functions):
            total[function] += n
    out = [f"{samples} samples in stacks through {focus!r}"]
    for title, counter, k in (
        ("self time by function", own, top),
        ("inclusive time by function", total, top + 10),
        ("hottest lines (self)", lines, 12),
    ):
        out += ["", f"{title}:"]
        out += [f"  {100 * n / samples:5.1f}%  {f}" for f, n in counter.most_common(k)]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--contender", choices=("ours", "raw"), default="ours")
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--native", action="store_true", help="C frames too (librdkafka, fastavro)")
    a = p.parse_args()
    bootstrap = bootstrap_servers()
    topics = RunTopics(bootstrap, f"bench-{uuid.uuid4().hex[:8]}.")
    contender = phases.OURS if a.contender == "ours" else phases.RAW
    focus = "StageRunner.step" if a.contender == "ours" else "RawLoop.step"
    raw = ROOT / "bench" / "results" / f"profile-{a.contender}.tmp"
    try:
        src = topics.name("src")
        topics.create([src, topics.name("out", contender.name)])
        load.prefill(bootstrap, src, a.messages)
        run = phases.Run(bootstrap, topics, 300)
        argv = run.args(src, topics.name("out", contender.name), topics.name("g"), a.messages)
        spy = [str(PY_SPY), "record", "-r", str(a.rate), "--format", "raw", "-o", str(raw)]
        spy += ["--native", "--"] if a.native else ["--"]
        proc = Proc([*spy, *module(contender.python, contender.module, argv)])
        print(proc.result(400))
        wait_exit(proc, 60)
    finally:
        topics.delete_all()
    print("\n".join(fold(raw, focus, 25)))


if __name__ == "__main__":
    main()
