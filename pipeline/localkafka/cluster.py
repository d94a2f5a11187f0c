"""``LocalKafka``: an Apache Kafka cluster of detached JVMs on 127.0.0.1, for tests and dev."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import BrokerUnavailableError
from pipeline.localkafka import node as nodes_
from pipeline.localkafka.assembly import Progress, assemble, file_lock, find_java
from pipeline.localkafka.layout import (
    ClusterLayout,
    NodeSpec,
    default_base_port,
    kafka_home,
    kafka_version,
    plan_cluster,
)
from pipeline.localkafka.node import NodeStatus
from pipeline.localkafka.properties import new_cluster_id
from pipeline.localkafka.readiness import read_log, tail
from pipeline.localkafka.security import SASL_SSL, SecurityFiles, check_security
from pipeline.localkafka.state import ClusterState, load_state, save_state


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class LocalKafka:
    """A KRaft cluster of ``nodes`` combined broker+controller nodes, bound to 127.0.0.1 only.

    Ports: node *i* serves clients on ``base_port + 2*(i-1)`` and its controller on the port
    after it, so the default single node is ``127.0.0.1:19092`` (controller 19093) and three
    nodes are 19092/19094/19096 (controllers 19093/19095/19097). One node uses replication
    factor 1; three use replication factor 3 with ``min.insync.replicas=2``.

    The JVMs are detached: they outlive this object and this Python process. State lives under
    ``root`` (default ``<cwd>/.kafka``, see ``layout``), so a ``LocalKafka.current()`` built in
    another process finds and controls the same cluster.

    ``security="sasl_ssl"``: clients connect over TLS with SCRAM-SHA-512 logins (see
    ``pipeline.localkafka.security``); ``security_files`` has the CA and the passwords.
    """

    def __init__(
        self,
        nodes: int = 1,
        root: Path | None = None,
        base_port: int | None = None,
        *,
        version: str | None = None,
        heap: str = "1g",  # -Xms128m: taken only as needed; 512m ran out at ~14.7k partitions
        progress: Progress | None = None,
        security: str = "plaintext",
    ) -> None:
        self.layout: ClusterLayout = plan_cluster(
            root if root is not None else kafka_home(),
            nodes,
            base_port if base_port is not None else default_base_port(),
            version or kafka_version(),
        )
        self.heap = heap
        self.security = check_security(security)
        self.security_files = (
            SecurityFiles(self.layout.run_dir / "security") if security == SASL_SSL else None
        )
        self._progress: Progress = progress or _to_stderr

    @classmethod
    def current(cls, root: Path | None = None, progress: Progress | None = None) -> LocalKafka:
        """The cluster last started under ``root`` (nodes, ports, version), else the default."""
        home = root if root is not None else kafka_home()
        saved = load_state(home / "run" / "cluster.json")
        if saved is None:
            return cls(root=home, progress=progress)
        return cls(
            saved.nodes, home, saved.base_port, version=saved.version, progress=progress,
            security=saved.security,
        )  # fmt: skip

    @property
    def bootstrap_servers(self) -> str:
        return self.layout.bootstrap_servers

    def assemble(self) -> Path:
        """Download the broker jars unless already there; returns the libs directory."""
        return assemble(self.layout.dist_dir, self.layout.version, self._progress)

    # -- whole cluster --------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> None:
        """Start every node that is not running and wait until all log readiness.

        A no-op when all nodes already run and are ready. Raises ``BrokerUnavailableError``
        (with the failing node's log tail) on a port conflict, a crash or a timeout; nodes this
        call launched are stopped again before it raises.
        """
        if self._healthy():
            return
        self._start_nodes(self.layout.nodes, timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every node, SIGKILL those still up after ``timeout``. Idempotent."""
        stopped = nodes_.stop(self.layout.nodes, timeout)
        if stopped:
            self._progress(f"Stopped Kafka node(s) {', '.join(map(str, stopped))}")

    def is_running(self) -> bool:
        """Whether every node's JVM is alive (not whether it is ready; see ``status``)."""
        return len(self.running_nodes()) == len(self.layout.nodes)

    def running_nodes(self) -> list[int]:
        return [n.node_id for n in self.layout.nodes if nodes_.node_pid(n) is not None]

    def status(self) -> list[NodeStatus]:
        return [nodes_.status(n) for n in self.layout.nodes]

    def wipe(self) -> None:
        """Stop the cluster and delete all node data, logs and the saved cluster id."""
        self.stop()
        saved = LocalKafka.current(self.layout.home, self._progress)
        if saved.layout != self.layout:  # a cluster of another shape may run under this home
            saved.stop()
        with file_lock(self.layout.run_dir / ".lock"):
            _remove_cluster_files(self.layout.run_dir)

    # -- single nodes (restart and failover tests) ----------------------------------------

    def start_node(self, node_id: int, timeout: float = 120.0) -> None:
        self._start_nodes([self.layout.node(node_id)], timeout)

    def stop_node(self, node_id: int, timeout: float = 30.0, *, kill: bool = False) -> None:
        """Stop one node: a controlled shutdown, or with ``kill=True`` a SIGKILL crash."""
        nodes_.stop([self.layout.node(node_id)], timeout, kill=kill)

    def log_tail(self, node_id: int = 1, lines: int = 40) -> str:
        return tail(read_log(self.layout.node(node_id).server_log), lines)

    # -- internals ------------------------------------------------------------------------

    def _healthy(self) -> bool:
        return all(nodes_.is_healthy(n) for n in self.layout.nodes)

    def _start_nodes(self, wanted: Sequence[NodeSpec], timeout: float) -> None:
        """Launch the wanted nodes that are down, then wait for all wanted nodes.

        Steps: lock the run dir → settle a layout change → assemble → save state → write
        configs → check ports → format → launch → wait.
        """
        began = time.monotonic()
        with file_lock(self.layout.run_dir / ".lock"):
            self._settle_layout()
            libs, java = self.assemble(), find_java()
            deadline = time.monotonic() + timeout  # a first-run download does not count
            cluster_id = self._cluster_id()
            save_state(self.layout.state_file, self._state(cluster_id))
            if self.security_files is not None:
                self.security_files.ensure()
            pids = {n: pid for n in wanted if (pid := nodes_.node_pid(n)) is not None}
            down = [n for n in wanted if n not in pids]
            for n in down:
                nodes_.check_ports_free(n)
                nodes_.write_config(self.layout, n, self.security_files)
            nodes_.format_storage(java, libs, self.layout, cluster_id, down, self.security_files)
            try:
                for n in down:
                    self._progress(
                        f"Starting Kafka {self.layout.version} node {n.node_id} "
                        f"on {n.broker_address}"
                    )
                    pids[n] = nodes_.launch(java, libs, n, self.heap)
                nodes_.wait_ready(pids, deadline, timeout)
            except BaseException:  # also Ctrl-C: never leave a half-started node behind
                nodes_.stop(down, timeout=10.0)
                raise
        addresses = ",".join(n.broker_address for n in wanted)
        self._progress(f"Kafka ready at {addresses} ({time.monotonic() - began:.1f} s)")

    def _state(self, cluster_id: str) -> ClusterState:
        return ClusterState(
            nodes=len(self.layout.nodes),
            base_port=self.layout.base_port,
            version=self.layout.version,
            cluster_id=cluster_id,
            security=self.security,
        )

    def _cluster_id(self) -> str:
        # Formatted data wins: the id is written into every node's meta.properties, and a
        # node whose id differs from the quorum's refuses to start.
        for n in self.layout.nodes:
            if (found := nodes_.read_cluster_id(n)) is not None:
                return found
        saved = load_state(self.layout.state_file)
        return saved.cluster_id if saved is not None else new_cluster_id()

    def _settle_layout(self) -> None:
        """Discard a stopped cluster of another shape; refuse to touch a running one.

        Storage formatted for one node (a standalone dynamic quorum) cannot join a static
        3-voter quorum, and vice versa, so a change of shape means fresh data; so does a change
        of security (the SCRAM users are created when the storage is formatted).
        """
        saved = load_state(self.layout.state_file)
        if saved is None or (saved.nodes, saved.base_port, saved.security) == (
            len(self.layout.nodes),
            self.layout.base_port,
            self.security,
        ):
            return
        other = plan_cluster(self.layout.home, saved.nodes, saved.base_port, saved.version)
        if any(nodes_.node_pid(n) is not None for n in other.nodes):
            raise BrokerUnavailableError(
                f"a {saved.nodes}-node local Kafka is running at {other.bootstrap_servers}; "
                "stop it first (python -m pipeline.localkafka down)"
            )
        self._progress(
            f"Discarding the stopped {saved.nodes}-node {saved.security} cluster's data "
            f"(now starting {len(self.layout.nodes)} {self.security} node(s))"
        )
        _remove_cluster_files(self.layout.run_dir)


def _remove_cluster_files(run_dir: Path) -> None:
    for path in run_dir.glob("node-*"):
        shutil.rmtree(path, ignore_errors=True)
    (run_dir / "cluster.json").unlink(missing_ok=True)
