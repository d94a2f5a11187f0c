"""``pipeline dlq``: inspect, replay and purge dead-letter topics (``<group>.dlq``).

``list`` and ``replay`` never print payloads. ``show`` decodes the events it is asked for (an
explicit operator action) and previews at most 64 bytes of a record it cannot decode. ``replay``
re-publishes and leaves the dead letters in place; ``purge`` removes them afterwards.

Errors follow ``pipeline.cli``: bad input (not a ``.dlq`` topic, a missing topic, a bad time)
exits 2 before anything is sent or deleted; a runtime failure exits 1.
"""

from __future__ import annotations

import json
from contextlib import closing
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pipeline.dlq import (
    DLQ_SUFFIX,
    Failure,
    ReplayFilter,
    StoredRecord,
    count_by_cause,
    hex_preview,
    iso,
    parse_instant,
    show_key,
    summary,
    tail,
)
from pipeline.errors import DeclarationError, DecodeError, PipelineError, SchemaError

if TYPE_CHECKING:
    from pipeline.config import Settings
    from pipeline.transport import Transport

dlq_app = typer.Typer(
    help="Inspect, replay and purge dead-letter topics (<group>.dlq).", no_args_is_help=True
)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file (\\[pipeline] table).")
]
TopicArg = Annotated[
    str, typer.Argument(help="Dead-letter topic, e.g. orders-billing.dlq (prefix optional).")
]
TRACEBACK_LINES = 20
REPLAY_HELP = (
    "Re-publish matching dead letters to the stage that failed them, then report matched, "
    "replayed, skipped and failed counts (exit 1 if any failed).\n\n"
    "They go into that stage's first retry topic, due at once with the attempts reset, so only "
    "its group sees them again; a stage without retry topics gets them on its original input "
    "topic, where every group reading it does.\n\n"
    "Key, value and headers are kept byte for byte, minus dlq-* and retry-* headers, plus "
    "replay-count, replayed-at-ms and replayed-from, with the same event-id (for an event that "
    "came without one, the id its stage gave it). Only records present when the replay starts "
    "are read, and every send is acknowledged before the report.\n\n"
    "The dead letters are NOT deleted: run `pipeline dlq purge` once the replay is handled."
)


def _fail(exc: PipelineError) -> typer.Exit:
    from pipeline.cli import _fail as fail  # one error convention for every command

    return fail(exc)


def _connect(config: Path | None) -> tuple[Settings, Transport]:
    """The settings, and the transport every client of the command comes from."""
    from pipeline.config import load_settings
    from pipeline.transport import kafka

    settings = load_settings(config)
    return settings, kafka(settings)


def _dead_letter_topics(settings: Settings, transport: Transport) -> list[str]:
    """Dead-letter topics under ``settings.topic_prefix``, sorted."""
    names = transport.admin().topics()
    prefix = settings.topic_prefix
    return sorted(n for n in names if n.startswith(prefix) and n.endswith(DLQ_SUFFIX))


def _resolve(settings: Settings, transport: Transport, name: str) -> str:
    """The physical name of an existing dead-letter topic of this environment (topic_prefix)."""
    if not name.endswith(DLQ_SUFFIX):
        raise DeclarationError(f"{name!r} is not a dead-letter topic (names end with .dlq)")
    existing = _dead_letter_topics(settings, transport)
    for candidate in (name, settings.topic(name)):
        if candidate in existing:
            return candidate
    known = ", ".join(existing) or "none"
    raise DeclarationError(f"dead-letter topic {name!r} does not exist; existing: {known}")


# -- list --------------------------------------------------------------------------------------


