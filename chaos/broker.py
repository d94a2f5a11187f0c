"""Which broker a run uses, and restarting it.

- **private** (the default when ``KAFKA_BOOTSTRAP_SERVERS`` is not set): a ``LocalKafka`` of
  the run's own under ``.chaos/kafka`` (``--broker-home``) on its own ports (base 19192 unless
  told), freshly formatted and stopped at the end. One node is restarted once mid-run; of
  three nodes (``--nodes 3``: replication factor 3, ``min.insync.replicas=2``) single nodes
  are killed with -9 and started again (``chaos.failover``). The shared development broker on
  19092 is left alone: other sessions and test runs use it, and a restart would break them.
  The broker jars are shared with ``.kafka/dist`` (a symlink), not downloaded again. Each JVM
  gets a 384 MB heap: three of them share the machine with the workers.
- **external** (``--bootstrap`` or ``KAFKA_BOOTSTRAP_SERVERS``): used as is, never restarted.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Protocol

from chaos.workers import ROOT
from pipeline.localkafka import LocalKafka
from pipeline.localkafka.layout import ENV_HOME, kafka_version

DEFAULT_PRIVATE_PORT = 19192


NODE_HEAP = "384m"


class Broker(Protocol):
    bootstrap: str
    restartable: bool
    kind: str
    nodes: int  # 0: unknown (external)

    def restart(self) -> float: ...
    def close(self) -> None: ...


class ExternalBroker:
    restartable = False
    kind = "external"
    nodes = 0

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def restart(self) -> float:
        raise RuntimeError("an external broker is never restarted")

    def close(self) -> None:
        pass


class PrivateBroker:
    """A fresh cluster (one node, or three) that belongs to chaos runs alone."""

    restartable = True
    kind = "private"

    def __init__(
        self, home: Path, port: int = DEFAULT_PRIVATE_PORT, *, nodes: int = 1, keep: bool = False
    ) -> None:
        _share_jars(home)
        self._kafka = LocalKafka(nodes=nodes, root=home, base_port=port, heap=NODE_HEAP)
        self._keep = keep
        self.nodes = nodes
        self.layout = self._kafka.layout
        self.bootstrap = self._kafka.bootstrap_servers

    def start(self) -> None:
        self._kafka.wipe()  # fresh data: a run never meets a previous run's state
        self._kafka.start()

    def restart(self) -> float:
        """Controlled shutdown of node 1, then start it and wait for readiness; seconds."""
        began = time.monotonic()
        self._kafka.stop_node(1)
        self._kafka.start_node(1)
        return time.monotonic() - began

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one node, as a crash would."""
        self._kafka.stop_node(node_id, kill=True)

    def start_node(self, node_id: int) -> float:
        """Start one node and wait until it is ready; seconds."""
        began = time.monotonic()
        self._kafka.start_node(node_id)
        return time.monotonic() - began

    def running_nodes(self) -> list[int]:
        return self._kafka.running_nodes()

    def keep_logs(self, run_dir: Path) -> None:
        """Copy each node's server log into ``<run dir>/broker/``: the next run wipes the
        broker's home, and its transaction coordinator's lines (a killed worker's transaction
        aborted, and when) are what a failed run's forensics need."""
        target = run_dir / "broker"
        target.mkdir(parents=True, exist_ok=True)
        for node in self.layout.nodes:
            if node.server_log.exists():
                shutil.copyfile(node.server_log, target / f"node-{node.node_id}.log")

    def close(self) -> None:
        if not self._keep:
            self._kafka.stop()


def _share_jars(home: Path) -> None:
    shared = Path(os.environ.get(ENV_HOME) or ROOT / ".kafka") / "dist"
    link = home / "dist"
    home.mkdir(parents=True, exist_ok=True)
    if link.exists() or link.is_symlink() or not (shared / kafka_version()).is_dir():
        return
    os.symlink(shared.resolve(), link)


def choose(bootstrap: str | None, home: Path, port: int, *, nodes: int, keep: bool) -> Broker:
    external = bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        return ExternalBroker(external)
    broker = PrivateBroker(home, port, nodes=nodes, keep=keep)
    broker.start()
    return broker
