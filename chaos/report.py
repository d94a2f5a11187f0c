"""The end of a run: a table for people, then one JSON line (the last line of stdout) for tools."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from chaos.history import Figures
from chaos.inject import FaultLog


@dataclass(frozen=True)
class RunFacts:
    """What the orchestrator knows besides the history."""

    events: int
    seed: int
    store: str  # "sqlite" or "postgresql"
    broker: str  # "private" or "external"
    run_dir: str
    elapsed_s: float
    drained: bool
    drain_s: float
    residual_lag: int  # records behind the committed offsets after the final stop
    behind: list[str]  # the partitions concerned
    shutdown_timeout_s: float
    published_all: bool
    passed: bool
    nodes: int = 1  # of the private cluster; 0: external broker
    unread: list[str] = field(default_factory=list)  # topic reads that ran out of time
    # EosCopy inputs without a committed output that have one aborted or open (None: no such
    # input, not looked at)
    eos_missing_uncommitted: int | None = None


def summary(figures: Figures, faults: FaultLog, facts: RunFacts) -> dict[str, Any]:
    terms = faults.sigterm_exits
    return {
        "published": figures.published,
        "processed": figures.processed,
        "lost": figures.lost,
        "duplicate_deliveries": figures.duplicate_deliveries,
        "duplicate_side_effects": figures.duplicate_side_effects,
        "dlq_equals_poison": figures.dlq_equals_poison,
        "order_violations": figures.order_violations,
        "eos_duplicate_outputs": figures.eos_duplicate_outputs,
        "eos_missing_outputs": figures.eos_missing_outputs,
        "eos_missing_uncommitted": facts.eos_missing_uncommitted,
        "reads_complete": not facts.unread,
        "kills": len(faults.kills),
        "sigterms": len(terms),
        "sigterm_clean_exits": sum(1 for e in terms if clean(e.code, e.seconds, facts)),
        "scale_events": len(faults.scale_events),
        "broker_restarts": len(faults.broker_restarts),
        "elapsed_s": round(facts.elapsed_s, 1),
        "poison": figures.poison,
        "redelivered_events": figures.redelivered_events,
        "stray_side_effects": figures.stray_side_effects,
        "dlq_records": figures.dlq_records,
        "reordered_by_retry": figures.reordered_by_retry,
        "eos_outputs": figures.eos_outputs,
        "eos_unexpected_outputs": figures.eos_unexpected_outputs,
        "eos_dlq_equals_poison": figures.eos_dlq_equals_poison,
        "unexpected_exits": len(faults.unexpected_exits),
        "max_sigterm_exit_s": round(max((e.seconds for e in terms), default=0.0), 1),
        "broker_restart_skipped": faults.broker_restart_skipped,
        "nodes": facts.nodes,
        "leader_kills": sum(1 for k in faults.node_kills if k.role == "leader"),
        "controller_kills": sum(1 for k in faults.node_kills if k.role == "controller"),
        "failovers_recovered": all(k.recovered for k in faults.node_kills),
        "max_recovery_s": max(
            (s for k in faults.node_kills for s in k.recovery_s.values() if s is not None),
            default=None,
        ),
        "failovers": [k.as_dict() for k in faults.node_kills],
        "node_kills_skipped": faults.node_kills_skipped,
        "drained": facts.drained,
        "residual_lag": facts.residual_lag,
        "drain_s": round(facts.drain_s, 1),
        "events": facts.events,
        "seed": facts.seed,
        "store": facts.store,
        "broker": facts.broker,
        "run_dir": facts.run_dir,
        "passed": facts.passed,
        "unread": facts.unread,
    }


def clean(code: int | None, seconds: float, facts: RunFacts) -> bool:
    """A SIGTERM exit is clean with code 0 within the shutdown timeout."""
    return code == 0 and seconds <= facts.shutdown_timeout_s


_ROWS: list[tuple[str, str, str]] = [
    # (summary key, label, expectation: "0", "true", or "" for information only)
    ("published", "events published (good + poison)", ""),
    ("poison", "  of which poison", ""),
    ("processed", "good events with a side effect", ""),
    ("lost", "lost (good, no side effect)", "0"),
    ("duplicate_deliveries", "duplicate deliveries (handler calls)", ""),
    ("redelivered_events", "events delivered more than once", ""),
    ("duplicate_side_effects", "duplicate side effects", "0"),
    ("stray_side_effects", "side effects of unknown/poison ids", "0"),
    ("dlq_records", "Effects DLQ records", ""),
    ("dlq_equals_poison", "Effects DLQ == poison set", "true"),
    ("order_violations", "per-key order violations", "0"),
    ("reordered_by_retry", "reordered via retry topics (allowed)", ""),
    ("eos_outputs", "EosCopy committed outputs", ""),
    ("eos_duplicate_outputs", "EosCopy inputs with >1 output", "0"),
    ("eos_missing_outputs", "EosCopy inputs with no output", "0"),
    ("eos_missing_uncommitted", "  of which output aborted/open only", ""),
    ("eos_dlq_equals_poison", "EosCopy DLQ == poison set", "true"),
    ("kills", "kill -9", ""),
    ("sigterms", "SIGTERM exits", ""),
    ("sigterm_clean_exits", "  clean (exit 0 within timeout)", ""),
    ("max_sigterm_exit_s", "  slowest SIGTERM exit (s)", ""),
    ("scale_events", "scale events", ""),
    ("broker_restarts", "broker restarts", ""),
    ("leader_kills", "kill -9 of the busiest leader node", ""),
    ("controller_kills", "kill -9 of the active controller", ""),
    ("failovers_recovered", "stages recovered from every node kill", "true"),
    ("max_recovery_s", "  slowest recovery (s)", ""),
    ("unexpected_exits", "unexpected worker exits", "0"),
    ("drained", "drained (lag 0, DLQ stable)", "true"),
    ("reads_complete", "topics read back completely", "true"),
    ("residual_lag", "committed lag after the final stop", "0"),
    ("elapsed_s", "elapsed (s)", ""),
]


def render(data: dict[str, Any], figures: Figures, faults: FaultLog, behind: list[str]) -> None:
    console = Console(width=110, highlight=False)
    title = f"chaos run, seed {data['seed']}: {'PASSED' if data['passed'] else 'FAILED'}"
    table = Table(title=title, title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("expected", justify="right")
    table.add_column("", justify="center")
    for key, label, expected in _ROWS:
        value = data[key]
        shown = str(value).lower() if isinstance(value, bool) else str(value)
        mark = "" if not expected else ("ok" if shown == expected else "FAIL")
        table.add_row(label, shown, expected, mark)
    console.print(table)
    if data["sigterm_clean_exits"] != data["sigterms"]:
        console.print("[bold red]unclean SIGTERM exits count as a failure[/]")
    if faults.broker_restart_skipped:
        console.print(f"broker restart: {faults.broker_restart_skipped}")
    for k in faults.node_kills:
        d = k.as_dict()
        console.print(
            f"node kill at {d['at_s']}s: node {k.node} ({k.role}), led {k.led} input "
            f"partitions; recovery {k.recovery_s}, node ready {k.ready_s}s, in sync {k.in_sync_s}s"
        )
    for problem, sample in figures.samples.items():
        console.print(f"[bold]{problem}[/] (first {len(sample)}): {', '.join(sample)}")
    for line in behind:
        console.print(f"behind after the final stop: {line}")
    for line in data.get("unread", ()):
        console.print(f"[bold red]not read back[/]: {line}")
    for crashed in faults.unexpected_exits:
        who = f"worker-{crashed.number}"
        console.print(f"unexpected exit: {who} code {crashed.code}, log {crashed.log}")
    console.print(f"store {data['store']}, broker {data['broker']}, run dir {data['run_dir']}")


def json_line(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=False)
