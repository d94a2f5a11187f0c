"""``pipeline status``: queue counts per stage, read from the broker (``pipeline.queues``).

Works with no worker running. The live columns (active, completed, failed, breaker) need the
workers' metrics (``--metrics URL``); without them, or when they do not answer, they show
``n/a``. A broker that does not answer within ``--timeout`` is one line and exit 1; bad input
(an unknown stage, a module that does not import, bad settings) exits 2.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.errors import DeclarationError, PipelineError

if TYPE_CHECKING:
    from pipeline.config import Settings
    from pipeline.queues import PipelineStatus, StageStatus
    from pipeline.registry import StagePlan

COLUMNS = ("stage", "group", "waiting", "oldest", "active", "delayed", "completed", "failed",
           "dead", "breaker")  # fmt: skip


def status_command(
    names: Annotated[
        list[str] | None, typer.Argument(help="Stage names or groups (default: every stage).")
    ] = None,
    stages: Annotated[
        str, typer.Option("--stages", help="Stage modules or packages, as for `pipeline run`.")
    ] = "stages",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Print again every --interval.")] = False,
    interval: Annotated[float, typer.Option(min=0.5, help="Seconds between --watch reads.")] = 2.0,
    metrics: Annotated[
        list[str] | None,
        typer.Option("--metrics", help="A worker's /metrics URL, for the live columns (repeat)."),
    ] = None,
    timeout: Annotated[float, typer.Option(min=0.5, help="Seconds to wait for the broker.")] = 5.0,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML settings file.")
    ] = None,
) -> None:
    """Waiting, active, delayed, completed, failed and dead-lettered events per stage."""
    from pipeline.cli import _fail
    from pipeline.livemetrics import PrometheusSource
    from pipeline.queues import StatusReader

    try:
        settings, plans = _plans(stages, names or [], config)
        live = PrometheusSource(metrics) if metrics else None
        with StatusReader(settings, plans, live=live, timeout_s=timeout) as reader:
            while True:
                _show(reader.read(), as_json)
                if not watch:
                    return
                time.sleep(interval)
    except PipelineError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def _plans(spec: str, names: list[str], config: Path | None) -> tuple[Settings, list[StagePlan]]:
    from pipeline.app import load_catalog
    from pipeline.config import load_settings
    from pipeline.registry import discover_stages, plan

    settings = load_settings(config)
    plans = plan(discover_stages(spec), load_catalog(settings), settings)
    if not names:
        return settings, plans
    known = {p.name: p for p in plans} | {p.group: p for p in plans}
    unknown = [n for n in names if n not in known]
    if unknown:
        choices = ", ".join(sorted(p.name for p in plans))
        raise DeclarationError(f"no stage {', '.join(unknown)} in {spec}; stages: {choices}")
    return settings, list({known[n].group: known[n] for n in names}.values())


def _show(status: PipelineStatus, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(status.to_dict()))
        return
    rows = [COLUMNS, *(_row(s) for s in status.stages)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    for row in rows:
        pairs = enumerate(zip(row, widths, strict=True))
        cells = (c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in pairs)
        typer.echo("  ".join(cells).rstrip())
    for s in status.stages:
        if s.missing_topics:
            typer.echo(f"{s.stage}: topics not created yet: {', '.join(s.missing_topics)}")
    if status.live_error:
        typer.echo(f"live columns n/a: {status.live_error}")
    elif status.live is None:
        typer.echo("active, completed, failed, breaker: n/a without --metrics (worker metrics)")


def _row(s: StageStatus) -> tuple[str, ...]:
    return (
        s.stage, s.group, _waiting(s), _age(s.oldest_waiting_s), _n(s.active), str(s.delayed),
        _n(s.completed), _n(s.failed), str(s.dead_lettered), s.breaker or "n/a",
    )  # fmt: skip


def _waiting(s: StageStatus) -> str:
    """With priority lanes, each lane's share too, lane 0 first: ``50002 (2/0/50000)``."""
    lanes = f" ({'/'.join(map(str, s.lanes))})" if s.lanes else ""
    return f"{s.waiting}{lanes}"


def _n(value: int | None) -> str:
    return "n/a" if value is None else str(value)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
