"""Which broker a run uses, and restarting it.

- **private** (the default when ``KAFKA_BOOTSTRAP_SERVERS`` is not set): a single-node
  ``LocalKafka`` of the run's own under ``.chaos/kafka`` on its own port (19192 unless told),
  freshly formatted, restarted once mid-run and stopped at the end. The shared development
  broker on 19092 is left alone: other sessions and test runs use it, and a restart would
  break them. The broker jars are shared with ``.kafka/dist`` (a symlink), not downloaded again.
- **external** (``--bootstrap`` or ``KAFKA_BOOTSTRAP_SERVERS``): used as is, never restarted.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Protocol

from chaos.workers import ROOT
from pipeline.localkafka import LocalKafka
from pipeline.localkafka.layout import ENV_HOME, kafka_version

DEFAULT_PRIVATE_PORT = 19192


class Broker(Protocol):
    bootstrap: str
    restartable: bool
    kind: str

    def restart(self) -> float: ...
    def close(self) -> None: ...


class ExternalBroker:
    restartable = False
    kind = "external"

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def restart(self) -> float:
        raise RuntimeError("an external broker is never restarted")

    def close(self) -> None:
        pass


class PrivateBroker:
    """A fresh single-node cluster that belongs to chaos runs alone."""

    restartable = True
    kind = "private"

    def __init__(self, home: Path, port: int = DEFAULT_PRIVATE_PORT, *, keep: bool = False) -> None:
        _share_jars(home)
        self._kafka = LocalKafka(nodes=1, root=home, base_port=port)
        self._keep = keep
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


def choose(bootstrap: str | None, home: Path, port: int, *, keep: bool) -> Broker:
    external = bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        return ExternalBroker(external)
    broker = PrivateBroker(home, port, keep=keep)
    broker.start()
    return broker
