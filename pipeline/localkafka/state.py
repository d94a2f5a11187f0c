"""The saved shape of the last cluster started under a home: ``run/cluster.json``.

It lets ``down``, ``status`` and ``bootstrap`` (and a pytest session) find a cluster that
another process started with other flags, and keeps the cluster id stable across restarts, which
KRaft requires: every node's ``meta.properties`` carries it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class ClusterState:
    nodes: int
    base_port: int
    version: str
    cluster_id: str
    security: str = "plaintext"


def load_state(path: Path) -> ClusterState | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return ClusterState(
            nodes=int(raw["nodes"]),
            base_port=int(raw["base_port"]),
            version=str(raw["version"]),
            cluster_id=str(raw["cluster_id"]),
            security=str(raw.get("security", "plaintext")),
        )
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        # Unreadable state is treated as none: the worst case is a re-format after a wipe.
        return None


def save_state(path: Path, state: ClusterState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
