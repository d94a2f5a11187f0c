"""The ``pipeline`` command (also ``python -m pipeline``).

Every command turns our errors into one readable line on stderr and exit code 2 (bad input or
config) or 1 (runtime failure); nothing is half done when a check fails, because all checks run
before anything is sent.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pipeline.cli_dlq import dlq_app
from pipeline.cli_jobs import job_command, job_view_command, jobs_command
from pipeline.cli_schedules import schedules_app
from pipeline.cli_status import status_command
from pipeline.errors import (
    AuthenticationError,
    ConfigError,
    DeclarationError,
    PipelineError,
    SchemaError,
    SerializationError,
    TLSError,
)

if TYPE_CHECKING:
    from pipeline.events import Event
    from pipeline.serde import SchemaCatalog
    from pipeline.stage import Topic

app = typer.Typer(
    help="Reliable Avro event pipelines on Apache Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
topics_app = typer.Typer(help="List and create topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(dlq_app, name="dlq")
app.add_typer(schedules_app, name="schedules")
app.command("status")(status_command)
app.command("job")(job_command)
app.command("jobs")(jobs_command)
app.command("job-view")(job_view_command)

# Help text is rich markup: "[pipeline]" unescaped would vanish as a style tag.
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file (\\[pipeline] table).")
]
StagesOpt = Annotated[
    str, typer.Option("--stages", help="Modules/packages whose topics are known (comma separated).")
]
# A refused login or untrusted certificate is fixed in the settings, like a bad option.
USAGE_ERRORS = (ConfigError, DeclarationError, SchemaError, AuthenticationError, TLSError)
DEFAULT_PROGRESS_S = 10.0


def _show_version(wanted: bool) -> None:
    if wanted:
        typer.echo(version_line())
        raise typer.Exit()


def version_line() -> str:
    """``kafka-pipeline 0.1.0 (confluent-kafka 2.16.1, Python 3.11.2)``, from the installed
    distributions' metadata (no client library is imported for it)."""
    from importlib.metadata import PackageNotFoundError, version

    def of(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    python = ".".join(map(str, sys.version_info[:3]))
    client = f"confluent-kafka {of('confluent-kafka')}"
    return f"kafka-pipeline {of('kafka-pipeline')} ({client}, Python {python})"


@app.callback()
def _importable_cwd(
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_show_version, help="Show the version."),
    ] = False,
) -> None:
    """Stage modules are named relative to the current directory, as with `python -m`."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def _fail(exc: PipelineError) -> typer.Exit:
    typer.secho(f"error: {exc}", fg="red", err=True)
    return typer.Exit(2 if isinstance(exc, USAGE_ERRORS) else 1)


def _settings(config: Path | None) -> Any:
    from pipeline.config import load_settings

    return load_settings(config)


@app.command()
def run(
    module: Annotated[
        str,
        typer.Argument(
            help="Stage module(s): stages.video, stages.video:Transcode, stages/video.py, a,b."
        ),
    ],
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Worker processes.")] = 1,
    config: ConfigOpt = None,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level",
            metavar="LEVEL",
            help="DEBUG, INFO, WARNING or ERROR (default: PIPELINE_LOG_LEVEL, else INFO).",
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No per-stage progress lines.")
    ] = False,
    progress_interval: Annotated[
        float,
        typer.Option(
            "--progress-interval", min=1, metavar="SECONDS", help="Seconds between progress lines."
        ),
    ] = DEFAULT_PROGRESS_S,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            metavar="PORT",
            help="Serve Prometheus /metrics on this port (PIPELINE_METRICS_PORT).",
        ),
    ] = None,
) -> None:
    """Run the stages of MODULE until SIGINT/SIGTERM (graceful: finish, commit, leave).

    Logs each stage's group, retry and dead-letter topics, then a progress line per stage."""
    from pipeline.config import load_settings
    from pipeline.logs import setup_logging
    from pipeline.worker import RunOptions, run_workers

    options = RunOptions(log_level, None if quiet else progress_interval)
    try:
        setup_logging(log_level)
        port = {} if metrics_port is None else {"metrics_port": metrics_port}
        code = run_workers(module, load_settings(config, **port), workers, options)
    except PipelineError as exc:
        raise _fail(exc) from None
    raise typer.Exit(code)


