"""One KRaft node: its config files, storage format, JVM command, pid and readiness."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import BrokerUnavailableError
from pipeline.localkafka import process, readiness
from pipeline.localkafka.layout import HOST, ClusterLayout, NodeSpec
from pipeline.localkafka.logconfig import write_log4j2_xml
from pipeline.localkafka.properties import render_properties, server_properties
from pipeline.localkafka.security import SecurityFiles, format_arguments

# Kafka's scripts use a 1 GB heap; a test broker on a 2-core box is happier with less.
JVM_OPTS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)


@dataclass(frozen=True)
class NodeStatus:
    node_id: int
    address: str
    pid: int | None
    ready: bool

    @property
    def running(self) -> bool:
        return self.pid is not None


def _marker(node: NodeSpec) -> str:
    # What identifies this node's JVM in /proc/<pid>/cmdline (see process.is_alive).
    return str(node.properties_file)


def _java_base(java: str, libs: Path, node: NodeSpec) -> list[str]:
    return [
        java,
        f"-Dkafka.logs.dir={node.logs_dir}",
        f"-Dlog4j2.configurationFile={node.log4j_file}",
        "-cp",
        f"{libs}/*",  # expanded by the JVM itself, not by a shell
    ]


def broker_command(java: str, libs: Path, node: NodeSpec, heap: str) -> list[str]:
    base = _java_base(java, libs, node)
    return [
        base[0],
        f"-Xmx{heap}",
        "-Xms128m",
        *JVM_OPTS,
        *base[1:],
        "kafka.Kafka",
        str(node.properties_file),
    ]


def format_command(
    java: str, libs: Path, node: NodeSpec, cluster_id: str, standalone: bool,
    extra: Sequence[str] = (),
) -> list[str]:  # fmt: skip
    argv = [
        *_java_base(java, libs, node),
        "kafka.tools.StorageTool",
        "format",
        "-t",
        cluster_id,
        "-c",
        str(node.properties_file),
        *extra,
    ]
    # --standalone makes a lone node its own (dynamic) voter; with static
    # controller.quorum.voters the tool rejects any quorum flag.
    return [*argv, "--standalone"] if standalone else argv


def write_config(
    layout: ClusterLayout, node: NodeSpec, security: SecurityFiles | None = None
) -> None:
    for directory in (node.properties_file.parent, node.data_dir, node.logs_dir):
        directory.mkdir(parents=True, exist_ok=True)
    node.properties_file.write_text(
        render_properties(server_properties(layout, node, security)), encoding="utf-8"
    )
    write_log4j2_xml(node.log4j_file)


def format_storage(
    java: str, libs: Path, layout: ClusterLayout, cluster_id: str, nodes: Sequence[NodeSpec],
    security: SecurityFiles | None = None,
) -> None:  # fmt: skip
    """Format those of ``nodes`` not formatted yet, in parallel (each is a JVM start); with
    ``security``, the format also creates its SCRAM users."""
    standalone = len(layout.nodes) == 1
    extra = format_arguments(security) if security is not None else []
    running = {
        node: subprocess.Popen(
            format_command(java, libs, node, cluster_id, standalone, extra),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        for node in nodes
        if not node.is_formatted
    }
    for node, proc in running.items():
        output, _ = proc.communicate()
        if proc.returncode != 0:
            raise BrokerUnavailableError(
                f"formatting the storage of Kafka node {node.node_id} failed "
                f"(exit {proc.returncode})\n{readiness.tail(output)}"
            )


def read_cluster_id(node: NodeSpec) -> str | None:
    try:
        text = (node.data_dir / "meta.properties").read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "cluster.id":
            return value.strip()
    return None


def node_pid(node: NodeSpec) -> int | None:
    """The pid of this node's live JVM, or None; a stale pid file is removed on the way."""
    pid = process.read_pid(node.pid_file)
    if pid is None:
        return None
    if process.is_alive(pid, _marker(node)):
        return pid
    node.pid_file.unlink(missing_ok=True)
    return None


