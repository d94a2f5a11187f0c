"""``pipeline schedules list|pause|resume|trigger``: cron schedules, from their state topic.

The schedules are the ``SCHEDULES`` of the modules ``--stages`` names; their state (last tick
handled, paused) is read from the broker, so these work with no worker running. ``pause``,
``resume`` and ``trigger`` write a command record to the state topic and return once the
broker has acknowledged it; the owning worker, which follows that topic, applies it within a
second or so, and ``trigger`` fires exactly once. An unknown schedule,
a module that does not import or bad settings exit 2; a broker that does not answer, 1.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pipeline.errors import DeclarationError, DeliveryError, PipelineError, TopicNotFoundError

if TYPE_CHECKING:
    from pipeline.config import Settings
    from pipeline.schedules import Schedule
    from pipeline.schedulestate import ScheduleState
    from pipeline.transport import Transport

schedules_app = typer.Typer(
    help="List, pause, resume and trigger cron schedules.", no_args_is_help=True
)
StagesOpt = Annotated[
    str, typer.Option("--stages", help="Modules declaring SCHEDULES, as for `pipeline run`.")
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML settings file.")]
NameArg = Annotated[str, typer.Argument(help="The schedule's name.")]
COLUMNS = ("schedule", "cron", "tz", "catch_up", "state", "handled_through", "next_tick")
ACK_TIMEOUT_S = 15.0


@schedules_app.command("list")
def list_command(
    stages: StagesOpt = "stages",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Each schedule: its cron, whether it is paused, the last tick handled and the next."""
    with _errors():
        settings, transport, schedules = _load(stages, config)
        state = _read(settings, transport)
        rows = [_row(s, state) for s in schedules]
        if as_json:
            typer.echo(json.dumps([dict(zip(COLUMNS, r, strict=True)) for r in rows]))
            return
        table = [COLUMNS, *rows]
        widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
        for row in table:
            typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@schedules_app.command("pause")
def pause_command(name: NameArg, stages: StagesOpt = "stages", config: ConfigOpt = None) -> None:
    """Stop firing NAME: ticks that come due while it is paused are skipped, not caught up."""
    from pipeline.schedulestate import paused_record

    with _errors():
        settings, transport, _ = _load(stages, config, name)
        _write(settings, transport, paused_record(name, True))
        typer.echo(f"paused {name}")


@schedules_app.command("resume")
def resume_command(name: NameArg, stages: StagesOpt = "stages", config: ConfigOpt = None) -> None:
    """Fire NAME again from its next tick."""
    from pipeline.schedulestate import paused_record

    with _errors():
        settings, transport, _ = _load(stages, config, name)
        _write(settings, transport, paused_record(name, False))
        typer.echo(f"resumed {name}")


@schedules_app.command("trigger")
def trigger_command(name: NameArg, stages: StagesOpt = "stages", config: ConfigOpt = None) -> None:
    """Fire NAME once now, besides its ticks (even while paused); the tick is the time now."""
    from pipeline.schedulestate import trigger_record

    with _errors():
        settings, transport, _ = _load(stages, config, name)
        trigger_id = str(uuid.uuid4())
        _write(settings, transport, trigger_record(name, trigger_id, round(time.time() * 1000)))
        typer.echo(f"triggered {name} ({trigger_id})")


@contextmanager
def _errors() -> Iterator[None]:
    """Our errors as one line and exit 2 (usage) or 1 (runtime), as every command does."""
    from pipeline.cli import _fail

    try:
        yield
    except PipelineError as exc:
        raise _fail(exc) from None


def _load(
    spec: str, config: Path | None, name: str | None = None
) -> tuple[Settings, Transport, tuple[Schedule, ...]]:
    from pipeline.config import load_settings
    from pipeline.schedules import load_schedules
    from pipeline.transport import kafka

    settings = load_settings(config)
    schedules = load_schedules(spec)
    if not schedules:
        raise DeclarationError(f"{spec} declares no SCHEDULES")
    if name is not None and name not in {s.name for s in schedules}:
        choices = ", ".join(s.name for s in schedules)
        raise DeclarationError(f"no schedule {name!r} in {spec}; schedules: {choices}")
    return settings, kafka(settings), schedules


def _read(settings: Settings, transport: Transport) -> ScheduleState:
    from pipeline.schedulestate import ScheduleState, read_state, state_topic

    try:
        return read_state(transport.topic_log(), state_topic(settings))
    except TopicNotFoundError:  # no worker has run yet
        return ScheduleState()


def _write(settings: Settings, transport: Transport, key_value: tuple[bytes, bytes]) -> None:
    from pipeline.schedulestate import ensure_state_topic, state_topic

    ensure_state_topic(settings, transport)
    topic = state_topic(settings)
    producer = transport.producer("pipeline-cli-schedules")
    outcome: list[Any] = []
    producer.produce(topic, key_value[1], key_value[0], None, lambda e, _m: outcome.append(e))
    producer.flush(ACK_TIMEOUT_S)
    if not outcome:
        raise DeliveryError(f"no acknowledgement from {topic} within {ACK_TIMEOUT_S:.0f}s")
    if outcome[0] is not None:
        raise producer.delivery_error(outcome[0], topic)


def _row(schedule: Schedule, state: ScheduleState) -> tuple[str, ...]:
    from pipeline.schedules import from_ms

    through = state.through_ms.get(schedule.name)
    paused = state.paused.get(schedule.name, False)
    last = "-" if through is None else from_ms(through, schedule).isoformat()
    start = datetime.now(UTC) if through is None else from_ms(through, schedule)
    upcoming = "-" if paused else schedule.next_tick(start).isoformat()
    return (schedule.name, schedule.cron, schedule.tz, schedule.catch_up,
            "paused" if paused else "active", last, upcoming)  # fmt: skip
