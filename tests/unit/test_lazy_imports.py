"""A plain worker's start imports none of the optional features it does not use (issue 15).

Every worker process, the ``pipeline`` CLI and every test process pays for what ``import
pipeline`` and the worker's modules import: these modules load where a feature is first used,
or with the feature's own module, and each check runs in a fresh interpreter, so an eager
import added anywhere shows up here, whatever imported it. Nothing here is timed.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

# What a worker that uses none of these features must not import, and the feature it is for.
OPTIONAL = {
    "croniter": "cron schedules (pipeline.schedules)",
    "dateutil": "cron schedules (croniter's)",
    "pipeline.scheduler": "cron schedules",
    "pipeline.schedulestate": "cron schedules",
    "tenacity": "in-process retries, transaction patience",
    "opentelemetry": "tracing, span ids in JSON logs",
    "pipeline.tracing": "tracing",
    "prometheus_client": "metrics (PIPELINE_METRICS_PORT)",
    "pipeline.metrics": "metrics",
    "sqlite3": "the job view's store, the SQLite idempotency store",
    "psycopg": "the PostgreSQL idempotency store",
    "pipeline.idempotency": "idempotency stores",
    "pipeline.jobs.store": "job status",
    "pipeline.jobs.view": "job status",
    "pipeline.jobs.lookup": "job status",
    "pipeline.jobs.queued": "job status (publisher side)",
    "pipeline.jobs.tracker": "job status (a tracking stage)",
    "pipeline.jobs.writer": "job status",
    "pipeline.alertwatch": "alerts (a stage's watch)",
    "pipeline.queues": "pipeline status, alerts that read the broker",
    "pipeline.livemetrics": "pipeline status",
    "urllib.request": "pipeline status (live metrics)",
    "pipeline.kafka.backlog": "pipeline status, alerts",
    "pipeline.kafka.topics_io": "delayed topics, schedules, the DLQ tools",
    "pipeline.publisher": "publishing",
    "pipeline.replay": "DLQ replay",
    "pipeline.reply": "request-reply",
    "pipeline.replyfailures": "request-reply (a replying stage's error replies)",
    "pipeline.replyinbox": "request-reply (the requesting side)",
    "pipeline.replyrequests": "request-reply (the requesting side)",
    "pipeline.demo": "the demo",
    "multiprocessing": "worker processes (pipeline run --workers N)",
    "typer": "the CLI",
    "click": "the CLI",
    "rich": "the CLI",
    "pipeline.cli": "the CLI",
}
# The CLI needs its own (typer, its DLQ commands' module); nothing else above.
CLI_OWN = {"typer", "click", "pipeline.cli", "pipeline.dlq"}


def loaded(code: str) -> list[str]:
    """Which OPTIONAL modules a fresh interpreter has loaded after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {sorted(OPTIONAL)!r} "
    probe += "if m in sys.modules]))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120,
        cwd=ROOT,
    ).stdout  # fmt: skip
    found: list[str] = json.loads(out.splitlines()[-1])
    return found


def test_declaring_stages_loads_no_optional_feature_and_no_settings() -> None:
    """``from pipeline import Stage, Event, ...`` (a stage module, its unit tests) loads neither
    an optional feature nor pydantic-settings: ``Settings`` loads when it is first named."""
    code = "from pipeline import Context, Event, Hook, Stage, Topic\nimport stages.orders, sys\n"
    code += "assert 'pydantic_settings' not in sys.modules, 'pydantic_settings'"
    assert loaded(code) == []


def test_a_plain_workers_modules_load_no_optional_feature() -> None:
    """What ``pipeline run`` and the bench's OURS import to run a stage: the app, the worker,
    the Kafka adapter, settings and logging."""
    code = "import pipeline, pipeline.app, pipeline.config, pipeline.kafka, pipeline.logs\n"
    code += "import pipeline.runner, pipeline.worker"
    assert loaded(code) == []


def test_building_and_running_a_plain_stage_loads_no_optional_feature() -> None:
    """Building a pipeline of a plain stage, ensuring its topics and composing its runner (on
    the in-memory broker, whose harness imports ``pipeline.dlq`` itself) loads none of them:
    the features' modules load only for a stage that declares them."""
    code = """
from pipeline.app import Pipeline
from pipeline.config import Settings
from pipeline.examples.orders import Payment
from pipeline.testing import MemoryBroker, MemoryTransport
settings = Settings(schemas_dir="schemas")
pipeline = Pipeline.build(settings, [Payment], MemoryTransport(MemoryBroker(), settings))
pipeline.start_topics().wait()
assert pipeline.scheduler() is None
runner = pipeline.runner(pipeline.plans[0], "w1")
"""
    assert loaded(code) == []


def test_the_cli_loads_only_its_own_modules() -> None:
    """``pipeline --help`` / ``pipeline run``'s imports: typer and the commands, and none of
    the optional features."""
    found = loaded("import pipeline.cli, pipeline.worker")
    assert set(found) <= CLI_OWN, sorted(set(found) - CLI_OWN)


def test_a_feature_in_use_loads_its_modules() -> None:
    """The other side: the lazy names still resolve, and a schedule brings croniter in."""
    code = """
from pipeline import Pipeline, Publisher, Settings, Worker, load_settings, status
from pipeline.jobs import JobStore, JobView, get
from pipeline.schedules import Schedule
from pipeline.examples.orders import PLACED
Schedule("tick", "* * * * *", PLACED, lambda tick: None)
"""
    found = set(loaded(code))
    assert {"croniter", "pipeline.publisher", "pipeline.queues", "sqlite3"} <= found
