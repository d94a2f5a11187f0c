"""Every client against a SASL_SSL (SCRAM-SHA-512) broker: a stage, the publisher, the lag
monitor, the CLI and `pipeline dlq` connect with the right credentials; a wrong password and a
missing CA are refused at once with a one-line error that says which; no secret reaches a log
line, an error or a repr. One private broker serves the module (see tests/integration/secured.py).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import AuthenticationError, Context, Publisher, RetryPolicy, Stage
from pipeline.config import Settings
from pipeline.kafka import KafkaTransport
from pipeline.ports import Watermarks
from tests.integration.app_stages import PINGS, PONGS, Ping, Pong
from tests.integration.kit import ROOT, running, settings_env, unique_settings, wait_until
from tests.integration.secured import SecuredKafka, secured_kafka

# The first test also waits for the broker's start (up to 30 s on a loaded 2-core box).
pytestmark = pytest.mark.timeout(240)
STAGES = "--stages=tests.integration.app_stages"
REFUSED_WITHIN_S = 20.0


@pytest.fixture(scope="session")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredKafka]:
    from tests.brokers import broker_required

    try:
        with secured_kafka(tmp_path_factory.mktemp("sasl-kafka")) as kafka:
            yield kafka
    except Exception as exc:
        if broker_required():
            raise
        pytest.skip(f"no SASL_SSL broker: {exc}")


class Answers(Stage):
    """Answers pings with pongs; dead-letters those whose id starts with 'bad'."""

    consumes = PINGS
    emits = (PONGS,)
    group = "secured"
    retry = RetryPolicy(fatal=(ValueError,), tiers=())

    def handle(self, event: Ping, ctx: Context) -> None:
        if event.ping_id.startswith("bad"):
            raise ValueError("refused on purpose")
        ctx.emit(PONGS, Pong(ping_id=event.ping_id, n=event.n, handled_by="secured"))


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def total(marks: Watermarks) -> int:
    return sum(high for _low, high in marks.values())


def secrets_absent(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text


def test_a_stage_the_publisher_and_the_lag_monitor_work_over_sasl_ssl(
    secured: SecuredKafka, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker consumes what the Publisher sent and emits its answers, dead-letters the bad
    one, and the lag monitor sees the group caught up; the password is in no log line."""
    caplog.set_level(logging.DEBUG)
    settings = unique_settings(secured.bootstrap, **secured.settings())
    transport = KafkaTransport(settings)
    log, monitor = transport.topic_log(), transport.lag_monitor()
    pings, pongs = settings.topic(PINGS.name), settings.topic(PONGS.name)
    try:
        with running(settings, [Answers]) as worker, Publisher(settings) as publisher:
            for n, ping_id in enumerate(("a", "b", "bad")):
                publisher.publish(PINGS, Ping(ping_id=ping_id, n=n), key=ping_id)
            plan = worker.runners[0].plan
            wait_until(lambda: total(log.watermarks(pongs)) == 2, 30, "two answers")
            wait_until(lambda: total(log.watermarks(plan.dlq_topic)) == 1, 30, "a dead letter")
            wait_until(lambda: monitor.lag(plan.group, [pings]) == (3, 0), 30, "no lag")
    finally:
        monitor.close()
    answered = sorted(r.key for r in log.read(pongs))
    assert answered == [b"a", b"b"]
    secrets_absent(caplog.text, secured.password)


