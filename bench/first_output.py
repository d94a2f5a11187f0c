"""Time to the first output (issue 15): how long a contender takes, from the moment its process
is started, until the broker has acknowledged its first output.

Every round gives every contender a start as a user's first one: a topic prefix of its own, so
its input and output topics are new (created and pre-filled by the bench before the process
starts, the same for RAW and OURS) and everything the framework makes for itself (retry and
DLQ topics, the schema topic, the consumer groups) does not exist yet.

The clock: the orchestrator notes ``time.time_ns()`` just before it starts the process; the
contender notes the same clock at its milestones (``common.mark``) and reports them with its
result; every milestone here is seconds since that start. Two figures, the same definition for
both contenders: from the moment it is told to go (``imported``: the interpreter is up and its
modules are imported, the moment its ``main`` starts) to ``first_output`` (the headline,
``first_output_ours_vs_raw``), and from the process start (``..._from_start_...``), which adds
the imports (about 90 more modules for OURS). Both contenders note
``first_output`` in the producer's delivery callback of their first output without error
(OURS: the ``on_completed`` hook, called from that callback once the input's only output is
acknowledged), served by the same ``producer.poll`` of their loops.
"""

from __future__ import annotations

import compileall
import statistics
import time
from typing import Any

from bench.contenders import load
from bench.phases import RAW, Contender, Run, rotations
from bench.procs import ROOT, Proc, module, wait_exit
from bench.report import _f, _r

RECORDS = 1000  # pre-filled per round: the first output comes from the first batch
# Milestones, in the order they happen (those a contender does not have are left out).
MILESTONES = (
    "imported",  # the interpreter is up and the contender's modules are imported
    "built",  # OURS: Pipeline.build (settings, schemas, declarations)
    "topics",  # OURS: Pipeline.start_topics returned (what the first fetch needs exists)
    "runner",  # OURS: Pipeline.runner (its clients created)
    "topics_ensured",  # OURS: retry/DLQ/schema topics made, schemas announced (on a thread)
    "assigned",  # input partitions assigned
    "first_record",  # the first input record returned by consume
    "first_batch",  # OURS: the first batch handed to the stage (before_batch)
    "first_batch_done",  # OURS: handled, outputs produced (after_batch)
    "first_output",  # the first output acknowledged by the broker
)


def rounds(
    run: Run, contenders: list[Contender], count: int, n_rounds: int
) -> dict[str, list[dict[str, Any]]]:
    """``n_rounds`` interleaved rounds, after one unrecorded RAW start: the run's first group
    on a fresh broker waits for the offsets topic to load, which no later start does.

    The project's own sources are compiled to bytecode first, as an installed package's are
    (pip compiles at install): RAW's imports are almost all installed packages, while OURS'
    come from this checkout, which a shell with ``PYTHONDONTWRITEBYTECODE`` (or a fresh clone)
    would otherwise compile again at every start, about 40% of OURS' import work."""
    for tree in ("pipeline", "bench"):
        compileall.compile_dir(ROOT / tree, quiet=1)
    first_output(run, RAW, "warmup", count)
    results: dict[str, list[dict[str, Any]]] = {c.name: [] for c in contenders}
    for r, order in rotations(contenders, n_rounds):
        for c in order:
            result = first_output(run, c, f"r{r}", count)
            results[c.name].append(result)
            print(f"  round {r} first output {c.name:<5} {_brief(result)}", flush=True)
    return results


def first_output(run: Run, c: Contender, tag: str, count: int) -> dict[str, Any]:
    prefix = run.topics.name("first", c.name, tag) + "."
    src, dst = prefix + "src", prefix + "dst"
    run.topics.create([src, dst])
    load.prefill(run.bootstrap, src, count)
    argv = ["--bootstrap", run.bootstrap, "--prefix", prefix, "--src", src, "--dst", dst]
    argv += ["--group", prefix + "g", "--count", str(count), "--first-output"]
    argv += ["--time-limit", str(run.time_limit_s)]
    started = time.time_ns()
    proc = Proc(module(c.python, c.module, argv))
    result = proc.result(run.time_limit_s + 90)
    wait_exit(proc)
    if "error" in result:
        return result
    marks = result.pop("marks", {})
    if "first_output" not in marks:
        return {"error": f"{c.name} reported no first_output mark (marks: {sorted(marks)})"}
    # Seconds since the process was started, in milestone order.
    result["since_start_s"] = {
        name: (marks[name] - started) / 1e9 for name in (*MILESTONES, "assigned_retry")
        if name in marks
    }  # fmt: skip
    result["first_output_s"] = result["since_start_s"]["first_output"]
    return result


def median(rounds: list[dict[str, Any]], milestone: str, since: str | None = None) -> float:
    """Median seconds from the process start (or from ``since``) to ``milestone``."""
    values = [
        r["since_start_s"][milestone] - (r["since_start_s"][since] if since else 0.0)
        for r in rounds
        if "error" not in r and milestone in r["since_start_s"]
        and (since is None or since in r["since_start_s"])
    ]  # fmt: skip
    return statistics.median(values) if values else float("nan")


def headline(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """``first_output_ours_vs_raw``: from the moment each is told to go (its modules imported:
    ``imported``); ``first_output_from_start_ours_vs_raw``: from the process start, imports
    and all."""
    raw, ours = results["raw"], results["ours"]
    go = {n: median(r, "first_output", "imported") for n, r in (("raw", raw), ("ours", ours))}
    start = {n: median(r, "first_output") for n, r in (("raw", raw), ("ours", ours))}
    return {
        "first_output_ours_vs_raw": _r(go["ours"] / go["raw"]),
        "first_output_from_start_ours_vs_raw": _r(start["ours"] / start["raw"]),
        "first_output_s": {name: _r(value) for name, value in go.items()},
        "first_output_from_start_s": {name: _r(value) for name, value in start.items()},
    }


def table(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    raw_go = median(results["raw"], "first_output", "imported")
    raw_start = median(results["raw"], "first_output")
    seen = {m for rounds in results.values() for r in rounds for m in r.get("since_start_s", {})}
    names = [m for m in (*MILESTONES, "assigned_retry") if m in seen]
    lines = [
        "| contender | first output s, from go (median) | vs RAW | from process start s "
        "| vs RAW | " + " | ".join(f"{m} s" for m in names) + " | rounds, from go (s) |",
        "|---|---:|---:|---:|---:|" + "---:|" * len(names) + "---|",
    ]
    for name, rounds in results.items():
        go, start = median(rounds, "first_output", "imported"), median(rounds, "first_output")
        steps = " | ".join(_f(median(rounds, m)) for m in names)
        each = ", ".join(
            "error"
            if "error" in r
            else f"{r['first_output_s'] - r['since_start_s']['imported']:.2f}"
            for r in rounds
        )
        lines.append(
            f"| {name} | {_f(go)} | {_f(go / raw_go)} | {_f(start)} | {_f(start / raw_start)} "
            f"| {steps} | {each} |"
        )
    return lines


def section(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    n = len(results["raw"])
    return [
        f'## Time to the first output: a fresh start ({n} round(s), medians; "from go": from '
        "the contender's modules imported; milestones: seconds from the process start; see "
        "bench/first_output.py)",
        *table(results),
    ]


def _brief(result: dict[str, Any]) -> str:
    if "error" in result:
        return "ERROR " + str(result["error"])[:300]
    steps = "  ".join(f"{k} {v:.2f}" for k, v in result["since_start_s"].items())
    return f"{result['first_output_s']:.2f} s  ({steps})"