@app.command()
def publish(
    topic: Annotated[str, typer.Argument(help="Topic name (as declared in the stage modules).")],
    payload: Annotated[str, typer.Argument(help="The event as JSON, or @file.json.")],
    key: Annotated[
        str | None, typer.Option(help="Record key (default: the topic's key field).")
    ] = None,
    stages: StagesOpt = "stages",
    config: ConfigOpt = None,
    priority: Annotated[
        str | None,
        typer.Option(help="Priority lane: 0 (highest, the default) to N-1, or a level name."),
    ] = None,
) -> None:
    """Validate PAYLOAD against TOPIC's schema, Avro-encode and publish it (waits for the ack)."""
    from pydantic import ValidationError

    from pipeline.app import load_catalog
    from pipeline.publisher import Publisher
    from pipeline.registry import discover_topics

    try:
        settings = _settings(config)
        known = discover_topics(stages)
        if topic not in known:
            names = ", ".join(sorted(known)) or "none"
            raise DeclarationError(f"unknown topic {topic!r}; topics declared in {stages}: {names}")
        declared = known[topic]
        declared.check()  # a misspelt key/id field, found while importing the stage modules
        lane = _lane(declared, priority)
        data = _read_payload(payload)
        try:
            # Strict: JSON has types, so "12" for an int field is a mistake, not a number.
            event = declared.model.model_validate_json(data, strict=True)
        except ValidationError as exc:
            raise DeclarationError(
                f"invalid {declared.model.__name__} for {topic}: {_summarise(exc)}"
            ) from None
        catalog = load_catalog(settings)
        _check_encodes(event, catalog)
        with Publisher(settings, catalog=catalog) as publisher:
            where = publisher.publish(declared, event, key=key, priority=lane)
    except PipelineError as exc:
        raise _fail(exc) from None
    assert where is not None
    typer.echo(
        f"published {where.topic}[{where.partition}]@{where.offset} event-id={where.event_id}"
    )


def _lane(topic: Topic, priority: str | None) -> int:
    """``--priority``: a lane index or a level name (``pipeline.lanes``); bad ones exit 2."""
    try:
        return topic.lane(int(priority) if priority and priority.isdigit() else priority)
    except ValueError as exc:
        raise DeclarationError(str(exc)) from None


def _check_encodes(event: Event, catalog: SchemaCatalog) -> None:
    """Encode once without sending: a value Avro cannot hold (an int beyond 32 bits) is the
    payload's fault, so it exits 2 before any client is created."""
    from pipeline.serde import SingleObjectCodec

    try:
        SingleObjectCodec(catalog).encode(event, catalog.bind(type(event)), "")
    except SerializationError as exc:
        raise DeclarationError(str(exc)) from None


def _read_payload(payload: str) -> str:
    """The payload's JSON text (from the argument or @file), checked to be JSON."""
    text = payload
    if payload.startswith("@"):
        path = Path(payload[1:])
        if not path.is_file():
            raise DeclarationError(f"payload file {path} does not exist")
        text = path.read_text()
    try:
        json.loads(text)  # for this message; pydantic's would be about the model
    except json.JSONDecodeError as exc:
        raise DeclarationError(f"payload is not valid JSON: {exc}") from None
    return text


def _summarise(exc: Any) -> str:
    """Every error on one line: ``size_bytes: Input should be a valid integer; ...``."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg']}" for e in exc.errors()
    )


@topics_app.command("list")
def topics_list(config: ConfigOpt = None) -> None:
    """List topics and their partition counts."""
    from pipeline.transport import kafka

    try:
        settings = _settings(config)
        topics = kafka(settings).admin().topics()
    except PipelineError as exc:
        raise _fail(exc) from None
    if not topics:  # said on stderr, so `| wc -l` still counts topics
        typer.echo(f"no topics on {settings.bootstrap_servers}", err=True)
    for name in sorted(topics):
        typer.echo(f"{name}\t{topics[name].partitions}")


@topics_app.command("create")
def topics_create(
    names: Annotated[list[str] | None, typer.Argument(help="Topic names to create.")] = None,
    partitions: Annotated[int | None, typer.Option(min=1, help="Partition count.")] = None,
    stages: Annotated[
        str | None, typer.Option("--stages", help="Also create every topic these stages use.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Create topics (existing ones are left alone)."""
    from pipeline.app import Pipeline
    from pipeline.transport import kafka

    try:
        settings = _settings(config)
        transport = kafka(settings)
        wanted = [settings.topic(n) for n in names or []]
        # Asked to create: the internal topics below too, even where run-time creation is off.
        asked = settings.model_copy(update={"create_topics": True})
        pipeline = Pipeline.from_spec(stages, asked, transport) if stages else None
        wanted += pipeline.topics() if pipeline else []
        if not wanted:
            raise DeclarationError("name at least one topic, or pass --stages")
        created = transport.admin().create(wanted, partitions)
        # Cancel and schedule-state topics: one partition each, whatever --partitions says.
        created += pipeline.ensure_internal_topics() if pipeline else []
    except PipelineError as exc:
        raise _fail(exc) from None
    typer.echo(f"created {len(created)} topic(s): {', '.join(created) or 'all existed'}")


@app.command()
def demo(
    events: Annotated[int, typer.Option(help="Demo events to publish per pipeline.")] = 200,
    once: Annotated[bool, typer.Option(help="Exit once every stage has drained.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Run the example video and order pipelines with a live progress view (make run-pipeline)."""
    from pipeline.demo import run_demo

    logging.basicConfig(level=logging.WARNING)
    try:
        code = run_demo(_settings(config), events=events, once=once)
    except PipelineError as exc:
        raise _fail(exc) from None
    raise typer.Exit(code)


def main() -> None:
    sys.exit(app())  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    main()
