"""`pipeline run` names each stage's groups and topics at startup, then logs a progress line
per stage on an interval, with the group's lag from the broker, until it has drained."""

from __future__ import annotations

import re
import signal
from pathlib import Path

from pipeline.publisher import Publisher
from tests.integration.app_stages import PINGS, Echo
from tests.integration.kit import (
    make_pings,
    prepare,
    settings_env,
    unique_settings,
    wait_until,
    worker_process,
)

DRAINED = re.compile(r"progress echo: processed 5 \(\+\d+\), failed 0, dead-lettered 0, lag 0")
STOPPED = re.compile(r"progress echo: processed 5 \(\+0\), failed 0, .* \(stopped\)")


def test_run_logs_the_names_then_progress_until_drained(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = unique_settings(kafka_bootstrap)
    prepare(settings, [Echo])
    with Publisher(settings) as publisher:
        for ping in make_pings(5):
            publisher.publish(PINGS, ping)
    log = tmp_path / "run.log"
    args = ("--progress-interval", "1")
    with worker_process(
        "tests.integration.app_stages:Echo", settings_env(settings), log, 1, args
    ) as w:
        wait_until(lambda: w.alive() and DRAINED.search(w.output()), 60, "a drained progress line")
        w.signal(signal.SIGINT)
        assert w.wait(30) == 0
    group, pings = settings.topic("app_stages.echo"), settings.topic(PINGS.name)
    retries = ", ".join(f"{group}.retry.{d}" for d in ("1s", "10s", "60s"))
    assert (
        f"stage echo: group {group} reads {pings}; retries: {retries} (group {group}.retry); "
        f"dead letters: {group}.dlq" in w.output()
    )
    assert STOPPED.search(w.output()), w.output()  # and a last line as the stage stops