def test_the_cli_publishes_lists_topics_and_empties_a_dlq_over_sasl_ssl(
    secured: SecuredKafka, tmp_path: Path
) -> None:
    """`publish`, `topics list`, `dlq list` and `dlq purge` (DeleteRecords) all connect, from
    the environment or from the TOML file `make kafka-up SECURITY=sasl_ssl` writes."""
    settings = unique_settings(secured.bootstrap, **secured.settings())
    env = settings_env(settings) | secured.env()
    with running(settings, [Answers]) as worker:
        sent = cli(env, "publish", PINGS.name, '{"ping_id": "bad-1", "n": 1}', STAGES)
        assert sent.returncode == 0, sent.stderr
        dlq = worker.runners[0].plan.dlq_topic
        log = KafkaTransport(settings).topic_log()
        wait_until(lambda: total(log.watermarks(dlq)) == 1, 30, "the dead letter")
    from_file = settings_env(settings)  # the same credentials, from --config this time
    listed = cli(from_file, "topics", "list", "--config", str(secured.files.client_config_file))
    assert listed.returncode == 0, listed.stderr
    assert settings.topic(PINGS.name) in listed.stdout
    counted = cli(env, "dlq", "list", "--json")
    assert counted.returncode == 0, counted.stderr
    assert json.loads(counted.stdout)["total"] == 1
    purged = cli(env, "dlq", "purge", dlq, "--yes")
    assert purged.returncode == 0, purged.stderr
    assert f"removed 1 record(s) from {dlq}" in purged.stdout
    for done in (sent, listed, counted, purged):
        secrets_absent(done.stdout + done.stderr, secured.password)


@pytest.mark.parametrize(
    "command", [["topics", "list"], ["run", "tests.integration.app_stages:Echo"]]
)
def test_a_wrong_password_is_refused_at_once_with_one_clear_line(
    secured: SecuredKafka, command: list[str]
) -> None:
    """With a wrong password, `topics list` and `run` exit 2 within seconds, saying the SASL
    login failed for the user; neither password appears in the output."""
    wrong = f"wrong-{uuid.uuid4().hex}"
    settings = unique_settings(secured.bootstrap)
    env = settings_env(settings) | secured.env(sasl_password_file="", sasl_password=wrong)
    began = time.monotonic()
    done = cli(env, *command)
    took = time.monotonic() - began
    assert done.returncode == 2, done.stdout + done.stderr
    assert took < REFUSED_WITHIN_S, f"refused after {took:.1f}s"
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: SASL authentication failed for user 'pipeline' (SCRAM-SHA-512)")
    if command[0] == "topics":  # a worker logs its start-up; a plain command says one line
        assert done.stderr.strip() == last
    secrets_absent(done.stdout + done.stderr, wrong, secured.password)


def test_a_wrong_password_never_reaches_logs_errors_or_reprs(
    secured: SecuredKafka, caplog: pytest.LogCaptureFixture
) -> None:
    """In-process, the Publisher raises AuthenticationError; neither the wrong password nor the
    real one is in its message, in any log record (all levels) or in the Settings repr."""
    caplog.set_level(logging.DEBUG)
    wrong = f"wrong-{uuid.uuid4().hex}"
    settings = Settings(
        **secured.settings(sasl_password_file=None, sasl_password=wrong),
        bootstrap_servers=secured.bootstrap,
        schemas_dir=ROOT / "tests" / "schemas",
    )
    began = time.monotonic()
    with pytest.raises(AuthenticationError) as refused, Publisher(settings) as publisher:
        publisher.publish(PINGS, Ping(ping_id="p", n=1))
    assert time.monotonic() - began < REFUSED_WITHIN_S
    assert "SASL authentication failed for user 'pipeline'" in str(refused.value)
    everything = "\n".join(
        [str(refused.value), repr(refused.value), repr(settings), str(settings), caplog.text]
        + [repr(r.args) for r in caplog.records]
    )
    secrets_absent(everything, wrong, secured.password)


def test_without_the_ca_the_broker_is_not_trusted_and_the_error_says_so(
    secured: SecuredKafka,
) -> None:
    """Without ssl_ca_file the broker's certificate cannot be verified: `topics list` exits 2
    at once with a TLS error that names the missing setting."""
    settings = unique_settings(secured.bootstrap)
    env = settings_env(settings) | secured.env(ssl_ca_file="")
    done = cli(env, "topics", "list")
    assert done.returncode == 2, done.stdout + done.stderr
    line = done.stderr.strip()
    assert "\n" not in line
    assert line.startswith(f"error: TLS connection to {secured.bootstrap} failed")
    assert "certificate verify failed" in line and "set ssl_ca_file" in line