def is_ready(node: NodeSpec) -> bool:
    """Ready once its log said so since the last start. The verdict is remembered per JVM
    (``ready.pid``): a long-running broker's log grows past what ``read_log`` scans, and the
    ready line would scroll out of sight."""
    pid = process.read_pid(node.pid_file)
    marker = node.server_log.parent / "ready.pid"
    if pid is not None and process.read_pid(marker) == pid:
        return True
    if not readiness.is_ready(readiness.read_log(node.server_log)):
        return False
    if pid is not None:
        marker.write_text(f"{pid}\n")
    return True


def status(node: NodeSpec) -> NodeStatus:
    pid = node_pid(node)
    return NodeStatus(node.node_id, node.broker_address, pid, pid is not None and is_ready(node))


def is_healthy(node: NodeSpec) -> bool:
    return (
        node_pid(node) is not None
        and is_ready(node)
        and process.accepts_connections(HOST, node.broker_port)
    )


def check_ports_free(node: NodeSpec, grace: float = 3.0) -> None:
    """Raise if another process listens on one of the node's ports.

    A short grace period covers a node of ours that was killed a moment ago and whose
    sockets the kernel is still closing.
    """
    deadline = time.monotonic() + grace
    for role, port in (("client", node.broker_port), ("controller", node.controller_port)):
        while process.port_in_use(HOST, port) and time.monotonic() < deadline:
            time.sleep(0.1)
        if process.port_in_use(HOST, port):
            raise BrokerUnavailableError(
                f"port {port} ({role} port of Kafka node {node.node_id}) on {HOST} is already "
                "in use by another process; stop it or choose other ports "
                "(--base-port or PIPELINE_KAFKA_BASE_PORT)"
            )


def launch(java: str, libs: Path, node: NodeSpec, heap: str) -> int:
    readiness.append_banner(node.server_log, node.node_id)
    pid = process.launch_detached(
        broker_command(java, libs, node, heap), node.console_log, node.dir
    )
    process.write_pid(node.pid_file, pid)
    return pid


def failure(node: NodeSpec, summary: str) -> BrokerUnavailableError:
    logs = {path: readiness.read_log(path) for path in (node.server_log, node.console_log)}
    if any("Address already in use" in readiness.current_run(text) for text in logs.values()):
        # Another process took a port between our check and the JVM's bind.
        summary += f": port {node.broker_port} or {node.controller_port} is already in use"
    return BrokerUnavailableError(readiness.failure_message(summary, logs))


def wait_ready(pids: Mapping[NodeSpec, int], deadline: float, timeout: float) -> None:
    """Block until every node logged readiness; raise with its log tail if one dies or stalls.

    All nodes are waited on together: in a 3-node cluster none finishes starting before a
    controller quorum of two is up.
    """
    pending: list[NodeSpec] = list(pids)
    while True:
        pending = [node for node in pending if not _ready_or_raise(node, pids[node])]
        if not pending:
            return
        if time.monotonic() >= deadline:
            node = pending[0]
            raise failure(
                node,
                f"Kafka node {node.node_id} did not log '{readiness.READY_LINE}' "
                f"within {timeout:.0f} s",
            )
        time.sleep(0.2)


def _ready_or_raise(node: NodeSpec, pid: int) -> bool:
    if is_ready(node):
        return True
    if not process.is_alive(pid, _marker(node)):
        node.pid_file.unlink(missing_ok=True)
        raise failure(node, f"Kafka node {node.node_id} (pid {pid}) exited during start-up")
    return False


def stop(nodes: Sequence[NodeSpec], timeout: float, kill: bool = False) -> list[int]:
    """Stop the given nodes together; returns the ids of those that were running.

    ``kill`` skips the controlled shutdown (SIGKILL at once), as a crash would.
    """
    alive = {node: pid for node in nodes if (pid := node_pid(node)) is not None}
    pids = {pid: _marker(node) for node, pid in alive.items()}
    if kill:
        process.kill(pids)
    else:
        process.terminate(pids, timeout)
    for node in alive:
        node_pid(node)  # removes the pid file once the process is gone
    return [node.node_id for node in alive]
