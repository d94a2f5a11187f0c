"""The Kafka image's start script (docker/kafka/run), run on the host with a stand-in `java`.

The script must configure the broker from the same environment as the official apache/kafka
image, because tests/brokers.py and docker-compose.yml drive both. Building and running the
image itself is `make test-docker`'s job.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / "docker" / "kafka" / "run"

# Prints each call's arguments, one per line, after a marker line.
FAKE_JAVA = """#!/bin/bash
echo "java-call"
printf '%s\\n' "$@"
"""

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def run_script(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[dict[str, str], str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").write_text(FAKE_JAVA)
    (bin_dir / "java").chmod(0o755)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    clean.update(env, IMAGE_ROOT=str(tmp_path), PATH=f"{bin_dir}:{clean['PATH']}")
    done = subprocess.run(
        ["bash", str(RUN), *args], env=clean, capture_output=True, text=True, check=True
    )
    config = (tmp_path / "config" / "server.properties").read_text()
    props = dict(line.split("=", 1) for line in config.splitlines())
    return props, done.stdout


def test_kafka_variables_become_properties_the_official_way(tmp_path: Path) -> None:
    """KAFKA_FOO_BAR is foo.bar, `__` is `_`, `___` is `-`; JVM variables are not properties."""
    props, _ = run_script(
        tmp_path,
        {
            "KAFKA_NODE_ID": "1",
            "KAFKA_LOG_DIRS": "/data",
            "KAFKA_LISTENER_NAME_CONTROLLER_SASL__ENABLED": "x",
            "KAFKA_SOME___DASHED": "y",
            "KAFKA_HEAP_OPTS": "-Xmx64m",
            "KAFKA_OPTS": "-Dfoo=1",
        },
    )
    assert props == {
        "log.dirs": "/data",  # the image's default comes first; the environment's wins
        "listener.name.controller.sasl_enabled": "x",
        "node.id": "1",
        "some-dashed": "y",
    }


def test_name_value_arguments_are_exported_before_configuring(tmp_path: Path) -> None:
    """tests/brokers.py may pass the advertised listeners as an argument, once the port is known."""
    props, _ = run_script(
        tmp_path, {"KAFKA_NODE_ID": "1"}, "KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://127.0.0.1:5"
    )
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:5"


def test_without_property_variables_a_standalone_node_is_configured(tmp_path: Path) -> None:
    """No KAFKA_* properties: one combined node on localhost:9092 with single-replica internals."""
    props, _ = run_script(tmp_path, {})
    assert props["process.roles"] == "broker,controller"
    assert props["advertised.listeners"] == "PLAINTEXT://localhost:9092"
    assert props["offsets.topic.replication.factor"] == "1"


def test_storage_is_formatted_once_then_the_broker_replaces_the_script(tmp_path: Path) -> None:
    """Format keeps existing data (--ignore-formatted) with CLUSTER_ID; then kafka.Kafka runs."""
    _, out = run_script(tmp_path, {"KAFKA_NODE_ID": "1", "CLUSTER_ID": "cid-1"})
    format_call, broker_call = (c.splitlines() for c in out.split("java-call\n")[1:])
    assert "kafka.tools.StorageTool" in format_call
    assert {"--ignore-formatted", "cid-1"} <= set(format_call)
    assert broker_call[-2:] == ["kafka.Kafka", str(tmp_path / "config" / "server.properties")]
    assert "-Xmx512m" in broker_call


def test_an_argument_that_is_not_name_value_is_refused(tmp_path: Path) -> None:
    """A stray argument fails the start with a message, not a misconfigured broker."""
    with pytest.raises(subprocess.CalledProcessError) as failed:
        run_script(tmp_path, {}, "--help")
    assert "expected NAME=value" in failed.value.stderr
