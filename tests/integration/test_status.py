"""`pipeline status` on the real broker, with no worker running: a known backlog is counted
exactly (waiting, delayed, dead letters) and aged from its record's timestamp; a broker that
does not answer is one line and exit 1 within seconds."""

from __future__ import annotations

import json
import socket
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.queues import status
from tests.integration.app_stages import Echo
from tests.integration.kit import prepare, settings_env, unique_settings

SPEC = "--stages=tests.integration.app_stages:Echo"
OLD_S = 120  # the oldest waiting record's age, set through its timestamp


class Done:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def cli(env: dict[str, str], *args: str) -> Done:
    """The command in this process (no interpreter start-up on a loaded machine)."""
    result = CliRunner().invoke(app, list(args), env=env)
    return Done(result.exit_code, result.stdout, result.stderr)


def _backlog(bootstrap: str, inputs: str, retry: str, dlq: str, group: str) -> None:
    """10 inputs on partition 0 (offset 3 is OLD_S old), 3 retry copies, 2 dead letters; the
    group has committed offset 3 of the inputs."""
    producer = Producer({"bootstrap.servers": bootstrap})
    now_ms = int(time.time() * 1000)
    for offset in range(10):
        stamp = now_ms - OLD_S * 1000 if offset == 3 else now_ms
        producer.produce(inputs, b"x", partition=0, timestamp=stamp)
    for topic, n in ((retry, 3), (dlq, 2)):
        for _ in range(n):
            producer.produce(topic, b"x", partition=1)
    assert producer.flush(10) == 0
    committer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        committer.commit(offsets=[TopicPartition(inputs, 0, 3)], asynchronous=False)
    finally:
        committer.close()


def test_status_counts_a_known_backlog_exactly_with_no_worker(kafka_bootstrap: str) -> None:
    """waiting 7, delayed 3, dead 2, committed 3, the oldest aged from its timestamp; JSON."""
    settings = unique_settings(kafka_bootstrap)
    prepare(settings, [Echo])
    group = settings.topic("app_stages.echo")
    inputs, retry, dlq = settings.topic("test.pings"), f"{group}.retry.1s", f"{group}.dlq"
    _backlog(kafka_bootstrap, inputs, retry, dlq, group)
    started = time.time()

    done = cli(settings_env(settings), "status", SPEC, "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert set(data) == {"stages", "taken_at", "live", "live_error"}
    [echo] = data["stages"]
    assert (echo["stage"], echo["group"]) == ("echo", group)
    assert (echo["waiting"], echo["delayed"], echo["dead_lettered"], echo["committed"]) == (
        7, 3, 2, 3,
    )  # fmt: skip
    assert OLD_S <= echo["oldest_waiting_s"] < OLD_S + (time.time() - started) + 5
    assert (echo["active"], echo["completed"], echo["failed"]) == (None, None, None)
    assert echo["breaker"] == "none" and echo["missing_topics"] == []
    by_partition = {p["partition"]: p for p in echo["partitions"] if p["topic"] == inputs}
    assert by_partition[0]["waiting"] == 7 and by_partition[1]["waiting"] == 0

    table = cli(settings_env(settings), "status", "echo", SPEC)
    assert table.returncode == 0, table.stderr
    [row] = [line.split() for line in table.stdout.splitlines() if line.startswith("echo ")]
    assert row[:3] == ["echo", group, "7"] and row[5] == "3" and row[8] == "2"

    same = status([Echo], settings).stage("echo")  # the Python API reads the same numbers
    assert (same.waiting, same.delayed, same.dead_lettered) == (7, 3, 2)


def test_status_of_an_unreachable_broker_is_one_line_and_exit_1_in_seconds() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = unique_settings(f"127.0.0.1:{port}")
    started = time.monotonic()
    done = cli(settings_env(settings), "status", SPEC, "--timeout", "2")
    took = time.monotonic() - started
    assert done.returncode == 1
    assert done.stderr.strip().startswith(f"error: cannot reach Kafka at 127.0.0.1:{port}")
    assert len(done.stderr.strip().splitlines()) == 1 and took < 15
    unknown = cli(settings_env(settings), "status", "nope", SPEC)
    assert unknown.returncode == 2 and "no stage nope" in unknown.stderr
