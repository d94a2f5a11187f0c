"""Where a local cluster lives on disk and which ports it uses.

Everything is derived from three inputs (home directory, node count, base port), so the CLI's
``down`` or ``status`` in a new process computes the same paths as the ``up`` that started it.

Ports: node *i* (1-based) listens for clients on ``base + 2*(i-1)`` and for the controller
quorum on the port after it. With the default base 19092:

=====  ===========  ===============
node   bootstrap    controller
=====  ===========  ===============
1      19092        19093
2      19094        19095
3      19096        19097
=====  ===========  ===============

Disk, under the home (``<cwd>/.kafka`` unless ``PIPELINE_KAFKA_HOME`` is set)::

    dist/<version>/pom.xml          copied from this package; Maven runs here
    dist/<version>/libs/            the broker classpath (+ ``.assembled`` marker)
    run/cluster.json                layout and cluster id of the last ``up``
    run/node-N/config/              server.properties, log4j2.xml
    run/node-N/data/                log.dirs (KRaft metadata and topic data)
    run/node-N/logs/server.log      the broker log (readiness is read from here)
    run/node-N/logs/console.log     JVM stdout/stderr (crashes before log4j starts)
    run/node-N/kafka.pid
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ConfigError

DEFAULT_KAFKA_VERSION = "4.4.0"
DEFAULT_BASE_PORT = 19092
HOST = "127.0.0.1"

ENV_VERSION = "PIPELINE_KAFKA_VERSION"
ENV_HOME = "PIPELINE_KAFKA_HOME"
ENV_BASE_PORT = "PIPELINE_KAFKA_BASE_PORT"


def kafka_version() -> str:
    return os.environ.get(ENV_VERSION, "").strip() or DEFAULT_KAFKA_VERSION


def kafka_home() -> Path:
    """The ``.kafka`` root: env override, else relative to the project root (the cwd)."""
    override = os.environ.get(ENV_HOME, "").strip()
    return Path(override).expanduser().resolve() if override else Path.cwd() / ".kafka"


def default_base_port() -> int:
    raw = os.environ.get(ENV_BASE_PORT, "").strip()
    if not raw:
        return DEFAULT_BASE_PORT
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{ENV_BASE_PORT} must be a port number, got {raw!r}") from None


@dataclass(frozen=True)
class NodeSpec:
    node_id: int
    broker_port: int
    controller_port: int
    dir: Path

    @property
    def broker_address(self) -> str:
        return f"{HOST}:{self.broker_port}"

    @property
    def controller_address(self) -> str:
        return f"{HOST}:{self.controller_port}"

    @property
    def properties_file(self) -> Path:
        return self.dir / "config" / "server.properties"

    @property
    def log4j_file(self) -> Path:
        return self.dir / "config" / "log4j2.xml"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def server_log(self) -> Path:
        return self.logs_dir / "server.log"

    @property
    def console_log(self) -> Path:
        return self.logs_dir / "console.log"

    @property
    def pid_file(self) -> Path:
        return self.dir / "kafka.pid"

    @property
    def is_formatted(self) -> bool:
        # StorageTool writes meta.properties last, so its presence means a finished format.
        return (self.data_dir / "meta.properties").is_file()


@dataclass(frozen=True)
class ClusterLayout:
    home: Path
    version: str
    base_port: int
    nodes: tuple[NodeSpec, ...]

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.broker_address for node in self.nodes)

    @property
    def dist_dir(self) -> Path:
        return self.home / "dist" / self.version

    @property
    def libs_dir(self) -> Path:
        return self.dist_dir / "libs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def state_file(self) -> Path:
        return self.run_dir / "cluster.json"

    def node(self, node_id: int) -> NodeSpec:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        known = ", ".join(str(n.node_id) for n in self.nodes)
        raise ConfigError(f"no node {node_id} in this {len(self.nodes)}-node cluster ({known})")


def plan_cluster(home: Path, nodes: int, base_port: int, version: str) -> ClusterLayout:
    if nodes < 1:
        raise ConfigError(f"a cluster needs at least one node, got {nodes}")
    if not 1024 <= base_port <= 65535 - 2 * nodes:
        raise ConfigError(f"base port {base_port} leaves no room for {nodes} node(s)")
    specs = tuple(
        NodeSpec(
            node_id=i,
            broker_port=base_port + 2 * (i - 1),
            controller_port=base_port + 2 * (i - 1) + 1,
            dir=home / "run" / f"node-{i}",
        )
        for i in range(1, nodes + 1)
    )
    return ClusterLayout(home=home, version=version, base_port=base_port, nodes=specs)
