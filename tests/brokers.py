"""Which Kafka broker a pytest session talks to.

``acquire_kafka()`` picks the first that works, in this order:

1. ``KAFKA_BOOTSTRAP_SERVERS`` from the environment, used as is (a broker someone else runs);
2. a Docker engine that answers: a throwaway ``apache/kafka`` 4.x container in KRaft mode;
3. otherwise the project's own ``pipeline.localkafka`` (JVMs from Maven Central jars). If this
   call started it, it stops it at the end; a broker that was already up (``make kafka-up``)
   is left running, so a developer's edit-test loop does not pay a broker start per run.

``PIPELINE_TEST_BROKER=docker`` or ``=local`` skips the choice: that broker or a failure (CI runs
the most important integration tests in Docker, from ``make kafka-image``'s image, and the rest on
the JVM broker while the engine is up). ``PIPELINE_KAFKA_IMAGE`` names the image.

In CI (``broker_required()``), failing to get a broker must fail the session, never skip it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from pipeline.errors import BrokerUnavailableError
from pipeline.localkafka import DEFAULT_BASE_PORT, DEFAULT_KAFKA_VERSION, LocalKafka
from pipeline.localkafka.layout import ENV_BASE_PORT

if TYPE_CHECKING:  # imported lazily at run time: only the Docker path needs testcontainers
    from testcontainers.core.container import DockerContainer

ENV_BOOTSTRAP = "KAFKA_BOOTSTRAP_SERVERS"
SESSION_PORTS = range(19300, 19700, 2)
ENV_BROKER = "PIPELINE_TEST_BROKER"
BROKER_CHOICES = ("auto", "docker", "local")
# The same Kafka version as the local JVM broker, so both paths test one broker.
KAFKA_IMAGE = os.environ.get("PIPELINE_KAFKA_IMAGE", f"apache/kafka:{DEFAULT_KAFKA_VERSION}")
START_TIMEOUT_S = 120
CONTAINER_LABEL = "org.kafka-pipeline.test-broker"

# Inside the container: clients use 9092 (published on a random port of the host's loopback
# address, and reached only through it), the broker talks to itself on 9093 and the controller
# listens on 9094.
_CLIENT_PORT = 9092
_HOST_IP = "127.0.0.1"
_START_SCRIPT = "/tmp/localkafka-start.sh"
_CONTAINER_PROPERTIES = {
    "node.id": "1",
    "process.roles": "broker,controller",
    "listeners": "PLAINTEXT://0.0.0.0:9092,BROKER://0.0.0.0:9093,CONTROLLER://0.0.0.0:9094",
    "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT",
    "inter.broker.listener.name": "BROKER",
    "controller.listener.names": "CONTROLLER",
    "controller.quorum.voters": "1@localhost:9094",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "auto.create.topics.enable": "false",
    "num.partitions": "1",
}


def broker_required() -> bool:
    """True in CI (``CI=true``): then no broker is an error, not a reason to skip."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def docker_available(timeout: float = 3.0) -> bool:
    """Whether a Docker engine answers, checked cheaply and without leaking sockets.

    The ``docker`` CLI is asked when it exists (it knows contexts and DOCKER_HOST); otherwise
    the engine's unix socket is pinged. A binary with no engine behind it is "no Docker".
    """
    if shutil.which("docker"):
        try:
            done = subprocess.run(
                ["docker", "info", "--format", "{{.ServerVersion}}"],
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return host.startswith("unix://") and _ping_unix_socket(host.removeprefix("unix://"), timeout)


def _ping_unix_socket(path: str, timeout: float) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            status_line = sock.recv(64).split(b"\r\n", 1)[0]
    except OSError:
        return False
    return status_line.startswith(b"HTTP/1.") and b" 200" in status_line


def broker_choice() -> str:
    """``PIPELINE_TEST_BROKER``: ``auto`` (the default order), ``docker`` or ``local``."""
    choice = os.environ.get(ENV_BROKER, "").strip().lower() or "auto"
    if choice not in BROKER_CHOICES:
        raise BrokerUnavailableError(
            f"{ENV_BROKER}={choice!r}: expected one of {', '.join(BROKER_CHOICES)}"
        )
    return choice


@contextmanager
def acquire_kafka() -> Iterator[str]:
    """Yield a bootstrap-servers string for the session (see the module docstring for order)."""
    configured = os.environ.get(ENV_BOOTSTRAP, "").strip()
    if configured:
        yield configured
    elif _use_docker(broker_choice()):
        with _docker_kafka() as bootstrap:
            yield bootstrap
    else:
        with _local_kafka() as bootstrap:
            yield bootstrap


def _use_docker(choice: str) -> bool:
    if choice == "local":
        return False
    if docker_available():
        return True
    if choice == "docker":
        raise BrokerUnavailableError(f"{ENV_BROKER}=docker, but no Docker engine answers")
    return False


@contextmanager
def _local_kafka() -> Iterator[str]:
    kafka = LocalKafka.current()
    if kafka.running_nodes():
        # Someone else's cluster (make kafka-up): use it and leave it up. start() returns at
        # once when it is healthy, and otherwise restarts missing nodes and waits.
        kafka.start(timeout=START_TIMEOUT_S)
        yield kafka.bootstrap_servers
        return
    # A stopped cluster of another shape is replaced by one node; on free ports if another
    # checkout's broker (a developer's ``make kafka-up``) holds the default ones.
    kafka = LocalKafka(base_port=_session_base_port())
    kafka.start(timeout=START_TIMEOUT_S)
    try:
        yield kafka.bootstrap_servers
    finally:
        kafka.stop()


def _session_base_port() -> int | None:
    """The default ports (or ``PIPELINE_KAFKA_BASE_PORT``'s) when free; else the first free
    pair from ``SESSION_PORTS`` (below the 19700+ ports private-broker tests take)."""
    if os.environ.get(ENV_BASE_PORT, "").strip():
        return None  # the developer chose: a clash is their error, reported as such
    if not _in_use(DEFAULT_BASE_PORT) and not _in_use(DEFAULT_BASE_PORT + 1):
        return None
    for port in SESSION_PORTS:
        if not _in_use(port) and not _in_use(port + 1):
            print(f"tests: ports {DEFAULT_BASE_PORT}-{DEFAULT_BASE_PORT + 1} are taken; the "
                  f"session's broker uses {port}", file=sys.stderr)  # fmt: skip
            return port
    return None  # none free: starting reports the clash


def _in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def _docker_kafka() -> Iterator[str]:
    """A single-node KRaft ``apache/kafka`` container on a random port of 127.0.0.1.

    The image is the official one or ``make kafka-image``'s, which takes the same environment
    and start script. Its client port is published on the loopback address only, and clients
    connect through it, never to the container's bridge address.

    testcontainers' ``KafkaContainer`` is not used: it is written for Confluent's cp-kafka
    image (its start script calls /etc/confluent/docker/*, and ``with_kraft()`` rejects tags
    below 7.0.0, so "4.4.0"). The advertised listener must name the host port Docker picks, which
    is known only after the container starts, so the container waits for a start script that is
    copied in afterwards (the same trick ``KafkaContainer`` uses).
    """
    from testcontainers.core.container import DockerContainer

    env = {"KAFKA_" + key.upper().replace(".", "_"): v for key, v in _CONTAINER_PROPERTIES.items()}
    container = (
        DockerContainer(KAFKA_IMAGE)
        .with_envs(CLUSTER_ID="4L6g3nShT-eMCtK--X86sw", **env)
        # Without testcontainers' reaper (its image cannot be pulled everywhere), a session
        # killed before its teardown leaves the container; this label finds it (.ci/run).
        .with_kwargs(labels={CONTAINER_LABEL: "true"})
        .with_command(
            [
                "bash",
                "-c",
                f"while [ ! -f {_START_SCRIPT} ]; do sleep 0.1; done; exec bash {_START_SCRIPT}",
            ]
        )
    )
    # (host ip, no port): Docker picks a free port on that address. with_bind_ports() takes
    # only a port, and with_exposed_ports() publishes on every interface.
    container.ports[f"{_CLIENT_PORT}/tcp"] = (_HOST_IP, None)  # type: ignore[assignment]
    try:
        with _quiet_deprecations():
            container.start()
            bootstrap = _configure_and_wait(container)
    except Exception as exc:  # re-raised as ours, so the session fixture handles one type
        _stop(container)
        raise BrokerUnavailableError(
            f"Kafka in Docker ({KAFKA_IMAGE}) did not start: {exc}"
        ) from exc
    try:
        yield bootstrap
    finally:
        _stop(container)


def _configure_and_wait(container: DockerContainer) -> str:
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    port = container.get_exposed_port(_CLIENT_PORT)
    bindings = container.get_docker_client().client.api.port(
        container.get_container_id(), _CLIENT_PORT
    )
    host_ips = {binding["HostIp"] for binding in bindings}
    if host_ips != {_HOST_IP}:  # never reach the broker through another interface
        raise BrokerUnavailableError(f"port {_CLIENT_PORT} published on {host_ips}, not {_HOST_IP}")
    advertised = f"PLAINTEXT://{_HOST_IP}:{port},BROKER://localhost:9093"
    # The image's run script configures the broker from KAFKA_* variables.
    script = f"export KAFKA_ADVERTISED_LISTENERS={advertised}\nexec /etc/kafka/docker/run\n"
    container.copy_into_container(script.encode(), _START_SCRIPT, 0o755)
    ready = LogMessageWaitStrategy("Kafka Server started").with_startup_timeout(START_TIMEOUT_S)
    ready.wait_until_ready(container)
    return f"{_HOST_IP}:{port}"


def _stop(container: DockerContainer) -> None:
    with _quiet_deprecations():
        container.stop()


@contextmanager
def _quiet_deprecations() -> Iterator[None]:
    # testcontainers and the docker SDK warn about their own deprecations; pytest runs with
    # warnings as errors, and those are not ours to fix.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield
