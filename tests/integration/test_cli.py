"""The `pipeline` command against a real broker: good input works, bad input changes nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pipeline.kafka import KafkaAdmin
from tests.integration.app_stages import PINGS, PONGS, Echo
from tests.integration.kit import (
    ROOT,
    end_offsets,
    read_topic,
    running,
    settings_env,
    unique_settings,
)

STAGES = "--stages=tests.integration.app_stages"


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_publish_validates_encodes_and_the_stage_handles_it(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """`pipeline publish` from inline JSON and from @file reaches a running stage."""
    settings = unique_settings(kafka_bootstrap)
    env = settings_env(settings)
    (tmp_path / "ping.json").write_text('{"ping_id": "from-file", "n": 2}')
    with running(settings, [Echo]):
        inline = cli(
            env, "publish", PINGS.name, '{"ping_id": "inline", "n": 1}', "--key", "k", STAGES
        )
        from_file = cli(env, "publish", PINGS.name, f"@{tmp_path / 'ping.json'}", STAGES)
        pongs = read_topic(settings, PONGS, count=2)
    assert inline.returncode == 0, inline.stderr
    assert from_file.returncode == 0, from_file.stderr
    assert "published" in inline.stdout and "event-id=" in inline.stdout
    assert sorted(p.ping_id for _, p in pongs) == ["from-file", "inline"]


def test_publish_rejects_an_invalid_event_and_publishes_nothing(kafka_bootstrap: str) -> None:
    """A payload the schema rejects exits 2 naming the field; the topic stays empty."""
    settings = unique_settings(kafka_bootstrap)
    KafkaAdmin(settings).create([settings.topic(PINGS.name)])
    result = cli(
        settings_env(settings), "publish", PINGS.name, '{"ping_id": "x", "n": "many"}', STAGES
    )
    assert result.returncode == 2
    assert "n:" in result.stderr and "Ping" in result.stderr
    assert end_offsets(settings, settings.topic(PINGS.name)) == 0


def test_publish_to_an_unknown_topic_lists_the_known_ones(kafka_bootstrap: str) -> None:
    settings = unique_settings(kafka_bootstrap)
    result = cli(settings_env(settings), "publish", "test.pingz", "{}", STAGES)
    assert result.returncode == 2
    assert "unknown topic 'test.pingz'" in result.stderr and "test.pings" in result.stderr


def test_publish_to_a_declared_topic_missing_on_the_broker_fails_clearly(
    kafka_bootstrap: str,
) -> None:
    settings = unique_settings(kafka_bootstrap)
    result = cli(settings_env(settings), "publish", PINGS.name, '{"ping_id": "x", "n": 1}', STAGES)
    assert result.returncode == 1
    assert "does not exist" in result.stderr


def test_topics_create_and_list(kafka_bootstrap: str) -> None:
    """`topics create --partitions` makes topics that `topics list` shows with their counts."""
    settings = unique_settings(kafka_bootstrap)
    env = settings_env(settings)
    created = cli(env, "topics", "create", "alpha", "beta", "--partitions", "3")
    listed = cli(env, "topics", "list")
    assert created.returncode == 0, created.stderr
    assert f"{settings.topic('alpha')}\t3" in listed.stdout.splitlines()
    assert f"{settings.topic('beta')}\t3" in listed.stdout.splitlines()


def test_topics_create_with_stages_makes_the_one_partition_internal_topics_too(
    kafka_bootstrap: str,
) -> None:
    """`topics create --stages --partitions 3` with a delayed topic and a schedule also makes
    the topic's cancel topic and the schedules' state topic, each with one partition (with 3,
    `pipeline run` would refuse the state topic)."""
    settings = unique_settings(kafka_bootstrap)
    env = settings_env(settings, PIPELINE_CREATE_TOPICS="false")
    stages = "--stages=tests.integration.internal_topics_stages"
    created = cli(env, "topics", "create", stages, "--partitions", "3")
    assert created.returncode == 0, created.stderr
    listed = cli(env, "topics", "list").stdout.splitlines()
    assert f"{settings.topic('test.later')}\t3" in listed
    assert f"{settings.topic('test.later.delay.1s')}\t3" in listed
    assert f"{settings.topic('test.later.delay.cancel')}\t1" in listed
    assert f"{settings.topic('pipeline.schedules')}\t1" in listed


def test_run_refuses_missing_topics_when_creation_is_off(kafka_bootstrap: str) -> None:
    """With create_topics off, `run` names every missing topic and exits non-zero at once."""
    settings = unique_settings(kafka_bootstrap)
    env = settings_env(settings, PIPELINE_CREATE_TOPICS="false")
    result = cli(env, "run", "tests.integration.app_stages")
    assert result.returncode == 1
    assert settings.topic(PINGS.name) in result.stderr and "create_topics is off" in result.stderr


def test_an_unknown_librdkafka_option_is_refused_before_any_topic_is_created(
    kafka_bootstrap: str,
) -> None:
    """A consumer or producer option librdkafka refuses exits 2 at startup, leaving no topic
    behind (it used to surface only when the first stage started, after topic creation)."""
    settings = unique_settings(kafka_bootstrap)
    for name, option in (
        ("PIPELINE_PRODUCER_CONFIG", '{"no.such.option": "1"}'),
        ("PIPELINE_CONSUMER_CONFIG", '{"fetch.wait.max.ms": "soon"}'),
    ):
        result = cli(
            settings_env(settings, **{name: option}), "run", "tests.integration.app_stages"
        )
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "librdkafka refused" in result.stderr
    left = [t for t in KafkaAdmin(settings).topics() if t.startswith(settings.topic_prefix)]
    assert left == []