@dlq_app.command("list")
def list_dlqs(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Count the records in every dead-letter topic, by stage and exception type."""
    try:
        settings, transport = _connect(config)
        topics = _dead_letter_topics(settings, transport)
        log = transport.topic_log()
        data = summary({t: count_by_cause(log.read(t)) for t in topics})
    except PipelineError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        _print_table(data)


def _print_table(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("topic", "stage", "exception type", "records", show_footer=True)
    table.columns[0].overflow = table.columns[2].overflow = "fold"  # names are copied from here
    table.columns[3].justify = "right"
    table.columns[3].footer = str(data["total"])
    table.columns[0].footer = f"{len(data['topics'])} topic(s)"
    for entry in data["topics"]:
        causes = entry["causes"] or [{"stage": "-", "exception_type": "-", "count": 0}]
        for i, cause in enumerate(causes):
            name = entry["topic"] if i == 0 else ""
            table.add_row(name, cause["stage"], cause["exception_type"], str(cause["count"]))
        table.add_section()
    Console().print(table)


# -- show --------------------------------------------------------------------------------------


@dlq_app.command()
def show(
    topic: TopicArg,
    limit: Annotated[int, typer.Option(min=1, help="Records to show.")] = 10,
    offset: Annotated[int, typer.Option(min=0, help="First offset (in each partition).")] = 0,
    partition: Annotated[int | None, typer.Option(min=0, help="Only this partition.")] = None,
    stages: Annotated[
        str, typer.Option("--stages", help="Modules/packages declaring the original topics.")
    ] = "stages",
    traceback: Annotated[
        bool, typer.Option("--traceback", help="Show the traceback tail.")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Show dead letters: where they came from, the error, and the decoded event."""
    try:
        settings, transport = _connect(config)
        decoder = _Decoder(settings, transport, stages)
        physical = _resolve(settings, transport, topic)
        log = transport.topic_log()
        if partition is not None and partition not in log.watermarks(physical):
            raise DeclarationError(f"{physical} has no partition {partition}")
        records = log.read(physical, partition=partition, start_offset=offset)
        with closing(decoder), closing(records):
            for record in islice(records, limit):
                typer.echo(_describe(record, decoder, traceback))
    except PipelineError as exc:
        raise _fail(exc) from None


class _Decoder:
    """Decodes a dead letter with its original topic's model, found among the declared topics."""

    def __init__(self, settings: Settings, transport: Transport, stages: str) -> None:
        from pipeline.app import Pipeline
        from pipeline.lanes import lane_topic
        from pipeline.registry import discover_topics

        known = discover_topics(stages)  # and their priority lanes, whose events they carry
        lanes = {lane_topic(n, k): t for n, t in known.items() for k in range(1, t.lanes)}
        self._topics = known | lanes
        self._stages = stages
        self._pipeline = Pipeline.build(settings, transport=transport)
        self._prefix = settings.topic_prefix

    def close(self) -> None:
        self._pipeline.close()

    def render(self, original_topic: str | None, value: bytes | None) -> list[str]:
        logical = (original_topic or "").removeprefix(self._prefix)
        declared = self._topics.get(logical)
        if declared is None:
            reason = (
                f"topic {original_topic!r} is not declared in {self._stages} "
                f"(with topic_prefix {self._prefix!r})"
            )
            return [f"  undecoded  {reason}", f"  hex        {hex_preview(value)}"]
        if value is None:
            return ["  event      (no value: a tombstone)"]
        try:
            binding = self._pipeline.catalog.bind(declared.model)
            event = self._pipeline.codec.decode(value, binding)
        except (DecodeError, SchemaError) as exc:
            return [
                f"  undecoded  {type(exc).__name__}: {exc}",
                f"  hex        {hex_preview(value)}",
            ]
        body = json.dumps(event.model_dump(mode="json"), indent=2, ensure_ascii=False)
        return [f"  event      {type(event).__name__}", _indent(body, 4)]


def _describe(record: StoredRecord, decoder: _Decoder, with_traceback: bool) -> str:
    failure = Failure.of(record)
    lines = [
        f"── {record.coordinates}  key={show_key(record.key)}",
        f"  original   {failure.original_coordinates}",
        f"  stage      {failure.stage} (group {failure.group})",
        f"  error      {failure.exception_type}: {failure.exception_message}",
        f"  attempts   {failure.attempts}  first failure {iso(failure.first_failure_ms)}"
        f"  last failure {iso(failure.last_failure_ms)}",
    ]
    if with_traceback:
        lines += ["  traceback", _indent(tail(failure.traceback, TRACEBACK_LINES), 4)]
    return "\n".join(lines + decoder.render(failure.original_topic, record.value))


def _indent(text: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in text.splitlines())


# -- replay ------------------------------------------------------------------------------------


@dlq_app.command(help=REPLAY_HELP)
def replay(
    topic: TopicArg,
    error_type: Annotated[
        str | None,
        typer.Option(help="Only this exception type: ValueError or builtins.ValueError."),
    ] = None,
    key: Annotated[str | None, typer.Option(help="Only records with this key.")] = None,
    since: Annotated[str | None, typer.Option(help="Last failure at or after (ISO 8601).")] = None,
    until: Annotated[str | None, typer.Option(help="Last failure before (ISO 8601).")] = None,
    rate: Annotated[float | None, typer.Option(min=0.001, help="Max records per second.")] = None,
    dry_run: Annotated[
        bool, typer.Option(help="Report what would be replayed; send nothing.")
    ] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Stop after this many matches.")] = None,
    config: ConfigOpt = None,
) -> None:
    from pipeline.replay import ReplayRequest
    from pipeline.replay import replay as run_replay

    try:
        chosen = ReplayFilter(
            error_type=error_type,
            key=key.encode() if key is not None else None,
            since_ms=parse_instant(since, "--since") if since else None,
            until_ms=parse_instant(until, "--until") if until else None,
        )
        settings, transport = _connect(config)
        physical = _resolve(settings, transport, topic)
        request = ReplayRequest(physical, chosen, limit, rate, dry_run)
        tally = run_replay(transport, request, say=typer.echo, warn=_warn)
    except PipelineError as exc:
        raise _fail(exc) from None
    note = "dry run, nothing sent" if dry_run else f"the dead letters stay in {physical}"
    typer.echo(f"{physical}: {tally.line()} ({note})")
    raise typer.Exit(1 if tally.failed else 0)


def _warn(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)


# -- purge -------------------------------------------------------------------------------------


@dlq_app.command()
def purge(
    topic: TopicArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Delete every record now in a dead-letter topic (records arriving meanwhile are kept)."""
    try:
        settings, transport = _connect(config)
        physical = _resolve(settings, transport, topic)
        log = transport.topic_log()
        marks = log.watermarks(physical)
        present = sum(high - low for low, high in marks.values())
        if not present:
            typer.echo(f"{physical} is empty")
            return
        if not yes:
            typer.confirm(f"Delete {present} record(s) from {physical}?", abort=True)
        removed = log.delete_up_to(physical, marks)
    except PipelineError as exc:
        raise _fail(exc) from None
    typer.echo(f"removed {removed} record(s) from {physical}")
